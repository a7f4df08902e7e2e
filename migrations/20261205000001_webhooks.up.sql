-- Issue 4: repositories, webhook deliveries, schedule slots and commit statuses.

-- A Git repository Gantry reads pipelines from and receives webhooks for.
CREATE TABLE repositories (
    id              BIGSERIAL PRIMARY KEY,
    project_id      BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider        TEXT NOT NULL CHECK (provider IN ('github', 'gitlab', 'gitea')),
    -- `owner/name` as the provider names it in payloads (lower-cased for matching).
    full_name       TEXT NOT NULL,
    clone_url       TEXT NOT NULL,
    -- The webhook secret, encrypted with the engine's key like every secret (HMAC needs it back).
    secret_nonce    BYTEA NOT NULL,
    secret_cipher   BYTEA NOT NULL,
    -- A project secret holding an access token: clones over http(s) and commit statuses.
    token_secret    TEXT,
    -- The provider's API base for commit statuses (default from the provider and clone URL).
    api_url         TEXT,
    -- Pipeline files read at each commit: paths, or a directory glob like `.gantry/*.yaml`.
    pipeline_files  TEXT[] NOT NULL DEFAULT '{.gantry.yaml,.gantry/*.yaml}',
    default_branch  TEXT NOT NULL DEFAULT 'main',
    -- Check out submodules too.
    submodules      BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, full_name)
);

-- Pipelines that come from a repository file (pipeline as code).
-- A broken file is kept as a version too (its failed run points at it), marked invalid so the
-- pipeline's newest *valid* version is what lists, pages and manual triggers use.
ALTER TABLE pipeline_versions ADD COLUMN valid BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE pipelines ADD COLUMN repository_id BIGINT REFERENCES repositories(id) ON DELETE SET NULL;
ALTER TABLE pipelines ADD COLUMN source_file TEXT;

CREATE TYPE delivery_status AS ENUM (
    -- stored, not processed yet (processing survives a restart: it starts from here)
    'received',
    -- processed: it started runs (or failed runs for broken pipeline files)
    'triggered',
    -- processed: nothing to run, the summary says why
    'ignored',
    -- processing failed (e.g. the repository could not be fetched); the summary says why
    'failed'
);

-- Every webhook delivery and what it led to.
CREATE TABLE deliveries (
    id            BIGSERIAL PRIMARY KEY,
    -- github, gitlab, gitea, generic
    provider      TEXT NOT NULL,
    -- The provider's delivery id (X-GitHub-Delivery, X-Gitlab-Event-UUID, X-Gitea-Delivery);
    -- a redelivery with the same id is answered but not processed twice.
    delivery_key  TEXT NOT NULL,
    repository_id BIGINT REFERENCES repositories(id) ON DELETE CASCADE,
    pipeline_id   BIGINT REFERENCES pipelines(id) ON DELETE CASCADE,
    event         TEXT NOT NULL,
    status        delivery_status NOT NULL DEFAULT 'received',
    summary       TEXT,
    payload       BYTEA NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at  TIMESTAMPTZ,
    UNIQUE (provider, delivery_key)
);
CREATE INDEX deliveries_pending ON deliveries (id) WHERE status = 'received';
CREATE INDEX deliveries_repository ON deliveries (repository_id, id DESC);

ALTER TABLE runs ADD COLUMN delivery_id BIGINT REFERENCES deliveries(id) ON DELETE SET NULL;
-- The commit status last reported to the provider for this run (pending, success, ...).
ALTER TABLE runs ADD COLUMN status_reported TEXT;
ALTER TABLE runs ADD COLUMN status_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN status_next_at TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN status_error TEXT;
-- Runs about a repository's commit (webhook, scheduled or manual) whose status is not final yet.
CREATE INDEX runs_status_unreported ON runs (id)
    WHERE (context ? 'repository_id') AND status_reported IS DISTINCT FROM 'final';

-- One row per cron slot that started (or was claimed to start) a run: the primary key is what
-- makes a slot fire once however many engines share the database.
CREATE TABLE schedule_slots (
    pipeline_id  BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    cron         TEXT NOT NULL,
    slot         TIMESTAMPTZ NOT NULL,
    run_id       BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    claimed_by   TEXT NOT NULL,
    claimed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline_id, cron, slot)
);
