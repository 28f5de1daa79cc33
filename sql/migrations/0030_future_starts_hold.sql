-- 0030: a future start holds what it should.
--   * skip_to_step on a scheduled enrollment (its start still ahead) planned the target step from now, so
--     the message went out at once; it now runs at the enrollment's start at the earliest.
--   * activate_sequence with a future p_start_at on a paused sequence delayed only new enrollments: the
--     ones already in it were re-planned for now and sent at once; they now wait for the start too.

-- Why: as in 0009; a scheduled enrollment keeps its start (next_action_at) as the earliest instant.
CREATE OR REPLACE FUNCTION drumbeat_api.skip_to_step(p_enrollment_id uuid, p_position integer)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_row drumbeat.enrollments := drumbeat.require_enrollment_status(p_enrollment_id, ARRAY['scheduled', 'active', 'paused'], 'skip');
    v_from integer := (SELECT st.position FROM drumbeat.sequence_steps st WHERE st.id = v_row.current_step_id);
    v_target uuid;
    v_earliest timestamptz := GREATEST(drumbeat.clock_now(), CASE WHEN v_row.status = 'scheduled' THEN v_row.next_action_at END);
BEGIN
    SELECT st.id INTO v_target FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = v_row.sequence_id AND st.position = p_position AND st.removed_at IS NULL AND st.is_active;
    IF v_target IS NULL OR p_position <= v_from THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('must be the position of an active step after the current one (%s)', v_from), 'p_position');
    END IF;
    UPDATE drumbeat.tasks t SET status = 'cancelled', completed_at = drumbeat.clock_now()
    WHERE t.enrollment_id = p_enrollment_id AND t.status = 'pending';
    UPDATE drumbeat.enrollments e SET current_step_id = v_target, step_done_at = drumbeat.clock_now(), step_attempt = 1,
        updated_at = pg_catalog.now(),
        next_action_at = CASE WHEN e.status = 'paused' THEN NULL
            ELSE drumbeat.planned_at(v_target, e.contact_id, v_earliest, v_earliest, true) END
    WHERE e.id = p_enrollment_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
    VALUES (v_row.workspace_id, 'skipped', v_row.contact_id, v_row.sequence_id, p_enrollment_id, v_target,
            drumbeat.current_user_id(), pg_catalog.jsonb_build_object('from_position', v_from, 'to_position', p_position));
END
$$;

-- Why: as in 0008; enrollments due before the start (overdue ones included) are re-planned from it.
CREATE OR REPLACE FUNCTION drumbeat_api.activate_sequence(p_sequence_id uuid, p_start_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_start timestamptz := GREATEST(p_start_at, drumbeat.clock_now());
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    PERFORM drumbeat.check_senders(p_sequence_id);
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['draft', 'paused'], 'active', p_start_at);
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, e.step_done_at, v_start),
        updated_at = pg_catalog.now()
    WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active') AND e.next_action_at < v_start;
END
$$;
