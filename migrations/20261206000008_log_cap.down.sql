ALTER TABLE stage_runs DROP COLUMN log_bytes;
