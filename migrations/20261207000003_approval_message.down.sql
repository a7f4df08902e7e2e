ALTER TABLE stage_runs DROP COLUMN approval_message;
