-- Commit statuses are reported by whichever engine leases a run's report: the lease (longer
-- than a report's timeout) keeps two engines from posting for the same run at once, without a
-- transaction held open across the provider's API call.
ALTER TABLE runs ADD COLUMN status_lease_until TIMESTAMPTZ;
