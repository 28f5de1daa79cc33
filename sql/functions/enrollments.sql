-- Enrollments and tasks: enroll contacts (in bulk), pause, resume, cancel, skip to a step, complete a
-- manual step's task.

-- Why: arguments of enroll_contacts checked before any row is written.
CREATE OR REPLACE FUNCTION drumbeat.check_enroll_arguments(p_sequence drumbeat.sequences, p_contact_ids uuid[],
                                                p_assigned_to uuid, p_metadata jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_sequence.status NOT IN ('active', 'paused') THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('the sequence is %s: only active or paused sequences take enrollments',
            p_sequence.status), 'p_sequence_id');
    END IF;
    IF p_contact_ids IS NULL OR pg_catalog.array_position(p_contact_ids, NULL) IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of contact ids without nulls', 'p_contact_ids');
    END IF;
    PERFORM drumbeat.check_assignee(p_sequence.workspace_id, p_assigned_to, 'p_assigned_to');
    IF pg_catalog.jsonb_typeof(p_metadata) IS DISTINCT FROM 'object' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON object', 'p_metadata');
    END IF;
END
$$;

-- Why: the API's enrollment: the caller's role and the arguments are checked, then drumbeat.enroll_into
-- enrolls (the same function the enroll action of a sequence step uses, so both follow one set of rules).
CREATE OR REPLACE FUNCTION drumbeat_api.enroll_contacts(p_sequence_id uuid, p_contact_ids uuid[], p_start_at timestamptz DEFAULT NULL,
    p_start_at_step integer DEFAULT 1, p_assigned_to uuid DEFAULT NULL, p_metadata jsonb DEFAULT '{}')
RETURNS TABLE(contact_id uuid, enrollment_id uuid, outcome text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sequence drumbeat.sequences;
    v_step drumbeat.sequence_steps;
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    SELECT * INTO v_sequence FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
    PERFORM drumbeat.check_enroll_arguments(v_sequence, p_contact_ids, p_assigned_to, p_metadata);
    SELECT * INTO v_step FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = p_sequence_id AND st.position = p_start_at_step AND st.removed_at IS NULL AND st.is_active;
    IF NOT FOUND THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('the sequence has no active step at position %s', p_start_at_step), 'p_start_at_step');
    END IF;
    RETURN QUERY SELECT * FROM drumbeat.enroll_into(v_sequence, v_step, p_contact_ids, p_start_at, p_assigned_to, p_metadata);
END
$$;

