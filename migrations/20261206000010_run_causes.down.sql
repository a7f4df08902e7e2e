ALTER TABLE runs DROP COLUMN cancelled_by;
ALTER TABLE runs DROP COLUMN triggered_by;
