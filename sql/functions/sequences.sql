-- Sequences: create, edit live (update_sequence re-plans the enrollments in flight, never re-running a
-- step), activate, pause, resume, archive and duplicate.

-- Why: sequence-level audit entries (created, updated, activated, ...) all look alike.
CREATE OR REPLACE FUNCTION drumbeat.log_sequence_event(p_sequence_id uuid, p_kind text, p_payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO drumbeat.events (workspace_id, kind, sequence_id, actor_id, payload)
    SELECT s.workspace_id, p_kind, s.id, drumbeat.current_user_id(), p_payload
    FROM drumbeat.sequences s WHERE s.id = p_sequence_id
$$;

-- Why: "the next step" everywhere means the first live (not removed, active) step after a position.
CREATE OR REPLACE FUNCTION drumbeat.next_live_step(p_sequence_id uuid, p_after_position integer)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT st.id FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = p_sequence_id AND st.position > p_after_position
      AND st.removed_at IS NULL AND st.is_active
    ORDER BY st.position LIMIT 1
$$;

-- Why: when an enrollment's step is due, in its contact's time zone (contact -> sequence -> workspace
-- -> UTC), with the calculus (calculus.sql); never before p_not_before (resume and edits: not in the past),
-- nor before the sequence's scheduled start: a sequence scheduled to start next week holds every step
-- until then, whichever path plans it (an edit, a move off a removed step, a skip, a resume).
-- p_skip_delay: the step runs as soon as its window allows (skip_to_step), ignoring delay and send_at.
CREATE OR REPLACE FUNCTION drumbeat.planned_at(p_step_id uuid, p_contact_id uuid, p_done timestamptz,
                                    p_not_before timestamptz DEFAULT NULL, p_skip_delay boolean DEFAULT false)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT drumbeat.next_action_at(p_done, CASE WHEN p_skip_delay THEN '0' ELSE st.delay END,
               CASE WHEN p_skip_delay THEN NULL ELSE st.send_at END, st.kind,
               drumbeat.recipient_timezone(c.timezone, s.settings, w.timezone), s.settings, s.workspace_id,
               GREATEST(p_not_before, s.scheduled_start_at))
    FROM drumbeat.sequence_steps st
    JOIN drumbeat.sequences s ON s.id = st.sequence_id
    JOIN drumbeat.workspaces w ON w.id = s.workspace_id
    JOIN drumbeat.contacts c ON c.id = p_contact_id
    WHERE st.id = p_step_id
$$;

-- Why: a definition's steps stored in order with stable ids: a step given with its "id" is updated in
-- place, one without is new, and a live step left out is marked removed (deliveries and events keep
-- pointing at it). The position constraint is deferred, so reorders need no shuffling.
CREATE OR REPLACE FUNCTION drumbeat.save_steps(p_sequence_id uuid, p_workspace_id uuid, p_steps jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad record;
BEGIN
    SELECT t.o - 1 AS i INTO v_bad
    FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS t(e, o)
    WHERE t.e ? 'id' AND ((t.e ->> 'id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
          OR NOT EXISTS (SELECT 1 FROM drumbeat.sequence_steps st WHERE st.id = (t.e ->> 'id')::uuid
                         AND st.sequence_id = p_sequence_id AND st.removed_at IS NULL)
          OR (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements(p_steps) x WHERE x ->> 'id' = t.e ->> 'id') > 1)
    LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT422', 'is not a step of this sequence (or appears twice)', 'steps[' || v_bad.i || '].id');
    END IF;
    UPDATE drumbeat.sequence_steps st SET removed_at = pg_catalog.now(), updated_at = pg_catalog.now()
    WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL
      AND st.id::text NOT IN (SELECT e ->> 'id' FROM pg_catalog.jsonb_array_elements(p_steps) e WHERE e ? 'id');
    INSERT INTO drumbeat.sequence_steps AS st (id, workspace_id, sequence_id, position, kind, name, delay, send_at, subject,
        body, html_body, variants, condition, action, task_description, is_active)
    SELECT COALESCE((t.e ->> 'id')::uuid, pg_catalog.gen_random_uuid()), p_workspace_id, p_sequence_id, t.o::integer,
           t.e ->> 'kind', t.e ->> 'name', drumbeat.parse_delay(t.e -> 'delay', 'delay'), (t.e ->> 'send_at')::time,
           t.e ->> 'subject', t.e ->> 'body', t.e ->> 'html_body', COALESCE(t.e -> 'variants', '[]'),
           CASE WHEN t.e ->> 'kind' = 'condition' THEN (t.e -> 'condition') || pg_catalog.jsonb_build_object(
               'then', COALESCE(t.e -> 'then', '"continue"'), 'else', COALESCE(t.e -> 'else', '"continue"')) END,
           t.e -> 'action', t.e ->> 'task_description', COALESCE((t.e ->> 'is_active')::boolean, true)
    FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS t(e, o)
    ON CONFLICT (id) DO UPDATE SET position = EXCLUDED.position, kind = EXCLUDED.kind, name = EXCLUDED.name,
        delay = EXCLUDED.delay, send_at = EXCLUDED.send_at, subject = EXCLUDED.subject, body = EXCLUDED.body,
        html_body = EXCLUDED.html_body, variants = EXCLUDED.variants, condition = EXCLUDED.condition,
        action = EXCLUDED.action, task_description = EXCLUDED.task_description, is_active = EXCLUDED.is_active,
        updated_at = pg_catalog.now();
END
$$;

-- Why: a sequence is created from its definition (docs/ARCHITECTURE.md, "The contract"), validated first so nothing is half-saved.
CREATE OR REPLACE FUNCTION drumbeat_api.create_sequence(p_workspace_id uuid, p_definition jsonb)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'member');
    PERFORM drumbeat.validate_definition(p_definition, p_workspace_id, v_id);
    INSERT INTO drumbeat.sequences (id, workspace_id, name, description, channel, settings, exit_conditions, created_by)
    VALUES (v_id, p_workspace_id, pg_catalog.btrim(p_definition ->> 'name'), p_definition ->> 'description',
            p_definition ->> 'channel', COALESCE(p_definition -> 'settings', '{}'),
            drumbeat.normalize_exit_conditions(p_definition -> 'exit_conditions'), drumbeat.current_user_id());
    PERFORM drumbeat.save_steps(v_id, p_workspace_id, p_definition -> 'steps');
    PERFORM drumbeat.log_sequence_event(v_id, 'sequence_created', pg_catalog.jsonb_build_object('version', 1));
    RETURN v_id;
END
$$;

-- Why: a message step needs somewhere to send from: the sequence's sender setting or the workspace's
-- first sender of that channel. Checked when a sequence goes live (drafts may come before senders).
CREATE OR REPLACE FUNCTION drumbeat.check_senders(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_step record;
BEGIN
    SELECT st.position, st.kind INTO v_step
    FROM drumbeat.sequence_steps st JOIN drumbeat.sequences s ON s.id = st.sequence_id
    WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL AND st.kind IN ('sms', 'email')
      AND NOT EXISTS (SELECT 1 FROM drumbeat.senders se WHERE se.workspace_id = s.workspace_id AND se.channel = st.kind)
    ORDER BY st.position LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('step %s is an %s step but this workspace has no %s sender: '
            'create one with create_sender first', v_step.position, v_step.kind, v_step.kind),
            'steps[' || (v_step.position - 1) || ']');
    END IF;
END
$$;

-- Why: the guarded status change every sequence transition is: UPDATE ... WHERE status IN (...),
-- PT409 naming the current status when it is not one of them.
CREATE OR REPLACE FUNCTION drumbeat.transition_sequence(p_sequence_id uuid, p_from text[], p_to text, p_start_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    UPDATE drumbeat.sequences s SET status = p_to, updated_at = pg_catalog.now(),
        activated_at = CASE WHEN p_to = 'active' THEN COALESCE(s.activated_at, drumbeat.clock_now()) ELSE s.activated_at END,
        scheduled_start_at = CASE WHEN p_to = 'active' AND p_start_at > drumbeat.clock_now() THEN p_start_at
                                  WHEN p_to = 'active' THEN NULL ELSE s.scheduled_start_at END,
        archived_at = CASE WHEN p_to = 'archived' THEN drumbeat.clock_now() END
    WHERE s.id = p_sequence_id AND s.status = ANY (p_from);
    IF NOT FOUND THEN
        SELECT s.status INTO v_status FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('cannot go from %s to %s', v_status, p_to), 'status');
    END IF;
    PERFORM drumbeat.log_sequence_event(p_sequence_id, 'sequence_' || CASE p_to WHEN 'active' THEN
        CASE WHEN 'paused' = ANY (p_from) AND NOT 'draft' = ANY (p_from) THEN 'resumed' ELSE 'activated' END
        WHEN 'paused' THEN 'paused' ELSE 'archived' END,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('scheduled_start_at', p_start_at)));
END
$$;

-- Why: the one re-planning rule (edits, resume, a future start): a step is planned from the enrollment's
-- "done" instant, except when something other than the step's delay set its time: a step being retried
-- (its backoff, dispatch.sql's settle_enrollment) or a step the enrollment was skipped to (skip_to_step:
-- as soon as the window allows). Such a pinned time is kept, moved only forward into the step's window
-- (which an edit may have changed); the step's delay and send_at never apply to it again: a skip skipped
-- them and a retry is past them. Without a time (paused) it runs from its "done" instant as soon as the
-- window allows. The skip is read back from its 'skipped' event: steps only move forward, so an
-- enrollment that was skipped to its current step is still on it from that skip.
CREATE OR REPLACE FUNCTION drumbeat.replanned_at(p_enrollment drumbeat.enrollments, p_not_before timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_enrollment.step_attempt > 1 OR EXISTS (
                    SELECT 1 FROM drumbeat.events ev
                    WHERE ev.enrollment_id = p_enrollment.id AND ev.kind = 'skipped'
                      AND ev.step_id = p_enrollment.current_step_id)
           THEN drumbeat.planned_at(p_enrollment.current_step_id, p_enrollment.contact_id,
                    COALESCE(p_enrollment.next_action_at, p_enrollment.step_done_at), p_not_before, true)
           ELSE drumbeat.planned_at(p_enrollment.current_step_id, p_enrollment.contact_id, p_enrollment.step_done_at,
                    p_not_before)
           END
$$;

-- Why: live enrollments waiting on a step get a fresh next_action_at (replanned_at), never in the past
-- (due now at the earliest, inside the allowed window). Returns how many moved.
CREATE OR REPLACE FUNCTION drumbeat.replan_enrollments(p_sequence_id uuid, p_only_overdue boolean)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.replanned_at(e, drumbeat.clock_now()), updated_at = pg_catalog.now()
    WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active') AND e.next_action_at IS NOT NULL
      AND (NOT p_only_overdue OR e.next_action_at < drumbeat.clock_now());
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Why: what the planned time of each live step depends on (its delay, send_at and kind, and the sequence's
-- settings: windows, zone, holidays), so that an edit can tell which steps it re-timed.
CREATE OR REPLACE FUNCTION drumbeat.step_timings(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_object_agg(st.id, pg_catalog.jsonb_build_array(st.delay, st.send_at, st.kind,
               s.settings)), '{}')
    FROM drumbeat.sequence_steps st JOIN drumbeat.sequences s ON s.id = st.sequence_id
    WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL
$$;

-- Why: an edit re-plans (replanned_at) the waiting enrollments whose step it re-timed, p_timings_before
-- being step_timings before the edit. The others keep their time, whatever set it: their delay, a skip, a
-- retry's backoff, a hold, a future start; re-planning them from their "done" instant would undo that.
-- Returns how many were re-planned.
CREATE OR REPLACE FUNCTION drumbeat.replan_retimed(p_sequence_id uuid, p_timings_before jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_after jsonb := drumbeat.step_timings(p_sequence_id);
    v_retimed uuid[] := ARRAY(SELECT k::uuid FROM pg_catalog.jsonb_object_keys(v_after) AS k
                              WHERE (p_timings_before -> k) IS DISTINCT FROM (v_after -> k));
    v_count integer;
BEGIN
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.replanned_at(e, drumbeat.clock_now()), updated_at = pg_catalog.now()
    WHERE e.sequence_id = p_sequence_id AND e.current_step_id = ANY (v_retimed)
      AND e.status IN ('scheduled', 'active') AND e.next_action_at IS NOT NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Why: a draft or paused sequence starts sending: message steps need a sender, and enrollments due
-- before p_start_at (overdue ones included) are re-planned from it, so a future start holds every
-- enrollment already in the sequence, not only new ones.
CREATE OR REPLACE FUNCTION drumbeat_api.activate_sequence(p_sequence_id uuid, p_start_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_start timestamptz := GREATEST(p_start_at, drumbeat.clock_now());
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    PERFORM drumbeat.check_senders(p_sequence_id);
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['draft', 'paused'], 'active', p_start_at);
    UPDATE drumbeat.enrollments e SET next_action_at = drumbeat.replanned_at(e, v_start), updated_at = pg_catalog.now()
    WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active') AND e.next_action_at < v_start;
END
$$;

-- Why: pausing a sequence holds every enrollment where it is (the dispatcher only claims enrollments
-- of active sequences); enrollments keep their own status.
CREATE OR REPLACE FUNCTION drumbeat_api.pause_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT drumbeat.transition_sequence(p_sequence_id, ARRAY['active'], 'paused') $$;

-- Why: steps that fell due while paused are re-planned from now into their allowed window, rather than
-- all firing at the moment of resume (possibly at night). Resuming undoes a pause only: a start still to
-- come stays (activate_sequence is what changes it).
CREATE OR REPLACE FUNCTION drumbeat_api.resume_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['paused'], 'active', (SELECT s.scheduled_start_at
        FROM drumbeat.sequences s WHERE s.id = p_sequence_id AND s.scheduled_start_at > drumbeat.clock_now()));
    PERFORM drumbeat.replan_enrollments(p_sequence_id, true);
END
$$;

-- Why: archiving stops all future sends (live enrollments are cancelled) and keeps every record.
CREATE OR REPLACE FUNCTION drumbeat_api.archive_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['draft', 'active', 'paused'], 'archived');
    -- drumbeat.exit_enrollments is in enrollments.sql; PL/pgSQL resolves it when this runs.
    PERFORM drumbeat.exit_enrollments(ARRAY(SELECT e.id FROM drumbeat.enrollments e
        WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active', 'paused')), 'cancelled', 'sequence_archived');
END
$$;

-- Why: a copy starts as a draft with the same settings and live steps (new step ids).
CREATE OR REPLACE FUNCTION drumbeat_api.duplicate_sequence(p_sequence_id uuid, p_name text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    IF p_name IS NOT NULL AND pg_catalog.length(pg_catalog.btrim(p_name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 200 characters', 'p_name');
    END IF;
    INSERT INTO drumbeat.sequences (id, workspace_id, name, description, channel, settings, exit_conditions, created_by)
    SELECT v_id, s.workspace_id, COALESCE(pg_catalog.btrim(p_name), pg_catalog.left(s.name, 193) || ' (copy)'),
           s.description, s.channel, s.settings, s.exit_conditions, drumbeat.current_user_id()
    FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
    INSERT INTO drumbeat.sequence_steps (workspace_id, sequence_id, position, kind, name, delay, send_at, subject, body,
        html_body, variants, condition, action, task_description, is_active)
    SELECT st.workspace_id, v_id, st.position, st.kind, st.name, st.delay, st.send_at, st.subject, st.body,
           st.html_body, st.variants, st.condition, st.action, st.task_description, st.is_active
    FROM drumbeat.sequence_steps st WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL;
    PERFORM drumbeat.log_sequence_event(v_id, 'sequence_created', pg_catalog.jsonb_build_object('duplicated_from', p_sequence_id));
    RETURN v_id;
END
$$;

-- Why: an enrollment waiting on a step that an edit removed, or switched off (is_active false), moves to
-- the step that now follows the last remaining step before it (new steps inserted there included); with
-- nothing left it ends. Paused ones stay paused on their new step; a moved enrollment starts it at
-- attempt 1. p_old_positions maps each step id to its position before the edit. Returns how many moved.
CREATE OR REPLACE FUNCTION drumbeat.move_off_removed_steps(p_sequence_id uuid, p_old_positions jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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

-- Why: editing a live sequence: every enrollment follows the edited sequence from where it is (steps
-- already executed are never re-run), enrollments waiting on a step the edit re-timed are re-planned
-- (replan_retimed), and the edit is recorded with its new version and how many enrollments it moved.
CREATE OR REPLACE FUNCTION drumbeat_api.update_sequence(p_sequence_id uuid, p_definition jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    v_status text;
    v_version integer;
    v_old_positions jsonb;
    v_timings jsonb;
    v_moved integer;
BEGIN
    PERFORM drumbeat.lock_sequence_edits(p_sequence_id);
    SELECT s.status INTO v_status FROM drumbeat.sequences s WHERE s.id = p_sequence_id FOR UPDATE;
    IF v_status = 'archived' THEN
        PERFORM drumbeat.raise_error('PT409', 'an archived sequence cannot be edited: duplicate it instead', 'status');
    END IF;
    PERFORM drumbeat.validate_definition(p_definition, v_workspace_id, p_sequence_id);
    SELECT pg_catalog.jsonb_object_agg(st.id, st.position) INTO v_old_positions
    FROM drumbeat.sequence_steps st WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL;
    v_timings := drumbeat.step_timings(p_sequence_id);
    UPDATE drumbeat.sequences s SET name = pg_catalog.btrim(p_definition ->> 'name'), description = p_definition ->> 'description',
        channel = p_definition ->> 'channel', settings = COALESCE(p_definition -> 'settings', '{}'),
        exit_conditions = drumbeat.normalize_exit_conditions(p_definition -> 'exit_conditions'),
        version = s.version + 1, updated_at = pg_catalog.now()
    WHERE s.id = p_sequence_id RETURNING s.version INTO v_version;
    PERFORM drumbeat.save_steps(p_sequence_id, v_workspace_id, p_definition -> 'steps');
    IF v_status <> 'draft' THEN
        PERFORM drumbeat.check_senders(p_sequence_id);
    END IF;
    v_moved := drumbeat.move_off_removed_steps(p_sequence_id, COALESCE(v_old_positions, '{}'));
    PERFORM drumbeat.log_sequence_event(p_sequence_id, 'sequence_updated', pg_catalog.jsonb_build_object(
        'version', v_version, 'enrollments_moved', v_moved,
        'enrollments_replanned', drumbeat.replan_retimed(p_sequence_id, v_timings)));
END
$$;

-- Step edits. A step-level edit (add, change, remove, reorder) rebuilds the whole definition from the
-- stored one and saves it with update_sequence, so it gets every rule a full edit gets (validation,
-- re-planning, moving enrollments off removed steps, the version and its event). What a step edit adds:
-- conditions that look at or jump to steps that moved follow them (renumber_step_references). RPC callers
-- and the HTTP API get the same edit semantics because both call these functions.

-- Why: a stored delay in the definition's own shape, so a step can be read, changed and saved back: the
-- interval's days component as days or weeks, its time component as minutes or hours (days are calendar
-- time, minutes and hours clock time, so the two never mix).
CREATE OR REPLACE FUNCTION drumbeat.delay_json(p_delay interval)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN d.minutes = 0 AND d.days > 0 AND d.days % 7 = 0
                    THEN pg_catalog.jsonb_build_object('value', d.days / 7, 'unit', 'weeks')
                WHEN d.minutes = 0 AND d.days > 0 THEN pg_catalog.jsonb_build_object('value', d.days, 'unit', 'days')
                WHEN d.days = 0 AND d.minutes > 0 AND d.minutes % 60 = 0
                    THEN pg_catalog.jsonb_build_object('value', d.minutes / 60, 'unit', 'hours')
                WHEN d.days = 0 THEN pg_catalog.jsonb_build_object('value', d.minutes, 'unit', 'minutes')
                ELSE pg_catalog.jsonb_build_object('value', d.days * 1440 + d.minutes, 'unit', 'minutes')
           END
    FROM (SELECT pg_catalog.date_part('day', p_delay)::bigint AS days,
                 (pg_catalog.date_part('epoch', p_delay - pg_catalog.make_interval(
                     days => pg_catalog.date_part('day', p_delay)::integer)) / 60)::bigint AS minutes) AS d
$$;

-- Why: a sequence's live steps as definition steps with their ids (update_sequence keeps a step that names
-- its id), in order; keys without a value are left out, as a client would.
CREATE OR REPLACE FUNCTION drumbeat.step_definitions(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(
        (SELECT pg_catalog.jsonb_object_agg(f.key, f.value) FROM pg_catalog.jsonb_each(pg_catalog.jsonb_build_object(
            'id', st.id, 'kind', st.kind, 'is_active', st.is_active, 'name', st.name,
            'delay', drumbeat.delay_json(st.delay), 'send_at', pg_catalog.to_char(st.send_at, 'HH24:MI'),
            'subject', st.subject, 'body', st.body, 'html_body', st.html_body, 'variants', st.variants,
            'condition', st.condition - 'then' - 'else', 'then', st.condition -> 'then', 'else', st.condition -> 'else',
            'action', st.action, 'task_description', st.task_description)) AS f
         WHERE f.value NOT IN ('null'::jsonb, '[]'::jsonb))
        ORDER BY st.position), '[]')
    FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL
$$;

-- Why: after steps were inserted, removed or moved, the existing conditions' references (condition.step,
-- {"goto": N}) still name positions of the old order: point them at the same steps' new positions. A
-- condition looking at a removed step is PT409; a goto to a removed step goes to the next step that
-- remains (or exits). A step just added has no id yet: its references are in the new numbering already.
-- p_old_positions maps each step id to its position before the edit.
CREATE OR REPLACE FUNCTION drumbeat.renumber_step_references(p_steps jsonb, p_old_positions jsonb)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_new_positions jsonb;
    v_moved jsonb;  -- old position -> new position, JSON null when that step was removed
    v_old_count integer := (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(p_old_positions));
    v_step jsonb;
    v_target jsonb;
    v_branch text;
    v_out jsonb := '[]';
BEGIN
    SELECT COALESCE(pg_catalog.jsonb_object_agg(e.step ->> 'id', e.position), '{}') INTO v_new_positions
    FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS e(step, position) WHERE e.step ? 'id';
    SELECT COALESCE(pg_catalog.jsonb_object_agg(o.value, COALESCE(v_new_positions -> o.key, 'null')), '{}')
    INTO v_moved FROM pg_catalog.jsonb_each_text(p_old_positions) AS o;
    FOR v_step IN SELECT e.step FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS e(step, position)
                  ORDER BY e.position
    LOOP
        IF v_step ->> 'kind' = 'condition' AND v_step ? 'id' THEN
            v_target := v_moved -> (v_step -> 'condition' ->> 'step');
            IF v_target = 'null' THEN
                PERFORM drumbeat.raise_error('PT409', pg_catalog.format(
                    'step %s (a condition) looks at this step: change or delete it first',
                    p_old_positions ->> (v_step ->> 'id')), 'step_id');
            ELSIF v_target IS NOT NULL THEN
                v_step := pg_catalog.jsonb_set(v_step, '{condition,step}', v_target);
            END IF;
            FOREACH v_branch IN ARRAY ARRAY['then', 'else'] LOOP
                IF pg_catalog.jsonb_typeof(v_step -> v_branch) = 'object' AND v_moved ? (v_step -> v_branch ->> 'goto') THEN
                    v_target := (SELECT v_moved -> p::text FROM pg_catalog.generate_series(
                                     (v_step -> v_branch ->> 'goto')::integer, v_old_count) AS p
                                 WHERE v_moved -> p::text <> 'null' ORDER BY p LIMIT 1);
                    v_step := pg_catalog.jsonb_set(v_step, ARRAY[v_branch], CASE WHEN v_target IS NULL THEN '"exit"'
                        ELSE pg_catalog.jsonb_build_object('goto', v_target) END);
                END IF;
            END LOOP;
        END IF;
        v_out := v_out || pg_catalog.jsonb_build_array(v_step);
    END LOOP;
    RETURN v_out;
END
$$;

-- Why: edits of one sequence take turns. The contract's editing functions and the API's read-modify-write
-- requests (read the sequence, then call update_sequence or a step function, in one transaction) take
-- this lock first. An advisory lock held until the transaction ends, rather than the row's: tenants may
-- not lock rows (they hold no UPDATE privilege), and the API's read, a statement of its own after the
-- wait, sees the edit it waited for.
CREATE OR REPLACE FUNCTION drumbeat.lock_sequence_edits(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Only a sequence the caller sees (RLS): nobody may hold up another tenant's edits.
    IF NOT EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = p_sequence_id) THEN
        PERFORM drumbeat.raise_error('PT404', 'sequence not found', 'sequence_id');
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('drumbeat.sequence_edits:' || p_sequence_id::text, 0));
END
$$;

-- Why: the read half of every step edit: the caller may edit the sequence (404 otherwise, never saying
-- whether it exists), and the row stays locked until the transaction ends, so two concurrent step edits
-- of one sequence apply one after the other instead of one undoing the other.
CREATE OR REPLACE FUNCTION drumbeat.lock_steps(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'sequence_id', 'member');
    PERFORM drumbeat.lock_sequence_edits(p_sequence_id);
    PERFORM 1 FROM drumbeat.sequences s WHERE s.id = p_sequence_id FOR UPDATE;
    RETURN drumbeat.step_definitions(p_sequence_id);
END
$$;

-- Why: the write half: the stored definition with these steps, conditions renumbered against the order
-- before the edit, saved through update_sequence.
CREATE OR REPLACE FUNCTION drumbeat.save_step_edit(p_sequence_id uuid, p_before jsonb, p_steps jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old_positions jsonb := (SELECT COALESCE(pg_catalog.jsonb_object_agg(e.step ->> 'id', e.position), '{}')
                              FROM pg_catalog.jsonb_array_elements(p_before) WITH ORDINALITY AS e(step, position));
    v_definition jsonb;
BEGIN
    SELECT pg_catalog.jsonb_build_object('name', s.name, 'channel', s.channel, 'settings', s.settings,
               'exit_conditions', s.exit_conditions, 'description', s.description)
    INTO v_definition FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
    v_definition := pg_catalog.jsonb_strip_nulls(v_definition - 'steps')
        || pg_catalog.jsonb_build_object('steps', drumbeat.renumber_step_references(p_steps, v_old_positions));
    PERFORM drumbeat_api.update_sequence(p_sequence_id, v_definition);
END
$$;

-- Why: the position of a live step of this sequence, or PT404 naming step_id.
CREATE OR REPLACE FUNCTION drumbeat.step_index(p_steps jsonb, p_step_id uuid)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_position integer := (SELECT e.position FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS e(step, position)
                           WHERE e.step ->> 'id' = p_step_id::text);
BEGIN
    IF v_position IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', 'step not found', 'step_id');
    END IF;
    RETURN v_position;
END
$$;

-- Why: add a step at the end, or at p_position (later steps move down one; conditions that look at or jump
-- to them follow). The new step's own condition/goto positions are in the new numbering. Returns its id.
CREATE OR REPLACE FUNCTION drumbeat_api.add_step(p_sequence_id uuid, p_step jsonb, p_position integer DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before jsonb := drumbeat.lock_steps(p_sequence_id);
    v_count integer := pg_catalog.jsonb_array_length(v_before);
    v_position integer := COALESCE(p_position, v_count + 1);
    v_id uuid;
BEGIN
    IF v_position NOT BETWEEN 1 AND v_count + 1 THEN
        PERFORM drumbeat.invalid('position', pg_catalog.format('must be between 1 and %s', v_count + 1));
    END IF;
    IF pg_catalog.jsonb_typeof(p_step) IS DISTINCT FROM 'object' THEN
        PERFORM drumbeat.invalid('step', 'must be a step object');
    END IF;
    PERFORM drumbeat.save_step_edit(p_sequence_id, v_before,
        COALESCE((SELECT pg_catalog.jsonb_agg(e.step ORDER BY e.position)
                  FROM pg_catalog.jsonb_array_elements(v_before) WITH ORDINALITY AS e(step, position)
                  WHERE e.position < v_position), '[]')
        || pg_catalog.jsonb_build_array(p_step - 'id' - 'position')
        || COALESCE((SELECT pg_catalog.jsonb_agg(e.step ORDER BY e.position)
                     FROM pg_catalog.jsonb_array_elements(v_before) WITH ORDINALITY AS e(step, position)
                     WHERE e.position >= v_position), '[]'));
    SELECT st.id INTO v_id FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL AND st.position = v_position;
    RETURN v_id;
END
$$;

-- Why: change the fields p_changes gives (a JSON null clears one); positions do not move, so nothing is
-- renumbered. Enrollments waiting on the step are re-planned with its new delay, send_at or window.
CREATE OR REPLACE FUNCTION drumbeat_api.update_step(p_sequence_id uuid, p_step_id uuid, p_changes jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before jsonb := drumbeat.lock_steps(p_sequence_id);
    v_index integer := drumbeat.step_index(v_before, p_step_id);
    v_step jsonb;
BEGIN
    IF pg_catalog.jsonb_typeof(p_changes) IS DISTINCT FROM 'object' THEN
        PERFORM drumbeat.invalid('changes', 'must be an object of step fields');
    END IF;
    SELECT COALESCE(pg_catalog.jsonb_object_agg(f.key, f.value), '{}') INTO v_step
    FROM pg_catalog.jsonb_each((v_before -> (v_index - 1)) || (p_changes - 'id')) AS f
    WHERE f.value <> 'null'::jsonb;
    PERFORM drumbeat.save_step_edit(p_sequence_id, v_before,
        pg_catalog.jsonb_set(v_before, ARRAY[(v_index - 1)::text], v_step));
END
$$;

-- Why: remove a step. Enrollments waiting on it move to the step that now follows (or end when none is
-- left); the step stays in the records (deliveries and events point at it). PT409 when a condition looks
-- at it, or when it is the last step (archive the sequence instead).
CREATE OR REPLACE FUNCTION drumbeat_api.remove_step(p_sequence_id uuid, p_step_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before jsonb := drumbeat.lock_steps(p_sequence_id);
    v_index integer := drumbeat.step_index(v_before, p_step_id);
BEGIN
    IF pg_catalog.jsonb_array_length(v_before) = 1 THEN
        PERFORM drumbeat.raise_error('PT409', 'a sequence needs at least one step: archive it instead', 'step_id');
    END IF;
    PERFORM drumbeat.save_step_edit(p_sequence_id, v_before, v_before - (v_index - 1));
END
$$;

-- Why: put the live steps in a new order (p_step_ids: each live step's id, once). Steps keep their ids,
-- so enrollments keep their place; conditions follow the steps they look at (PT422 from the definition's
-- checks when one would now look forward).
CREATE OR REPLACE FUNCTION drumbeat_api.reorder_steps(p_sequence_id uuid, p_step_ids uuid[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before jsonb := drumbeat.lock_steps(p_sequence_id);
    v_count integer := pg_catalog.jsonb_array_length(v_before);
BEGIN
    IF COALESCE(pg_catalog.cardinality(p_step_ids), 0) <> v_count
       OR (SELECT pg_catalog.count(DISTINCT i) FROM pg_catalog.unnest(p_step_ids) AS i) <> v_count
       OR EXISTS (SELECT 1 FROM pg_catalog.unnest(p_step_ids) AS i
                  WHERE NOT v_before @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('id', i))) THEN
        PERFORM drumbeat.invalid('step_ids', pg_catalog.format(
            'must list each of the sequence''s %s steps once (GET .../steps for their ids)', v_count));
    END IF;
    PERFORM drumbeat.save_step_edit(p_sequence_id, v_before,
        (SELECT pg_catalog.jsonb_agg(v_before -> (drumbeat.step_index(v_before, i) - 1) ORDER BY o)
         FROM pg_catalog.unnest(p_step_ids) WITH ORDINALITY AS u(i, o)));
END
$$;
