-- Statements of the webhook endpoints (app/api/webhooks.py): Twilio callbacks and the email tracking
-- links. No user makes these requests: each is verified first (Twilio's signature, or a token signed
-- with DRUMBEAT_SECRET_KEY), then runs in one transaction as drumbeat_worker (sql/migrations/0030_baseline.sql says why that role).

-- name: become_webhook_role
-- For this transaction only (reset at commit or rollback): the pooled connection goes back to its login role.
SET LOCAL ROLE drumbeat_worker

-- name: delivery_status
-- Twilio's status callback: returns the delivery's status now, or NULL when the message id is not ours.
SELECT drumbeat.delivery_status(%(message_sid)s, %(status)s, %(error_code)s) AS status

-- name: inbound_sms
-- opted_out | opted_in | help | replied | unknown_contact | unknown_number
SELECT drumbeat.inbound_sms(%(to)s, %(from)s, %(body)s, %(message_sid)s) AS outcome

-- name: record_delivery_engagement
-- opened / clicked / unsubscribed for a signed delivery id: recorded | duplicate | unknown_delivery
SELECT drumbeat.record_delivery_engagement(%(delivery_id)s, %(kind)s, %(payload)s) AS outcome

-- name: inbound_email
-- An inbound email for the workspace that the credentials named (app/api/inbound_email.py).
SELECT drumbeat.inbound_email(%(workspace_id)s, %(email)s)

-- name: inbound_secret_matches
SELECT drumbeat.inbound_secret_matches(%(workspace_id)s, %(secret)s)

-- name: api_key_workspace
SELECT drumbeat.api_key_workspace(%(key_id)s)
