DROP INDEX runs_running;
DROP INDEX runs_dirty_by_pipeline;
