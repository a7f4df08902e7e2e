-- Dirty runs by pipeline: the scheduler advances them taking turns between pipelines.
CREATE INDEX runs_dirty_by_pipeline ON runs (pipeline_id, id) WHERE dirty;
-- Running runs (the project-level guard counts them).
CREATE INDEX runs_running ON runs (pipeline_id) WHERE status = 'running';
