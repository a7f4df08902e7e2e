DROP INDEX deliveries_payload_kept;
ALTER TABLE deliveries DROP COLUMN payload_pruned_at;
