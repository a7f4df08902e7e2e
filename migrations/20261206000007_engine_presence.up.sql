-- Engines sharing the database and where runners reach them: each engine records itself every
-- few seconds, and a runner is given the live ones, so it can carry on with another replica
-- when its own engine is gone.
CREATE TABLE engines (
    id       TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
