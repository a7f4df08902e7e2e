-- Bytes of log stored for the current attempt, for the per-stage log cap: past the cap a stage's
-- lines are counted (the runner's numbering goes on) but no longer stored.
ALTER TABLE stage_runs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
