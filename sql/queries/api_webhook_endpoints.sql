-- Outgoing webhook endpoints (app/api/webhook_endpoints.py): each statement calls the contract function of
-- the same name (sql/functions/webhooks.sql), which lets admins alone in.

-- name: allow_private_targets
-- For this transaction only: DRUMBEAT_WEBHOOK_ALLOW_PRIVATE is true (development, tests).
SELECT set_config('drumbeat.webhook_allow_private', 'on', true)

-- name: create_webhook_endpoint
SELECT drumbeat_api.create_webhook_endpoint(%(workspace_id)s, %(endpoint)s) AS endpoint

-- name: list_webhook_endpoints
SELECT endpoint FROM drumbeat_api.list_webhook_endpoints(%(workspace_id)s) AS endpoint

-- name: get_webhook_endpoint
SELECT drumbeat_api.get_webhook_endpoint(%(endpoint_id)s) AS endpoint

-- name: update_webhook_endpoint
SELECT drumbeat_api.update_webhook_endpoint(%(endpoint_id)s, %(changes)s) AS endpoint

-- name: delete_webhook_endpoint
SELECT drumbeat_api.delete_webhook_endpoint(%(endpoint_id)s)

-- name: rotate_webhook_secret
SELECT drumbeat_api.rotate_webhook_secret(%(endpoint_id)s) AS endpoint

-- name: test_webhook_endpoint
SELECT drumbeat_api.test_webhook_endpoint(%(endpoint_id)s) AS message

-- name: list_webhook_deliveries
SELECT delivery FROM drumbeat_api.list_webhook_deliveries(%(endpoint_id)s, %(before)s, %(limit)s) AS delivery

-- name: resend_webhook_message
SELECT drumbeat_api.resend_webhook_message(%(endpoint_id)s, %(message_id)s) AS message

-- name: resend_webhook_messages
SELECT drumbeat_api.resend_webhook_messages(%(endpoint_id)s, %(since)s, %(after_event_id)s) AS resent
