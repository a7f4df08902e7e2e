-- Stages the engine runs itself (deploy stages roll out through the Kubernetes API from the
-- engine, not in a runner): claimed by a separate query, never handed to an executor.
ALTER TABLE stage_runs ADD COLUMN runs_in_engine boolean NOT NULL DEFAULT false;
