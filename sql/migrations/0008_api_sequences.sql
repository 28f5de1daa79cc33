-- 0008 contract: sequences (create, update with live re-planning, activate, pause, resume, archive,
-- duplicate) and the scheduling helpers enrollments share.

-- Why: sequence-level audit entries (created, updated, activated, ...) all look alike.
CREATE FUNCTION drumbeat.log_sequence_event(p_sequence_id uuid, p_kind text, p_payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    INSERT INTO drumbeat.events (workspace_id, kind, sequence_id, actor_id, payload)
    SELECT s.workspace_id, p_kind, s.id, drumbeat.current_user_id(), p_payload
    FROM drumbeat.sequences s WHERE s.id = p_sequence_id
$$;

-- Why: "the next step" everywhere means the first live (not removed, active) step after a position.
CREATE FUNCTION drumbeat.next_live_step(p_sequence_id uuid, p_after_position integer)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT st.id FROM drumbeat.sequence_steps st
    WHERE st.sequence_id = p_sequence_id AND st.position > p_after_position
      AND st.removed_at IS NULL AND st.is_active
    ORDER BY st.position LIMIT 1
$$;

-- Why: when an enrollment's step is due, in its contact's time zone (contact -> sequence -> workspace
-- -> UTC), with the calculus of 0004; never before p_not_before (resume and edits: not in the past).
-- p_skip_delay: the step runs as soon as its window allows (skip_to_step), ignoring delay and send_at.
CREATE FUNCTION drumbeat.planned_at(p_step_id uuid, p_contact_id uuid, p_done timestamptz,
                                    p_not_before timestamptz DEFAULT NULL, p_skip_delay boolean DEFAULT false)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT drumbeat.next_action_at(p_done, CASE WHEN p_skip_delay THEN '0' ELSE st.delay END,
               CASE WHEN p_skip_delay THEN NULL ELSE st.send_at END, st.kind,
               drumbeat.recipient_timezone(c.timezone, s.settings, w.timezone), s.settings, s.workspace_id, p_not_before)
    FROM drumbeat.sequence_steps st
    JOIN drumbeat.sequences s ON s.id = st.sequence_id
    JOIN drumbeat.workspaces w ON w.id = s.workspace_id
    JOIN drumbeat.contacts c ON c.id = p_contact_id
    WHERE st.id = p_step_id
$$;

-- Why: a definition's steps stored in order with stable ids: a step given with its "id" is updated in
-- place, one without is new, and a live step left out is marked removed (deliveries and events keep
-- pointing at it). The position constraint is deferred, so reorders need no shuffling.
CREATE FUNCTION drumbeat.save_steps(p_sequence_id uuid, p_workspace_id uuid, p_steps jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
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

-- Why: a sequence is created from its definition (DESIGN.md), validated first so nothing is half-saved.
CREATE FUNCTION drumbeat_api.create_sequence(p_workspace_id uuid, p_definition jsonb)
RETURNS uuid
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
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
CREATE FUNCTION drumbeat.check_senders(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = ''
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
CREATE FUNCTION drumbeat.transition_sequence(p_sequence_id uuid, p_from text[], p_to text, p_start_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
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

-- Why: live enrollments waiting on a step get a fresh next_action_at from their "done" instant,
-- never in the past (due now at the earliest, inside the allowed window). Returns how many moved.
CREATE FUNCTION drumbeat.replan_enrollments(p_sequence_id uuid, p_only_overdue boolean)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, e.step_done_at, drumbeat.clock_now()),
        updated_at = pg_catalog.now()
    WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active') AND e.next_action_at IS NOT NULL
      AND (NOT p_only_overdue OR e.next_action_at < drumbeat.clock_now());
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

CREATE FUNCTION drumbeat_api.activate_sequence(p_sequence_id uuid, p_start_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    PERFORM drumbeat.check_senders(p_sequence_id);
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['draft', 'paused'], 'active', p_start_at);
    PERFORM drumbeat.replan_enrollments(p_sequence_id, true);
END
$$;

-- Why: pausing a sequence holds every enrollment where it is (the dispatcher only claims enrollments
-- of active sequences); enrollments keep their own status.
CREATE FUNCTION drumbeat_api.pause_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = ''
AS $$ SELECT drumbeat.transition_sequence(p_sequence_id, ARRAY['active'], 'paused') $$;

-- Why: steps that fell due while paused are re-planned from now into their allowed window, rather than
-- all firing at the moment of resume (possibly at night).
CREATE FUNCTION drumbeat_api.resume_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['paused'], 'active');
    PERFORM drumbeat.replan_enrollments(p_sequence_id, true);
END
$$;

-- Why: archiving stops all future sends (live enrollments are cancelled) and keeps every record.
CREATE FUNCTION drumbeat_api.archive_sequence(p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.transition_sequence(p_sequence_id, ARRAY['draft', 'active', 'paused'], 'archived');
    -- drumbeat.exit_enrollments comes with 0009; PL/pgSQL resolves it when this runs.
    PERFORM drumbeat.exit_enrollments(ARRAY(SELECT e.id FROM drumbeat.enrollments e
        WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active', 'paused')), 'cancelled', 'sequence_archived');
END
$$;

-- Why: a copy starts as a draft with the same settings and live steps (new step ids).
CREATE FUNCTION drumbeat_api.duplicate_sequence(p_sequence_id uuid, p_name text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
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

-- Why: an enrollment waiting on a step that an edit removed moves to the step that now follows the
-- last remaining step before it (new steps inserted there included); with nothing left it ends.
-- p_old_positions maps each step id to its position before the edit. Returns how many moved.
CREATE FUNCTION drumbeat.move_off_removed_steps(p_sequence_id uuid, p_old_positions jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE drumbeat.tasks t SET status = 'cancelled', completed_at = drumbeat.clock_now()
    FROM drumbeat.sequence_steps st
    WHERE t.step_id = st.id AND st.sequence_id = p_sequence_id AND st.removed_at IS NOT NULL AND t.status = 'pending';
    WITH moves AS (
        SELECT e.id, drumbeat.next_live_step(p_sequence_id, COALESCE((
            SELECT pg_catalog.max(kept.position) FROM drumbeat.sequence_steps kept
            WHERE kept.sequence_id = p_sequence_id AND kept.removed_at IS NULL
              AND (p_old_positions ->> kept.id::text)::integer < removed.position), 0)) AS next_step_id
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps removed ON removed.id = e.current_step_id
        WHERE e.sequence_id = p_sequence_id AND e.status IN ('scheduled', 'active', 'paused') AND removed.removed_at IS NOT NULL
    )
    UPDATE drumbeat.enrollments e SET
        current_step_id = COALESCE(m.next_step_id, e.current_step_id),
        status = CASE WHEN m.next_step_id IS NOT NULL THEN e.status WHEN e.status = 'active' THEN 'completed' ELSE 'cancelled' END,
        exit_reason = CASE WHEN m.next_step_id IS NULL AND e.status <> 'active' THEN 'steps_removed' END,
        completed_at = CASE WHEN m.next_step_id IS NULL THEN drumbeat.clock_now() END,
        paused_at = CASE WHEN m.next_step_id IS NOT NULL THEN e.paused_at END,
        next_action_at = CASE WHEN m.next_step_id IS NOT NULL AND e.status <> 'paused'
            THEN drumbeat.planned_at(m.next_step_id, e.contact_id, e.step_done_at, drumbeat.clock_now()) END,
        updated_at = pg_catalog.now()
    FROM moves m WHERE e.id = m.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Why: editing a live sequence: every enrollment follows the edited sequence from where it is (steps
-- already executed are never re-run), waiting enrollments are re-planned from their "done" instant,
-- and the edit is recorded with its new version and how many enrollments it moved.
CREATE FUNCTION drumbeat_api.update_sequence(p_sequence_id uuid, p_definition jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    v_status text;
    v_version integer;
    v_old_positions jsonb;
    v_moved integer;
BEGIN
    SELECT s.status INTO v_status FROM drumbeat.sequences s WHERE s.id = p_sequence_id FOR UPDATE;
    IF v_status = 'archived' THEN
        PERFORM drumbeat.raise_error('PT409', 'an archived sequence cannot be edited: duplicate it instead', 'status');
    END IF;
    PERFORM drumbeat.validate_definition(p_definition, v_workspace_id, p_sequence_id);
    SELECT pg_catalog.jsonb_object_agg(st.id, st.position) INTO v_old_positions
    FROM drumbeat.sequence_steps st WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL;
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
        'enrollments_replanned', drumbeat.replan_enrollments(p_sequence_id, false)));
END
$$;

GRANT EXECUTE ON FUNCTION drumbeat.log_sequence_event(uuid, text, jsonb), drumbeat.next_live_step(uuid, integer),
    drumbeat.planned_at(uuid, uuid, timestamptz, timestamptz, boolean), drumbeat.save_steps(uuid, uuid, jsonb),
    drumbeat.check_senders(uuid), drumbeat.transition_sequence(uuid, text[], text, timestamptz),
    drumbeat.replan_enrollments(uuid, boolean), drumbeat.move_off_removed_steps(uuid, jsonb)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION drumbeat_api.create_sequence(uuid, jsonb), drumbeat_api.update_sequence(uuid, jsonb),
    drumbeat_api.activate_sequence(uuid, timestamptz), drumbeat_api.pause_sequence(uuid),
    drumbeat_api.resume_sequence(uuid), drumbeat_api.archive_sequence(uuid), drumbeat_api.duplicate_sequence(uuid, text)
    TO authenticated, service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
