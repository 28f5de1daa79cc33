-- 0011 dispatch: the worker's role and the claim / record / recover protocol of DESIGN.md
-- ("Dispatch protocol"), with the caps that hold message steps back. At most once: a delivery row in
-- status 'sending' with a unique idempotency key exists before the provider is called; a delivery
-- left 'sending' past its lease becomes 'unknown' and is never re-sent.

-- The dispatcher's role: operators create a login role in it (CREATE ROLE drumbeat_worker_login LOGIN
-- IN ROLE drumbeat_worker). It sees every tenant's rows (it serves them all) and executes only the
-- worker-side functions.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_worker') THEN
        CREATE ROLE drumbeat_worker NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA drumbeat TO drumbeat_worker;

DO $policies$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['timezones', 'workspaces', 'workspace_members', 'api_keys', 'senders',
        'contacts', 'sequences', 'sequence_steps', 'enrollments', 'deliveries', 'tasks', 'events', 'holidays']
    LOOP
        EXECUTE pg_catalog.format(
            'CREATE POLICY %I ON drumbeat.%I TO drumbeat_worker USING (true) WITH CHECK (true)',
            v_table || '_worker', v_table);
    END LOOP;
END
$policies$;
GRANT SELECT ON ALL TABLES IN SCHEMA drumbeat TO drumbeat_worker;
GRANT INSERT, UPDATE ON drumbeat.enrollments, drumbeat.deliveries, drumbeat.tasks, drumbeat.contacts TO drumbeat_worker;
GRANT UPDATE (sms_credits) ON drumbeat.workspaces TO drumbeat_worker;
GRANT INSERT ON drumbeat.events TO drumbeat_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA drumbeat TO drumbeat_worker;

-- Which attempt of its current step an enrollment is on (retries of transient send errors).
ALTER TABLE drumbeat.enrollments ADD COLUMN step_attempt integer NOT NULL DEFAULT 1,
    ADD CONSTRAINT enrollments_step_attempt_range CHECK (step_attempt BETWEEN 1 AND 10);

-- Why: the sender a message step uses: the sequence's sms_sender_id / email_sender_id, else the
-- workspace's first sender of that channel (oldest first, so the choice is stable).
CREATE FUNCTION drumbeat.step_sender(p_workspace_id uuid, p_settings jsonb, p_channel text)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT COALESCE((p_settings ->> (p_channel || '_sender_id'))::uuid,
                    (SELECT se.id FROM drumbeat.senders se WHERE se.workspace_id = p_workspace_id AND se.channel = p_channel
                     ORDER BY se.created_at, se.id LIMIT 1))
$$;

-- Why: lock a batch of due enrollments of active sequences, oldest due first; SKIP LOCKED lets many
-- workers share the queue without waiting on each other or taking the same row. Scheduled ones whose
-- start has come become active here.
CREATE FUNCTION drumbeat.lock_due(p_limit integer, p_now timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_ids uuid[];
BEGIN
    SELECT pg_catalog.array_agg(d.id) INTO v_ids FROM (
        SELECT e.id FROM drumbeat.enrollments e
        WHERE e.status IN ('scheduled', 'active') AND e.next_action_at <= p_now
          AND EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = e.sequence_id AND s.status = 'active')
        ORDER BY e.next_action_at
        LIMIT p_limit
        FOR UPDATE OF e SKIP LOCKED) AS d;
    UPDATE drumbeat.enrollments e SET status = 'active', started_at = COALESCE(e.started_at, p_now), updated_at = pg_catalog.now()
    WHERE e.id = ANY (v_ids) AND e.status = 'scheduled';
    RETURN COALESCE(v_ids, '{}');
END
$$;

