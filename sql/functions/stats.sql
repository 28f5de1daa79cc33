-- Sequence statistics: per-step sends, failures and engagement, and the sequence's totals.

-- Why: per-step counts of deliveries (unknown: may have gone out, never resent) and engagement (distinct
-- enrollments) for sequence_stats, with each A/B variant's figures (variant_stats) and a manual step's
-- tasks (task_stats). A reply
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
               'reply_rate', CASE WHEN x.sent > 0 THEN pg_catalog.round(x.replied::numeric / x.sent, 4) END,
               'variants', COALESCE(v.variants, '[]'),
               'tasks', CASE WHEN x.kind IN ('manual_email', 'call', 'linkedin', 'task') THEN drumbeat.task_stats(x.step_id) END)
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
    LEFT JOIN drumbeat.variant_stats(p_sequence_id) AS v ON v.step_id = x.step_id
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

-- Why: the two-sided p-value of a standard normal z (the chance of a difference at least this large if
-- the variants were alike). Postgres 15 has no erfc: Abramowitz and Stegun 7.1.26, good to 1.5e-7, far
-- finer than any decision a sales team takes on it.
CREATE OR REPLACE FUNCTION drumbeat.normal_p_value(p_z double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
           * pg_catalog.exp(-x * x)
    FROM (SELECT pg_catalog.abs(p_z) / pg_catalog.sqrt(2.0::double precision) AS x) AS a,
         LATERAL (SELECT 1.0 / (1.0 + 0.3275911 * a.x) AS t) AS b
$$;

-- Why: is variant B's rate really different from A's? The two-proportion z-test (pooled), as A/B tools
-- report it: {rate_difference, z, p_value}; null while either has no sends or neither differs at all.
CREATE OR REPLACE FUNCTION drumbeat.proportion_test(p_hits_a bigint, p_n_a bigint, p_hits_b bigint, p_n_b bigint)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_n_a > 0 AND p_n_b > 0 AND pooled > 0 AND pooled < 1 THEN pg_catalog.jsonb_build_object(
               'rate_difference', pg_catalog.round((p_hits_b::numeric / p_n_b) - (p_hits_a::numeric / p_n_a), 4),
               'z', pg_catalog.round(z::numeric, 3),
               'p_value', pg_catalog.round(drumbeat.normal_p_value(z)::numeric, 4))
           END
    FROM (SELECT (p_hits_a + p_hits_b)::double precision / NULLIF(p_n_a + p_n_b, 0) AS pooled) AS p,
         LATERAL (SELECT ((p_hits_b::double precision / NULLIF(p_n_b, 0)) - (p_hits_a::double precision / NULLIF(p_n_a, 0)))
                         / NULLIF(pg_catalog.sqrt(p.pooled * (1 - p.pooled) * (1.0 / NULLIF(p_n_a, 0) + 1.0 / NULLIF(p_n_b, 0))), 0) AS z) AS t
$$;

-- Why: an A/B test is read per variant: sends, deliveries and the enrollments that opened, clicked,
-- replied or bounced after receiving it (each enrollment gets one variant per step, so engagement with
-- the step is engagement with its variant; a reply that names no step counts for the message it follows,
-- as in step_stats), with rates of sent, and each later variant tested against the step's first (its
-- control) on open, click and reply rate. One pass over the sequence's deliveries and engagement events.
CREATE OR REPLACE FUNCTION drumbeat.variant_stats(p_sequence_id uuid)
RETURNS TABLE(step_id uuid, variants jsonb)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH sends AS (
        SELECT d.id, d.step_id, d.variant, d.enrollment_id, d.status
        FROM drumbeat.deliveries d
        WHERE d.sequence_id = p_sequence_id AND d.variant IS NOT NULL
    ), engaged AS (
        SELECT DISTINCT ev.kind, COALESCE(ev.step_id, drumbeat.replied_to(ev.enrollment_id, ev.occurred_at)) AS step_id,
               ev.enrollment_id
        FROM drumbeat.events ev
        WHERE ev.sequence_id = p_sequence_id AND ev.kind IN ('opened', 'clicked', 'replied', 'bounced')
    ), counts AS (
        SELECT s.step_id, s.variant,
               -- distinct: a send appears once per kind of engagement it had (the join below)
               pg_catalog.count(DISTINCT s.id) FILTER (WHERE s.status IN ('sent', 'delivered')) AS sent,
               pg_catalog.count(DISTINCT s.id) FILTER (WHERE s.status = 'delivered') AS delivered,
               pg_catalog.count(DISTINCT g.enrollment_id) FILTER (WHERE g.kind = 'opened') AS opened,
               pg_catalog.count(DISTINCT g.enrollment_id) FILTER (WHERE g.kind = 'clicked') AS clicked,
               pg_catalog.count(DISTINCT g.enrollment_id) FILTER (WHERE g.kind = 'replied') AS replied,
               -- an email's hard bounce or an SMS to a dead number: either way a `bounced` event of the step
               pg_catalog.count(DISTINCT g.enrollment_id) FILTER (WHERE g.kind = 'bounced') AS bounced
        FROM sends s
        LEFT JOIN engaged g ON g.step_id = s.step_id AND g.enrollment_id = s.enrollment_id
        GROUP BY s.step_id, s.variant
    ), ranked AS (  -- the step's first variant (as defined) is the control; variants since removed come last
        SELECT c.*, pg_catalog.row_number() OVER (PARTITION BY c.step_id ORDER BY v.o NULLS LAST, c.variant) AS rank
        FROM counts c
        JOIN drumbeat.sequence_steps st ON st.id = c.step_id
        LEFT JOIN LATERAL (SELECT x.o FROM pg_catalog.jsonb_array_elements(st.variants) WITH ORDINALITY AS x(value, o)
                           WHERE x.value ->> 'key' = c.variant) AS v ON true
    )
    SELECT r.step_id, pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'key', r.variant, 'sent', r.sent, 'delivered', r.delivered, 'bounced', r.bounced,
               'opened', r.opened, 'clicked', r.clicked, 'replied', r.replied,
               'delivery_rate', CASE WHEN r.sent > 0 THEN pg_catalog.round(r.delivered::numeric / r.sent, 4) END,
               'open_rate', CASE WHEN r.sent > 0 THEN pg_catalog.round(r.opened::numeric / r.sent, 4) END,
               'click_rate', CASE WHEN r.sent > 0 THEN pg_catalog.round(r.clicked::numeric / r.sent, 4) END,
               'reply_rate', CASE WHEN r.sent > 0 THEN pg_catalog.round(r.replied::numeric / r.sent, 4) END,
               'bounce_rate', CASE WHEN r.sent + r.bounced > 0 THEN pg_catalog.round(r.bounced::numeric / (r.sent + r.bounced), 4) END,
               'versus_control', CASE WHEN r.rank > 1 THEN pg_catalog.jsonb_build_object(
                   'control', c.variant,
                   'open_rate', drumbeat.proportion_test(c.opened, c.sent, r.opened, r.sent),
                   'click_rate', drumbeat.proportion_test(c.clicked, c.sent, r.clicked, r.sent),
                   'reply_rate', drumbeat.proportion_test(c.replied, c.sent, r.replied, r.sent)) END)
           ORDER BY r.rank)
    FROM ranked r
    JOIN ranked c ON c.step_id = r.step_id AND c.rank = 1
    GROUP BY r.step_id
$$;

-- Why: a manual step's figures are its tasks: how many were opened, done, cancelled (the enrollment
-- ended first) and still waiting, and what the reps logged as outcomes ({"connected": 12, ...}).
CREATE OR REPLACE FUNCTION drumbeat.task_stats(p_step_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'created', pg_catalog.count(*),
        'completed', pg_catalog.count(*) FILTER (WHERE t.status = 'completed'),
        'cancelled', pg_catalog.count(*) FILTER (WHERE t.status = 'cancelled'),
        'pending', pg_catalog.count(*) FILTER (WHERE t.status = 'pending'),
        'outcomes', COALESCE((SELECT pg_catalog.jsonb_object_agg(o.outcome, o.n)
                              FROM (SELECT t2.outcome, pg_catalog.count(*) AS n FROM drumbeat.tasks t2
                                    WHERE t2.step_id = p_step_id AND t2.status = 'completed' AND t2.outcome IS NOT NULL
                                    GROUP BY t2.outcome) AS o), '{}'))
    FROM drumbeat.tasks t
    WHERE t.step_id = p_step_id
$$;
