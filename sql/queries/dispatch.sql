-- Statements the dispatcher sends. Each block is named by its "-- name:" header and loaded once by
-- app/core/queries.py; the logic lives in the SQL functions of sql/functions/dispatch.sql.

-- name: become_worker
-- The worker's connection acts as drumbeat_worker whatever role it logged in with (least privilege).
SET ROLE drumbeat_worker

-- name: claim_due
SELECT * FROM drumbeat.claim_due(%(limit)s)

-- name: record_and_start
-- One round trip as sends finish: record their outcomes, start the next chunk, extend the rest.
SELECT drumbeat.record_deliveries(%(results)s) AS recorded,
       drumbeat.start_sending(%(start)s, %(keep)s, %(bodies)s) AS started

-- name: release_reservations
-- %(ids)s NULL: every reservation that lapsed; else these (a worker stopping).
SELECT drumbeat.release_reservations(%(ids)s)

-- name: recover_deliveries
SELECT drumbeat.recover_deliveries(%(lease)s, %(reconcile)s)

-- name: due_reconciliations
SELECT * FROM drumbeat.due_reconciliations(%(channels)s, %(limit)s)

-- name: settle_reconciliations
SELECT drumbeat.settle_reconciliations(%(results)s)

-- name: held_scopes
-- The circuit breaker's holds when a batch begins (the table is empty while every provider answers).
SELECT channel, sender_id FROM drumbeat.channel_holds

-- name: hold_deliveries
SELECT drumbeat.hold_deliveries(%(ids)s, %(channel)s, %(sender_id)s, %(reason)s, %(error_code)s, %(error_message)s,
                                %(seconds)s)

-- name: clear_holds
SELECT * FROM drumbeat.clear_holds(%(channel)s, %(sender_id)s)

-- name: outbox_insert
-- Not for a delivery erased while it was in flight (erase_contact wiped its address): no copy of the text.
INSERT INTO drumbeat.outbox (workspace_id, delivery_id, channel, to_address, from_address, subject, text_body,
                             html_body, headers)
SELECT %(workspace_id)s, %(delivery_id)s, %(channel)s, %(to_address)s, %(from_address)s, %(subject)s,
       %(text)s, %(html)s, %(headers)s
WHERE EXISTS (SELECT 1 FROM drumbeat.deliveries d WHERE d.id = %(delivery_id)s AND d.to_address IS NOT NULL)
ON CONFLICT (delivery_id) DO NOTHING

-- name: due_backlog
-- How many steps are due now, capped: enough to decide how many batch jobs a tick fans out.
SELECT count(*) FROM (
    SELECT 1 FROM drumbeat.enrollments e
    WHERE e.status IN ('scheduled', 'active') AND e.next_action_at <= drumbeat.clock_now()
      -- the same filter as drumbeat.lock_due: a paused sequence's due steps make no jobs
      AND EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = e.sequence_id AND s.status = 'active')
    LIMIT %(cap)s
) AS due

-- name: active_channels
-- The message channels that active sequences use (production refuses to start without their credentials).
SELECT DISTINCT st.kind FROM drumbeat.sequences s
JOIN drumbeat.sequence_steps st ON st.sequence_id = s.id AND st.removed_at IS NULL AND st.is_active
WHERE s.status = 'active' AND st.kind IN ('sms', 'email')
