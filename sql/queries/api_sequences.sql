-- Statements of the sequence endpoints (app/api/sequences.py). They run as the caller (role
-- authenticated, request.jwt.claims set): RLS limits every SELECT to the caller's workspaces, so another
-- tenant's sequence is simply not there (404), and the contract functions answer its id with PT404.
--
-- Steps are read back in the definition's own shape (docs/ARCHITECTURE.md), so that a client can GET a
-- sequence, change it and PUT it back: delay as {"value", "unit"} (drumbeat.delay_json), send_at as
-- "HH:MM", and a condition's then/else taken back out of `condition`. Step edits (add, change, remove,
-- reorder) are the contract's step functions, which renumber conditions as RPC callers get them too.

-- name: create_sequence
SELECT drumbeat_api.create_sequence(%(workspace_id)s::uuid, %(definition)s::jsonb) AS id

-- name: update_sequence
SELECT drumbeat_api.update_sequence(%(id)s::uuid, %(definition)s::jsonb)

-- name: step_definitions
-- The read half of PATCH /sequences/{id}: the live steps as definition steps, with their ids.
SELECT drumbeat.step_definitions(%(id)s::uuid) AS steps

-- name: add_step
SELECT drumbeat_api.add_step(%(id)s::uuid, %(step)s::jsonb, %(position)s::integer) AS id

-- name: update_step
SELECT drumbeat_api.update_step(%(id)s::uuid, %(step_id)s::uuid, %(changes)s::jsonb)

-- name: remove_step
SELECT drumbeat_api.remove_step(%(id)s::uuid, %(step_id)s::uuid)

-- name: reorder_steps
SELECT drumbeat_api.reorder_steps(%(id)s::uuid, %(step_ids)s::uuid[])

-- name: activate_sequence
SELECT drumbeat_api.activate_sequence(%(id)s::uuid, %(start_at)s::timestamptz)

-- name: pause_sequence
SELECT drumbeat_api.pause_sequence(%(id)s::uuid)

-- name: resume_sequence
SELECT drumbeat_api.resume_sequence(%(id)s::uuid)

-- name: archive_sequence
SELECT drumbeat_api.archive_sequence(%(id)s::uuid)

-- name: duplicate_sequence
SELECT drumbeat_api.duplicate_sequence(%(id)s::uuid, %(name)s::text) AS id

-- name: sequence_stats
SELECT drumbeat_api.sequence_stats(%(id)s::uuid) AS stats

-- name: preview_schedule
-- An instant past the year 9999 (a start that far out, or delays of thousands of weeks) is beyond what
-- clients' date types (and Python's) hold: it reads as null ("not within the representable future").
SELECT p.step_position AS position, p.step_id, p.kind,
       CASE WHEN p.planned_at < '9999-12-30 00:00:00+00'::timestamptz THEN p.planned_at END AS planned_at
FROM drumbeat_api.preview_schedule(%(id)s::uuid, %(contact_id)s::uuid, %(start_at)s::timestamptz) AS p

-- name: lock_sequence_edits
-- Before the read half of a read-modify-write edit (PATCH, the steps endpoints): concurrent edits of one
-- sequence take turns until the request's transaction ends (update_sequence and the step functions take
-- the same lock). A statement of its own, so that the read after it sees the edit it waited for.
SELECT drumbeat.lock_sequence_edits(%(id)s::uuid)

-- name: sequence_for_edit
SELECT s.id, s.status, s.name, s.description, s.channel, s.settings, s.exit_conditions
FROM drumbeat.sequences s
WHERE s.id = %(id)s::uuid

-- name: get_sequence
SELECT s.id, s.workspace_id, s.name, s.description, s.status, s.channel, s.settings, s.exit_conditions,
       s.version, s.scheduled_start_at, s.created_by, s.created_at, s.updated_at, s.activated_at, s.archived_at,
       (SELECT pg_catalog.count(*) FROM drumbeat.sequence_steps st
        WHERE st.sequence_id = s.id AND st.removed_at IS NULL) AS step_count
FROM drumbeat.sequences s
WHERE s.id = %(id)s::uuid

-- name: list_sequences
-- Newest first; served by sequences_workspace_idx (workspace_id, created_at), read backwards.
SELECT s.id, s.workspace_id, s.name, s.description, s.status, s.channel, s.settings, s.exit_conditions,
       s.version, s.scheduled_start_at, s.created_by, s.created_at, s.updated_at, s.activated_at, s.archived_at,
       (SELECT pg_catalog.count(*) FROM drumbeat.sequence_steps st
        WHERE st.sequence_id = s.id AND st.removed_at IS NULL) AS step_count
FROM drumbeat.sequences s
WHERE s.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)
ORDER BY s.created_at DESC, s.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_sequences
SELECT pg_catalog.count(*) AS total
FROM drumbeat.sequences s
WHERE s.workspace_id = %(workspace_id)s::uuid
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)

-- name: list_steps
-- A sequence's live steps in order (removed steps stay in the table for the record but are not shown).
SELECT st.id, st.sequence_id, st.position, st.kind, st.name,
       drumbeat.delay_json(st.delay) AS delay,
       pg_catalog.to_char(st.send_at, 'HH24:MI') AS send_at,
       st.subject, st.body, st.html_body, st.variants,
       st.condition - 'then' - 'else' AS condition, st.condition -> 'then' AS "then", st.condition -> 'else' AS "else",
       st.action, st.task_description, st.is_active, st.created_at, st.updated_at
FROM drumbeat.sequence_steps st
WHERE st.sequence_id = %(sequence_id)s::uuid AND st.removed_at IS NULL
ORDER BY st.position

-- name: preview_context
-- What a message template sees when rendered for this contact (the dispatcher's context, claim_messages in
-- sql/functions/dispatch.sql, less the thread, which exists only at send time): the sender the step would
-- use on `channel` (none: null), and the contact's latest enrollment in the sequence, else a new one's.
SELECT pg_catalog.jsonb_build_object(
    'contact', pg_catalog.jsonb_build_object('id', c.id, 'phone', c.phone, 'email', c.email, 'first_name', c.first_name,
        'last_name', c.last_name, 'company', c.company, 'title', c.title, 'timezone', c.timezone, 'fields', c.fields, 'tags', c.tags),
    'sequence', pg_catalog.jsonb_build_object('id', s.id, 'name', s.name),
    'workspace', pg_catalog.jsonb_build_object('id', w.id, 'name', w.name),
    'sender', (SELECT pg_catalog.jsonb_build_object('id', se.id, 'address', se.address, 'name', se.name)
               FROM drumbeat.senders se
               WHERE se.id = drumbeat.step_sender(s.workspace_id, s.settings, %(channel)s::text)),
    'enrollment', COALESCE(
        (SELECT pg_catalog.jsonb_build_object('id', e.id, 'metadata', e.metadata, 'enrolled_at', e.enrolled_at,
                                              'assigned_to', e.assigned_to)
         FROM drumbeat.enrollments e WHERE e.contact_id = c.id AND e.sequence_id = s.id
         ORDER BY e.enrolled_at DESC LIMIT 1),
        pg_catalog.jsonb_build_object('id', NULL, 'metadata', '{}'::jsonb, 'enrolled_at', pg_catalog.now(),
                                      'assigned_to', NULL))) AS context
FROM drumbeat.contacts c
JOIN drumbeat.sequences s ON s.id = %(sequence_id)s::uuid AND s.workspace_id = c.workspace_id
JOIN drumbeat.workspaces w ON w.id = c.workspace_id
WHERE c.id = %(contact_id)s::uuid AND c.deleted_at IS NULL
