-- 0029: a send refused because the address does not exist is a bounce, as the same refusal reported later
-- by a status callback already was (0013). An SMTP 550/551/553 with a 5.1.x status (no such mailbox, bad
-- domain) or Twilio's 21211 (invalid number) / 21614 (not a mobile number) used to end only this one
-- enrollment as 'failed': the contact's email was not marked bounced and its other sequences went on
-- sending to it. Now the contact is marked (bounced_at for email), a 'bounced' event is logged, and the
-- sequence's on_bounce applies; an enrollment whose sequence does not exit on bounce still ends as failed,
-- since its message cannot be delivered.
-- And a bounce (from here, a status callback or record_event) no longer ends enrollments in sequences of
-- the other channel: a bad email address says nothing about the phone number, nor the reverse.

-- Why: whether a refused send says the address itself is bad (never worth another message to it).
-- Email: the enhanced status 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad address syntax, 5.1.10 null MX.
CREATE FUNCTION drumbeat.is_hard_bounce(p_channel text, p_error_code text, p_error_message text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE p_channel
        WHEN 'sms' THEN COALESCE(p_error_code IN ('21211', '21614', '30005', '30006'), false)
        WHEN 'email' THEN COALESCE(p_error_code IN ('550', '551', '553')
                                   AND p_error_message ~ '^\s*5\.1\.(1|2|3|10)([^0-9]|$)', false)
        ELSE false
    END
$$;

-- Why: as in 0011, and a refusal that names the address bad is applied as a bounce first (see above).
CREATE OR REPLACE FUNCTION drumbeat.settle_enrollment(p_delivery drumbeat.deliveries, p_result jsonb, p_now timestamptz)
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

-- Why: as in 0010, and on_bounce ends only the enrollments of sequences that use the bounced channel.
CREATE OR REPLACE FUNCTION drumbeat.apply_engagement(p_workspace_id uuid, p_contact_id uuid, p_kind text, p_channel text, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_targets uuid[];
BEGIN
    WITH targets AS MATERIALIZED (SELECT * FROM drumbeat.event_targets(p_contact_id, p_payload)),
    logged AS (
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, delivery_id, actor_id, payload)
        SELECT p_workspace_id, p_kind, p_contact_id, t.sequence_id, t.enrollment_id, t.step_id, t.delivery_id, drumbeat.current_user_id(), p_payload
        FROM (SELECT * FROM targets UNION ALL SELECT NULL, NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM targets)) AS t
    )
    SELECT pg_catalog.array_agg(t.enrollment_id) INTO v_targets FROM targets t;
    PERFORM drumbeat.apply_contact_event(p_contact_id, p_kind, p_channel);
    PERFORM drumbeat.exit_enrollments(ARRAY(
        SELECT e.id FROM drumbeat.enrollments e JOIN drumbeat.sequences s ON s.id = e.sequence_id
        WHERE e.id = ANY (v_targets) AND CASE p_kind
            WHEN 'unsubscribed' THEN s.channel = p_channel OR p_channel = 'all'
                                     OR (s.channel = 'multi' AND (s.exit_conditions ->> 'on_unsubscribe')::boolean)
            WHEN 'bounced' THEN (s.channel IN (p_channel, 'multi') OR p_channel = 'all')
                                AND COALESCE((s.exit_conditions ->> 'on_bounce')::boolean, false)
            ELSE COALESCE((s.exit_conditions ->> ('on_' || CASE p_kind WHEN 'replied' THEN 'reply' ELSE p_kind END))::boolean, false)
        END),
        CASE p_kind WHEN 'replied' THEN 'replied' WHEN 'bounced' THEN 'bounced' WHEN 'unsubscribed' THEN 'unsubscribed'
            ELSE 'completed' END,  -- meeting_booked: the goal is reached
        p_kind);
END
$$;

REVOKE EXECUTE ON FUNCTION drumbeat.is_hard_bounce(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drumbeat.is_hard_bounce(text, text, text) TO drumbeat_worker;
