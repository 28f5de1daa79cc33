-- Statements of `drumbeat outbox` (app/commands/outbox.py), as the operator.

-- name: latest
-- The newest first (the outbox's primary key grows with each message it records).
SELECT o.created_at, o.channel, d.status, o.from_address, o.to_address, o.subject, o.text_body,
       s.name AS sequence_name, st.position AS step_position
FROM drumbeat.outbox o
JOIN drumbeat.deliveries d ON d.id = o.delivery_id
JOIN drumbeat.sequence_steps st ON st.id = d.step_id
JOIN drumbeat.sequences s ON s.id = st.sequence_id
WHERE %(workspace_id)s::uuid IS NULL OR o.workspace_id = %(workspace_id)s::uuid
ORDER BY o.id DESC
LIMIT %(limit)s
