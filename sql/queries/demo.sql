-- Statements of `drumbeat demo` (app/commands/demo.py). The demo works in its own database, drumbeat_demo,
-- as the operator: a trusted caller (superuser or BYPASSRLS), so the contract functions skip their
-- membership checks. State changes go through the contract functions only; the rest are reads.

-- name: drop_database
-- WITH (FORCE): a demo stopped midway may have left connections behind.
DROP DATABASE IF EXISTS drumbeat_demo WITH (FORCE)

-- name: server_now
-- The server's own time: the running clock counts from it (the machine running the demo may differ).
SELECT clock_timestamp()

-- name: run_clock
-- The clock every new connection to drumbeat_demo gets: %(clock)s at the real instant %(since)s, running
-- %(rate)s clock seconds per real second (drumbeat.clock_now, sql/functions/clock.sql). ALTER DATABASE takes no
-- bind parameters: sent with client-side binding.
ALTER DATABASE drumbeat_demo SET drumbeat.clock = %(clock)s;
ALTER DATABASE drumbeat_demo SET drumbeat.clock_since = %(since)s;
ALTER DATABASE drumbeat_demo SET drumbeat.clock_rate = %(rate)s

-- name: freeze_clock
-- This session's clock stands still at %(clock)s, whatever the database's settings say.
SELECT set_config('drumbeat.clock', %(clock)s::text, false)

-- name: clock_now
SELECT drumbeat.clock_now()

-- name: create_workspace
SELECT drumbeat_api.create_workspace(%(name)s, %(timezone)s)

-- name: create_sender
SELECT drumbeat_api.create_sender(%(workspace_id)s, %(channel)s, %(address)s, %(settings)s)

-- name: upsert_contacts
-- The contacts' ids in input order.
SELECT u.contact_id FROM drumbeat_api.upsert_contacts(%(workspace_id)s, %(contacts)s) WITH ORDINALITY AS u
ORDER BY u.ordinality

-- name: create_sequence
SELECT drumbeat_api.create_sequence(%(workspace_id)s, %(definition)s)

-- name: activate_sequence
-- Active now, starting at %(start_at)s: enrollments made before then wait as 'scheduled'.
SELECT drumbeat_api.activate_sequence(%(sequence_id)s, %(start_at)s)

-- name: enroll_contacts
SELECT e.outcome, count(*) AS contacts
FROM drumbeat_api.enroll_contacts(%(sequence_id)s, %(contact_ids)s::uuid[]) AS e
GROUP BY e.outcome ORDER BY e.outcome

-- name: preview
-- Every contact's planned timeline, contact by contact in input order: the dry run of the very calculus
-- the dispatcher uses.
SELECT c.id AS contact_id, p.step_position, p.kind, p.planned_at
FROM unnest(%(contact_ids)s::uuid[]) WITH ORDINALITY AS c(id, n)
CROSS JOIN LATERAL drumbeat_api.preview_schedule(%(sequence_id)s, c.id) AS p
ORDER BY c.n, p.step_position

-- name: new_sends
-- Deliveries the worker recorded as sent that the demo has not shown yet. sent_at and scheduled_for are
-- clock instants (the instant sent, and the instant the step came due).
SELECT d.id, d.contact_id, d.channel, st.position, st.name AS step_name, d.sent_at, d.scheduled_for,
       COALESCE(d.subject, d.body) AS text
FROM drumbeat.deliveries d JOIN drumbeat.sequence_steps st ON st.id = d.step_id
WHERE d.sequence_id = %(sequence_id)s AND d.sent_at IS NOT NULL AND d.id <> ALL (%(shown)s::uuid[])
ORDER BY d.sent_at, d.id

-- name: pending_tasks
-- Tasks the worker opened for manual steps (calls), oldest first; due_at is the clock instant it opened them.
SELECT t.id, t.contact_id, t.title, t.due_at, st.position
FROM drumbeat.tasks t JOIN drumbeat.sequence_steps st ON st.id = t.step_id
WHERE t.workspace_id = %(workspace_id)s AND t.status = 'pending'
ORDER BY t.due_at, t.id

-- name: complete_task
SELECT drumbeat_api.complete_task(%(task_id)s, %(outcome)s::text, NULL::text)

-- name: as_sms_webhook
-- For this transaction: the role the API's Twilio inbound webhook runs as (sql/queries/api_webhooks.sql).
SET LOCAL ROLE drumbeat_worker

-- name: inbound_sms
-- A contact's text arriving as the Twilio webhook hands it over: from their phone to our number.
-- Returns what it did (replied, opted_out, ...) and the clock instant it happened.
SELECT drumbeat.inbound_sms(%(to)s, %(from)s, %(body)s) AS outcome, drumbeat.clock_now() AS clock

-- name: enrollment_state
SELECT e.status, e.exit_reason FROM drumbeat.enrollments e
WHERE e.sequence_id = %(sequence_id)s AND e.contact_id = %(contact_id)s
ORDER BY e.enrolled_at DESC LIMIT 1

-- name: live_enrollments
SELECT count(*) FROM drumbeat.enrollments e
WHERE e.sequence_id = %(sequence_id)s AND e.status IN ('scheduled', 'active', 'paused')

-- name: sequence_stats
SELECT drumbeat_api.sequence_stats(%(sequence_id)s)

-- name: tasks_by_status
SELECT t.status, count(*) FROM drumbeat.tasks t WHERE t.workspace_id = %(workspace_id)s GROUP BY t.status
