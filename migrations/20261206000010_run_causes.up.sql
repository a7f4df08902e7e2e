-- Who or what started a run (a user's name, the webhook's sender, `schedule`), and who
-- cancelled it: shown as the run's cause ("cancelled by alice") instead of a signal's name.
ALTER TABLE runs ADD COLUMN triggered_by TEXT;
ALTER TABLE runs ADD COLUMN cancelled_by TEXT;
UPDATE runs SET triggered_by = context->>'actor' WHERE context ? 'actor';
UPDATE runs SET triggered_by = 'schedule' WHERE trigger = 'schedule' AND triggered_by IS NULL;
