-- Sequence statistics: per-step sends, failures and engagement, and the sequence's totals.

-- Why: per-step counts of deliveries (unknown: may have gone out, never resent) and engagement (distinct enrollments) for sequence_stats. A reply
-- that names no step (an inbound SMS, most integrations) counts for the last message the enrollment was
-- sent before it (replied_to), which is what sequence tools report as the step that got the reply.
CREATE OR REPLACE FUNCTION drumbeat.step_stats(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
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
               (SELECT pg_catalog.count(*) FROM drumbeat.deliveries d WHERE d.step_id = st.id AND d.status = 'unknown') AS unknown,
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

-- Why: the dashboard figures: enrollments by status and per-step sends, failures and engagement rates.
CREATE OR REPLACE FUNCTION drumbeat_api.sequence_stats(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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

-- Why: the step a reply answers when the reply does not say: the enrollment's last message sent before
-- the reply (deliveries_enrollment_idx finds the enrollment's few deliveries).
CREATE OR REPLACE FUNCTION drumbeat.replied_to(p_enrollment_id uuid, p_replied_at timestamptz)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.step_id FROM drumbeat.deliveries d
    WHERE d.enrollment_id = p_enrollment_id AND d.sent_at <= p_replied_at
    ORDER BY d.sent_at DESC, d.id DESC
    LIMIT 1
$$;
