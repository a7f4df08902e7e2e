-- The version of a repository pipeline whose `on.schedule` cron fires: the one read at the
-- head of the repository's default branch (on registration and on every push to it). NULL:
-- not armed. A pipeline applied through the API has no repository; its newest valid version's
-- schedules fire, as before.
ALTER TABLE pipelines ADD COLUMN schedule_version_id BIGINT
    REFERENCES pipeline_versions(id) ON DELETE SET NULL;

-- Repository pipelines stored before this keep firing what they fired: their newest valid
-- version, until the next push to the default branch arms what is there.
UPDATE pipelines p SET schedule_version_id = (
    SELECT v.id FROM pipeline_versions v
    WHERE v.pipeline_id = p.id AND v.valid ORDER BY v.version DESC LIMIT 1)
WHERE p.repository_id IS NOT NULL
  AND (SELECT v.yaml FROM pipeline_versions v
       WHERE v.pipeline_id = p.id AND v.valid ORDER BY v.version DESC LIMIT 1) LIKE '%schedule%';
