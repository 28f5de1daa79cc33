-- 0028: switching a step off (is_active false) now stops it for the enrollments already waiting on it.
-- next_live_step always skipped inactive steps, so no enrollment reached one later; but an enrollment whose
-- current step was switched off still had it claimed and sent. An edit now moves such an enrollment exactly
-- as it moves one off a removed step (to the next live step, planned from its "done" instant), and cancels
-- the step's pending tasks. Switching the step back on later does not bring anyone back to it.

-- Why: as in 0008, and a step switched off counts as removed for the enrollments waiting on it.
-- p_old_positions maps each step id to its position before the edit. Returns how many moved.
CREATE OR REPLACE FUNCTION drumbeat.move_off_removed_steps(p_sequence_id uuid, p_old_positions jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE drumbeat.tasks t SET status = 'cancelled', completed_at = drumbeat.clock_now()
    FROM drumbeat.sequence_steps st
    WHERE t.step_id = st.id AND st.sequence_id = p_sequence_id AND (st.removed_at IS NOT NULL OR NOT st.is_active)
      AND t.status = 'pending';
    WITH moves AS (
        SELECT e.id, drumbeat.next_live_step(p_sequence_id, COALESCE((
            SELECT pg_catalog.max(kept.position) FROM drumbeat.sequence_steps kept
            WHERE kept.sequence_id = p_sequence_id AND kept.removed_at IS NULL
              AND (p_old_positions ->> kept.id::text)::integer
                  < COALESCE((p_old_positions ->> gone.id::text)::integer, gone.position)), 0)) AS next_step_id
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps gone ON gone.id = e.current_step_id
        WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active', 'paused')
          AND (gone.removed_at IS NOT NULL OR NOT gone.is_active)
    )
    UPDATE drumbeat.enrollments e SET
        current_step_id = COALESCE(m.next_step_id, e.current_step_id),
        status = CASE WHEN m.next_step_id IS NOT NULL THEN e.status WHEN e.status = 'active' THEN 'completed' ELSE 'cancelled' END,
        exit_reason = CASE WHEN m.next_step_id IS NULL AND e.status <> 'active' THEN 'steps_removed' END,
        completed_at = CASE WHEN m.next_step_id IS NULL THEN drumbeat.clock_now() END,
        paused_at = CASE WHEN m.next_step_id IS NOT NULL THEN e.paused_at END,
        step_attempt = 1,
        next_action_at = CASE WHEN m.next_step_id IS NOT NULL AND e.status <> 'paused'
            THEN drumbeat.planned_at(m.next_step_id, e.contact_id, e.step_done_at, drumbeat.clock_now()) END,
        updated_at = pg_catalog.now()
    FROM moves m WHERE e.id = m.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

REVOKE EXECUTE ON FUNCTION drumbeat.move_off_removed_steps(uuid, jsonb) FROM PUBLIC;
