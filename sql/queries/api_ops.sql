-- Statements of the operations endpoints (app/api/ops.py): readiness and Prometheus metrics. Each one
-- is cheap by construction: served by an index, and over a bounded time window or row count.

-- name: applied_migrations
-- Runs as the API's login role: drumbeat_meta is the migrator's bookkeeping (readable by its owner).
SELECT m.name, m.checksum FROM drumbeat_meta.schema_migrations m
WHERE m.name LIKE 'migrations/%' OR m.name LIKE 'functions/%'

-- name: become_ops_role
-- For this transaction only: metrics read every tenant's rows (aggregates only, no ids or PII leave).
SET LOCAL ROLE drumbeat_worker

-- name: channel_holds
-- The circuit breaker's holds (drumbeat.channel_holds: empty while every provider answers), as the ops role.
SELECT h.channel, h.sender_id, h.reason, h.error_code, h.held_since, h.probe_at
FROM drumbeat.channel_holds h ORDER BY h.channel, h.sender_id NULLS FIRST

-- name: metrics_read_only
-- The first statement of the metrics transaction: it reads only.
SET TRANSACTION READ ONLY

-- name: metrics_timeout
SET LOCAL statement_timeout = '2s'

-- name: deliveries_last_hour
-- Deliveries claimed in the last hour per channel and status (deliveries_claimed_at_brin).
SELECT d.channel, d.status, count(*) AS n
FROM drumbeat.deliveries d
WHERE d.claimed_at > now() - interval '1 hour'
GROUP BY d.channel, d.status
ORDER BY d.channel, d.status

-- name: deliveries_sending
-- In flight right now (provider called, not yet answered), by the partial index deliveries_sending_idx, and
-- reserved (claimed by a worker, not yet started), by deliveries_reserved_idx.
SELECT count(*) AS n, EXTRACT(epoch FROM now() - min(COALESCE(d.started_at, d.claimed_at)))::float8 AS oldest_age,
       (SELECT count(*) FROM drumbeat.deliveries r WHERE r.status = 'reserved') AS reserved
FROM drumbeat.deliveries d WHERE d.status = 'sending'

-- name: due_backlog
-- Steps due now that a worker would claim (same filter as the dispatcher's due_backlog), counted up to
-- %(cap)s, and how long the oldest has been waiting: both walk enrollments_due_idx from its start.
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM drumbeat.enrollments e
        WHERE e.status IN ('scheduled', 'active') AND e.next_action_at <= drumbeat.clock_now()
          AND EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = e.sequence_id AND s.status = 'active')
        LIMIT %(cap)s) AS due) AS due,
    (SELECT EXTRACT(epoch FROM drumbeat.clock_now() - e.next_action_at)::float8
     FROM drumbeat.enrollments e
     WHERE e.status IN ('scheduled', 'active') AND e.next_action_at <= drumbeat.clock_now()
       AND EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = e.sequence_id AND s.status = 'active')
     ORDER BY e.next_action_at LIMIT 1) AS oldest_age

-- name: send_lateness
-- Deliveries claimed in the last hour and sent: sent_at - scheduled_for, in seconds, as cumulative
-- Prometheus buckets (the column names are the bucket bounds, in order; then count and sum). One pass.
-- scheduled_for is set by the claim (drumbeat.claim_messages) to the instant the step came due and
-- sent_at by the record after the provider answered: this is due time -> recorded send.
SELECT
    count(*) FILTER (WHERE x.s <= 0.1) AS "0.1",
    count(*) FILTER (WHERE x.s <= 0.25) AS "0.25",
    count(*) FILTER (WHERE x.s <= 0.5) AS "0.5",
    count(*) FILTER (WHERE x.s <= 1) AS "1",
    count(*) FILTER (WHERE x.s <= 2.5) AS "2.5",
    count(*) FILTER (WHERE x.s <= 5) AS "5",
    count(*) FILTER (WHERE x.s <= 10) AS "10",
    count(*) FILTER (WHERE x.s <= 30) AS "30",
    count(*) FILTER (WHERE x.s <= 60) AS "60",
    count(*) AS count,
    COALESCE(sum(x.s), 0)::float8 AS sum
FROM (
    SELECT GREATEST(EXTRACT(epoch FROM d.sent_at - d.scheduled_for), 0)::float8 AS s
    FROM drumbeat.deliveries d
    WHERE d.claimed_at > now() - interval '1 hour' AND d.sent_at IS NOT NULL
) AS x

-- name: webhooks_due
-- Outgoing webhook messages due now (pending and due, or 'sending' with a lapsed lease), counted up to
-- %(cap)s; the oldest one's wait, endpoint by endpoint along webhook_messages_due_idx; switched-off endpoints.
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM drumbeat.webhook_messages m
        WHERE m.status IN ('pending', 'sending') AND m.next_attempt_at <= now()
        LIMIT %(cap)s) AS due) AS due,
    (SELECT EXTRACT(epoch FROM now() - min(oldest.next_attempt_at))::float8
     FROM drumbeat.webhook_endpoints e
     CROSS JOIN LATERAL (SELECT m.next_attempt_at FROM drumbeat.webhook_messages m
                         WHERE m.endpoint_id = e.id AND m.status IN ('pending', 'sending') AND m.next_attempt_at <= now()
                         ORDER BY m.next_attempt_at LIMIT 1) AS oldest
     WHERE e.enabled) AS oldest_age,
    (SELECT count(*) FROM drumbeat.webhook_endpoints e WHERE NOT e.enabled) AS disabled

