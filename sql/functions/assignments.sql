-- Who works an enrollment and its tasks: reassign either to another member (or to no one), logged.

-- Why: the member an enrollment or task goes to (when enrolled or reassigned) must belong to its
-- workspace; null leaves it unassigned. PT422 naming p_field.
CREATE OR REPLACE FUNCTION drumbeat.check_assignee(p_workspace_id uuid, p_user_id uuid, p_field text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM drumbeat.workspace_members m
            WHERE m.workspace_id = p_workspace_id AND m.user_id = p_user_id) THEN
        PERFORM drumbeat.raise_error('PT422', 'is not a member of this workspace', p_field);
    END IF;
END
$$;

-- Why: a rep leaves or a territory moves: the enrollment goes to another member, and so does its pending
-- task (the work in hand follows the prospect; completed tasks keep who did them). The messages still to
-- come go out from the new member's own sender where they have one (step_sender picks it at send time).
-- Any live or ended enrollment may be reassigned (reporting by owner); a reassignment to the current
-- assignee changes and logs nothing. Returns whether anything changed.
CREATE OR REPLACE FUNCTION drumbeat_api.reassign_enrollment(p_enrollment_id uuid, p_user_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('enrollments', p_enrollment_id, 'p_enrollment_id', 'member');
    v_row drumbeat.enrollments;
BEGIN
    PERFORM drumbeat.check_assignee(v_workspace_id, p_user_id, 'p_user_id');
    SELECT * INTO v_row FROM drumbeat.enrollments e WHERE e.id = p_enrollment_id FOR UPDATE;
    IF v_row.assigned_to IS NOT DISTINCT FROM p_user_id THEN
        RETURN false;
    END IF;
    UPDATE drumbeat.enrollments e SET assigned_to = p_user_id, updated_at = pg_catalog.now() WHERE e.id = p_enrollment_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
    VALUES (v_workspace_id, 'enrollment_reassigned', v_row.contact_id, v_row.sequence_id, v_row.id, v_row.current_step_id,
            drumbeat.current_user_id(), pg_catalog.jsonb_build_object('from', v_row.assigned_to, 'to', p_user_id));
    PERFORM drumbeat.move_tasks(ARRAY(SELECT t.id FROM drumbeat.tasks t
                                      WHERE t.enrollment_id = p_enrollment_id AND t.status = 'pending'), p_user_id);
    RETURN true;
END
$$;

-- Why: one task handed to another member (cover for a day off) without moving the enrollment.
CREATE OR REPLACE FUNCTION drumbeat_api.reassign_task(p_task_id uuid, p_user_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('tasks', p_task_id, 'p_task_id', 'member');
    v_task drumbeat.tasks;
BEGIN
    PERFORM drumbeat.check_assignee(v_workspace_id, p_user_id, 'p_user_id');
    SELECT * INTO v_task FROM drumbeat.tasks t WHERE t.id = p_task_id FOR UPDATE;
    IF v_task.status <> 'pending' THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('the task is %s: only a pending task can be reassigned', v_task.status), 'status');
    END IF;
    RETURN pg_catalog.cardinality(drumbeat.move_tasks(ARRAY[p_task_id], p_user_id)) > 0;
END
$$;

-- Why: the one write of a task reassignment, logged per task that changes hands; returns those ids.
CREATE OR REPLACE FUNCTION drumbeat.move_tasks(p_task_ids uuid[], p_user_id uuid)
RETURNS uuid[]
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH moved AS (
        UPDATE drumbeat.tasks t SET assigned_to = p_user_id
        FROM (SELECT t0.id, t0.assigned_to AS before FROM drumbeat.tasks t0 WHERE t0.id = ANY (p_task_ids) FOR UPDATE) AS old
        WHERE t.id = old.id AND t.assigned_to IS DISTINCT FROM p_user_id
        RETURNING t.*, old.before
    ), logged AS (
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
        SELECT m.workspace_id, 'task_reassigned', m.contact_id, e.sequence_id, m.enrollment_id, m.step_id, drumbeat.current_user_id(),
               pg_catalog.jsonb_build_object('task_id', m.id, 'from', m.before, 'to', p_user_id)
        FROM moved m JOIN drumbeat.enrollments e ON e.id = m.enrollment_id
    )
    SELECT COALESCE(pg_catalog.array_agg(m.id), '{}') FROM moved m
$$;