-- Why: A/B variants are chosen by weight, deterministically per enrollment (the same person always
-- gets the same variant, and a retry sends the same text).
CREATE FUNCTION drumbeat.pick_variant(p_variants jsonb, p_enrollment_id uuid)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT v.value FROM (
        SELECT x.value, pg_catalog.sum((x.value ->> 'weight')::integer) OVER (ORDER BY x.o) AS upto,
               pg_catalog.sum((x.value ->> 'weight')::integer) OVER () AS total
        FROM pg_catalog.jsonb_array_elements(p_variants) WITH ORDINALITY AS x(value, o)) AS v
    WHERE v.upto > (pg_catalog.abs(pg_catalog.hashtext(p_enrollment_id::text)::bigint) % v.total)
    ORDER BY v.upto LIMIT 1
$$;

-- Why: manual steps (call, linkedin, manual_email, task) create a task for a person and the enrollment
-- waits (next_action_at NULL) until complete_task moves it on.
CREATE FUNCTION drumbeat.start_tasks(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    WITH manual AS (
        SELECT e.id, e.workspace_id, e.contact_id, e.assigned_to, st.id AS step_id, st.kind,
               COALESCE(st.name, pg_catalog.initcap(pg_catalog.replace(st.kind, '_', ' '))) AS title, st.task_description
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
          AND st.kind IN ('manual_email', 'call', 'linkedin', 'task')
    ), created AS (
        INSERT INTO drumbeat.tasks (workspace_id, enrollment_id, step_id, contact_id, kind, title, description, assigned_to, due_at)
        SELECT m.workspace_id, m.id, m.step_id, m.contact_id, m.kind, m.title, m.task_description, m.assigned_to, p_now
        FROM manual m
        ON CONFLICT (enrollment_id) WHERE status = 'pending' DO NOTHING
        RETURNING enrollment_id, id, step_id, workspace_id, contact_id
    ), logged AS (
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, enrollment_id, step_id, payload)
        SELECT c.workspace_id, 'task_created', c.contact_id, c.enrollment_id, c.step_id, pg_catalog.jsonb_build_object('task_id', c.id)
        FROM created c
    )
    UPDATE drumbeat.enrollments e SET next_action_at = NULL, updated_at = pg_catalog.now()
    FROM manual m WHERE e.id = m.id
$$;

-- Why: did an earlier step see this engagement? A reply counts whichever step it names (replies often
-- cannot be tied to a message); opens and clicks count on the step itself. `within` limits the look
-- to that long after the step was sent.
CREATE FUNCTION drumbeat.condition_holds(p_enrollment drumbeat.enrollments, p_condition jsonb)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    WITH target AS (
        SELECT st.id, (SELECT pg_catalog.max(d.sent_at) FROM drumbeat.deliveries d
                       WHERE d.enrollment_id = p_enrollment.id AND d.step_id = st.id) AS sent_at
        FROM drumbeat.sequence_steps st
        WHERE st.sequence_id = p_enrollment.sequence_id AND st.position = (p_condition ->> 'step')::integer AND st.removed_at IS NULL
    ), seen AS (
        SELECT EXISTS (
            SELECT 1 FROM drumbeat.events ev, target t
            WHERE ev.enrollment_id = p_enrollment.id
              AND ev.kind = pg_catalog.replace(p_condition ->> 'if', 'not_', '')
              AND (ev.step_id = t.id OR (ev.kind = 'replied' AND ev.step_id IS NULL))
              AND (p_condition -> 'within' IS NULL OR t.sent_at IS NULL
                   OR ev.occurred_at <= t.sent_at + drumbeat.parse_delay(p_condition -> 'within', 'within'))) AS happened
    )
    SELECT CASE WHEN p_condition ->> 'if' LIKE 'not\_%' THEN NOT happened ELSE happened END FROM seen
$$;

