-- Who may do what: local users (argon2 password hashes), API tokens and browser sessions
-- (both stored only as SHA-256 hashes of their random values), roles per project, and
-- optional anonymous read per project.

CREATE TYPE project_role AS ENUM ('viewer', 'developer', 'maintainer', 'admin');

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    -- PHC string (argon2id); NULL for an account that only uses API tokens.
    password_hash TEXT,
    -- An engine-wide administrator: every role in every project, and manages users.
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE project_members (
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        project_role NOT NULL,
    PRIMARY KEY (project_id, user_id)
);

-- Anyone, signed in or not, may read the project's pipelines, runs and logs.
ALTER TABLE projects ADD COLUMN anonymous_read BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- SHA-256 of the token; the token itself is shown once, when created.
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ
);

CREATE TABLE sessions (
    -- SHA-256 of the cookie's value.
    token_hash  BYTEA PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Every form and every cookie-authenticated API write must carry it.
    csrf        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