-- Why: the one way contacts enter a sequence (at p_step of an active or paused sequence: the callers check
-- that), shared by enroll_contacts and the enroll action of a sequence step (drumbeat.enroll_by_action).
-- Bulk enrollment is one set-based INSERT ... SELECT: the first step's time is computed once per distinct
-- time zone (it depends on nothing else), conflicts with live enrollments are skipped by the partial unique
-- index, and each contact gets an outcome: enrolled | already_enrolled | opted_out | unreachable |
-- not_found (opted_out beats unreachable: it is the reason that matters to the user). A start in the
-- future (p_start_at, or the sequence's scheduled start) makes the enrollments 'scheduled'. Per-row work
-- is plain expressions, not function calls: at 100k rows every microsecond per row is 0.1 s.
CREATE OR REPLACE FUNCTION drumbeat.enroll_into(p_sequence drumbeat.sequences, p_step drumbeat.sequence_steps,
    p_contact_ids uuid[], p_start_at timestamptz, p_assigned_to uuid, p_metadata jsonb)
RETURNS TABLE(contact_id uuid, enrollment_id uuid, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET work_mem = '32MB'  -- the de-duplicating and ordering sorts of 100k ids stay in memory
AS $$
#variable_conflict use_column
DECLARE
    v_default_tz text;
    v_now timestamptz := drumbeat.clock_now();
    v_start timestamptz := GREATEST(p_start_at, p_sequence.scheduled_start_at, v_now);
BEGIN
    -- A contact's own zone (validated by its foreign key) wins; otherwise sequence -> workspace -> UTC.
    SELECT drumbeat.recipient_timezone(NULL, p_sequence.settings, w.timezone) INTO v_default_tz
    FROM drumbeat.workspaces w WHERE w.id = p_sequence.workspace_id;
    RETURN QUERY
    WITH input AS (
        SELECT DISTINCT ON (u.id) u.id, u.ord FROM pg_catalog.unnest(p_contact_ids) WITH ORDINALITY AS u(id, ord) ORDER BY u.id, u.ord
    ), candidates AS MATERIALIZED (
        SELECT i.id, i.ord, COALESCE(c.timezone, v_default_tz) AS tz, CASE
            WHEN c.id IS NULL OR c.deleted_at IS NOT NULL THEN 'not_found'
            WHEN p_sequence.channel = 'sms' AND (c.sms_opted_out_at IS NOT NULL OR c.phone_bounced_at IS NOT NULL) THEN 'opted_out'
            WHEN p_sequence.channel = 'sms' AND c.phone IS NULL THEN 'unreachable'
            WHEN p_sequence.channel = 'email' AND (c.email_opted_out_at IS NOT NULL OR c.bounced_at IS NOT NULL) THEN 'opted_out'
            WHEN p_sequence.channel = 'email' AND c.email IS NULL THEN 'unreachable'
            WHEN p_sequence.channel = 'multi' AND (c.sms_opted_out_at IS NOT NULL OR c.phone_bounced_at IS NOT NULL OR c.phone IS NULL)
                 AND (c.email_opted_out_at IS NOT NULL OR c.bounced_at IS NOT NULL OR c.email IS NULL) THEN 'opted_out'
        END AS blocker
        FROM input i LEFT JOIN drumbeat.contacts c ON c.id = i.id AND c.workspace_id = p_sequence.workspace_id
    ), zones AS MATERIALIZED (
        -- Two parallel arrays read once per statement (init-plans), not a join against every row.
        SELECT pg_catalog.array_agg(z.tz) AS tzs,
               pg_catalog.array_agg(drumbeat.next_action_at(v_start, p_step.delay, p_step.send_at, p_step.kind, z.tz,
                                                            p_sequence.settings, p_sequence.workspace_id)) AS first_ats
        FROM (SELECT DISTINCT ca.tz FROM candidates ca WHERE ca.blocker IS NULL) AS z
    ), inserted AS (
        INSERT INTO drumbeat.enrollments AS e (workspace_id, sequence_id, contact_id, status, current_step_id,
            step_done_at, next_action_at, assigned_to, enrolled_at, started_at, metadata)
        SELECT p_sequence.workspace_id, p_sequence.id, ca.id, CASE WHEN v_start > v_now THEN 'scheduled' ELSE 'active' END,
               p_step.id, v_start, (SELECT z.first_ats FROM zones z)[pg_catalog.array_position((SELECT z.tzs FROM zones z), ca.tz)],
               p_assigned_to, v_now, CASE WHEN v_start <= v_now THEN v_now END, p_metadata
        FROM candidates ca
        WHERE ca.blocker IS NULL
        ON CONFLICT (sequence_id, contact_id) WHERE status IN ('scheduled', 'active', 'paused') DO NOTHING
        RETURNING e.id, e.contact_id
    )
    SELECT ca.id, COALESCE(ins.id, live.id), COALESCE(ca.blocker, CASE WHEN ins.id IS NOT NULL THEN 'enrolled' ELSE 'already_enrolled' END)
    FROM candidates ca
    LEFT JOIN inserted ins ON ins.contact_id = ca.id
    LEFT JOIN drumbeat.enrollments live ON ins.id IS NULL AND ca.blocker IS NULL AND live.sequence_id = p_sequence.id
        AND live.contact_id = ca.id AND live.status IN ('scheduled', 'active', 'paused')
    ORDER BY ca.ord;
END
$$;

-- Why: the one shape of every enrollment transition: a guarded UPDATE of one row; PT409 naming the
-- current status when the enrollment is not in one of p_from.
CREATE OR REPLACE FUNCTION drumbeat.require_enrollment_status(p_enrollment_id uuid, p_from text[], p_action text)
RETURNS drumbeat.enrollments
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row drumbeat.enrollments;
BEGIN
    PERFORM drumbeat.workspace_of('enrollments', p_enrollment_id, 'p_enrollment_id', 'member');
    SELECT * INTO v_row FROM drumbeat.enrollments e WHERE e.id = p_enrollment_id FOR UPDATE;
    IF v_row.status <> ALL (p_from) THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('cannot %s an enrollment that is %s', p_action, v_row.status), 'status');
    END IF;
    RETURN v_row;
END
$$;

CREATE OR REPLACE FUNCTION drumbeat_api.pause_enrollment(p_enrollment_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_enrollment_status(p_enrollment_id, ARRAY['scheduled', 'active'], 'pause');
    UPDATE drumbeat.enrollments e SET status = 'paused', paused_at = drumbeat.clock_now(), next_action_at = NULL,
        updated_at = pg_catalog.now()
    WHERE e.id = p_enrollment_id AND e.status IN ('scheduled', 'active');
END
$$;

-- Why: resuming re-plans the waiting step (replanned_at: from its "done" instant, or as a skip has it),
-- never into the past: a step that fell due while paused is due at the first allowed instant from now. A
-- pending task keeps it waiting. An enrollment that never started (paused while scheduled) goes back to
-- scheduled: it starts when its time comes, as if never paused, never before its start.
CREATE OR REPLACE FUNCTION drumbeat_api.resume_enrollment(p_enrollment_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_enrollment_status(p_enrollment_id, ARRAY['paused'], 'resume');
    UPDATE drumbeat.enrollments e SET status = CASE WHEN e.started_at IS NULL THEN 'scheduled' ELSE 'active' END,
        paused_at = NULL, updated_at = pg_catalog.now(),
        next_action_at = CASE WHEN EXISTS (SELECT 1 FROM drumbeat.tasks t WHERE t.enrollment_id = e.id AND t.status = 'pending')
            THEN NULL ELSE drumbeat.replanned_at(e, drumbeat.clock_now()) END
    WHERE e.id = p_enrollment_id AND e.status = 'paused';
END
$$;

-- Why: ends enrollments (the live ones among p_enrollment_ids): one set-based UPDATE shared by
-- cancel, archive and record_event; the trigger cancels pending tasks and records each exit.
CREATE OR REPLACE FUNCTION drumbeat.exit_enrollments(p_enrollment_ids uuid[], p_status text, p_reason text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE drumbeat.enrollments e SET status = p_status, exit_reason = p_reason, completed_at = drumbeat.clock_now(),
        next_action_at = NULL, paused_at = NULL, updated_at = pg_catalog.now()
    WHERE e.id = ANY (p_enrollment_ids) AND e.status IN ('scheduled', 'active', 'paused')
$$;

CREATE OR REPLACE FUNCTION drumbeat_api.cancel_enrollment(p_enrollment_id uuid, p_reason text DEFAULT 'cancelled')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_enrollment_status(p_enrollment_id, ARRAY['scheduled', 'active', 'paused'], 'cancel');
    IF p_reason IS NULL OR pg_catalog.length(pg_catalog.btrim(p_reason)) NOT BETWEEN 1 AND 200 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 200 characters', 'p_reason');
    END IF;
    PERFORM drumbeat.exit_enrollments(ARRAY[p_enrollment_id], 'cancelled', pg_catalog.btrim(p_reason));
END
$$;

-- Why: moves a live enrollment forward to a later step, which runs as soon as its window allows (its
-- delay is skipped). Forward only: steps already executed are never re-run. A scheduled enrollment
-- keeps its start (next_action_at) as the earliest instant.
CREATE OR REPLACE FUNCTION drumbeat_api.skip_to_step(p_enrollment_id uuid, p_position integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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

-- Why: after a step is done at p_done_at, the enrollment waits on the next live step, or completes
-- when there is none. Shared by complete_task here and the dispatcher.
CREATE OR REPLACE FUNCTION drumbeat.advance_enrollment(p_enrollment_id uuid, p_done_at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_next uuid;
BEGIN
    SELECT drumbeat.next_live_step(e.sequence_id, st.position) INTO v_next
    FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
    WHERE e.id = p_enrollment_id;
    IF v_next IS NULL THEN
        UPDATE drumbeat.enrollments e SET status = 'completed', completed_at = p_done_at, next_action_at = NULL,
            step_done_at = p_done_at, updated_at = pg_catalog.now()
        WHERE e.id = p_enrollment_id;
        RETURN;
    END IF;
    UPDATE drumbeat.enrollments e SET current_step_id = v_next, step_done_at = p_done_at, step_attempt = 1,
        updated_at = pg_catalog.now(),
        next_action_at = drumbeat.planned_at(v_next, e.contact_id, p_done_at)
    WHERE e.id = p_enrollment_id;
END
$$;

-- Why: a manual step (call, LinkedIn, manual email, task) is done when a person completes its task;
-- the enrollment then moves on. A paused enrollment must be resumed first, so that "paused" always
-- means "nothing moves".
CREATE OR REPLACE FUNCTION drumbeat_api.complete_task(p_task_id uuid, p_outcome text DEFAULT NULL, p_notes text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_task drumbeat.tasks;
    v_enrollment drumbeat.enrollments;
BEGIN
    PERFORM drumbeat.workspace_of('tasks', p_task_id, 'p_task_id', 'member');
    IF pg_catalog.length(p_outcome) > 200 OR pg_catalog.length(p_notes) > 10000 THEN
        PERFORM drumbeat.raise_error('PT422', 'is too long', CASE WHEN pg_catalog.length(p_outcome) > 200 THEN 'p_outcome' ELSE 'p_notes' END);
    END IF;
    SELECT * INTO v_task FROM drumbeat.tasks t WHERE t.id = p_task_id FOR UPDATE;
    SELECT * INTO v_enrollment FROM drumbeat.enrollments e WHERE e.id = v_task.enrollment_id FOR UPDATE;
    IF v_task.status <> 'pending' THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('the task is already %s', v_task.status), 'status');
    ELSIF v_enrollment.status = 'paused' THEN
        PERFORM drumbeat.raise_error('PT409', 'the enrollment is paused: resume it before completing its task', 'status');
    END IF;
    UPDATE drumbeat.tasks t SET status = 'completed', completed_at = drumbeat.clock_now(), completed_by = drumbeat.current_user_id(),
        outcome = p_outcome, notes = p_notes
    WHERE t.id = p_task_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, actor_id, payload)
    VALUES (v_task.workspace_id, 'task_completed', v_task.contact_id, v_enrollment.sequence_id, v_enrollment.id, v_task.step_id,
            drumbeat.current_user_id(), pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('task_id', p_task_id, 'outcome', p_outcome)));
    IF v_enrollment.status = 'active' AND v_enrollment.current_step_id = v_task.step_id THEN
        PERFORM drumbeat.advance_enrollment(v_enrollment.id, drumbeat.clock_now());
    END IF;
END
$$;
