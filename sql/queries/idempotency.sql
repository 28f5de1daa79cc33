-- The HTTP API's idempotency keys (app/api/idempotency.py); the functions are in sql/functions/idempotency.sql.

-- name: begin
SELECT drumbeat_api.begin_idempotent_request(%(key)s, %(fingerprint)s) AS stored

-- name: finish
SELECT drumbeat_api.finish_idempotent_request(%(key)s, %(fingerprint)s, %(status)s, %(content_type)s, %(location)s,
    %(body)s)
