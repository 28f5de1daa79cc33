-- 0041: two worker functions of the webhooks change their signatures (their definitions are in
-- sql/functions/webhooks.sql; a changed result or argument list needs a drop first):
-- - drumbeat.webhook_payload returns the message body alone (jsonb, NULL when the endpoint does not take the
--   event; the type is inside it) instead of a (type, payload) row: a PL/pgSQL function keeps its plan
--   between calls, where the SQL set-returning one was planned again for every event and endpoint;
-- - drumbeat.webhook_attempt_batch takes the messages' ids too, to look them up by primary key.
DROP FUNCTION IF EXISTS drumbeat.webhook_payload(drumbeat.events, drumbeat.webhook_endpoints);
DROP FUNCTION IF EXISTS drumbeat.webhook_attempt_batch(jsonb);
