-- Indexes that keep the scheduler and the commit-status reporter's per-run queries from
-- reading every run of a flood (issue 15: 5,000 queued runs in one project made each of
-- these a scan of them all, per run advanced or reported).

-- Runs the scheduler has looked at and left waiting (held back by their concurrency group or
-- their project's limit on running runs): when a run ends, the oldest of them in its project
-- are looked at again. A flood's new runs are dirty, so they are not in here.
CREATE INDEX runs_held ON runs (pipeline_id, id) WHERE status = 'queued' AND NOT dirty;

-- Runs whose commit status lags behind their state (the reporter's work list), by pipeline:
-- the reporter takes each repository's oldest from here. The predicate is
-- `commit_status::state_for` in SQL, as `runs::lease_statuses_due` writes it.
CREATE INDEX runs_status_due ON runs (pipeline_id, id)
    WHERE (context ? 'repository_id') AND status_attempts < 8
      AND status_reported IS DISTINCT FROM 'final'
      AND status_reported IS DISTINCT FROM
          (CASE WHEN status IN ('queued', 'running') THEN 'pending' ELSE 'final' END);

-- Runs with a status reported, by pipeline and commit: an older run's report must not be
-- posted over a newer one's about the same commit.
CREATE INDEX runs_reported_by_commit ON runs (pipeline_id, (context->>'commit_sha'), id)
    WHERE status_reported IS NOT NULL;
