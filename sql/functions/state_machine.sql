-- The enrollment state machine: the allowed transitions, and the triggers that refuse any other UPDATE
-- (whoever issues it) and log every transition in events.

-- Why: the transition table of docs/ARCHITECTURE.md ("State machine") in one place, shared by the trigger and the tests.
-- paused -> scheduled is the resume of an enrollment paused before it started (resume_enrollment).
CREATE OR REPLACE FUNCTION drumbeat.transition_allowed(p_from text, p_to text, p_exit_reason text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_from = 'scheduled' THEN p_to IN ('active', 'paused', 'replied', 'bounced', 'unsubscribed', 'cancelled', 'failed')
        WHEN p_from = 'active' THEN p_to IN ('completed', 'paused', 'replied', 'bounced', 'unsubscribed', 'cancelled', 'failed')
        WHEN p_from = 'paused' THEN p_to IN ('scheduled', 'active', 'replied', 'bounced', 'unsubscribed', 'cancelled', 'failed')
        ELSE false
    END
    OR (p_from IN ('scheduled', 'active', 'paused') AND p_to = 'completed' AND p_exit_reason = 'meeting_booked')
$$;
COMMENT ON FUNCTION drumbeat.transition_allowed(text, text, text) IS
    'The enrollment state machine: may an enrollment go from p_from to p_to (with this exit_reason)?';

-- Why: the audit event kind of a transition, so the timeline reads as what happened.
CREATE OR REPLACE FUNCTION drumbeat.transition_event_kind(p_from text, p_to text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_to = 'active' AND p_from = 'scheduled' THEN 'started'
        WHEN p_to IN ('active', 'scheduled') THEN 'resumed'
        WHEN p_to = 'paused' THEN 'paused'
        WHEN p_to = 'completed' THEN 'completed'
        ELSE 'exited'
    END
$$;

-- Why: new enrollments may only start in a live state; each one gets its 'enrolled' event. One
-- statement-level trigger with a transition table keeps bulk enrollment a single INSERT ... SELECT.
CREATE OR REPLACE FUNCTION drumbeat.enrollments_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad record;
    v_actor uuid := drumbeat.current_user_id();  -- once, not once per row: bulk enrollment is 100k rows
BEGIN
    SELECT n.id, n.status INTO v_bad FROM new_rows n WHERE n.status NOT IN ('scheduled', 'active') LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT409',
            pg_catalog.format('an enrollment starts as scheduled or active, not %s', v_bad.status), 'status');
    END IF;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
    SELECT n.workspace_id, 'enrolled', n.contact_id, n.sequence_id, n.id, n.current_step_id, v_actor,
           pg_catalog.jsonb_build_object('status', n.status, 'next_action_at', n.next_action_at)
    FROM new_rows n;
    RETURN NULL;
END
$$;

-- Why: rejects every status change the state machine does not allow (PT409 naming both states),
-- keeps an enrollment's identity immutable, cancels the pending task of an enrollment that ends,
-- and writes one event per transition.
CREATE OR REPLACE FUNCTION drumbeat.enrollments_after_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Transition tables carry no statistics, so the planner would pair old and new rows with a nested
-- loop: quadratic, 10^10 comparisons when archiving a sequence with 100k enrollments. Hash joins instead.
SET enable_nestloop = off
AS $$
DECLARE
    v_bad record;
BEGIN
    SELECT o.status AS old_status, n.status AS new_status, n.id INTO v_bad
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE (o.status <> n.status AND NOT drumbeat.transition_allowed(o.status, n.status, n.exit_reason))
       OR (o.workspace_id, o.sequence_id, o.contact_id) IS DISTINCT FROM (n.workspace_id, n.sequence_id, n.contact_id)
    LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT409', CASE WHEN v_bad.old_status = v_bad.new_status
            THEN 'an enrollment''s workspace, sequence and contact never change'
            ELSE pg_catalog.format('illegal enrollment transition %s -> %s (enrollment %s)',
                                   v_bad.old_status, v_bad.new_status, v_bad.id) END, 'status');
    END IF;
    UPDATE drumbeat.tasks t SET status = 'cancelled', completed_at = drumbeat.clock_now()
    FROM new_rows n
    WHERE t.enrollment_id = n.id AND t.status = 'pending' AND n.completed_at IS NOT NULL;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
    SELECT n.workspace_id, drumbeat.transition_event_kind(o.status, n.status), n.contact_id, n.sequence_id,
           n.id, n.current_step_id, drumbeat.current_user_id(),
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'from', o.status, 'to', n.status, 'exit_reason', n.exit_reason, 'next_action_at', n.next_action_at))
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE o.status <> n.status;
    RETURN NULL;
END
$$;

-- Why: every transition, whoever makes it, is checked and logged (statement-level, so bulk enrollment
-- and batch dispatch pay one trigger call per statement, not per row).
CREATE OR REPLACE TRIGGER enrollments_state_insert AFTER INSERT ON drumbeat.enrollments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION drumbeat.enrollments_after_insert();

CREATE OR REPLACE TRIGGER enrollments_state_update AFTER UPDATE ON drumbeat.enrollments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION drumbeat.enrollments_after_update();
