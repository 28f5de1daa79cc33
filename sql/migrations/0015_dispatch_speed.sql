-- 0015 dispatch speed: the claim loads its batch once and sorts it into what each step needs (flow,
-- task, skip, no sender, message), instead of every stage re-joining the whole batch; per-row calls
-- of helper functions on the hot path become one call per distinct key. Functions with SET
-- search_path are never inlined by the planner, so a helper called per row of a 500-row batch costs a
-- full function call (and a GUC save/restore) each time. Behaviour is unchanged, except that the
-- claim's context now also carries the sequence's tracking switches (0014) to the worker.

-- Why: as in 0011, lock a batch of due enrollments of active sequences, oldest due first, SKIP LOCKED.
-- The sequence's status is a per-row look-up on purpose: written as EXISTS, the planner hash-joins
-- every due row and sorts them, so a claim cost grew with the backlog; this way it walks the due
-- index in order and stops after p_limit rows. JIT is off: the planner's estimate for that walk is
-- high enough to trigger JIT compilation, which costs more than the walk itself.
CREATE OR REPLACE FUNCTION drumbeat.lock_due(p_limit integer, p_now timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = ''
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

-- Why: the sender of each (sequence, channel) in a batch, resolved once per pair rather than per row.
CREATE FUNCTION drumbeat.batch_senders(p_ids uuid[])
RETURNS TABLE(sequence_id uuid, kind text, sender_id uuid)
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT q.sequence_id, q.kind, drumbeat.step_sender(s.workspace_id, s.settings, q.kind)
    FROM (SELECT DISTINCT e.sequence_id, st.kind
          FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
          WHERE e.id = ANY (p_ids) AND st.kind IN ('sms', 'email')) AS q
    JOIN drumbeat.sequences s ON s.id = q.sequence_id
$$;

-- Why: one pass over the still-due enrollments of a locked batch sorts them by what their current
-- step needs. This is the one place that decides whether a contact can receive a message step.
CREATE FUNCTION drumbeat.classify_due(p_ids uuid[], p_now timestamptz,
    OUT flow uuid[], OUT manual uuid[], OUT unreachable uuid[], OUT no_sender uuid[], OUT messages uuid[])
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    WITH due AS (
        SELECT e.id, e.sequence_id, e.contact_id, st.kind
        FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    ), classified AS (
        SELECT d.id, CASE
            WHEN d.kind IN ('condition', 'action') THEN 'flow'
            WHEN d.kind NOT IN ('sms', 'email') THEN 'manual'
            WHEN (d.kind = 'sms' AND (c.sms_opted_out_at IS NOT NULL OR c.phone IS NULL))
              OR (d.kind = 'email' AND (c.email_opted_out_at IS NOT NULL OR c.bounced_at IS NOT NULL OR c.email IS NULL))
                THEN 'unreachable'
            WHEN bs.sender_id IS NULL THEN 'no_sender'
            ELSE 'message' END AS class
        FROM due d
        LEFT JOIN drumbeat.contacts c ON c.id = d.contact_id AND d.kind IN ('sms', 'email')
        LEFT JOIN drumbeat.batch_senders(p_ids) AS bs ON bs.sequence_id = d.sequence_id AND bs.kind = d.kind
    )
    SELECT pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'flow'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'manual'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'unreachable'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'no_sender'),
           pg_catalog.array_agg(x.id) FILTER (WHERE x.class = 'message')
    FROM classified x
$$;

-- Why: the message steps classify_due found unreachable are skipped, with the reason in events, and
-- the enrollment moves on; unsubscribes that should end the enrollment already did so in record_event.
CREATE OR REPLACE FUNCTION drumbeat.skip_unreachable(p_ids uuid[], p_now timestamptz)
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
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
    LOOP
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, occurred_at, payload)
        VALUES (v_row.workspace_id, 'step_skipped', v_row.contact_id, v_row.sequence_id, v_row.id, v_row.step_id, p_now,
                pg_catalog.jsonb_build_object('reason', v_row.reason, 'channel', v_row.kind));
        PERFORM drumbeat.advance_enrollment(v_row.id, p_now);
    END LOOP;
END
$$;

-- Why: caps count the deliveries other claims have committed. Two claims of the same sender or sequence
-- at the same moment would each count without the other's deliveries and could together pass a daily
-- cap, so a claim holding steps under a daily cap (sender daily_cap, sequence max_per_day) first takes a
-- transaction lock per capped sender and sequence, in a fixed order (no deadlock), and counts after it.
-- rate_per_second is left unlocked: an overshoot there is bounded and spread over the next second,
-- while locking every sender would serialize all claims of a busy sender.
CREATE FUNCTION drumbeat.lock_daily_caps(p_ids uuid[])
RETURNS void
LANGUAGE sql
SET search_path = ''
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

