-- The approval question as asked: the stage's `approval.message` with its `${{ }}` references
-- rendered for the run when the stage began to wait (what approvers see in the UI and CLI).
ALTER TABLE stage_runs ADD COLUMN approval_message TEXT;
