-- Engagement from any source (record_event, inbound SMS, provider callbacks, tracking links): log it for
-- the enrollments it concerns, update the contact's opt-outs and end enrollments per exit_conditions.

-- Why: which of a contact's enrollments an event concerns: the one named in the payload (directly or
-- through a delivery), otherwise every live one, otherwise the one of the last message sent to the
-- contact. Foreign ids are PT422 naming the payload field.
CREATE OR REPLACE FUNCTION drumbeat.event_targets(p_contact_id uuid, p_payload jsonb)
RETURNS TABLE(enrollment_id uuid, sequence_id uuid, step_id uuid, delivery_id uuid)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_uuid text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
BEGIN
    IF p_payload ? 'delivery_id' THEN
        RETURN QUERY SELECT d.enrollment_id, e.sequence_id, d.step_id, d.id
            FROM drumbeat.deliveries d JOIN drumbeat.enrollments e ON e.id = d.enrollment_id
            WHERE (p_payload ->> 'delivery_id') ~* v_uuid AND d.id = (p_payload ->> 'delivery_id')::uuid AND d.contact_id = p_contact_id;
        IF NOT FOUND THEN PERFORM drumbeat.raise_error('PT422', 'is not a delivery to this contact', 'p_payload.delivery_id'); END IF;
    ELSIF p_payload ? 'enrollment_id' THEN
        RETURN QUERY SELECT e.id, e.sequence_id,
                CASE WHEN (p_payload ->> 'step_id') ~* v_uuid THEN (p_payload ->> 'step_id')::uuid END, NULL::uuid
            FROM drumbeat.enrollments e
            WHERE (p_payload ->> 'enrollment_id') ~* v_uuid AND e.id = (p_payload ->> 'enrollment_id')::uuid AND e.contact_id = p_contact_id;
        IF NOT FOUND THEN PERFORM drumbeat.raise_error('PT422', 'is not an enrollment of this contact', 'p_payload.enrollment_id'); END IF;
    ELSE
        RETURN QUERY SELECT e.id, e.sequence_id, NULL::uuid, NULL::uuid FROM drumbeat.enrollments e
            WHERE e.contact_id = p_contact_id AND e.status IN ('scheduled', 'active', 'paused');
        IF NOT FOUND THEN
            -- Nothing live: it answers the last message the contact was sent (on the event's channel, when
            -- it names one), so a reply to a sequence's final message counts for that step and sequence.
            -- The ended enrollment stays ended: exit_enrollments touches live ones only.
            -- Through the contact's enrollments: deliveries have no index on contact_id.
            RETURN QUERY SELECT d.enrollment_id, d.sequence_id, d.step_id, d.id
                FROM drumbeat.enrollments e JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
                WHERE e.contact_id = p_contact_id AND d.sent_at IS NOT NULL
                  AND (d.channel = p_payload ->> 'channel' OR COALESCE(p_payload ->> 'channel', 'all') NOT IN ('sms', 'email'))
                ORDER BY d.sent_at DESC, d.id DESC
                LIMIT 1;
        END IF;
    END IF;
END
$$;

-- Why: an unsubscribe opts the contact out of the channel it came from ("sms", "email", or "all", the
-- default when the source does not say); a bounce marks the address of its channel bad (the email
-- address, or the phone number for an SMS to a dead or landline number).
CREATE OR REPLACE FUNCTION drumbeat.apply_contact_event(p_contact_id uuid, p_kind text, p_channel text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE drumbeat.contacts c SET
        sms_opted_out_at = CASE WHEN p_kind = 'unsubscribed' AND p_channel IN ('sms', 'all')
                                THEN COALESCE(c.sms_opted_out_at, drumbeat.clock_now()) ELSE c.sms_opted_out_at END,
        email_opted_out_at = CASE WHEN p_kind = 'unsubscribed' AND p_channel IN ('email', 'all')
                                  THEN COALESCE(c.email_opted_out_at, drumbeat.clock_now()) ELSE c.email_opted_out_at END,
        bounced_at = CASE WHEN p_kind = 'bounced' AND p_channel IN ('email', 'all')
                          THEN COALESCE(c.bounced_at, drumbeat.clock_now()) ELSE c.bounced_at END,
        phone_bounced_at = CASE WHEN p_kind = 'bounced' AND p_channel IN ('sms', 'all')
                                THEN COALESCE(c.phone_bounced_at, drumbeat.clock_now()) ELSE c.phone_bounced_at END,
        updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id AND p_kind IN ('unsubscribed', 'bounced')
$$;

-- Why: what an engagement event does, wherever it comes from (record_event, inbound SMS, provider
-- callbacks): log it for the enrollments it concerns, update the contact's opt-outs, and end
-- enrollments per the sequence's exit_conditions. An unsubscribe always ends the enrollments of
-- sequences on that very channel (nothing is left to send them); multi-channel ones per on_unsubscribe.
-- on_bounce ends only the enrollments of sequences that use the bounced channel: a bad email address
-- says nothing about the phone number, nor the reverse.
CREATE OR REPLACE FUNCTION drumbeat.apply_engagement(p_workspace_id uuid, p_contact_id uuid, p_kind text, p_channel text, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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

-- Why: engagement from integrations (a CRM, a mailbox, a calendar), checked, then applied.
CREATE OR REPLACE FUNCTION drumbeat_api.record_event(p_contact_id uuid, p_kind text, p_payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'member');
    v_payload jsonb := COALESCE(p_payload, '{}');
    v_channel text;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('replied', 'opened', 'clicked', 'bounced', 'unsubscribed', 'meeting_booked') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be one of replied, opened, clicked, bounced, unsubscribed, meeting_booked', 'p_kind');
    END IF;
    IF pg_catalog.jsonb_typeof(v_payload) <> 'object' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON object', 'p_payload');
    END IF;
    v_channel := COALESCE(drumbeat.json_text(v_payload -> 'channel', 'p_payload.channel'), CASE WHEN p_kind = 'bounced' THEN 'email' ELSE 'all' END);
    IF v_channel NOT IN ('sms', 'email', 'all') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be sms, email or all', 'p_payload.channel');
    END IF;
    PERFORM drumbeat.apply_engagement(v_workspace_id, p_contact_id, p_kind, v_channel, v_payload);
END
$$;
