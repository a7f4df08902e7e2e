-- When the attempt's runner first called in (asked for its spec). Until then the attempt is
-- starting (a pod waiting for a node or pulling its image): its silence is not a dead runner's,
-- and its stage timeout has not begun.
ALTER TABLE stage_runs ADD COLUMN contacted_at TIMESTAMPTZ;
UPDATE stage_runs SET contacted_at = started_at WHERE status = 'running';
