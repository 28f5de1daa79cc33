-- Statements of the operator console's pages (app/console/pages.py). Like the API's, they run as the
-- signed-in caller (role authenticated, request.jwt.claims set), so RLS decides what a page can show;
-- every change a page makes goes through the contract functions (the API's named statements).

-- name: my_workspaces
SELECT w.id, w.name, w.timezone, m.role
FROM drumbeat.workspace_members m
JOIN drumbeat.workspaces w ON w.id = m.workspace_id
WHERE m.user_id = drumbeat.current_user_id()
ORDER BY w.name, w.id

-- name: sequences_page
-- Newest first, each with its enrollment counts: one pass over the page's sequences' enrollments
-- (enrollments_sequence_status_idx), not over the workspace's.
SELECT s.id, s.name, s.status, s.channel, s.created_at, s.activated_at,
       (SELECT pg_catalog.count(*) FROM drumbeat.sequence_steps st
        WHERE st.sequence_id = s.id AND st.removed_at IS NULL) AS step_count,
       c.enrolled, c.active, c.replied
FROM drumbeat.sequences s
CROSS JOIN LATERAL (
    SELECT pg_catalog.count(*) AS enrolled,
           pg_catalog.count(*) FILTER (WHERE e.status IN ('active', 'scheduled', 'paused')) AS active,
           pg_catalog.count(*) FILTER (WHERE e.status = 'replied') AS replied
    FROM drumbeat.enrollments e WHERE e.sequence_id = s.id
) c
WHERE s.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)
  AND (%(status)s::text IS NOT NULL OR s.status <> 'archived')
ORDER BY s.created_at DESC, s.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_sequences_page
SELECT pg_catalog.count(*) AS total
FROM drumbeat.sequences s
WHERE s.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)
  AND (%(status)s::text IS NOT NULL OR s.status <> 'archived')

-- name: sequence_names
SELECT s.id, s.name FROM drumbeat.sequences s
WHERE s.workspace_id = %(workspace_id)s::uuid AND s.status <> 'archived'
ORDER BY s.name, s.id

-- name: enrollments_page
-- Newest first (enrollment ids are time-ordered: enrollments_workspace_id_key read backwards), with the
-- contact and the step each is at; filtered by status, sequence and assignee.
SELECT e.id, e.status, e.next_action_at, e.enrolled_at, e.exit_reason, e.assigned_to,
       e.sequence_id, s.name AS sequence_name, st.position AS step_position, st.name AS step_name, st.kind AS step_kind,
       c.id AS contact_id, c.first_name, c.last_name, c.email, c.phone
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
JOIN drumbeat.contacts c ON c.id = e.contact_id
WHERE e.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(sequence_id)s::uuid IS NULL OR e.sequence_id = %(sequence_id)s::uuid)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)
ORDER BY e.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_enrollments_page
SELECT pg_catalog.count(*) AS total
FROM drumbeat.enrollments e
WHERE e.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(sequence_id)s::uuid IS NULL OR e.sequence_id = %(sequence_id)s::uuid)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)

-- name: tasks_page
-- One tab of the queue: due (pending, due now), upcoming (pending, due later) or completed (newest first);
-- everyone's, or one assignee's (tasks_assignee_idx).
SELECT t.id, t.kind, t.title, t.description, t.status, t.due_at, t.completed_at, t.outcome, t.notes,
       t.enrollment_id, s.name AS sequence_name, st.name AS step_name, st.position AS step_position,
       c.id AS contact_id, c.first_name, c.last_name, c.email, c.phone, c.company, c.title AS contact_title,
       c.fields AS contact_fields, c.tags AS contact_tags, w.name AS workspace_name
FROM drumbeat.tasks t
JOIN drumbeat.enrollments e ON e.id = t.enrollment_id
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = t.step_id
JOIN drumbeat.contacts c ON c.id = t.contact_id
JOIN drumbeat.workspaces w ON w.id = t.workspace_id
WHERE t.workspace_id = %(workspace_id)s::uuid
  AND (%(assigned_to)s::uuid IS NULL OR t.assigned_to = %(assigned_to)s::uuid)
  AND CASE %(tab)s::text
        WHEN 'due' THEN t.status = 'pending' AND t.due_at <= pg_catalog.now()
        WHEN 'upcoming' THEN t.status = 'pending' AND t.due_at > pg_catalog.now()
        ELSE t.status <> 'pending' END
ORDER BY CASE WHEN %(tab)s::text = 'completed' THEN t.completed_at END DESC NULLS LAST, t.due_at, t.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_tasks_page
SELECT pg_catalog.count(*) AS total
FROM drumbeat.tasks t
WHERE t.workspace_id = %(workspace_id)s::uuid
  AND (%(assigned_to)s::uuid IS NULL OR t.assigned_to = %(assigned_to)s::uuid)
  AND CASE %(tab)s::text
        WHEN 'due' THEN t.status = 'pending' AND t.due_at <= pg_catalog.now()
        WHEN 'upcoming' THEN t.status = 'pending' AND t.due_at > pg_catalog.now()
        ELSE t.status <> 'pending' END

