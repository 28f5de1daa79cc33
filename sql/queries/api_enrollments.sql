-- Statements of the enrollment, task and event endpoints (app/api/enrollments.py). They run as the
-- caller (role authenticated, request.jwt.claims set): RLS limits every SELECT to the caller's
-- workspaces, and the contract functions answer another tenant's id with PT404.
--
-- Lists are newest first by id: enrollment ids are time-ordered (UUIDv7 layout), so "ORDER BY e.id DESC"
-- is enrolled order, unique (stable pages) and served by an index. Each list has one variant per
-- driving index, so that even a cached generic plan reaches the rows through an index:
--   list_enrollments             enrollments_workspace_id_key (workspace_id, id): a backward scan
--   list_enrollments_of_sequence enrollments_sequence_status_idx (sequence_id, status)
--   list_enrollments_of_contact  enrollments_contact_idx (contact_id, status)
-- The other filters are residual (NULL matches everything). A page reads only its own rows (top-N down
-- the index); the total is a separate count_* statement over the same index and filters, which reads no
-- joins and can be an index-only scan (the API skips it when the page itself shows the total).

-- name: enroll_contacts
SELECT r.contact_id, r.enrollment_id, r.outcome
FROM drumbeat_api.enroll_contacts(%(sequence_id)s::uuid, %(contact_ids)s::uuid[], %(start_at)s::timestamptz,
                                  %(start_at_step)s::integer, %(assigned_to)s::uuid, %(metadata)s::jsonb) AS r

-- name: sequence_workspace
-- The workspace of a sequence the caller sees (bulk enrollment's log line names it).
SELECT s.workspace_id FROM drumbeat.sequences s WHERE s.id = %(sequence_id)s

-- name: get_enrollment
SELECT e.id, e.workspace_id, e.sequence_id, s.name AS sequence_name, e.contact_id, e.status,
       e.current_step_id, st.position AS current_step_position, e.step_attempt, e.next_action_at,
       e.assigned_to, e.metadata, e.enrolled_at, e.started_at, e.paused_at, e.completed_at, e.exit_reason,
       e.updated_at
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
WHERE e.id = %(id)s

-- name: list_enrollments
SELECT e.id, e.workspace_id, e.sequence_id, s.name AS sequence_name, e.contact_id, e.status,
       e.current_step_id, st.position AS current_step_position, e.step_attempt, e.next_action_at,
       e.assigned_to, e.metadata, e.enrolled_at, e.started_at, e.paused_at, e.completed_at, e.exit_reason,
       e.updated_at
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
WHERE e.workspace_id = %(workspace_id)s
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)
ORDER BY e.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_enrollments
SELECT pg_catalog.count(*) AS total
FROM drumbeat.enrollments e
WHERE e.workspace_id = %(workspace_id)s
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)

-- name: list_enrollments_of_sequence
SELECT e.id, e.workspace_id, e.sequence_id, s.name AS sequence_name, e.contact_id, e.status,
       e.current_step_id, st.position AS current_step_position, e.step_attempt, e.next_action_at,
       e.assigned_to, e.metadata, e.enrolled_at, e.started_at, e.paused_at, e.completed_at, e.exit_reason,
       e.updated_at
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
WHERE e.sequence_id = %(sequence_id)s::uuid AND e.workspace_id = %(workspace_id)s
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)
ORDER BY e.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_enrollments_of_sequence
SELECT pg_catalog.count(*) AS total
FROM drumbeat.enrollments e
WHERE e.sequence_id = %(sequence_id)s::uuid AND e.workspace_id = %(workspace_id)s
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)

-- name: list_enrollments_of_contact
-- Also takes sequence_id (a contact has few enrollments: its own index is the narrower one).
SELECT e.id, e.workspace_id, e.sequence_id, s.name AS sequence_name, e.contact_id, e.status,
       e.current_step_id, st.position AS current_step_position, e.step_attempt, e.next_action_at,
       e.assigned_to, e.metadata, e.enrolled_at, e.started_at, e.paused_at, e.completed_at, e.exit_reason,
       e.updated_at
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
WHERE e.contact_id = %(contact_id)s::uuid AND e.workspace_id = %(workspace_id)s
  AND (%(sequence_id)s::uuid IS NULL OR e.sequence_id = %(sequence_id)s::uuid)
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)
ORDER BY e.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_enrollments_of_contact
SELECT pg_catalog.count(*) AS total
FROM drumbeat.enrollments e
WHERE e.contact_id = %(contact_id)s::uuid AND e.workspace_id = %(workspace_id)s
  AND (%(sequence_id)s::uuid IS NULL OR e.sequence_id = %(sequence_id)s::uuid)
  AND (%(status)s::text IS NULL OR e.status = %(status)s::text)
  AND (%(assigned_to)s::uuid IS NULL OR e.assigned_to = %(assigned_to)s::uuid)

-- name: enrollment_deliveries
-- Served by deliveries_enrollment_idx (enrollment_id, step_id); an enrollment has a handful.
SELECT d.id, d.step_id, st.position AS step_position, d.channel, d.status, d.to_address, d.sender_id,
       d.variant, d.attempt, d.scheduled_for, d.sent_at, d.delivered_at, d.provider_message_id,
       d.error_code, d.error_message, d.segments, d.created_at
FROM drumbeat.deliveries d
JOIN drumbeat.sequence_steps st ON st.id = d.step_id
WHERE d.enrollment_id = %(id)s
ORDER BY d.created_at, d.attempt, d.id