-- Why: an action step changes the contact (tag, untag, set_field), enrolls it in another active
-- sequence of the workspace, or records a webhook event for integrations to pick up.
CREATE FUNCTION drumbeat.apply_action(p_enrollment drumbeat.enrollments, p_action jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    CASE p_action ->> 'type'
        WHEN 'tag' THEN UPDATE drumbeat.contacts c SET tags = pg_catalog.array_append(pg_catalog.array_remove(c.tags, p_action ->> 'tag'), p_action ->> 'tag'),
                            updated_at = pg_catalog.now() WHERE c.id = p_enrollment.contact_id;
        WHEN 'untag' THEN UPDATE drumbeat.contacts c SET tags = pg_catalog.array_remove(c.tags, p_action ->> 'tag'), updated_at = pg_catalog.now()
                            WHERE c.id = p_enrollment.contact_id;
        WHEN 'set_field' THEN UPDATE drumbeat.contacts c SET fields = c.fields || pg_catalog.jsonb_build_object(p_action ->> 'field', p_action -> 'value'),
                            updated_at = pg_catalog.now() WHERE c.id = p_enrollment.contact_id;
        WHEN 'enroll' THEN
            INSERT INTO drumbeat.enrollments (workspace_id, sequence_id, contact_id, status, current_step_id, step_done_at,
                                              next_action_at, enrolled_at, started_at, metadata)
            SELECT s.workspace_id, s.id, p_enrollment.contact_id, 'active', st.id, p_now,
                   drumbeat.planned_at(st.id, p_enrollment.contact_id, p_now), p_now, p_now,
                   pg_catalog.jsonb_build_object('enrolled_by_enrollment', p_enrollment.id)
            FROM drumbeat.sequences s JOIN drumbeat.sequence_steps st ON st.sequence_id = s.id
                 AND st.id = drumbeat.next_live_step(s.id, 0)
            WHERE s.id = (p_action ->> 'sequence_id')::uuid AND s.workspace_id = p_enrollment.workspace_id AND s.status = 'active'
            ON CONFLICT (sequence_id, contact_id) WHERE status IN ('scheduled', 'active', 'paused') DO NOTHING;
        ELSE NULL;  -- 'webhook': the event written by run_flow_step is what integrations consume
    END CASE;
END
$$;

-- Why: condition and action steps run inside the claim, in SQL, at their planned instant (no window).
-- A condition continues, exits (the enrollment completes: its goal logic said stop) or jumps forward.
CREATE FUNCTION drumbeat.run_flow_step(p_enrollment_id uuid, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_enrollment drumbeat.enrollments;
    v_step drumbeat.sequence_steps;
    v_branch jsonb;
    v_result boolean;
    v_target uuid;
BEGIN
    SELECT * INTO v_enrollment FROM drumbeat.enrollments e WHERE e.id = p_enrollment_id;
    SELECT * INTO v_step FROM drumbeat.sequence_steps st WHERE st.id = v_enrollment.current_step_id;
    IF v_step.kind = 'action' THEN
        PERFORM drumbeat.apply_action(v_enrollment, v_step.action, p_now);
    ELSE
        v_result := drumbeat.condition_holds(v_enrollment, v_step.condition);
        v_branch := CASE WHEN v_result THEN v_step.condition -> 'then' ELSE v_step.condition -> 'else' END;
    END IF;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
    VALUES (v_enrollment.workspace_id, 'step_executed', v_enrollment.contact_id, v_enrollment.sequence_id, v_enrollment.id, v_step.id, p_now,
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('kind', v_step.kind, 'action', v_step.action,
                'result', v_result, 'branch', v_branch)));
    IF v_branch = '"exit"' THEN
        UPDATE drumbeat.enrollments e SET status = 'completed', exit_reason = 'condition_exit', completed_at = p_now,
            next_action_at = NULL, updated_at = pg_catalog.now() WHERE e.id = p_enrollment_id;
    ELSIF pg_catalog.jsonb_typeof(v_branch) = 'object' THEN
        v_target := drumbeat.next_live_step(v_enrollment.sequence_id, (v_branch ->> 'goto')::integer - 1);
        UPDATE drumbeat.enrollments e SET current_step_id = v_target, step_done_at = p_now, step_attempt = 1,
            next_action_at = drumbeat.planned_at(v_target, e.contact_id, p_now), updated_at = pg_catalog.now()
        WHERE e.id = p_enrollment_id AND v_target IS NOT NULL;
        IF v_target IS NULL THEN  -- the jump lands past the last live step: nothing is left to do
            UPDATE drumbeat.enrollments e SET status = 'completed', completed_at = p_now, next_action_at = NULL,
                step_done_at = p_now, updated_at = pg_catalog.now() WHERE e.id = p_enrollment_id;
        END IF;
    ELSE
        PERFORM drumbeat.advance_enrollment(p_enrollment_id, p_now);
    END IF;
END
$$;

-- Why: from here on a step's retries are counted; moving to the next step starts again at attempt 1.
CREATE OR REPLACE FUNCTION drumbeat.advance_enrollment(p_enrollment_id uuid, p_done_at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
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
        updated_at = pg_catalog.now(), next_action_at = drumbeat.planned_at(v_next, e.contact_id, p_done_at)
    WHERE e.id = p_enrollment_id;
END
$$;

-- Why: a message step whose contact cannot receive it on that channel (opted out, bounced, no address)
-- is skipped, with the reason in events, and the enrollment moves on; unsubscribes that should end
-- the enrollment already did so in record_event.
CREATE FUNCTION drumbeat.skip_unreachable(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_row record;
BEGIN
    FOR v_row IN
        SELECT e.id, e.workspace_id, e.contact_id, e.sequence_id, st.id AS step_id, st.kind,
               CASE WHEN (st.kind = 'sms' AND c.sms_opted_out_at IS NOT NULL) OR (st.kind = 'email' AND c.email_opted_out_at IS NOT NULL)
                    THEN 'opted_out' WHEN st.kind = 'email' AND c.bounced_at IS NOT NULL THEN 'bounced' ELSE 'no_address' END AS reason
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now AND st.kind IN ('sms', 'email')
          AND ((st.kind = 'sms' AND (c.sms_opted_out_at IS NOT NULL OR c.phone IS NULL))
               OR (st.kind = 'email' AND (c.email_opted_out_at IS NOT NULL OR c.bounced_at IS NOT NULL OR c.email IS NULL)))
    LOOP
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
        VALUES (v_row.workspace_id, 'step_skipped', v_row.contact_id, v_row.sequence_id, v_row.id, v_row.step_id, p_now,
                pg_catalog.jsonb_build_object('reason', v_row.reason, 'channel', v_row.kind));
        PERFORM drumbeat.advance_enrollment(v_row.id, p_now);
    END LOOP;
END
$$;

-- Caps. A message step held back by a cap is rescheduled to the next allowed instant, never dropped:
-- the sender's rate_per_second (spread over the next seconds) and daily_cap (per local day of the
-- workspace), the sequence's max_per_day (per local day of the sequence's time zone) and the
-- workspace's SMS credits. Ranks are taken over the whole due batch, so a batch never overshoots a
-- cap even when several caps hold different rows.

ALTER TABLE drumbeat.deliveries ADD COLUMN sequence_id uuid;
COMMENT ON COLUMN drumbeat.deliveries.sequence_id IS 'The enrollment''s sequence, kept here so that max_per_day is one index range.';
CREATE INDEX deliveries_sender_claimed_idx ON drumbeat.deliveries (sender_id, claimed_at);
COMMENT ON INDEX drumbeat.deliveries_sender_claimed_idx IS 'Serves the sender caps at claim: deliveries of a sender in the last second and since local midnight.';
CREATE INDEX deliveries_sequence_claimed_idx ON drumbeat.deliveries (sequence_id, claimed_at);
COMMENT ON INDEX drumbeat.deliveries_sequence_claimed_idx IS 'Serves the sequence''s max_per_day at claim: its deliveries since local midnight.';

-- Why: the instant a local day starts, and the next one, in a zone (caps count per local day).
CREATE FUNCTION drumbeat.local_day_start(p_at timestamptz, p_tz text, p_days_ahead integer DEFAULT 0)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$ SELECT (pg_catalog.date_trunc('day', p_at AT TIME ZONE p_tz) + pg_catalog.make_interval(days => p_days_ahead)) AT TIME ZONE p_tz $$;

-- Why: for each due message step of a batch, the instant until which a cap holds it (NULL: it may go
-- now) and which cap.
CREATE FUNCTION drumbeat.capped_steps(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(enrollment_id uuid, hold_until timestamptz, reason text)
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    WITH due AS (
        SELECT e.id, e.workspace_id, e.sequence_id, st.kind, e.next_action_at, w.timezone AS workspace_tz, w.sms_credits,
               COALESCE(NULLIF(s.settings ->> 'timezone', ''), w.timezone) AS sequence_tz,
               (s.settings ->> 'max_per_day')::integer AS max_per_day,
               drumbeat.step_sender(e.workspace_id, s.settings, st.kind) AS sender_id
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        JOIN drumbeat.workspaces w ON w.id = e.workspace_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    ), ranked AS (
        SELECT d.*, se.rate_per_second, se.daily_cap,
               pg_catalog.row_number() OVER (PARTITION BY d.sender_id ORDER BY d.next_action_at, d.id) AS sender_rank,
               pg_catalog.row_number() OVER (PARTITION BY d.sequence_id ORDER BY d.next_action_at, d.id) AS sequence_rank,
               pg_catalog.row_number() OVER (PARTITION BY d.workspace_id, d.kind ORDER BY d.next_action_at, d.id) AS channel_rank,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                WHERE x.sender_id = d.sender_id AND x.claimed_at > p_now - '1 second'::interval) AS sender_last_second,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                WHERE x.sender_id = d.sender_id AND x.claimed_at >= drumbeat.local_day_start(p_now, d.workspace_tz)) AS sender_today,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                WHERE x.sequence_id = d.sequence_id AND x.claimed_at >= drumbeat.local_day_start(p_now, d.sequence_tz)) AS sequence_today
        FROM due d LEFT JOIN drumbeat.senders se ON se.id = d.sender_id
    ), holds AS (
        SELECT r.id, v.hold_until, v.reason
        FROM ranked r, LATERAL (VALUES
            (CASE WHEN r.sender_rank > GREATEST(r.rate_per_second - r.sender_last_second, 0)
                  THEN p_now + pg_catalog.make_interval(secs => pg_catalog.ceil(
                      (r.sender_rank - GREATEST(r.rate_per_second - r.sender_last_second, 0)) / r.rate_per_second)::double precision) END,
             'sender_rate'),
            (CASE WHEN r.sender_today + r.sender_rank > r.daily_cap THEN drumbeat.local_day_start(p_now, r.workspace_tz, 1) END,
             'sender_daily_cap'),
            (CASE WHEN r.sequence_today + r.sequence_rank > r.max_per_day THEN drumbeat.local_day_start(p_now, r.sequence_tz, 1) END,
             'max_per_day'),
            (CASE WHEN r.kind = 'sms' AND r.channel_rank > r.sms_credits THEN p_now + '1 hour'::interval END,
             'no_sms_credits')) AS v(hold_until, reason)
        WHERE v.hold_until IS NOT NULL
    )
    SELECT DISTINCT ON (h.id) h.id, h.hold_until, h.reason FROM holds h ORDER BY h.id, h.hold_until DESC
