ALTER TABLE stage_runs DROP COLUMN runs_in_engine;