-- name: enrollment_events
-- The timeline, oldest first; served by events_enrollment_idx (enrollment_id, occurred_at).
SELECT ev.id, ev.kind, ev.occurred_at, ev.step_id, ev.delivery_id, ev.actor_id, ev.payload
FROM drumbeat.events ev
WHERE ev.enrollment_id = %(id)s
ORDER BY ev.occurred_at, ev.id
LIMIT %(limit)s

-- name: pause_enrollment
SELECT drumbeat_api.pause_enrollment(%(id)s)

-- name: resume_enrollment
SELECT drumbeat_api.resume_enrollment(%(id)s)

-- name: cancel_enrollment
SELECT drumbeat_api.cancel_enrollment(%(id)s, COALESCE(%(reason)s::text, 'cancelled'))

-- name: skip_to_step
SELECT drumbeat_api.skip_to_step(%(id)s, %(position)s::integer)

-- name: reassign_enrollment
SELECT drumbeat_api.reassign_enrollment(%(id)s, %(user_id)s::uuid)

-- name: reassign_task
SELECT drumbeat_api.reassign_task(%(id)s, %(user_id)s::uuid)

-- name: list_tasks
-- Served by tasks_assignee_idx (workspace_id, assigned_to, status, due_at); soonest due first; and one task by
-- its id (the workspace then left out: RLS decides). With the contact, step and sequence a rep needs, and the
-- context its description renders in (a message template's: app/core/templates.py).
SELECT t.id, t.workspace_id, t.enrollment_id, e.sequence_id, s.name AS sequence_name, t.step_id, st.name AS step_name,
       t.contact_id, t.kind, t.title, t.description, t.assigned_to, t.status, t.due_at, t.completed_at, t.completed_by,
       t.outcome, t.notes, t.created_at,
       pg_catalog.jsonb_build_object('first_name', c.first_name, 'last_name', c.last_name, 'phone', c.phone,
           'email', c.email, 'company', c.company, 'title', c.title, 'timezone', c.timezone) AS contact,
       pg_catalog.jsonb_build_object(
           'contact', pg_catalog.jsonb_build_object('id', c.id, 'phone', c.phone, 'email', c.email,
               'first_name', c.first_name, 'last_name', c.last_name, 'company', c.company, 'title', c.title,
               'timezone', c.timezone, 'fields', c.fields, 'tags', c.tags),
           'sequence', pg_catalog.jsonb_build_object('id', s.id, 'name', s.name),
           'workspace', pg_catalog.jsonb_build_object('id', w.id, 'name', w.name),
           'enrollment', pg_catalog.jsonb_build_object('id', e.id, 'metadata', e.metadata, 'enrolled_at', e.enrolled_at,
               'assigned_to', e.assigned_to)) AS template_context
FROM drumbeat.tasks t
JOIN drumbeat.enrollments e ON e.id = t.enrollment_id
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = t.step_id
JOIN drumbeat.contacts c ON c.id = t.contact_id
JOIN drumbeat.workspaces w ON w.id = t.workspace_id
WHERE (%(workspace_id)s::uuid IS NULL OR t.workspace_id = %(workspace_id)s::uuid)
  AND (%(id)s::uuid IS NULL OR t.id = %(id)s::uuid)
  AND (%(assigned_to)s::uuid IS NULL OR t.assigned_to = %(assigned_to)s::uuid)
  AND (%(status)s::text IS NULL OR t.status = %(status)s::text)
  AND (%(due_before)s::timestamptz IS NULL OR t.due_at < %(due_before)s::timestamptz)
  AND (%(due_after)s::timestamptz IS NULL OR t.due_at >= %(due_after)s::timestamptz)
ORDER BY t.due_at, t.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_tasks
SELECT pg_catalog.count(*) AS total
FROM drumbeat.tasks t
WHERE t.workspace_id = %(workspace_id)s
  AND (%(assigned_to)s::uuid IS NULL OR t.assigned_to = %(assigned_to)s::uuid)
  AND (%(status)s::text IS NULL OR t.status = %(status)s::text)
  AND (%(due_before)s::timestamptz IS NULL OR t.due_at < %(due_before)s::timestamptz)
  AND (%(due_after)s::timestamptz IS NULL OR t.due_at >= %(due_after)s::timestamptz)

-- name: complete_task
SELECT drumbeat_api.complete_task(%(id)s, %(outcome)s::text, %(notes)s::text)

-- name: record_event
SELECT drumbeat_api.record_event(%(contact_id)s, %(kind)s::text, %(payload)s::jsonb)

-- name: recorded_events
-- What record_event just logged in this transaction: its rows carry the transaction's clock reading,
-- drumbeat.clock_now(), their default (served by events_contact_kind_idx (contact_id, kind,
-- occurred_at)), with each enrollment's status after it.
SELECT ev.id, ev.occurred_at, ev.workspace_id, ev.enrollment_id, ev.sequence_id, ev.step_id, ev.delivery_id,
       e.status AS enrollment_status, e.exit_reason
FROM drumbeat.events ev
LEFT JOIN drumbeat.enrollments e ON e.id = ev.enrollment_id
WHERE ev.contact_id = %(contact_id)s AND ev.kind = %(kind)s::text AND ev.occurred_at = drumbeat.clock_now()
ORDER BY ev.id

-- name: list_events
-- The events feed (drumbeat_api.list_events): published events after a cursor, never skipping one.
SELECT e.cursor, e.id, e.type, e.occurred_at, e.data
FROM drumbeat_api.list_events(%(workspace_id)s, %(after)s, %(types)s, %(limit)s) AS e
