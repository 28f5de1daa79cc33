-- The dispatch protocol (docs/ARCHITECTURE.md, "Dispatch protocol"): claim due enrollments in one call
-- (flow steps run here, message steps become 'reserved' deliveries), start each delivery ('sending') right
-- before its provider call, then record the outcomes, a few at a time, and advance the enrollments; release
-- reservations nobody started and recover deliveries left in flight.
--
-- Holds. A message step held back by a cap is rescheduled to the next allowed instant, never dropped:
-- the sender's rate_per_second (spread over the next seconds) and daily_cap (per local day of the
-- workspace), the sequence's max_per_day (per local day of the sequence's time zone) and the
-- workspace's SMS credits. Ranks are taken over the whole due batch, so a batch never overshoots a
-- cap even when several caps hold different rows.

-- Why: the sender a message step uses: the sequence's sms_sender_id / email_sender_id, else the
-- workspace's first sender of that channel (oldest first, so the choice is stable), a shared one before a
-- member's own (which serves the enrollments assigned to that member: batch_senders).
CREATE OR REPLACE FUNCTION drumbeat.step_sender(p_workspace_id uuid, p_settings jsonb, p_channel text)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE((p_settings ->> (p_channel || '_sender_id'))::uuid,
                    (SELECT se.id FROM drumbeat.senders se WHERE se.workspace_id = p_workspace_id AND se.channel = p_channel
                     ORDER BY se.user_id IS NOT NULL, se.created_at, se.id LIMIT 1))
$$;