-- Why: as in 0011, for each due message step of a batch, the instant until which a cap holds it (NULL:
-- it may go now) and which cap; senders come from batch_senders instead of a call per row.
CREATE OR REPLACE FUNCTION drumbeat.capped_steps(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(enrollment_id uuid, hold_until timestamptz, reason text)
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    WITH due AS (
        SELECT e.id, e.workspace_id, e.sequence_id, st.kind, e.next_action_at, w.timezone AS workspace_tz, w.sms_credits,
               COALESCE(NULLIF(s.settings ->> 'timezone', ''), w.timezone) AS sequence_tz,
               (s.settings ->> 'max_per_day')::integer AS max_per_day, bs.sender_id
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        JOIN drumbeat.workspaces w ON w.id = e.workspace_id
        LEFT JOIN drumbeat.batch_senders(p_ids) AS bs ON bs.sequence_id = e.sequence_id AND bs.kind = st.kind
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
            (CASE WHEN r.kind = 'sms' AND r.channel_rank > r.sms_credits THEN p_now + '1 hour'::interval END,
             'no_sms_credits')) AS v(hold_until, reason)
        WHERE v.hold_until IS NOT NULL
    )
    SELECT DISTINCT ON (h.id) h.id, h.hold_until, h.reason FROM holds h ORDER BY h.id, h.hold_until DESC
$$;

-- Why: as in 0011, the message steps of a locked batch become 'sending' deliveries (unique
-- idempotency key: enrollment, step, attempt) before anything is sent, and the enrollment waits
-- (next_action_at NULL) for the record. Senders come once per (sequence, channel); a variant is picked
-- only where the step has variants; scheduled_for is the instant the step came due (so sent_at -
-- scheduled_for is the send's lateness). The context also tells the worker whether to track opens and
-- clicks (sequence settings track_opens / track_clicks, on unless set to false).
CREATE OR REPLACE FUNCTION drumbeat.claim_messages(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE sql
SET search_path = ''
AS $$
    WITH inserted AS (
        INSERT INTO drumbeat.deliveries AS d (workspace_id, enrollment_id, sequence_id, step_id, contact_id, sender_id, variant,
            channel, to_address, idempotency_key, attempt, scheduled_for, claimed_at)
        SELECT e.workspace_id, e.id, e.sequence_id, st.id, e.contact_id, bs.sender_id,
               CASE WHEN st.variants IS NOT NULL THEN drumbeat.pick_variant(st.variants, e.id) ->> 'key' END,
               st.kind, CASE st.kind WHEN 'sms' THEN c.phone ELSE c.email END,
               e.id || ':' || st.id || ':' || e.step_attempt, e.step_attempt, e.next_action_at, p_now
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id AND st.kind IN ('sms', 'email')
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        JOIN drumbeat.batch_senders(p_ids) AS bs ON bs.sequence_id = e.sequence_id AND bs.kind = st.kind
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
               'sender', pg_catalog.jsonb_build_object('id', se.id, 'address', se.address, 'name', se.name))
    FROM inserted i
    JOIN drumbeat.sequence_steps st ON st.id = i.step_id
    JOIN drumbeat.sequences s ON s.id = i.sequence_id
    JOIN drumbeat.workspaces w ON w.id = i.workspace_id
    JOIN drumbeat.contacts c ON c.id = i.contact_id
    JOIN drumbeat.senders se ON se.id = i.sender_id
    LEFT JOIN LATERAL (SELECT vv.value FROM pg_catalog.jsonb_array_elements(st.variants) AS vv WHERE vv.value ->> 'key' = i.variant) AS v ON true
$$;

-- Why: one call claims up to p_limit due enrollments. The batch is classified once; flow steps
-- (conditions, actions) run right here, possibly several in a row, and the batch is classified again
-- after them; manual steps open tasks; unreachable message steps are skipped; a message step with no
-- sender at all (the last one was removed after activation) fails; the rest pass the caps and become
-- 'sending' deliveries returned to the worker. Many workers may call it at once (SKIP LOCKED).
CREATE OR REPLACE FUNCTION drumbeat.claim_due(p_limit integer DEFAULT 500)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE plpgsql
SET search_path = ''
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
        PERFORM drumbeat.lock_daily_caps(v_batch.messages);
        PERFORM drumbeat.hold_capped(v_batch.messages, v_now);
        RETURN QUERY SELECT * FROM drumbeat.claim_messages(v_batch.messages, v_now);
    END IF;
END
$$;

-- Why: as in 0011, the enrollments whose step was just sent move on to their next step (or complete).
-- The next step is looked up once per (sequence, position) and the recipient's zone once per
-- (sequence, contact zone); the next step's time once per (step, zone), since every one of them was
-- done at the same instant.
CREATE OR REPLACE FUNCTION drumbeat.advance_after_send(p_delivery_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = ''
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat TO drumbeat_worker;
