-- GET /api/v1/messages (app/api/messages.py): what was sent, as the caller may see it (RLS).

-- name: list_messages
-- Newest first (deliveries_workspace_created_idx, or deliveries_contact_created_idx for one contact's, or
-- deliveries_sequence_claimed_idx for one sequence's); every filter optional, and one message by its id (the
-- workspace then left out: RLS decides). The text is as sent: the outbox's copy (with its HTML part) when
-- the outbox transport recorded the message instead of sending it.
SELECT d.id, d.channel, d.status, d.contact_id, d.enrollment_id, e.sequence_id, s.name AS sequence_name,
       d.step_id, st.position AS step_position, st.name AS step_name, d.variant, d.attempt, d.sender_id,
       COALESCE(o.from_address, se.address) AS from_address, d.to_address,
       COALESCE(o.subject, d.subject) AS subject, COALESCE(o.text_body, d.body) AS body, o.html_body,
       d.segments, d.provider_message_id, d.error_code, d.error_message, d.scheduled_for, d.sent_at,
       d.delivered_at, d.created_at, o.id IS NOT NULL AS in_outbox
FROM drumbeat.deliveries d
JOIN drumbeat.enrollments e ON e.id = d.enrollment_id
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = d.step_id
LEFT JOIN drumbeat.senders se ON se.id = d.sender_id
LEFT JOIN drumbeat.outbox o ON o.delivery_id = d.id
WHERE (%(workspace_id)s::uuid IS NULL OR d.workspace_id = %(workspace_id)s::uuid)
  AND (%(id)s::uuid IS NULL OR d.id = %(id)s::uuid)
  AND (%(contact_id)s::uuid IS NULL OR d.contact_id = %(contact_id)s::uuid)
  AND (%(enrollment_id)s::uuid IS NULL OR d.enrollment_id = %(enrollment_id)s::uuid)
  AND (%(sequence_id)s::uuid IS NULL OR d.sequence_id = %(sequence_id)s::uuid)
  AND (%(status)s::text IS NULL OR d.status = %(status)s::text)
  AND (%(channel)s::text IS NULL OR d.channel = %(channel)s::text)
  AND (%(created_after)s::timestamptz IS NULL OR d.created_at >= %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL OR d.created_at < %(created_before)s::timestamptz)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_messages
SELECT pg_catalog.count(*) AS total
FROM drumbeat.deliveries d
WHERE d.workspace_id = %(workspace_id)s
  AND (%(contact_id)s::uuid IS NULL OR d.contact_id = %(contact_id)s::uuid)
  AND (%(enrollment_id)s::uuid IS NULL OR d.enrollment_id = %(enrollment_id)s::uuid)
  AND (%(sequence_id)s::uuid IS NULL OR d.sequence_id = %(sequence_id)s::uuid)
  AND (%(status)s::text IS NULL OR d.status = %(status)s::text)
  AND (%(channel)s::text IS NULL OR d.channel = %(channel)s::text)
  AND (%(created_after)s::timestamptz IS NULL OR d.created_at >= %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL OR d.created_at < %(created_before)s::timestamptz)

-- name: message_history
-- What happened to one message, oldest first (events_enrollment_idx, then the delivery's own): sent,
-- delivered, failed, bounced, opened, clicked...
SELECT ev.kind, ev.occurred_at, ev.payload
FROM drumbeat.events ev
WHERE ev.enrollment_id = %(enrollment_id)s AND ev.delivery_id = %(id)s
ORDER BY ev.occurred_at, ev.id
