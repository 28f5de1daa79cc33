-- 0010 contract: engagement events from integrations (record_event), the dry-run timeline
-- (preview_schedule) and per-sequence statistics (sequence_stats).

-- Why: which of a contact's enrollments an event concerns: the one named in the payload (directly or
-- through a delivery), otherwise every live one. Foreign ids are PT422 naming the payload field.
CREATE FUNCTION drumbeat.event_targets(p_contact_id uuid, p_payload jsonb)
RETURNS TABLE(enrollment_id uuid, sequence_id uuid, step_id uuid, delivery_id uuid)
LANGUAGE plpgsql
STABLE
SET search_path = ''
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
    END IF;
END
$$;

-- Why: an unsubscribe opts the contact out of the channel it came from ("sms", "email", or "all", the
-- default when the source does not say); a bounce marks the email address bad.
CREATE FUNCTION drumbeat.apply_contact_event(p_contact_id uuid, p_kind text, p_channel text)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    UPDATE drumbeat.contacts c SET
        sms_opted_out_at = CASE WHEN p_kind = 'unsubscribed' AND p_channel IN ('sms', 'all')
                                THEN COALESCE(c.sms_opted_out_at, drumbeat.clock_now()) ELSE c.sms_opted_out_at END,
        email_opted_out_at = CASE WHEN p_kind = 'unsubscribed' AND p_channel IN ('email', 'all')
                                  THEN COALESCE(c.email_opted_out_at, drumbeat.clock_now()) ELSE c.email_opted_out_at END,
        bounced_at = CASE WHEN p_kind = 'bounced' AND p_channel IN ('email', 'all')
                          THEN COALESCE(c.bounced_at, drumbeat.clock_now()) ELSE c.bounced_at END,
        updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id AND p_kind IN ('unsubscribed', 'bounced')
$$;

-- Why: what an engagement event does, wherever it comes from (record_event, inbound SMS, provider
-- callbacks): log it for the enrollments it concerns, update the contact's opt-outs, and end
-- enrollments per the sequence's exit_conditions. An unsubscribe always ends the enrollments of
-- sequences on that very channel (nothing is left to send them); multi-channel ones per on_unsubscribe.
CREATE FUNCTION drumbeat.apply_engagement(p_workspace_id uuid, p_contact_id uuid, p_kind text, p_channel text, p_payload jsonb)
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
            ELSE COALESCE((s.exit_conditions ->> ('on_' || CASE p_kind WHEN 'replied' THEN 'reply' WHEN 'bounced' THEN 'bounce'
                                                          ELSE p_kind END))::boolean, false)
        END),
        CASE p_kind WHEN 'replied' THEN 'replied' WHEN 'bounced' THEN 'bounced' WHEN 'unsubscribed' THEN 'unsubscribed'
            ELSE 'completed' END,  -- meeting_booked: the goal is reached
        p_kind);
END
$$;

