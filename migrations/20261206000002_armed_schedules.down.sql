ALTER TABLE pipelines DROP COLUMN schedule_version_id;
