DROP TABLE schedule_slots;
DROP INDEX runs_status_unreported;
ALTER TABLE runs DROP COLUMN status_error, DROP COLUMN status_next_at, DROP COLUMN status_attempts,
    DROP COLUMN status_reported, DROP COLUMN delivery_id;
DROP TABLE deliveries;
DROP TYPE delivery_status;
ALTER TABLE pipelines DROP COLUMN source_file, DROP COLUMN repository_id;
ALTER TABLE pipeline_versions DROP COLUMN valid;
DROP TABLE repositories;
