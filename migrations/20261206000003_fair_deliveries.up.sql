-- Waiting deliveries by repository, so processing takes turns between repositories (one
-- repository's flood does not hold back another's) without reading every waiting row.
CREATE INDEX deliveries_waiting_by_repository ON deliveries (repository_id, id)
    WHERE status = 'received';
