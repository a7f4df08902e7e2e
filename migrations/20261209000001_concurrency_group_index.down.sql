DROP INDEX runs_concurrency_group;
