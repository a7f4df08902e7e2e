-- A cron slot is a whole minute. Engines used to store the tick's seconds and their fraction
-- with the slot, so every tick (every 5 s) was a new slot and fired again. Keep the first claim
-- of each minute, cut the others' time to the minute, and have the database refuse anything
-- but whole minutes from now on.
DELETE FROM schedule_slots s
WHERE EXISTS (
    SELECT 1 FROM schedule_slots t
    WHERE t.pipeline_id = s.pipeline_id
      AND t.cron = s.cron
      AND date_trunc('minute', t.slot AT TIME ZONE 'UTC') = date_trunc('minute', s.slot AT TIME ZONE 'UTC')
      AND (t.claimed_at, t.slot) < (s.claimed_at, s.slot)
);
UPDATE schedule_slots
SET slot = date_trunc('minute', slot AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
WHERE date_trunc('minute', slot AT TIME ZONE 'UTC') <> slot AT TIME ZONE 'UTC';
ALTER TABLE schedule_slots ADD CONSTRAINT schedule_slots_whole_minute
    CHECK (date_trunc('minute', slot AT TIME ZONE 'UTC') = slot AT TIME ZONE 'UTC');