-- Why: engagement from integrations (a CRM, a mailbox, a calendar), checked, then applied.
CREATE FUNCTION drumbeat_api.record_event(p_contact_id uuid, p_kind text, p_payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
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

-- Why: the dry run's branch choice: with no engagement assumed, "replied"/"opened"/"clicked" are false
-- and their not_ forms true. Returns the next position to look after, or NULL to stop.
CREATE FUNCTION drumbeat.preview_branch(p_condition jsonb, p_position integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN b = '"exit"'::jsonb THEN NULL
        WHEN pg_catalog.jsonb_typeof(b) = 'object' THEN (b ->> 'goto')::integer - 1
        ELSE p_position
    END
    FROM (SELECT CASE WHEN p_condition ->> 'if' LIKE 'not\_%' THEN p_condition -> 'then' ELSE p_condition -> 'else' END AS b) AS branch
$$;

-- Why: what would happen to this contact: every step planned with the same calculus the dispatcher
-- uses, each assumed done at its planned time, no engagement (so conditions take their "no" branch).
CREATE FUNCTION drumbeat_api.preview_schedule(p_sequence_id uuid, p_contact_id uuid, p_start_at timestamptz DEFAULT NULL)
RETURNS TABLE(step_position integer, step_id uuid, kind text, planned_at timestamptz)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    v_done timestamptz;
    v_after integer := 0;
    v_step drumbeat.sequence_steps;
BEGIN
    IF drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'member') <> v_workspace_id THEN
        PERFORM drumbeat.raise_error('PT404', 'contact not found', 'p_contact_id');
    END IF;
    SELECT GREATEST(p_start_at, s.scheduled_start_at, drumbeat.clock_now()) INTO v_done FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
    LOOP
        SELECT * INTO v_step FROM drumbeat.sequence_steps st WHERE st.id = drumbeat.next_live_step(p_sequence_id, v_after);
        EXIT WHEN NOT FOUND;
        v_done := drumbeat.planned_at(v_step.id, p_contact_id, v_done);
        RETURN QUERY SELECT v_step.position, v_step.id, v_step.kind, v_done;
        v_after := CASE WHEN v_step.kind = 'condition' THEN drumbeat.preview_branch(v_step.condition, v_step.position) ELSE v_step.position END;
        EXIT WHEN v_after IS NULL;
    END LOOP;
END
$$;

-- Why: per-step counts of deliveries and engagement (distinct enrollments) for sequence_stats.
CREATE FUNCTION drumbeat.step_stats(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) || pg_catalog.jsonb_build_object(
               'delivery_rate', CASE WHEN x.sent > 0 THEN pg_catalog.round(x.delivered::numeric / x.sent, 4) END,
               'open_rate', CASE WHEN x.sent > 0 THEN pg_catalog.round(x.opened::numeric / x.sent, 4) END,
               'click_rate', CASE WHEN x.sent > 0 THEN pg_catalog.round(x.clicked::numeric / x.sent, 4) END,
               'reply_rate', CASE WHEN x.sent > 0 THEN pg_catalog.round(x.replied::numeric / x.sent, 4) END)
           ORDER BY x.position), '[]')
    FROM (
        SELECT st.id AS step_id, st.position, st.kind, st.name,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries d WHERE d.step_id = st.id AND d.status IN ('sent', 'delivered')) AS sent,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries d WHERE d.step_id = st.id AND d.status = 'delivered') AS delivered,
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries d WHERE d.step_id = st.id AND d.status IN ('failed', 'undelivered', 'bounced')) AS failed,
               (SELECT pg_catalog.count(DISTINCT ev.enrollment_id) FROM drumbeat.events ev
                WHERE ev.sequence_id = p_sequence_id AND ev.kind = 'opened' AND ev.step_id = st.id) AS opened,
               (SELECT pg_catalog.count(DISTINCT ev.enrollment_id) FROM drumbeat.events ev
                WHERE ev.sequence_id = p_sequence_id AND ev.kind = 'clicked' AND ev.step_id = st.id) AS clicked,
               (SELECT pg_catalog.count(DISTINCT ev.enrollment_id) FROM drumbeat.events ev
                WHERE ev.sequence_id = p_sequence_id AND ev.kind = 'replied' AND ev.step_id = st.id) AS replied
        FROM drumbeat.sequence_steps st WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL
    ) AS x
$$;

-- Why: the dashboard figures: enrollments by status and per-step sends, failures and engagement rates.
CREATE FUNCTION drumbeat_api.sequence_stats(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    RETURN pg_catalog.jsonb_build_object(
        'sequence_id', p_sequence_id,
        'enrollments', (SELECT pg_catalog.jsonb_object_agg(st.status, (SELECT pg_catalog.count(*) FROM drumbeat.enrollments e
                            WHERE e.sequence_id = p_sequence_id AND e.status = st.status))
                        FROM pg_catalog.unnest(ARRAY['scheduled', 'active', 'paused', 'completed', 'replied', 'bounced',
                            'unsubscribed', 'cancelled', 'failed']) AS st(status))
                       || pg_catalog.jsonb_build_object('total', (SELECT pg_catalog.count(*) FROM drumbeat.enrollments e
                            WHERE e.sequence_id = p_sequence_id)),
        'replied', (SELECT pg_catalog.count(DISTINCT ev.enrollment_id) FROM drumbeat.events ev
                    WHERE ev.sequence_id = p_sequence_id AND ev.kind = 'replied'),
        'steps', drumbeat.step_stats(p_sequence_id));
END
$$;

GRANT EXECUTE ON FUNCTION drumbeat.event_targets(uuid, jsonb), drumbeat.apply_contact_event(uuid, text, text),
    drumbeat.apply_engagement(uuid, uuid, text, text, jsonb),
    drumbeat.preview_branch(jsonb, integer), drumbeat.step_stats(uuid) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION drumbeat_api.record_event(uuid, text, jsonb),
    drumbeat_api.preview_schedule(uuid, uuid, timestamptz), drumbeat_api.sequence_stats(uuid)
    TO authenticated, service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
