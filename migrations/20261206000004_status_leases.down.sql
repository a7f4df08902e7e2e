ALTER TABLE runs DROP COLUMN status_lease_until;
