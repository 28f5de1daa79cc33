-- Reassigning an enrollment or a task to another member (drumbeat_api.reassign_enrollment, reassign_task)
-- is published like the other enrollment and task events (README, "Events out").
INSERT INTO drumbeat.event_types (kind, type, type_without_delivery) VALUES
    ('enrollment_reassigned', 'sequence.enrollment.reassigned', NULL),
    ('task_reassigned', 'task.reassigned', NULL);