-- Why: lock a batch of due enrollments of active sequences, oldest due first; SKIP LOCKED lets many
-- workers share the queue without waiting on each other or taking the same row. Scheduled ones whose
-- start has come become active here. The sequence's status is a per-row look-up on purpose: written as
-- EXISTS, the planner hash-joins every due row and sorts them, so a claim cost grew with the backlog;
-- this way it walks the due index in order and stops after p_limit rows. JIT is off: the planner's
-- estimate for that walk is high enough to trigger JIT compilation, which costs more than the walk itself.
CREATE OR REPLACE FUNCTION drumbeat.lock_due(p_limit integer, p_now timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_ids uuid[];
BEGIN
    SELECT pg_catalog.array_agg(d.id) INTO v_ids FROM (
        SELECT e.id FROM drumbeat.enrollments e
        WHERE e.status IN ('scheduled', 'active') AND e.next_action_at <= p_now
          AND (SELECT s.status FROM drumbeat.sequences s WHERE s.id = e.sequence_id) = 'active'
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
CREATE OR REPLACE FUNCTION drumbeat.pick_variant(p_variants jsonb, p_enrollment_id uuid)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
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
CREATE OR REPLACE FUNCTION drumbeat.start_tasks(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
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

-- Why: does a clicked URL count as a click on the link a condition names? The same URL, or one that goes
-- on from it at a boundary: a query (?utm_source=...), an anchor (#plans) or a path below it (/pricing/eu).
CREATE OR REPLACE FUNCTION drumbeat.url_within(p_url text, p_link text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_url = p_link
        OR (pg_catalog.starts_with(p_url, p_link)
            AND (pg_catalog.right(p_link, 1) IN ('/', '?', '#', '&')
                 OR pg_catalog.substr(p_url, pg_catalog.length(p_link) + 1, 1) IN ('/', '?', '#')))
$$;

-- Why: did an earlier step see this engagement? A reply counts whichever step it names (replies often
-- cannot be tied to a message); opens and clicks count on the step itself, a click only on the link the
-- condition names (by URL or by the name its template gave it) when it names one. `within` limits the look to that long after the step was sent.
CREATE OR REPLACE FUNCTION drumbeat.condition_holds(p_enrollment drumbeat.enrollments, p_condition jsonb)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
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
              -- "clicked link X": that URL, or one that goes on from it past a boundary (its ?utm_... variants,
              -- its #anchors, pages below it), never merely a longer name (/pricing is not /pricing-old)
              AND (p_condition ->> 'link' IS NULL OR drumbeat.url_within(ev.payload ->> 'url', p_condition ->> 'link'))
              -- "clicked the link named X": the name its template gave it, whatever its case
              AND (p_condition ->> 'link_name' IS NULL
                   OR pg_catalog.lower(ev.payload ->> 'link_name') = pg_catalog.lower(p_condition ->> 'link_name'))
              AND (p_condition -> 'within' IS NULL OR t.sent_at IS NULL
                   OR ev.occurred_at <= t.sent_at + drumbeat.parse_delay(p_condition -> 'within', 'within'))) AS happened
    )
    SELECT CASE WHEN p_condition ->> 'if' LIKE 'not\_%' THEN NOT happened ELSE happened END FROM seen
$$;

-- Why: an enroll action is an API enrollment (drumbeat_api.enroll_contacts) made by the engine: the same
-- shared function decides it (drumbeat.enroll_into), so the target's rules hold exactly as they do for the
-- API: a future scheduled start makes the enrollment 'scheduled', a contact opted out of (or unreachable
-- on) the target's channel is not enrolled, a paused target takes the enrollment (it waits until the
-- target is resumed), and each enrollment gets its 'enrolled' event. The API refuses a draft or archived
-- target with an error; an action cannot raise in the middle of a claim, so it answers sequence_<status>
-- instead. Returns the outcome (enrolled | already_enrolled | opted_out | unreachable | not_found |
-- sequence_draft | sequence_archived | sequence_not_found | no_active_step), which run_flow_step logs on
-- the step's step_executed event. The target starts at its first live step, as the definition names none.
CREATE OR REPLACE FUNCTION drumbeat.enroll_by_action(p_enrollment drumbeat.enrollments, p_sequence_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sequence drumbeat.sequences;
    v_step drumbeat.sequence_steps;
BEGIN
    SELECT * INTO v_sequence FROM drumbeat.sequences s WHERE s.id = p_sequence_id AND s.workspace_id = p_enrollment.workspace_id;
    IF NOT FOUND OR v_sequence.status NOT IN ('active', 'paused') THEN
        RETURN 'sequence_' || COALESCE(v_sequence.status, 'not_found');
    END IF;
    SELECT * INTO v_step FROM drumbeat.sequence_steps st WHERE st.id = drumbeat.next_live_step(p_sequence_id, 0);
    IF NOT FOUND THEN
        RETURN 'no_active_step';
    END IF;
    RETURN (SELECT x.outcome FROM drumbeat.enroll_into(v_sequence, v_step, ARRAY[p_enrollment.contact_id], NULL, NULL,
                pg_catalog.jsonb_build_object('enrolled_by_enrollment', p_enrollment.id)) AS x);
END
$$;

-- Why: an action step changes the contact (tag, untag, set_field), enrolls it in another sequence of the
-- workspace (enroll_by_action), or sends a webhook (an event the webhook worker delivers: sql/functions/webhooks.sql).
CREATE OR REPLACE FUNCTION drumbeat.apply_action(p_enrollment drumbeat.enrollments, p_action jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE p_action ->> 'type'
        WHEN 'tag' THEN UPDATE drumbeat.contacts c SET tags = pg_catalog.array_append(pg_catalog.array_remove(c.tags, p_action ->> 'tag'), p_action ->> 'tag'),
                            updated_at = pg_catalog.now() WHERE c.id = p_enrollment.contact_id;
        WHEN 'untag' THEN UPDATE drumbeat.contacts c SET tags = pg_catalog.array_remove(c.tags, p_action ->> 'tag'), updated_at = pg_catalog.now()
                            WHERE c.id = p_enrollment.contact_id;
        WHEN 'set_field' THEN UPDATE drumbeat.contacts c SET fields = c.fields || pg_catalog.jsonb_build_object(p_action ->> 'field', p_action -> 'value'),
                            updated_at = pg_catalog.now() WHERE c.id = p_enrollment.contact_id;
        WHEN 'enroll' THEN PERFORM drumbeat.enroll_by_action(p_enrollment, (p_action ->> 'sequence_id')::uuid);
        WHEN 'webhook' THEN  -- sent to the workspace's endpoints (or the one named) by the webhook worker
            INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
            VALUES (p_enrollment.workspace_id, 'webhook', p_enrollment.contact_id, p_enrollment.sequence_id, p_enrollment.id,
                    p_enrollment.current_step_id, p_now, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'event', p_action ->> 'event', 'endpoint_id', (p_action ->> 'endpoint_id')::uuid)));
    END CASE;
END
$$;

-- Why: condition and action steps run inside the claim, in SQL, at their planned instant (no window).
-- A condition continues, exits (the enrollment completes: its goal logic said stop) or jumps forward; an
-- enroll action's outcome (enroll_by_action) is logged with the step.
CREATE OR REPLACE FUNCTION drumbeat.run_flow_step(p_enrollment_id uuid, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_enrollment drumbeat.enrollments;
    v_step drumbeat.sequence_steps;
    v_branch jsonb;
    v_result boolean;
    v_target uuid;
    v_outcome text;
BEGIN
    SELECT * INTO v_enrollment FROM drumbeat.enrollments e WHERE e.id = p_enrollment_id;
    SELECT * INTO v_step FROM drumbeat.sequence_steps st WHERE st.id = v_enrollment.current_step_id;
    IF v_step.action ->> 'type' = 'enroll' THEN  -- the one action with an outcome worth logging
        v_outcome := drumbeat.enroll_by_action(v_enrollment, (v_step.action ->> 'sequence_id')::uuid);
    ELSIF v_step.kind = 'action' THEN
        PERFORM drumbeat.apply_action(v_enrollment, v_step.action, p_now);
    ELSE
        v_result := drumbeat.condition_holds(v_enrollment, v_step.condition);
        v_branch := CASE WHEN v_result THEN v_step.condition -> 'then' ELSE v_step.condition -> 'else' END;
    END IF;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
    VALUES (v_enrollment.workspace_id, 'step_executed', v_enrollment.contact_id, v_enrollment.sequence_id, v_enrollment.id, v_step.id, p_now,
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('kind', v_step.kind, 'action', v_step.action,
                'result', v_result, 'branch', v_branch, 'outcome', v_outcome)));
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

-- Why: a message step whose contact cannot receive it on that channel (opted out, bounced, no address;
-- classify_due finds them) is skipped, with the reason in events, and the enrollment moves on;
-- unsubscribes that should end the enrollment already did so in record_event.
CREATE OR REPLACE FUNCTION drumbeat.skip_unreachable(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row record;
BEGIN
    FOR v_row IN
        SELECT e.id, e.workspace_id, e.contact_id, e.sequence_id, st.id AS step_id, st.kind,
               CASE WHEN (st.kind = 'sms' AND c.sms_opted_out_at IS NOT NULL) OR (st.kind = 'email' AND c.email_opted_out_at IS NOT NULL)
                    THEN 'opted_out'
                    WHEN (st.kind = 'email' AND c.bounced_at IS NOT NULL) OR (st.kind = 'sms' AND c.phone_bounced_at IS NOT NULL)
                    THEN 'bounced' ELSE 'no_address' END AS reason
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    LOOP
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
        VALUES (v_row.workspace_id, 'step_skipped', v_row.contact_id, v_row.sequence_id, v_row.id, v_row.step_id, p_now,
                pg_catalog.jsonb_build_object('reason', v_row.reason, 'channel', v_row.kind));
        PERFORM drumbeat.advance_enrollment(v_row.id, p_now);
    END LOOP;
END
$$;

-- Why: the instant a local day starts, and the next one, in a zone (caps count per local day).
CREATE OR REPLACE FUNCTION drumbeat.local_day_start(p_at timestamptz, p_tz text, p_days_ahead integer DEFAULT 0)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (pg_catalog.date_trunc('day', p_at AT TIME ZONE p_tz) + pg_catalog.make_interval(days => p_days_ahead)) AT TIME ZONE p_tz $$;

-- Why: for each due message step of a locked batch, the instant until which a hold keeps it (NULL: it
-- may go now) and which one: the sender's rate, daily caps, credits, and window_closed for a step claimed
-- more than late_claim_tolerance() after it came due whose window has closed meanwhile (workers were
-- down): it waits for its next allowed instant instead of going out at 3 a.m. the recipient's time.
-- Senders come from batch_senders instead of a call per row.
CREATE OR REPLACE FUNCTION drumbeat.capped_steps(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(enrollment_id uuid, hold_until timestamptz, reason text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT e.id, e.workspace_id, e.sequence_id, e.contact_id, e.current_step_id, st.kind, e.next_action_at,
               w.timezone AS workspace_tz, w.sms_credits,
               COALESCE(NULLIF(s.settings ->> 'timezone', ''), w.timezone) AS sequence_tz,
               (s.settings ->> 'max_per_day')::integer AS max_per_day, bs.sender_id
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        JOIN drumbeat.workspaces w ON w.id = e.workspace_id
        LEFT JOIN drumbeat.batch_senders(p_ids) AS bs
            ON bs.sequence_id = e.sequence_id AND bs.kind = st.kind AND bs.assigned_to IS NOT DISTINCT FROM e.assigned_to
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    ), senders AS (
        -- Usage per distinct sender, once per batch; today's count only where a daily cap asks for it.
        SELECT se.id, se.rate_per_second, se.daily_cap,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                WHERE x.sender_id = se.id AND x.claimed_at > p_now - '1 second'::interval) AS last_second,
               CASE WHEN se.daily_cap IS NOT NULL THEN (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                   WHERE x.sender_id = se.id AND x.claimed_at >= drumbeat.local_day_start(p_now, w.timezone)) END AS today
        FROM drumbeat.senders se JOIN drumbeat.workspaces w ON w.id = se.workspace_id
        WHERE se.id IN (SELECT d.sender_id FROM due d)
    ), sequences AS (
        SELECT q.sequence_id, (SELECT pg_catalog.count(*) FROM drumbeat.deliveries x
                               WHERE x.sequence_id = q.sequence_id
                                 AND x.claimed_at >= drumbeat.local_day_start(p_now, q.sequence_tz)) AS today
        FROM (SELECT DISTINCT d.sequence_id, d.sequence_tz FROM due d WHERE d.max_per_day IS NOT NULL) AS q
    ), ranked AS (
        SELECT d.*, se.rate_per_second, se.daily_cap, se.last_second AS sender_last_second,
               COALESCE(se.today, 0) AS sender_today, COALESCE(sq.today, 0) AS sequence_today,
               pg_catalog.row_number() OVER (PARTITION BY d.sender_id ORDER BY d.next_action_at, d.id) AS sender_rank,
               pg_catalog.row_number() OVER (PARTITION BY d.sequence_id ORDER BY d.next_action_at, d.id) AS sequence_rank,
               pg_catalog.row_number() OVER (PARTITION BY d.workspace_id, d.kind ORDER BY d.next_action_at, d.id) AS channel_rank
        FROM due d LEFT JOIN senders se ON se.id = d.sender_id LEFT JOIN sequences sq ON sq.sequence_id = d.sequence_id
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
            -- Credits count segments, but the claim cannot know them: the text is rendered by the worker. Every
            -- text costs at least one, so the claim reserves no more texts than the credits pay one segment
            -- each; start_sending holds those whose rendered segments the credits cannot pay (sms_over_credits).
            (CASE WHEN r.kind = 'sms' AND r.channel_rank > r.sms_credits THEN p_now + drumbeat.sms_credits_recheck() END,
             'no_sms_credits'),
            -- Claimed well after it came due (workers down, a backlog) and its window has closed since:
            -- held to the next allowed instant (hold_capped re-plans from p_now through the windows).
            -- Nested CASE, not AND: the calendar is computed only for late rows (AND has no set order).
            (CASE WHEN r.next_action_at < p_now - drumbeat.late_claim_tolerance() THEN
                  CASE WHEN drumbeat.planned_at(r.current_step_id, r.contact_id, p_now, NULL, true) > p_now
                       THEN p_now END END,
             'window_closed')) AS v(hold_until, reason)
        WHERE v.hold_until IS NOT NULL
    )
    SELECT DISTINCT ON (h.id) h.id, h.hold_until, h.reason FROM holds h ORDER BY h.id, h.hold_until DESC
$$;

-- Why: the circuit breaker waits this long between probes of a held channel or sender (auth failures and
-- outages; a 429 holds its sender only as long as its Retry-After asks).
CREATE OR REPLACE FUNCTION drumbeat.hold_probe_interval()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '1 minute' $$;

-- Why: the due message steps of a batch with the channel and sender each would go out on: what a hold
-- of the circuit breaker applies to.
CREATE OR REPLACE FUNCTION drumbeat.message_senders(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(id uuid, kind text, sender_id uuid)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.id, st.kind, bs.sender_id
    FROM drumbeat.enrollments e
    JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
    JOIN drumbeat.batch_senders(p_ids) AS bs
            ON bs.sequence_id = e.sequence_id AND bs.kind = st.kind AND bs.assigned_to IS NOT DISTINCT FROM e.assigned_to
    WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
$$;

-- Why: the circuit breaker's side of a claim. The message steps of a locked batch whose channel or sender is
-- held (drumbeat.channel_holds) wait for the hold's next probe, at the first allowed instant from then (no
-- attempt used, nothing fails, no event: the hold itself is what operators see). A hold whose probe time
-- came is taken by the first claim with steps under it: probe_at moves on by hold_probe_interval, so
-- concurrent claims keep holding, and this claim's steps go through; the dispatcher's first answer then
-- clears the hold (drumbeat.clear_holds) or extends it (drumbeat.hold_deliveries). Costs one look at an
-- empty table while every provider answers.
CREATE OR REPLACE FUNCTION drumbeat.hold_for_provider(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_probing uuid[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM drumbeat.channel_holds) THEN
        RETURN;
    END IF;
    WITH probing AS (
        -- A sender rate-limited for a second is probed again after seconds, not a minute: the steps that
        -- concurrent claims hold meanwhile wait that long.
        UPDATE drumbeat.channel_holds h
        SET probe_at = p_now + CASE WHEN h.reason = 'rate_limited' THEN interval '5 seconds' ELSE drumbeat.hold_probe_interval() END
        WHERE h.probe_at <= p_now
          AND EXISTS (SELECT 1 FROM drumbeat.message_senders(p_ids, p_now) AS d
                      WHERE d.kind = h.channel AND (h.sender_id IS NULL OR h.sender_id = d.sender_id))
        RETURNING h.id
    )
    SELECT pg_catalog.array_agg(p.id) INTO v_probing FROM probing p;
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, x.probe_at, NULL, true),
        updated_at = pg_catalog.now()
    FROM (SELECT DISTINCT ON (d.id) d.id, h.probe_at
          FROM drumbeat.message_senders(p_ids, p_now) AS d
          JOIN drumbeat.channel_holds h ON h.channel = d.kind AND (h.sender_id IS NULL OR h.sender_id = d.sender_id)
          WHERE h.id <> ALL (COALESCE(v_probing, '{}'))
          ORDER BY d.id, h.probe_at DESC) AS x
    WHERE e.id = x.id;
END
$$;

-- Why: a provider refused a send in a way that says nothing about the message and everything about the
-- provider (credentials refused, unreachable, an outage, 429): the channel (p_sender_id NULL) or the sender
-- is held until p_seconds from now, and the deliveries p_ids (the refused one, and the batch's reservations
-- under the same hold) go back unsent, no attempt used: their enrollments wait for the hold's next probe.
-- Only a send that certainly never reached the provider is given back here; an ambiguous one is recorded
-- unknown. Returns true when the hold is new (the worker logs it once).
CREATE OR REPLACE FUNCTION drumbeat.hold_deliveries(p_ids uuid[], p_channel text, p_sender_id uuid, p_reason text,
    p_error_code text, p_error_message text, p_seconds double precision)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_new boolean;
    v_probe_at timestamptz;
BEGIN
    INSERT INTO drumbeat.channel_holds AS h (channel, sender_id, reason, error_code, error_message, held_since, probe_at)
    VALUES (p_channel, p_sender_id, p_reason, p_error_code, pg_catalog.left(p_error_message, 1000), v_now,
            v_now + pg_catalog.make_interval(secs => p_seconds))
    ON CONFLICT ON CONSTRAINT channel_holds_one_per_scope DO UPDATE
    SET reason = excluded.reason, error_code = excluded.error_code, error_message = excluded.error_message,
        probe_at = GREATEST(h.probe_at, excluded.probe_at)
    RETURNING h.xmax::text = '0', h.probe_at INTO v_new, v_probe_at;
    WITH held AS (
        DELETE FROM drumbeat.deliveries d
        WHERE d.id = ANY (p_ids) AND d.status IN ('reserved', 'sending')
        RETURNING d.*
    ), requeued AS (
        UPDATE drumbeat.enrollments e
        SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, v_probe_at, NULL, true),
            updated_at = pg_catalog.now()
        FROM held x
        WHERE e.id = x.enrollment_id AND e.status = 'active' AND e.current_step_id = x.step_id AND e.next_action_at IS NULL
    )
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
    SELECT x.workspace_id, 'send_held', x.contact_id, x.sequence_id, x.enrollment_id, x.step_id, v_now,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('channel', x.channel, 'reason', p_reason,
               'error_code', p_error_code, 'until', v_probe_at))
    FROM held x WHERE x.status = 'sending';
    RETURN v_new;
END
$$;

-- Why: a send on a held channel or sender went through: the provider is back, so its holds go (the
-- enrollments waiting on them are claimed at their next probe time, at most hold_probe_interval away).
-- Returns the holds it cleared, for the worker's log line.
CREATE OR REPLACE FUNCTION drumbeat.clear_holds(p_channel text, p_sender_id uuid)
RETURNS TABLE(channel text, sender_id uuid, reason text, held_since timestamptz)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM drumbeat.channel_holds h
    WHERE h.channel = p_channel AND (h.sender_id IS NULL OR h.sender_id = p_sender_id)
    RETURNING h.channel, h.sender_id, h.reason, h.held_since
$$;

-- Why: held steps move to the first allowed instant at or after their hold (windows still apply), with
-- the reason in events; they are claimed again then.
CREATE OR REPLACE FUNCTION drumbeat.hold_capped(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
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

-- Why: the message steps of a locked batch become 'reserved' deliveries (unique idempotency key:
-- enrollment, step, attempt) before anything is sent, and the enrollment waits (next_action_at NULL) for
-- the record. A reservation lasts reservation_lease() unless the worker extends it (start_sending). Senders come once per (sequence, channel); a variant is picked only where the step has
-- variants; scheduled_for is the instant the step came due (so sent_at - scheduled_for is the send's
-- lateness). The context also tells the worker whether to track opens and clicks (sequence settings
-- track_opens / track_clicks, on unless set to false). Returns what the worker needs, nothing more.
CREATE OR REPLACE FUNCTION drumbeat.claim_messages(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH inserted AS (
        INSERT INTO drumbeat.deliveries AS d (workspace_id, enrollment_id, sequence_id, step_id, contact_id, sender_id, variant,
            channel, to_address, idempotency_key, attempt, scheduled_for, claimed_at, status, reserved_until)
        SELECT e.workspace_id, e.id, e.sequence_id, st.id, e.contact_id, bs.sender_id,
               CASE WHEN st.variants IS NOT NULL THEN drumbeat.pick_variant(st.variants, e.id) ->> 'key' END,
               st.kind, CASE st.kind WHEN 'sms' THEN c.phone ELSE c.email END,
               e.id || ':' || st.id || ':' || e.step_attempt, e.step_attempt, e.next_action_at, p_now,
               'reserved', p_now + drumbeat.reservation_lease()
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        JOIN drumbeat.batch_senders(p_ids) AS bs
            ON bs.sequence_id = e.sequence_id AND bs.kind = st.kind AND bs.assigned_to IS NOT DISTINCT FROM e.assigned_to
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now AND bs.sender_id IS NOT NULL
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING d.*
    ), waiting AS (
        UPDATE drumbeat.enrollments e SET next_action_at = NULL, updated_at = pg_catalog.now()
        WHERE e.id IN (SELECT i.enrollment_id FROM inserted i)
    )
    -- Everything else is looked up per delivery by primary key (never a join of the batch with itself).
    SELECT i.id, i.idempotency_key, i.enrollment_id, i.workspace_id, i.channel, i.attempt, i.to_address, se.address,
           COALESCE(v.value ->> 'subject', st.subject), COALESCE(v.value ->> 'body', st.body),
           COALESCE(v.value ->> 'html_body', st.html_body), i.variant,
           pg_catalog.jsonb_build_object(
               'contact', pg_catalog.jsonb_build_object('id', c.id, 'phone', c.phone, 'email', c.email, 'first_name', c.first_name,
                   'last_name', c.last_name, 'company', c.company, 'title', c.title, 'timezone', c.timezone, 'fields', c.fields, 'tags', c.tags),
               'sequence', pg_catalog.jsonb_build_object('id', s.id, 'name', s.name,
                   'track_opens', COALESCE((s.settings ->> 'track_opens')::boolean, true),
                   'track_clicks', COALESCE((s.settings ->> 'track_clicks')::boolean, true)),
               'workspace', pg_catalog.jsonb_build_object('id', w.id, 'name', w.name),
               'sender', pg_catalog.jsonb_build_object('id', se.id, 'address', se.address, 'name', se.name),
               'enrollment', pg_catalog.jsonb_build_object('id', en.id, 'metadata', en.metadata, 'enrolled_at', en.enrolled_at,
                   'assigned_to', en.assigned_to),
               'thread', CASE WHEN i.channel = 'email' AND COALESCE(v.value ->> 'subject', st.subject) IS NULL
                              THEN drumbeat.email_thread(i.enrollment_id, st.position) END)
    FROM inserted i
    JOIN drumbeat.sequence_steps st ON st.id = i.step_id
    JOIN drumbeat.sequences s ON s.id = i.sequence_id
    JOIN drumbeat.workspaces w ON w.id = i.workspace_id
    JOIN drumbeat.contacts c ON c.id = i.contact_id
    JOIN drumbeat.senders se ON se.id = i.sender_id
    JOIN drumbeat.enrollments en ON en.id = i.enrollment_id
    LEFT JOIN LATERAL (SELECT vv.value FROM pg_catalog.jsonb_array_elements(st.variants) AS vv WHERE vv.value ->> 'key' = i.variant) AS v ON true
$$;

-- Why: an email step without a subject follows up in the thread of the enrollment's previous email:
-- {subject, message_id, references} of the last one sent (the worker sends "Re: <subject>" with
-- In-Reply-To and References), or, when none was sent (a condition jumped over it), the subject template
-- of the nearest earlier email step, to start the thread with.
CREATE OR REPLACE FUNCTION drumbeat.email_thread(p_enrollment_id uuid, p_position integer)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(
        (SELECT pg_catalog.jsonb_build_object('subject', last.subject, 'message_id', last.provider_message_id,
                    'references', (SELECT pg_catalog.jsonb_agg(d.provider_message_id ORDER BY d.sent_at)
                                   FROM drumbeat.deliveries d
                                   WHERE d.enrollment_id = p_enrollment_id AND d.channel = 'email' AND d.sent_at IS NOT NULL
                                     AND d.provider_message_id LIKE '<%>'))
         FROM drumbeat.deliveries last
         WHERE last.enrollment_id = p_enrollment_id AND last.channel = 'email' AND last.sent_at IS NOT NULL
           AND last.subject IS NOT NULL
         ORDER BY last.sent_at DESC LIMIT 1),
        (SELECT pg_catalog.jsonb_build_object('subject_template', st.subject)
         FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.sequence_id = e.sequence_id
         WHERE e.id = p_enrollment_id AND st.kind = 'email' AND st.subject IS NOT NULL AND st.removed_at IS NULL
           AND st.position < p_position
         ORDER BY st.position DESC LIMIT 1))
$$;

-- Why: one call claims up to p_limit due enrollments. The batch is classified once; flow steps
-- (conditions, actions) run right here, possibly several in a row, and the batch is classified again
-- after them; manual steps open tasks; unreachable message steps are skipped; a message step with no
-- sender at all (the last one was removed after activation) fails; the rest pass the holds (a held
-- provider, caps, rates, windows) and become
-- 'reserved' deliveries returned to the worker. Message steps whose delivery already existed (paused while
-- in flight, then resumed; a sent step moved later) are settled by it (settle_already_claimed), so they
-- never wedge the head of the queue. Many workers may call it at once (SKIP LOCKED).
CREATE OR REPLACE FUNCTION drumbeat.claim_due(p_limit integer DEFAULT 500)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_ids uuid[] := drumbeat.lock_due(p_limit, v_now);
    v_batch record;
BEGIN
    FOR v_round IN 1 .. 10 LOOP  -- bounded: jumps are forward-only, so chains are short
        v_batch := drumbeat.classify_due(v_ids, v_now);
        EXIT WHEN v_batch.flow IS NULL;
        PERFORM drumbeat.run_flow_step(f, v_now) FROM pg_catalog.unnest(v_batch.flow) AS f;
    END LOOP;
    -- After a tenth flow round the classes above predate it; those flow steps wait for the next claim.
    IF v_batch.manual IS NOT NULL THEN
        PERFORM drumbeat.start_tasks(v_batch.manual, v_now);
    END IF;
    IF v_batch.unreachable IS NOT NULL THEN
        PERFORM drumbeat.skip_unreachable(v_batch.unreachable, v_now);
    END IF;
    IF v_batch.no_sender IS NOT NULL THEN
        PERFORM drumbeat.exit_enrollments(v_batch.no_sender, 'failed', 'no_sender');
    END IF;
    IF v_batch.messages IS NOT NULL THEN
        PERFORM drumbeat.hold_for_provider(v_batch.messages, v_now);
        PERFORM drumbeat.lock_daily_caps(v_batch.messages);
        PERFORM drumbeat.hold_capped(v_batch.messages, v_now);
        RETURN QUERY SELECT * FROM drumbeat.claim_messages(v_batch.messages, v_now);
        PERFORM drumbeat.settle_already_claimed(v_batch.messages, v_now);
    END IF;
END
$$;

-- Why: after a send attempt, the enrollment that waits on this delivery moves: on to the next step
-- when sent; to a retry of the same step (attempt + 1, backoff of 1 then 4 minutes unless the result
-- says retry_in, moved into the step's allowed window) on a transient error; out of the sequence on a permanent one. 21610 is the
-- carrier saying the recipient replied STOP: the contact is opted out of SMS. A refusal that names the
-- address bad (is_hard_bounce) is applied as a bounce first: contact marked, 'bounced' logged, on_bounce.
CREATE OR REPLACE FUNCTION drumbeat.settle_enrollment(p_delivery drumbeat.deliveries, p_result jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
                p_now + COALESCE((p_result ->> 'retry_in')::interval,
                                 pg_catalog.make_interval(mins => (4 ^ (p_delivery.attempt - 1))::integer)), NULL, true)
        WHERE e.id = p_delivery.enrollment_id;
    ELSIF p_result ->> 'error_code' = '21610' THEN
        UPDATE drumbeat.contacts c SET sms_opted_out_at = COALESCE(c.sms_opted_out_at, p_now), updated_at = pg_catalog.now()
        WHERE c.id = p_delivery.contact_id;
        PERFORM drumbeat.exit_enrollments(ARRAY[p_delivery.enrollment_id], 'unsubscribed', 'carrier_opt_out');
    ELSE
        IF drumbeat.is_hard_bounce(p_delivery.channel, p_result ->> 'error_code', p_result ->> 'error_message') THEN
            PERFORM drumbeat.apply_engagement(p_delivery.workspace_id, p_delivery.contact_id, 'bounced', p_delivery.channel,
                pg_catalog.jsonb_build_object('channel', p_delivery.channel, 'delivery_id', p_delivery.id,
                                              'error_code', p_result ->> 'error_code'));
        END IF;
        -- Still here when it was no bounce, or the sequence does not exit on one.
        PERFORM drumbeat.exit_enrollments(ARRAY(
            SELECT e.id FROM drumbeat.enrollments e WHERE e.id = p_delivery.enrollment_id AND e.status = 'active'),
            'failed', 'send_failed' || COALESCE(': ' || (p_result ->> 'error_code'), ''));
    END IF;
END
$$;

-- Why: the common case of a batch, set-based: the enrollments whose step was just sent move on to
-- their next step (or complete). The next step is looked up once per (sequence, position) and the
-- recipient's zone once per (sequence, contact zone); the next step's time once per (step, zone), since
-- every one of them was done at the same instant.
CREATE OR REPLACE FUNCTION drumbeat.advance_after_send(p_delivery_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH moving AS MATERIALIZED (
        SELECT e.id, e.sequence_id, st.position, c.timezone AS contact_tz
        FROM drumbeat.deliveries d
        JOIN drumbeat.enrollments e ON e.id = d.enrollment_id AND e.status = 'active'
             AND e.current_step_id = d.step_id AND e.next_action_at IS NULL
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        WHERE d.id = ANY (p_delivery_ids)
    ), next_steps AS MATERIALIZED (
        SELECT k.sequence_id, k.position, drumbeat.next_live_step(k.sequence_id, k.position) AS next_step
        FROM (SELECT DISTINCT m.sequence_id, m.position FROM moving m) AS k
    ), zones AS MATERIALIZED (
        SELECT k.sequence_id, k.contact_tz, drumbeat.recipient_timezone(k.contact_tz, s.settings, w.timezone) AS tz
        FROM (SELECT DISTINCT m.sequence_id, m.contact_tz FROM moving m) AS k
        JOIN drumbeat.sequences s ON s.id = k.sequence_id
        JOIN drumbeat.workspaces w ON w.id = s.workspace_id
    ), targets AS MATERIALIZED (
        SELECT m.id, n.next_step, z.tz
        FROM moving m
        JOIN next_steps n ON n.sequence_id = m.sequence_id AND n.position = m.position
        JOIN zones z ON z.sequence_id = m.sequence_id AND z.contact_tz IS NOT DISTINCT FROM m.contact_tz
    ), planned AS MATERIALIZED (
        SELECT p.next_step, p.tz, drumbeat.next_action_at(p_now, st.delay, st.send_at, st.kind, p.tz, s.settings, s.workspace_id) AS at
        FROM (SELECT DISTINCT t.next_step, t.tz FROM targets t WHERE t.next_step IS NOT NULL) AS p
        JOIN drumbeat.sequence_steps st ON st.id = p.next_step
        JOIN drumbeat.sequences s ON s.id = st.sequence_id
    )
    UPDATE drumbeat.enrollments e SET
        status = CASE WHEN t.next_step IS NULL THEN 'completed' ELSE e.status END,
        completed_at = CASE WHEN t.next_step IS NULL THEN p_now END,
        current_step_id = COALESCE(t.next_step, e.current_step_id),
        step_done_at = p_now, step_attempt = 1, updated_at = pg_catalog.now(),
        next_action_at = pl.at
    FROM targets t LEFT JOIN planned pl ON pl.next_step = t.next_step AND pl.tz = t.tz
    WHERE e.id = t.id
$$;

-- Why: how long a reservation (a claimed delivery not yet started) lasts unless its worker extends it.
-- Short, so that the reservations of a worker that died are claimed again within seconds; the worker
-- extends the ones it still holds every few seconds (workers/dispatcher.py, HEARTBEAT_SECONDS).
CREATE OR REPLACE FUNCTION drumbeat.reservation_lease()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '10 seconds' $$;

-- Why: an unknown delivery that the provider can be asked about is first looked up this long after its
-- answer was lost (workers/reconcile.py): the provider's message list needs a moment to show a message.
CREATE OR REPLACE FUNCTION drumbeat.reconcile_delay()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '30 seconds' $$;

-- Why: reservations nobody will start go back to the queue: p_ids given, those (a worker that stops, or
-- whose enrollment moved on meanwhile); NULL, every one whose reservation lapsed (its worker died). The
-- row goes (nothing was sent, no attempt is used, caps no longer count it) and an enrollment still waiting
-- on it is due again at the instant it first came due, so it keeps its place at the head of the queue.
-- A reservation being started at this moment is skipped (SKIP LOCKED): starting wins. Returns how many.
CREATE OR REPLACE FUNCTION drumbeat.release_reservations(p_ids uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH released AS (
        DELETE FROM drumbeat.deliveries d
        WHERE d.id IN (SELECT x.id FROM drumbeat.deliveries x
                       WHERE x.status = 'reserved'
                         AND CASE WHEN p_ids IS NULL THEN x.reserved_until < drumbeat.clock_now() ELSE x.id = ANY (p_ids) END
                       FOR UPDATE SKIP LOCKED)
        RETURNING d.enrollment_id, d.step_id, d.scheduled_for
    ), requeued AS (
        UPDATE drumbeat.enrollments e SET next_action_at = r.scheduled_for, updated_at = pg_catalog.now()
        FROM released r
        WHERE e.id = r.enrollment_id AND e.status = 'active' AND e.current_step_id = r.step_id AND e.next_action_at IS NULL
    )
    SELECT pg_catalog.count(*)::integer FROM released
$$;

-- Why: how long an SMS the credits cannot pay waits before it is tried again (at the claim or at its start).
CREATE OR REPLACE FUNCTION drumbeat.sms_credits_recheck()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '1 hour' $$;

-- Why: how many segments an SMS text costs, counted exactly as app/core/templates.py's sms_segments counts
-- them (a test keeps the two equal): GSM-7 when every character is in its basic or extension set (160
-- septets for a single message, 153 per part of a long one; an extension character takes two), else UCS-2
-- (70 UTF-16 units, then 67 per part; a character beyond the BMP takes two). SQL needs it because credits,
-- which count segments, are decided here (sms_over_credits).
CREATE OR REPLACE FUNCTION drumbeat.sms_segments(p_text text)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH sets (basic, extension) AS (VALUES (
        '@£$¥èéùìòÇ' || pg_catalog.chr(10) || 'Øø' || pg_catalog.chr(13) || 'ÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&''()*+,-./0123456789:;<=>?'
            || '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà',
        '^{}\[~]|€' || pg_catalog.chr(12))
    ), counted AS (
        SELECT pg_catalog.translate(p_text, s.basic || s.extension, '') = '' AS gsm7,
               2 * pg_catalog.length(p_text) - pg_catalog.length(pg_catalog.translate(p_text, s.extension, '')) AS septets,
               pg_catalog.length(p_text) + pg_catalog.length(pg_catalog.regexp_replace(p_text, '[^\U00010000-\U0010FFFF]', '', 'g')) AS units
        FROM sets s
    )
    SELECT CASE WHEN c.gsm7 THEN CASE WHEN c.septets <= 160 THEN 1 ELSE pg_catalog.ceil(c.septets / 153.0)::integer END
                ELSE CASE WHEN c.units <= 70 THEN 1 ELSE pg_catalog.ceil(c.units / 67.0)::integer END END
    FROM counted c
$$;

-- Why: the SMS of a chunk about to start (p_start, with p_bodies as start_sending takes them) that the
-- workspace's credits cannot pay: credits count segments, and only here is the rendered text known. Credits
-- are charged when a send is recorded, so the texts still in flight ('sending', their segments counted at
-- start) are owed already; the chunk's texts are paid in order, a text without a body counted as one segment.
-- The credit-limited workspaces are locked first (in id order: no deadlock), so that two workers starting
-- texts of one workspace at once count each other's; the count is a separate statement, taken after the lock.
CREATE OR REPLACE FUNCTION drumbeat.sms_over_credits(p_start uuid[], p_bodies text[])
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_over uuid[];
BEGIN
    -- NO KEY UPDATE: it serialises the credit count without blocking the foreign-key checks (KEY SHARE) of
    -- every insert that names the workspace (claims, enrollments, events) meanwhile.
    PERFORM 1 FROM drumbeat.workspaces w
    WHERE w.sms_credits IS NOT NULL
      AND w.id IN (SELECT d.workspace_id FROM drumbeat.deliveries d
                   WHERE d.id = ANY (p_start) AND d.channel = 'sms' AND d.status = 'reserved')
    ORDER BY w.id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- no SMS, or unlimited credits: nothing to count
    END IF;
    WITH chunk AS (
        SELECT d.id, d.workspace_id, w.sms_credits,
               pg_catalog.sum(COALESCE(drumbeat.sms_segments(b.body), 1)) OVER (PARTITION BY d.workspace_id ORDER BY b.n) AS upto
        FROM ROWS FROM (pg_catalog.unnest(p_start), pg_catalog.unnest(COALESCE(p_bodies, '{}'))) WITH ORDINALITY AS b(id, body, n)
        JOIN drumbeat.deliveries d ON d.id = b.id AND d.channel = 'sms' AND d.status = 'reserved'
        JOIN drumbeat.workspaces w ON w.id = d.workspace_id AND w.sms_credits IS NOT NULL
    ), owed AS (
        SELECT x.workspace_id, pg_catalog.sum(COALESCE(x.segments, 1)) AS segments FROM drumbeat.deliveries x
        WHERE x.status = 'sending' AND x.channel = 'sms' AND x.workspace_id IN (SELECT c.workspace_id FROM chunk c)
        GROUP BY x.workspace_id
    )
    SELECT pg_catalog.array_agg(c.id) INTO v_over
    FROM chunk c LEFT JOIN owed o ON o.workspace_id = c.workspace_id
    WHERE c.upto + COALESCE(o.segments, 0) > c.sms_credits;
    RETURN v_over;
END
$$;

-- Why: texts the credits cannot pay (sms_over_credits) go back unsent: the reservation goes (no attempt
-- used, caps no longer count it) and the enrollment waits sms_credits_recheck(), then for its first allowed
-- instant, logged as the claim logs the same hold ('held', reason no_sms_credits).
CREATE OR REPLACE FUNCTION drumbeat.hold_for_credits(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH given_back AS (
        DELETE FROM drumbeat.deliveries d WHERE d.id = ANY (p_ids) AND d.status = 'reserved'
        RETURNING d.enrollment_id, d.step_id
    ), held AS (
        UPDATE drumbeat.enrollments e
        SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, p_now + drumbeat.sms_credits_recheck(), NULL, true),
            updated_at = pg_catalog.now()
        FROM given_back x
        WHERE e.id = x.enrollment_id AND e.status = 'active' AND e.current_step_id = x.step_id AND e.next_action_at IS NULL
        RETURNING e.id, e.workspace_id, e.contact_id, e.sequence_id, e.current_step_id, e.next_action_at
    )
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
    SELECT h.workspace_id, 'held', h.contact_id, h.sequence_id, h.id, h.current_step_id, p_now,
           pg_catalog.jsonb_build_object('reason', 'no_sms_credits', 'until', h.next_action_at)
    FROM held h
$$;

-- Why: right before its provider calls, the worker starts a chunk of its reservations (no larger than its
-- send concurrency): reserved -> sending, so a worker that dies costs at most the messages it had in
-- flight. Only reservations still held are started (one that lapsed may have been claimed by another
-- worker, which now owns the step), and only while the enrollment still waits on this step and the
-- contact can still receive it: a reply, a pause or an opt-out that came in meanwhile stops the message
-- (the reservation is released and the claim decides again), and an SMS only while the workspace's credits
-- pay its segments (else held: sms_over_credits). p_keep: the reservations the worker still holds for later,
-- extended. p_bodies (parallel to p_start, NULL where not given): the text about to be sent, kept on the
-- delivery at once (with an SMS's segments) where reconciliation will need it to find the message at the
-- provider should the worker die before recording it, and what an SMS's segments are counted from.
-- Returns the ids it started; the worker sends exactly those.
CREATE OR REPLACE FUNCTION drumbeat.start_sending(p_start uuid[], p_keep uuid[] DEFAULT '{}', p_bodies text[] DEFAULT NULL)
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_started uuid[];
BEGIN
    UPDATE drumbeat.deliveries d SET reserved_until = v_now + drumbeat.reservation_lease()
    WHERE d.id = ANY (p_keep) AND d.status = 'reserved';
    PERFORM drumbeat.hold_for_credits(drumbeat.sms_over_credits(p_start, p_bodies), v_now);
    WITH started AS (
        UPDATE drumbeat.deliveries d SET status = 'sending', started_at = v_now, reserved_until = NULL,
            body = COALESCE(b.body, d.body),
            segments = CASE WHEN d.channel = 'sms' AND b.body IS NOT NULL THEN drumbeat.sms_segments(b.body) END
        FROM ROWS FROM (pg_catalog.unnest(p_start), pg_catalog.unnest(COALESCE(p_bodies, '{}'))) AS b(id, body),
             drumbeat.enrollments e, drumbeat.contacts c
        WHERE d.id = b.id AND d.status = 'reserved'
          AND e.id = d.enrollment_id AND e.status = 'active' AND e.current_step_id = d.step_id AND e.next_action_at IS NULL
          AND c.id = d.contact_id AND drumbeat.reachable(c, d.channel)
        RETURNING d.id
    )
    SELECT pg_catalog.array_agg(x.id) INTO v_started FROM started x;
    v_started := COALESCE(v_started, '{}');
    PERFORM drumbeat.release_reservations(ARRAY(SELECT i FROM pg_catalog.unnest(p_start) AS i WHERE i <> ALL (v_started)));
    RETURN v_started;
END
$$;

-- Why: one call records what the provider said for each delivery still 'sending' (a second record of the
-- same delivery changes nothing), charges SMS credits per segment, logs the outcomes and moves the
-- enrollments on; failures (the rare case) are settled one by one. The worker records a few at a time, as
-- its sends finish. p_results: [{delivery_id, outcome: sent|unknown|failed, transient, reconcile,
-- provider_message_id, error_code, error_message, segments, subject, body}]. unknown (the provider may have
-- it) is never sent again: with reconcile (the provider can be asked: Twilio) the enrollment waits for
-- reconciliation (reconcile_after, workers/reconcile.py), otherwise it moves on as if sent. Returns how many
-- deliveries it recorded.
CREATE OR REPLACE FUNCTION drumbeat.record_deliveries(p_results jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_sent uuid[];
    v_failed_ids uuid[];
    v_count integer;
    v_failed record;
BEGIN
    WITH results AS (
        SELECT * FROM pg_catalog.jsonb_to_recordset(p_results) AS r(delivery_id uuid, outcome text, transient boolean,
            reconcile boolean, provider_message_id text, error_code text, error_message text, segments integer,
            subject text, body text)
    ), updated AS (
        UPDATE drumbeat.deliveries d SET status = CASE WHEN r.outcome IN ('sent', 'unknown') THEN r.outcome ELSE 'failed' END,
            sent_at = CASE WHEN r.outcome = 'sent' THEN v_now END, provider_message_id = r.provider_message_id,
            error_code = r.error_code, segments = COALESCE(r.segments, d.segments),
            -- A delivery whose address is gone was erased while in flight (erase_contact): its texts stay wiped.
            error_message = CASE WHEN d.to_address IS NOT NULL THEN pg_catalog.left(r.error_message, 1000) END,
            subject = CASE WHEN d.to_address IS NOT NULL THEN r.subject END,
            body = CASE WHEN d.to_address IS NOT NULL THEN r.body END,
            reconcile_after = CASE WHEN r.outcome = 'unknown' AND r.reconcile THEN v_now + drumbeat.reconcile_delay() END
        FROM results r WHERE d.id = r.delivery_id AND d.status = 'sending'
        RETURNING d.*, r.transient
    ), charged AS (
        UPDATE drumbeat.workspaces w SET sms_credits = GREATEST(w.sms_credits - u.segments, 0)
        FROM (SELECT x.workspace_id, pg_catalog.sum(COALESCE(x.segments, 1)) AS segments FROM updated x
              WHERE x.status = 'sent' AND x.channel = 'sms' GROUP BY x.workspace_id) AS u
        WHERE w.id = u.workspace_id AND w.sms_credits IS NOT NULL
    ), logged AS (
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, delivery_id, occurred_at, payload)
        SELECT u.workspace_id, CASE u.status WHEN 'unknown' THEN 'delivery_unknown' ELSE u.status END, u.contact_id,
               u.sequence_id, u.enrollment_id, u.step_id, u.id, v_now,
               pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('channel', u.channel, 'attempt', u.attempt,
                   'error_code', u.error_code, 'transient', u.transient,
                   'reason', CASE WHEN u.status = 'unknown' THEN 'ambiguous_provider_answer' END,
                   'reconcile', CASE WHEN u.reconcile_after IS NOT NULL THEN true END))
        FROM updated u
    )
    -- An unknown delivery may have gone out: the enrollment moves on as after a send, never sending it
    -- again, unless it waits for the provider's word (reconcile_after).
    SELECT pg_catalog.count(*),
           pg_catalog.array_agg(u.id) FILTER (WHERE u.status = 'sent' OR (u.status = 'unknown' AND u.reconcile_after IS NULL)),
           pg_catalog.array_agg(u.id) FILTER (WHERE u.status = 'failed')
    INTO v_count, v_sent, v_failed_ids FROM updated u;
    PERFORM drumbeat.advance_after_send(COALESCE(v_sent, '{}'), v_now);
    FOR v_failed IN
        SELECT d AS delivery, r.value AS result FROM pg_catalog.jsonb_array_elements(p_results) AS r
        JOIN drumbeat.deliveries d ON d.id = (r.value ->> 'delivery_id')::uuid
        WHERE d.id = ANY (v_failed_ids)
    LOOP
        PERFORM drumbeat.settle_enrollment(v_failed.delivery, v_failed.result, v_now);
    END LOOP;
    RETURN v_count;
END
$$;

-- Why: a delivery still 'sending' a lease after its provider call began means the worker died mid-send:
-- it may or may not have reached the provider. It becomes 'unknown' (never re-sent: at most once), the
-- incident is in events, and the enrollment moves on as if the step was done, except on the channels in
-- p_reconcile (the provider can be asked: Twilio), where it waits for reconciliation. Reservations never
-- started are not here: they lapse within seconds (release_reservations).
CREATE OR REPLACE FUNCTION drumbeat.recover_deliveries(p_lease interval DEFAULT '10 minutes', p_reconcile text[] DEFAULT '{}')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_delivery drumbeat.deliveries;
    v_count integer := 0;
BEGIN
    FOR v_delivery IN
        UPDATE drumbeat.deliveries d SET status = 'unknown', error_message = 'worker lease expired before the send was recorded',
            reconcile_after = CASE WHEN d.channel = ANY (p_reconcile) THEN v_now END
        WHERE d.id IN (SELECT x.id FROM drumbeat.deliveries x
                       WHERE x.status = 'sending' AND COALESCE(x.started_at, x.claimed_at) < v_now - p_lease
                       FOR UPDATE SKIP LOCKED)
        RETURNING *
    LOOP
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, enrollment_id, step_id, delivery_id, occurred_at, payload)
        VALUES (v_delivery.workspace_id, 'delivery_unknown', v_delivery.contact_id, v_delivery.enrollment_id, v_delivery.step_id,
                v_delivery.id, v_now, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'claimed_at', v_delivery.claimed_at, 'started_at', v_delivery.started_at, 'lease', p_lease::text,
                    'reason', 'lease_expired', 'reconcile', CASE WHEN v_delivery.reconcile_after IS NOT NULL THEN true END)));
        IF v_delivery.reconcile_after IS NULL THEN
            PERFORM drumbeat.settle_enrollment(v_delivery, '{"outcome": "sent"}', v_now);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Why: how long a reconciliation look-up may take before another worker may ask again about the same
-- delivery (its worker died mid-look-up), and how long an unanswerable delivery waits before reconciliation
-- gives up on it (it then stays unknown and its enrollment moves on as after a send: at most once).
CREATE OR REPLACE FUNCTION drumbeat.reconcile_lease()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '2 minutes' $$;

CREATE OR REPLACE FUNCTION drumbeat.reconcile_give_up()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '1 hour' $$;

-- Why: reconciliation (workers/reconcile.py) takes the unknown deliveries of p_channels whose turn came and
-- leases them (reconcile_after moves on by reconcile_lease), so two workers never ask about one at once. It
-- returns what the provider's message list is searched by: recipient, sender address, body, and when the
-- send began (the message cannot be older).
CREATE OR REPLACE FUNCTION drumbeat.due_reconciliations(p_channels text[], p_limit integer DEFAULT 50)
RETURNS TABLE(delivery_id uuid, channel text, to_address text, from_address text, body text, started_at timestamptz)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT x.id FROM drumbeat.deliveries x
        WHERE x.reconcile_after <= drumbeat.clock_now() AND x.status = 'unknown' AND x.channel = ANY (p_channels)
        ORDER BY x.reconcile_after
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE drumbeat.deliveries d SET reconcile_after = drumbeat.clock_now() + drumbeat.reconcile_lease()
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.channel, d.to_address, (SELECT se.address FROM drumbeat.senders se WHERE se.id = d.sender_id),
              d.body, COALESCE(d.started_at, d.claimed_at)
$$;

-- Why: what the provider said of each unknown delivery reconciliation asked about. p_results:
-- [{delivery_id, candidates, error_message}], candidates: the ids of the provider's messages that match it,
-- newest first. One that no other delivery holds means the provider has this message: it was sent (its id
-- kept for status callbacks, credits charged) and the enrollment moves on. None: it certainly never went
-- out, so it is a failed attempt like any refusal, retried at once (the reconcile delay was its backoff),
-- or the enrollment fails after the last attempt. candidates null: the provider could not be asked (its API failed):
-- asked again later with backoff, until reconcile_give_up, after which it stays unknown and the
-- enrollment moves on as after a send (never resent). Only deliveries still unknown and waiting are
-- touched, so a repeated call changes nothing. Returns how many it settled for good.
CREATE OR REPLACE FUNCTION drumbeat.settle_reconciliations(p_results jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_result record;
    v_delivery drumbeat.deliveries;
    v_age interval;
    v_sid text;
    v_found boolean;
    v_settled integer := 0;
BEGIN
    FOR v_result IN
        SELECT * FROM pg_catalog.jsonb_to_recordset(p_results) AS r(delivery_id uuid, candidates jsonb, error_message text)
        ORDER BY r.delivery_id
    LOOP
        SELECT * INTO v_delivery FROM drumbeat.deliveries d
        WHERE d.id = v_result.delivery_id AND d.status = 'unknown' AND d.reconcile_after IS NOT NULL
        FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        -- Two steps with the same text to the same person both in doubt: each provider message settles one.
        v_sid := (SELECT c.sid FROM pg_catalog.jsonb_array_elements_text(v_result.candidates) WITH ORDINALITY AS c(sid, n)
                  WHERE NOT EXISTS (SELECT 1 FROM drumbeat.deliveries o WHERE o.provider_message_id = c.sid AND o.id <> v_delivery.id)
                  ORDER BY c.n LIMIT 1);
        v_found := CASE WHEN pg_catalog.jsonb_typeof(v_result.candidates) = 'array' THEN v_sid IS NOT NULL END;
        v_age := v_now - COALESCE(v_delivery.started_at, v_delivery.claimed_at);
        IF v_found IS NULL AND v_age < drumbeat.reconcile_give_up() THEN
            -- Ask again: half the delivery's age (30 s at least, 10 minutes at most), so a short provider
            -- incident costs seconds and a long one a handful of look-ups.
            UPDATE drumbeat.deliveries d SET reconcile_after = v_now + LEAST(interval '10 minutes',
                GREATEST(drumbeat.reconcile_delay(), v_age / 2))
            WHERE d.id = v_delivery.id;
            CONTINUE;
        END IF;
        UPDATE drumbeat.deliveries d SET reconcile_after = NULL,
            status = CASE WHEN v_found THEN 'sent' WHEN NOT v_found THEN 'failed' ELSE 'unknown' END,
            sent_at = CASE WHEN v_found THEN v_now END,
            provider_message_id = CASE WHEN v_found THEN v_sid ELSE d.provider_message_id END,
            error_message = CASE
                WHEN v_found THEN NULL
                WHEN NOT v_found THEN 'not at the provider: ' || COALESCE(d.error_message, 'no answer')
                ELSE pg_catalog.left('reconciliation gave up: ' || COALESCE(v_result.error_message, 'no answer'), 1000) END
        WHERE d.id = v_delivery.id
        RETURNING * INTO v_delivery;
        IF v_delivery.status = 'sent' AND v_delivery.channel = 'sms' THEN
            UPDATE drumbeat.workspaces w SET sms_credits = GREATEST(w.sms_credits - COALESCE(v_delivery.segments, 1), 0)
            WHERE w.id = v_delivery.workspace_id AND w.sms_credits IS NOT NULL;
        END IF;
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, delivery_id, occurred_at, payload)
        VALUES (v_delivery.workspace_id,
                CASE v_delivery.status WHEN 'unknown' THEN 'delivery_unknown' ELSE v_delivery.status END,
                v_delivery.contact_id, v_delivery.sequence_id, v_delivery.enrollment_id, v_delivery.step_id, v_delivery.id, v_now,
                pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('channel', v_delivery.channel,
                    'attempt', v_delivery.attempt, 'error_code', v_delivery.error_code,
                    'transient', CASE WHEN v_delivery.status = 'failed' THEN true END,
                    'reason', CASE v_delivery.status WHEN 'sent' THEN 'reconciled_sent' WHEN 'failed' THEN 'reconciled_not_sent'
                                                     ELSE 'reconcile_gave_up' END)));
        -- Not at the provider: retried at once (within its window). The reconcile delay already spaced it from
        -- the attempt, and a run of provider failures trips the circuit breaker, not this.
        PERFORM drumbeat.settle_enrollment(v_delivery,
            pg_catalog.jsonb_build_object('outcome', CASE WHEN v_delivery.status = 'failed' THEN 'failed' ELSE 'sent' END,
                                          'transient', true, 'error_code', v_delivery.error_code, 'retry_in', '0 seconds'),
            v_now);
        v_settled := v_settled + 1;
    END LOOP;
    RETURN v_settled;
END
$$;

-- Why: the sender of each (sequence, channel, assignee) in a batch, resolved once per triple rather than
-- per row: an enrollment assigned to a member goes out from that member's own sender of the channel (a rep's
-- own mailbox or number: senders.user_id) when the workspace has one, else from the sequence's.
CREATE OR REPLACE FUNCTION drumbeat.batch_senders(p_ids uuid[])
RETURNS TABLE(sequence_id uuid, kind text, assigned_to uuid, sender_id uuid)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT q.sequence_id, q.kind, q.assigned_to,
           COALESCE((SELECT se.id FROM drumbeat.senders se
                     WHERE se.workspace_id = s.workspace_id AND se.channel = q.kind AND se.user_id = q.assigned_to
                     ORDER BY se.created_at, se.id LIMIT 1),
                    drumbeat.step_sender(s.workspace_id, s.settings, q.kind))
    FROM (SELECT DISTINCT e.sequence_id, st.kind, e.assigned_to
          FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
          WHERE e.id = ANY (p_ids) AND st.kind IN ('sms', 'email')) AS q
    JOIN drumbeat.sequences s ON s.id = q.sequence_id
$$;

-- Why: whether a contact can receive a message on a channel (not opted out, not bounced, has the address).
-- The one place that decides it: the claim asks before reserving, start_sending again right before the
-- provider call (an opt-out may have come in meanwhile). A plain expression, so the planner inlines it.
CREATE OR REPLACE FUNCTION drumbeat.reachable(p_contact drumbeat.contacts, p_channel text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_channel
        WHEN 'sms' THEN p_contact.sms_opted_out_at IS NULL AND p_contact.phone_bounced_at IS NULL AND p_contact.phone IS NOT NULL
        WHEN 'email' THEN p_contact.email_opted_out_at IS NULL AND p_contact.bounced_at IS NULL AND p_contact.email IS NOT NULL
        ELSE false
    END
$$;

-- Why: one pass over the still-due enrollments of a locked batch sorts them by what their current
-- step needs.
CREATE OR REPLACE FUNCTION drumbeat.classify_due(p_ids uuid[], p_now timestamptz,
    OUT flow uuid[], OUT manual uuid[], OUT unreachable uuid[], OUT no_sender uuid[], OUT messages uuid[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT e.id, e.sequence_id, e.contact_id, e.assigned_to, st.kind
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    ), classified AS (
        SELECT d.id, CASE
            WHEN d.kind IN ('condition', 'action') THEN 'flow'
            WHEN d.kind NOT IN ('sms', 'email') THEN 'manual'
            WHEN NOT drumbeat.reachable(c, d.kind) THEN 'unreachable'
            WHEN bs.sender_id IS NULL THEN 'no_sender'
            ELSE 'message' END AS class
        FROM due d
        LEFT JOIN drumbeat.contacts c ON c.id = d.contact_id AND d.kind IN ('sms', 'email')
        LEFT JOIN drumbeat.batch_senders(p_ids) AS bs
            ON bs.sequence_id = d.sequence_id AND bs.kind = d.kind AND bs.assigned_to IS NOT DISTINCT FROM d.assigned_to
    )
    SELECT pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'flow'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'manual'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'unreachable'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'no_sender'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'message')
    FROM classified x
$$;

-- Why: caps count the deliveries other claims have committed. Two claims of the same sender or sequence
-- at the same moment would each count without the other's deliveries and could together pass a daily
-- cap, so a claim holding steps under a daily cap (sender daily_cap, sequence max_per_day) first takes a
-- transaction lock per capped sender and sequence, in a fixed order (no deadlock), and counts after it.
-- rate_per_second is left unlocked: an overshoot there is bounded and spread over the next second,
-- while locking every sender would serialize all claims of a busy sender.
CREATE OR REPLACE FUNCTION drumbeat.lock_daily_caps(p_ids uuid[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.count(pg_catalog.pg_advisory_xact_lock(k.key)) FROM (
        SELECT DISTINCT pg_catalog.hashtextextended('drumbeat.daily_cap:' || capped.id::text, 0) AS key FROM (
            SELECT bs.sender_id AS id FROM drumbeat.batch_senders(p_ids) AS bs
            JOIN drumbeat.senders se ON se.id = bs.sender_id WHERE se.daily_cap IS NOT NULL
            UNION
            SELECT s.id FROM drumbeat.sequences s
            WHERE s.id IN (SELECT e.sequence_id FROM drumbeat.enrollments e WHERE e.id = ANY (p_ids))
              AND s.settings ? 'max_per_day') AS capped
        ORDER BY 1) AS k
$$;

-- Why 5 minutes: well above normal pickup lateness (p99 < 1 s), so only real delays are re-checked, and a
-- message at most that late past its window's close is an acceptable edge (the window was open when due).
CREATE OR REPLACE FUNCTION drumbeat.late_claim_tolerance()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '5 minutes' $$;

-- Why: the result record_deliveries would have been given for a delivery it has recorded: the outcome
-- from the delivery's status, and the transient flag from the failure's audit event.
CREATE OR REPLACE FUNCTION drumbeat.recorded_result(p_delivery drumbeat.deliveries)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'outcome', CASE WHEN p_delivery.status IN ('sent', 'delivered', 'unknown') THEN 'sent' ELSE 'failed' END,
        'error_code', p_delivery.error_code,
        'error_message', p_delivery.error_message,
        'transient', COALESCE((SELECT (ev.payload ->> 'transient')::boolean FROM drumbeat.events ev
                               WHERE ev.enrollment_id = p_delivery.enrollment_id AND ev.delivery_id = p_delivery.id
                                 AND ev.kind = 'failed'
                               ORDER BY ev.occurred_at DESC LIMIT 1), false))
$$;

-- Why: after claim_messages, the message steps of the batch that are still due are exactly the ones whose
-- delivery already existed (the others were claimed, held to a later time, or ended before). Each waits for
-- its delivery's record, or is settled by it now. Only these few rows pay the look-ups.
CREATE OR REPLACE FUNCTION drumbeat.settle_already_claimed(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_delivery drumbeat.deliveries;
BEGIN
    FOR v_delivery IN
        SELECT d.* FROM drumbeat.enrollments e
        JOIN drumbeat.deliveries d ON d.idempotency_key = e.id || ':' || e.current_step_id || ':' || e.step_attempt
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
        ORDER BY e.id
    LOOP
        -- Waiting (next_action_at NULL) is what settle_enrollment expects of the enrollment it settles.
        UPDATE drumbeat.enrollments e SET next_action_at = NULL, updated_at = pg_catalog.now()
        WHERE e.id = v_delivery.enrollment_id;
        IF v_delivery.status NOT IN ('reserved', 'sending') AND v_delivery.reconcile_after IS NULL THEN
            PERFORM drumbeat.settle_enrollment(v_delivery, drumbeat.recorded_result(v_delivery), p_now);
        END IF;
    END LOOP;
END
$$;

-- Why: whether a refused send says the address itself is bad (never worth another message to it).
-- Email: the enhanced status 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad address syntax, 5.1.10 null MX.
CREATE OR REPLACE FUNCTION drumbeat.is_hard_bounce(p_channel text, p_error_code text, p_error_message text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_channel
        WHEN 'sms' THEN COALESCE(p_error_code IN ('21211', '21614', '30005', '30006'), false)
        WHEN 'email' THEN COALESCE(p_error_code IN ('550', '551', '553')
                                   AND p_error_message ~ '^\s*5\.1\.(1|2|3|10)([^0-9]|$)', false)
        ELSE false
    END
$$;
