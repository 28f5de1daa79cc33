-- 0024: per-step reply rates count the replies no step was named for. An inbound SMS or a reply logged by
-- an integration usually names only the contact, so its event had no step, and every step's `replied` in
-- sequence_stats stayed 0 while the sequence's enrollments showed replies. A reply without a step now
-- counts for the last message the enrollment was sent before it (what sequence tools report as the step
-- that got the reply). Conditions are unchanged: a reply without a step still satisfies "replied" of any
-- step (condition_holds), since a reply can seldom be tied to one message.

-- Why: the step a reply answers when the reply does not say: the enrollment's last message sent before
-- the reply (deliveries_enrollment_idx finds the enrollment's few deliveries).
CREATE FUNCTION drumbeat.replied_to(p_enrollment_id uuid, p_replied_at timestamptz)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT d.step_id FROM drumbeat.deliveries d
    WHERE d.enrollment_id = p_enrollment_id AND d.sent_at <= p_replied_at
    ORDER BY d.sent_at DESC, d.id DESC
    LIMIT 1
$$;

-- Why: as in 0010, sends, failures and engagement per step; replies without a step go to replied_to.
CREATE OR REPLACE FUNCTION drumbeat.step_stats(p_sequence_id uuid)
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
                WHERE ev.sequence_id = p_sequence_id AND ev.kind = 'replied'
                  AND COALESCE(ev.step_id, drumbeat.replied_to(ev.enrollment_id, ev.occurred_at)) = st.id) AS replied
        FROM drumbeat.sequence_steps st WHERE st.sequence_id = p_sequence_id AND st.removed_at IS NULL
    ) AS x
$$;

GRANT EXECUTE ON FUNCTION drumbeat.replied_to(uuid, timestamptz) TO authenticated, service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