-- name: messages_page
-- What was sent, newest first (deliveries_workspace_created_idx): each delivery with its text as sent (the
-- outbox's copy when the outbox transport recorded it instead of sending), the contact and the step.
SELECT d.id, d.channel, d.status, d.to_address, d.sent_at, d.created_at, d.error_message, d.segments,
       COALESCE(o.subject, d.subject) AS subject, COALESCE(o.text_body, d.body) AS body, o.id IS NOT NULL AS in_outbox,
       s.name AS sequence_name, st.name AS step_name, st.position AS step_position,
       c.id AS contact_id, c.first_name, c.last_name
FROM drumbeat.deliveries d
LEFT JOIN drumbeat.outbox o ON o.delivery_id = d.id
JOIN drumbeat.sequence_steps st ON st.id = d.step_id
JOIN drumbeat.sequences s ON s.id = st.sequence_id
JOIN drumbeat.contacts c ON c.id = d.contact_id
WHERE d.workspace_id = %(workspace_id)s::uuid
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: contact_messages
-- Every message sent to one contact, newest first: through their enrollments (enrollments_contact_idx,
-- then deliveries_enrollment_idx), a handful each.
SELECT d.id, d.channel, d.status, d.to_address, d.sent_at, d.created_at, d.error_message, d.segments,
       COALESCE(o.subject, d.subject) AS subject, COALESCE(o.text_body, d.body) AS body, o.id IS NOT NULL AS in_outbox,
       s.name AS sequence_name, st.name AS step_name, st.position AS step_position
FROM drumbeat.enrollments e
JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
LEFT JOIN drumbeat.outbox o ON o.delivery_id = d.id
JOIN drumbeat.sequence_steps st ON st.id = d.step_id
JOIN drumbeat.sequences s ON s.id = e.sequence_id
WHERE e.contact_id = %(contact_id)s::uuid
ORDER BY d.created_at DESC, d.id DESC
LIMIT 200

-- name: count_messages_page
SELECT pg_catalog.count(*) AS total
FROM drumbeat.deliveries d
WHERE d.workspace_id = %(workspace_id)s::uuid

-- name: contacts_page
SELECT c.id, c.first_name, c.last_name, c.email, c.phone, c.company, c.timezone, c.created_at,
       c.sms_opted_out_at, c.email_opted_out_at, c.bounced_at, c.phone_bounced_at
FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s::uuid AND c.deleted_at IS NULL
  AND (%(q)s::text IS NULL OR c.email ILIKE '%%' || %(q)s || '%%' OR c.phone LIKE '%%' || %(q)s || '%%'
       OR (c.first_name || ' ' || COALESCE(c.last_name, '')) ILIKE '%%' || %(q)s || '%%')
ORDER BY c.created_at DESC, c.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_contacts_page
SELECT pg_catalog.count(*) AS total
FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s::uuid AND c.deleted_at IS NULL
  AND (%(q)s::text IS NULL OR c.email ILIKE '%%' || %(q)s || '%%' OR c.phone LIKE '%%' || %(q)s || '%%'
       OR (c.first_name || ' ' || COALESCE(c.last_name, '')) ILIKE '%%' || %(q)s || '%%')

-- name: contact
SELECT c.id, c.first_name, c.last_name, c.email, c.phone, c.company, c.title, c.timezone, c.fields, c.tags,
       c.sms_opted_out_at, c.email_opted_out_at, c.bounced_at, c.phone_bounced_at, c.created_at
FROM drumbeat.contacts c
WHERE c.id = %(id)s::uuid AND c.deleted_at IS NULL

-- name: contact_timeline
-- Everything that happened to a contact, newest first (events_contact_idx).
SELECT ev.id, ev.kind, ev.occurred_at, ev.enrollment_id, ev.payload, s.name AS sequence_name,
       st.position AS step_position, st.name AS step_name
FROM drumbeat.events ev
LEFT JOIN drumbeat.enrollments e ON e.id = ev.enrollment_id
LEFT JOIN drumbeat.sequences s ON s.id = e.sequence_id
LEFT JOIN drumbeat.sequence_steps st ON st.id = ev.step_id
WHERE ev.contact_id = %(id)s::uuid
ORDER BY ev.occurred_at DESC, ev.id DESC
LIMIT 200

-- name: find_contact
-- The contact an enrollment form names, by email or E.164 phone.
SELECT c.id FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s::uuid AND c.deleted_at IS NULL
  AND (c.email = pg_catalog.lower(%(who)s) OR c.phone = %(who)s)
LIMIT 1

-- name: preview_contacts
-- The contacts a builder can preview with: the sequence's latest enrollees, else the workspace's newest.
SELECT c.id, c.first_name, c.last_name, c.email, c.phone
FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s::uuid AND c.deleted_at IS NULL
ORDER BY EXISTS (SELECT 1 FROM drumbeat.enrollments e WHERE e.contact_id = c.id AND e.sequence_id = %(sequence_id)s::uuid) DESC,
         c.created_at DESC
LIMIT 25

-- name: getting_started
-- What a new workspace has done yet (the sequences page's first steps): each an existence check.
SELECT EXISTS (SELECT 1 FROM drumbeat.senders se WHERE se.workspace_id = %(workspace_id)s::uuid) AS sender,
       EXISTS (SELECT 1 FROM drumbeat.contacts c WHERE c.workspace_id = %(workspace_id)s::uuid) AS contact,
       EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.workspace_id = %(workspace_id)s::uuid) AS sequence,
       EXISTS (SELECT 1 FROM drumbeat.enrollments e WHERE e.workspace_id = %(workspace_id)s::uuid) AS enrollment
