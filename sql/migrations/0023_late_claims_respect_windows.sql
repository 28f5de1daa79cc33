-- 0023: a message step claimed late never goes out after its window has closed. A step is due inside its
-- window, but if it is claimed much later (workers were down, a backlog after an outage) the window may
-- have closed meanwhile, and the claim used to send it anyway: at 3 a.m. the recipient's time after a night
-- without workers. The claim now holds such a step ('held' event, reason window_closed) to the next allowed
-- instant, like the other holds. A claim within late_claim_tolerance() of the due time sends as before:
-- normal pickup lateness is under a second, and checking the window of every row would cost each claim a
-- calendar computation per row; only late rows pay it.

-- Why 5 minutes: well above normal pickup lateness (p99 < 1 s), so only real delays are re-checked, and a
-- message at most that late past its window's close is an acceptable edge (the window was open when due).
CREATE FUNCTION drumbeat.late_claim_tolerance()
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$ SELECT interval '5 minutes' $$;

-- Why: as in 0015, the holds of a locked batch (rate, daily caps, credits), plus window_closed.
CREATE OR REPLACE FUNCTION drumbeat.capped_steps(p_ids uuid[], p_now timestamptz)
RETURNS TABLE(enrollment_id uuid, hold_until timestamptz, reason text)
LANGUAGE sql
STABLE
SET search_path = ''
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

GRANT EXECUTE ON FUNCTION drumbeat.late_claim_tolerance() TO drumbeat_worker;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
