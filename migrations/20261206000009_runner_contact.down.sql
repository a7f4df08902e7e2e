ALTER TABLE stage_runs DROP COLUMN contacted_at;
