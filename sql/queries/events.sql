-- Statements that turn the audit events a transaction wrote into log lines (app/core/event_log.py). The
-- dispatch and webhook functions return what their callers act on (deliveries to send, a count, an
-- outcome), not the ids of everything they did: the dispatcher and the webhooks read those back from
-- drumbeat.events in the same transaction, after the function, as drumbeat_worker (it reads every tenant).

-- name: events_mark
-- The newest event id now. Identity values only grow, so the events this transaction writes after
-- reading it all have larger ids, and events_written finds them with a short walk of events_pkey.
SELECT COALESCE(pg_catalog.max(ev.id), 0) AS mark FROM drumbeat.events ev

-- name: events_written
-- The events this transaction wrote since the mark: xmin is the writing transaction (the functions
-- read back this way open no subtransactions), so other transactions' concurrent events are left out.
-- _if_assigned: a transaction that wrote nothing has no id, and asking for one would spend one.
-- Only fields fit for a log line leave the database: never the payload's phone numbers, addresses,
-- message body or clicked URL. "status" is the state an enrollment went to (transitions) or started in.
-- Ids come as text: a log line prints them, and parsing them into UUIDs first costs the dispatcher.
SELECT ev.kind, ev.workspace_id::text, ev.contact_id::text, ev.enrollment_id::text, ev.step_id::text,
       ev.delivery_id::text, d.provider_message_id,
       -- task_created events name no sequence: their enrollment's (looked up for those only)
       COALESCE(ev.sequence_id, (SELECT e.sequence_id FROM drumbeat.enrollments e WHERE e.id = ev.enrollment_id))::text
           AS sequence_id,
       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'channel', COALESCE(ev.payload ->> 'channel', d.channel),
           'attempt', ev.payload -> 'attempt',
           'error_code', ev.payload ->> 'error_code',
           'transient', NULLIF(ev.payload -> 'transient', 'false'),
           'status', CASE WHEN ev.kind IN ('started', 'resumed', 'paused', 'completed', 'exited') THEN ev.payload ->> 'to'
                          WHEN ev.kind = 'enrolled' THEN ev.payload ->> 'status' END,
           'exit_reason', ev.payload ->> 'exit_reason',
           'next_action_at', ev.payload ->> 'next_action_at',
           'reason', ev.payload ->> 'reason',
           'until', ev.payload ->> 'until',
           'step_kind', ev.payload ->> 'kind',
           'result', ev.payload -> 'result',
           'branch', ev.payload ->> 'branch',
           'action', ev.payload -> 'action' ->> 'type',
           'task_id', ev.payload ->> 'task_id')) AS detail
FROM drumbeat.events ev
LEFT JOIN drumbeat.deliveries d ON d.id = ev.delivery_id
WHERE ev.id > %(mark)s AND ev.xmin = (SELECT pg_catalog.pg_current_xact_id_if_assigned()::xid)
ORDER BY ev.id
