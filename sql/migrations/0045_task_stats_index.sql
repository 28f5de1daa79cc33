-- A manual step's figures (drumbeat.task_stats: created, completed, cancelled, outcomes) read its tasks by
-- step, as the message steps' read their deliveries through deliveries_step_status_idx.
CREATE INDEX tasks_step_status_idx ON drumbeat.tasks (step_id, status);
COMMENT ON INDEX drumbeat.tasks_step_status_idx IS 'Serves per-step task figures (sequence stats).';
