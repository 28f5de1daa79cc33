-- The webhook worker's statements (workers/webhooks.py); the functions are in sql/functions/webhooks.sql.

-- name: fan_out
SELECT drumbeat.fan_out_webhooks(%(limit)s)

-- name: claim
SELECT id, msg_id, endpoint_id, url, secrets, body, attempt, lease
FROM drumbeat.claim_webhook_messages(%(limit)s, %(per_endpoint)s, %(lease_seconds)s)

-- name: record
SELECT drumbeat.record_webhook_attempts(%(attempts)s)

-- name: prune
SELECT drumbeat.prune_webhook_messages(%(older_than)s, %(limit)s)

-- name: prune_idempotency_keys
SELECT drumbeat.prune_idempotency_keys(%(limit)s)
