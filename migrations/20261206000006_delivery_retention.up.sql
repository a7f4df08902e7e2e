-- Delivery payloads are kept for a while (a setting, 30 days by default), then emptied; the
-- delivery itself, its summary and its runs stay. When it was pruned is recorded.
ALTER TABLE deliveries ADD COLUMN payload_pruned_at TIMESTAMPTZ;
CREATE INDEX deliveries_payload_kept ON deliveries (received_at) WHERE payload_pruned_at IS NULL;