$$;

-- Why: held steps move to the first allowed instant at or after their hold (windows still apply), with
-- the reason in events; they are claimed again then.
CREATE FUNCTION drumbeat.hold_capped(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    WITH held AS (
        UPDATE drumbeat.enrollments e
        SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, c.hold_until, NULL, true),
            updated_at = pg_catalog.now()
        FROM drumbeat.capped_steps(p_ids, p_now) AS c
        WHERE e.id = c.enrollment_id
        RETURNING e.id, e.workspace_id, e.contact_id, e.sequence_id, e.current_step_id, e.next_action_at, c.reason
    )
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
    SELECT h.workspace_id, 'held', h.contact_id, h.sequence_id, h.id, h.current_step_id, p_now,
           pg_catalog.jsonb_build_object('reason', h.reason, 'until', h.next_action_at)
    FROM held h
$$;

-- Why: the message steps of a locked batch become 'sending' deliveries (unique idempotency key:
-- enrollment, step, attempt) before anything is sent; the enrollment waits (next_action_at NULL) for
-- the record. Returns what the worker needs to render and send, nothing more.
CREATE FUNCTION drumbeat.claim_messages(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE sql
SET search_path = ''
AS $$
    WITH due AS MATERIALIZED (
        SELECT e.id AS enrollment_id, e.workspace_id, e.sequence_id, e.contact_id, e.step_attempt, st.id AS step_id, st.kind AS channel,
               drumbeat.pick_variant(st.variants, e.id) AS variant, st.subject, st.body, st.html_body,
               CASE st.kind WHEN 'sms' THEN c.phone ELSE c.email END AS to_address,
               drumbeat.step_sender(e.workspace_id, s.settings, st.kind) AS sender_id,
               pg_catalog.jsonb_build_object(
                   'contact', pg_catalog.jsonb_build_object('id', c.id, 'phone', c.phone, 'email', c.email, 'first_name', c.first_name,
                       'last_name', c.last_name, 'company', c.company, 'title', c.title, 'timezone', c.timezone, 'fields', c.fields, 'tags', c.tags),
                   'sequence', pg_catalog.jsonb_build_object('id', s.id, 'name', s.name),
                   'workspace', pg_catalog.jsonb_build_object('id', w.id, 'name', w.name)) AS context
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        JOIN drumbeat.workspaces w ON w.id = e.workspace_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    ), inserted AS (
        INSERT INTO drumbeat.deliveries AS d (workspace_id, enrollment_id, sequence_id, step_id, contact_id, sender_id, variant, channel,
            idempotency_key, attempt, scheduled_for, claimed_at)
        SELECT due.workspace_id, due.enrollment_id, due.sequence_id, due.step_id, due.contact_id, due.sender_id, due.variant ->> 'key', due.channel,
               due.enrollment_id || ':' || due.step_id || ':' || due.step_attempt, due.step_attempt, p_now, p_now
        FROM due WHERE due.sender_id IS NOT NULL
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING d.id, d.idempotency_key, d.enrollment_id, d.sender_id, d.attempt
    ), waiting AS (
        UPDATE drumbeat.enrollments e SET next_action_at = NULL, updated_at = pg_catalog.now()
        FROM inserted i WHERE e.id = i.enrollment_id
    )
    SELECT i.id, i.idempotency_key, i.enrollment_id, due.workspace_id, due.channel, i.attempt, due.to_address, se.address,
           COALESCE(due.variant ->> 'subject', due.subject), COALESCE(due.variant ->> 'body', due.body),
           COALESCE(due.variant ->> 'html_body', due.html_body), due.variant ->> 'key',
           due.context || pg_catalog.jsonb_build_object('sender', pg_catalog.jsonb_build_object('id', se.id, 'address', se.address, 'name', se.name))
    FROM inserted i JOIN due ON due.enrollment_id = i.enrollment_id JOIN drumbeat.senders se ON se.id = i.sender_id
$$;

-- Why: one call claims up to p_limit due enrollments: flow steps (conditions, actions) run right here,
-- possibly several in a row; manual steps open tasks; unreachable message steps are skipped; the rest
-- become 'sending' deliveries returned to the worker. Many workers may call it at once (SKIP LOCKED).
CREATE FUNCTION drumbeat.claim_due(p_limit integer DEFAULT 500)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_ids uuid[] := drumbeat.lock_due(p_limit, drumbeat.clock_now());
    v_flow uuid[];
BEGIN
    FOR v_round IN 1 .. 10 LOOP  -- bounded: jumps are forward-only, so chains are short
        SELECT pg_catalog.array_agg(e.id) INTO v_flow
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        WHERE e.id = ANY (v_ids) AND e.status = 'active' AND e.next_action_at <= v_now AND st.kind IN ('condition', 'action');
        EXIT WHEN v_flow IS NULL;
        PERFORM drumbeat.run_flow_step(f, v_now) FROM pg_catalog.unnest(v_flow) AS f;
    END LOOP;
    PERFORM drumbeat.start_tasks(v_ids, v_now);
    PERFORM drumbeat.skip_unreachable(v_ids, v_now);
    -- A message step with no sender at all (the last one was removed after activation) cannot run.
    PERFORM drumbeat.exit_enrollments(ARRAY(
        SELECT e.id FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        WHERE e.id = ANY (v_ids) AND e.status = 'active' AND e.next_action_at <= v_now AND st.kind IN ('sms', 'email')
          AND drumbeat.step_sender(e.workspace_id, s.settings, st.kind) IS NULL), 'failed', 'no_sender');
    PERFORM drumbeat.hold_capped(v_ids, v_now);
    RETURN QUERY SELECT * FROM drumbeat.claim_messages(v_ids, v_now);
END
$$;

-- Why: after a send attempt, the enrollment that waits on this delivery moves: on to the next step
-- when sent; to a retry of the same step (attempt + 1, backoff of 1 then 4 minutes, moved into the
-- step's allowed window) on a transient error; out of the sequence on a permanent one. 21610 is the
-- carrier saying the recipient replied STOP: the contact is opted out of SMS.
CREATE FUNCTION drumbeat.settle_enrollment(p_delivery drumbeat.deliveries, p_result jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM drumbeat.enrollments e WHERE e.id = p_delivery.enrollment_id AND e.status = 'active'
                   AND e.current_step_id = p_delivery.step_id AND e.next_action_at IS NULL) THEN
        RETURN;  -- it exited or moved meanwhile (a reply, a pause, an edit): nothing waits on this delivery
    ELSIF p_result ->> 'outcome' = 'sent' THEN
        PERFORM drumbeat.advance_enrollment(p_delivery.enrollment_id, p_now);
    ELSIF (p_result ->> 'transient')::boolean AND p_delivery.attempt < 3 THEN
        UPDATE drumbeat.enrollments e SET step_attempt = p_delivery.attempt + 1, updated_at = pg_catalog.now(),
            next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id,
                p_now + pg_catalog.make_interval(mins => (4 ^ (p_delivery.attempt - 1))::integer), NULL, true)
        WHERE e.id = p_delivery.enrollment_id;
    ELSIF p_result ->> 'error_code' = '21610' THEN
        UPDATE drumbeat.contacts c SET sms_opted_out_at = COALESCE(c.sms_opted_out_at, p_now), updated_at = pg_catalog.now()
        WHERE c.id = p_delivery.contact_id;
        PERFORM drumbeat.exit_enrollments(ARRAY[p_delivery.enrollment_id], 'unsubscribed', 'carrier_opt_out');
    ELSE
        PERFORM drumbeat.exit_enrollments(ARRAY[p_delivery.enrollment_id], 'failed',
            'send_failed' || COALESCE(': ' || (p_result ->> 'error_code'), ''));
    END IF;
END
$$;

-- Why: one call per batch records what the provider said for each delivery still 'sending' (a second
-- record of the same delivery changes nothing), charges SMS credits per segment, logs the outcome and
-- settles the enrollment. p_results: [{delivery_id, outcome: sent|failed, transient, provider_message_id,
-- error_code, error_message, segments, subject, body}]. Returns how many deliveries it recorded.
CREATE FUNCTION drumbeat.record_deliveries(p_results jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_row record;
    v_count integer := 0;
BEGIN
    FOR v_row IN
        SELECT d.id, r.value AS result FROM pg_catalog.jsonb_array_elements(p_results) AS r
        JOIN drumbeat.deliveries d ON d.id = (r.value ->> 'delivery_id')::uuid AND d.status = 'sending'
        ORDER BY d.id FOR UPDATE OF d
    LOOP
        PERFORM drumbeat.record_one_delivery(v_row.id, v_row.result, v_now);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

CREATE FUNCTION drumbeat.record_one_delivery(p_delivery_id uuid, p_result jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_delivery drumbeat.deliveries;
    v_sent boolean := p_result ->> 'outcome' = 'sent';
BEGIN
    UPDATE drumbeat.deliveries d SET status = CASE WHEN v_sent THEN 'sent' ELSE 'failed' END,
        sent_at = CASE WHEN v_sent THEN p_now END, provider_message_id = p_result ->> 'provider_message_id',
        error_code = p_result ->> 'error_code', error_message = pg_catalog.left(p_result ->> 'error_message', 1000),
        segments = (p_result ->> 'segments')::integer, subject = p_result ->> 'subject', body = p_result ->> 'body'
    WHERE d.id = p_delivery_id RETURNING * INTO v_delivery;
    IF v_sent AND v_delivery.channel = 'sms' THEN
        UPDATE drumbeat.workspaces w SET sms_credits = GREATEST(w.sms_credits - COALESCE(v_delivery.segments, 1), 0)
        WHERE w.id = v_delivery.workspace_id AND w.sms_credits IS NOT NULL;
    END IF;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, delivery_id, occurred_at, payload)
    SELECT v_delivery.workspace_id, CASE WHEN v_sent THEN 'sent' ELSE 'failed' END, v_delivery.contact_id, e.sequence_id,
           v_delivery.enrollment_id, v_delivery.step_id, v_delivery.id, p_now,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('channel', v_delivery.channel, 'attempt', v_delivery.attempt,
               'error_code', v_delivery.error_code, 'transient', p_result -> 'transient'))
    FROM drumbeat.enrollments e WHERE e.id = v_delivery.enrollment_id;
    PERFORM drumbeat.settle_enrollment(v_delivery, p_result, p_now);
END
$$;

-- Why: a delivery still 'sending' after its lease means the worker died mid-send: it may or may not
-- have reached the provider. It becomes 'unknown' (never re-sent: at most once), the incident is in
-- events, and the enrollment moves on as if the step was done.
CREATE FUNCTION drumbeat.recover_deliveries(p_lease interval DEFAULT '10 minutes')
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_delivery drumbeat.deliveries;
    v_count integer := 0;
BEGIN
    FOR v_delivery IN
        UPDATE drumbeat.deliveries d SET status = 'unknown', error_message = 'worker lease expired before the send was recorded'
        WHERE d.id IN (SELECT x.id FROM drumbeat.deliveries x WHERE x.status = 'sending' AND x.claimed_at < v_now - p_lease
                       FOR UPDATE SKIP LOCKED)
        RETURNING *
    LOOP
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, enrollment_id, step_id, delivery_id, occurred_at, payload)
        VALUES (v_delivery.workspace_id, 'delivery_unknown', v_delivery.contact_id, v_delivery.enrollment_id, v_delivery.step_id,
                v_delivery.id, v_now, pg_catalog.jsonb_build_object('claimed_at', v_delivery.claimed_at, 'lease', p_lease::text));
        PERFORM drumbeat.settle_enrollment(v_delivery, '{"outcome": "sent"}', v_now);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- The protocol functions above are the worker's alone: PUBLIC loses EXECUTE, and only drumbeat_worker
-- gets it (with the scheduling helpers of earlier migrations that they call, as the invoker).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat TO drumbeat_worker;
