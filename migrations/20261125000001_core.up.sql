-- The core of Gantry's store: projects, pipelines (every version of their YAML), runs, stage
-- runs, steps, logs, artifacts, secrets and the event trail.

CREATE TYPE run_status AS ENUM (
    'queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'
);

CREATE TYPE stage_status AS ENUM (
    -- waiting for its needs
    'pending',
    -- ready, waiting for an executor slot
    'queued',
    'running',
    'succeeded',
    'failed',
    'cancelled',
    'skipped',
    'waiting_approval',
    'timed_out'
);

CREATE TABLE projects (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE pipelines (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Runs are numbered per pipeline; this is the last number handed out.
    last_run_number INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, name)
);

CREATE TABLE pipeline_versions (
    id          BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    yaml        TEXT NOT NULL,
    -- sha256 of the YAML, so applying the same file twice makes no new version.
    digest      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (pipeline_id, version)
);

CREATE TABLE runs (
    id           BIGSERIAL PRIMARY KEY,
    pipeline_id  BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    version_id   BIGINT NOT NULL REFERENCES pipeline_versions(id),
    number       INTEGER NOT NULL,
    -- manual, push, tag, pull_request, schedule, webhook, rerun
    trigger      TEXT NOT NULL,
    params       JSONB NOT NULL DEFAULT '{}',
    -- What the run is about: event, branch, tag, commit, PR data (reaches steps as GANTRY_*).
    context      JSONB NOT NULL DEFAULT '{}',
    status       run_status NOT NULL DEFAULT 'queued',
    reason       TEXT,
    -- Runs sharing a concurrency group: a newer one may cancel older ones.
    concurrency_group TEXT,
    rerun_of     BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    -- Set whenever something happened that may let the run move on; the scheduler clears it.
    dirty        BOOLEAN NOT NULL DEFAULT true,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    UNIQUE (pipeline_id, number)
);
CREATE INDEX runs_dirty ON runs (id) WHERE dirty;

CREATE TABLE stage_runs (
    id            BIGSERIAL PRIMARY KEY,
    run_id        BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    -- The plan's key (`test[os=linux]`) and index; `needs` are plan indices.
    key           TEXT NOT NULL,
    plan_index    INTEGER NOT NULL,
    needs         INTEGER[] NOT NULL DEFAULT '{}',
    finally       BOOLEAN NOT NULL DEFAULT false,
    allow_failure BOOLEAN NOT NULL DEFAULT false,
    status        stage_status NOT NULL DEFAULT 'pending',
    -- 0 until first started; each retry increments it.
    attempt       INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL DEFAULT 1,
    timeout_secs  INTEGER,
    executor      TEXT,
    -- Opaque to the store: what the executor needs to find the attempt again (pid, Job name).
    executor_handle TEXT,
    claimed_by    TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    error         TEXT,
    -- Result kept from an earlier run when rerunning from the failed stages.
    reused_from   BIGINT REFERENCES stage_runs(id) ON DELETE SET NULL,
    approved_by   TEXT,
    queued_at     TIMESTAMPTZ,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    heartbeat_at  TIMESTAMPTZ,
    -- Log lines stored for the current attempt: the next batch must start at log_lines + 1.
    log_lines     BIGINT NOT NULL DEFAULT 0,
    -- The image a s2i/b2i stage pushed, for `${{ stages.NAME.image }}`.
    image         TEXT,
    UNIQUE (run_id, key),
    UNIQUE (run_id, plan_index)
);
CREATE INDEX stage_runs_queued ON stage_runs (queued_at) WHERE status = 'queued';
CREATE INDEX stage_runs_running ON stage_runs (heartbeat_at) WHERE status = 'running';

CREATE TABLE steps (
    stage_run_id BIGINT NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    idx          INTEGER NOT NULL,
    name         TEXT NOT NULL,
    exit_code    INTEGER,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    -- First log line of the step, so a UI can jump to it.
    first_line   BIGINT,
    PRIMARY KEY (stage_run_id, attempt, idx)
);

-- Logs are stored in chunks of many lines. Each line is `<unix ms> <o|e> <text>`; line numbers
-- (`seq`) are consecutive per stage attempt from 1, so a chunk holds first_seq..=last_seq.
CREATE TABLE log_chunks (
    stage_run_id BIGINT NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    first_seq    BIGINT NOT NULL,
    last_seq     BIGINT NOT NULL,
    data         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stage_run_id, attempt, first_seq)
);

CREATE TABLE artifacts (
    id           BIGSERIAL PRIMARY KEY,
    stage_run_id BIGINT NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    -- A gzip'd tar of the stage's `artifacts:` paths.
    name         TEXT NOT NULL,
    size         BIGINT NOT NULL DEFAULT 0,
    sha256       TEXT,
    complete     BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (stage_run_id, name)
);

CREATE TABLE artifact_chunks (
    artifact_id BIGINT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (artifact_id, seq)
);

-- Secret values encrypted with AES-256-GCM under the engine's key (never stored in clear).
CREATE TABLE secrets (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE events (
    id           BIGSERIAL PRIMARY KEY,
    run_id       BIGINT REFERENCES runs(id) ON DELETE CASCADE,
    stage_run_id BIGINT REFERENCES stage_runs(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    data         JSONB NOT NULL DEFAULT '{}',
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX events_run ON events (run_id, id);

-- Engine-wide settings shared by every replica (e.g. the runner-token signing key).
CREATE TABLE engine_settings (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);
