DROP INDEX runs_reported_by_commit;
DROP INDEX runs_status_due;
DROP INDEX runs_held;
