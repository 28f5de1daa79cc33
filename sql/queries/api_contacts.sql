-- Statements of the contact endpoints (app/api/contacts.py, app/api/csv_import.py). They run as the
-- caller (role authenticated, request.jwt.claims set): RLS limits every SELECT to the caller's
-- workspaces. Soft-deleted contacts (deleted_at) are invisible to the API.

-- name: upsert_contacts
SELECT u.contact_id, u.created FROM drumbeat_api.upsert_contacts(%(workspace_id)s, %(contacts)s) AS u

-- name: check_contacts
SELECT e.i, e.field, e.message FROM drumbeat_api.check_contacts(%(workspace_id)s, %(contacts)s) AS e

-- name: update_contact
SELECT drumbeat_api.update_contact(%(id)s, %(changes)s)

-- name: delete_contact
SELECT drumbeat_api.delete_contact(%(id)s) AS enrollments_ended

-- name: erase_contact
SELECT drumbeat_api.erase_contact(%(id)s) AS erasure

-- name: export_contact
SELECT drumbeat_api.export_contact(%(id)s) AS export

-- name: resubscribe_contact
SELECT drumbeat_api.resubscribe_contact(%(id)s, %(channel)s, %(reason)s)

-- name: get_contact
SELECT c.id, c.workspace_id, c.phone, c.email, c.first_name, c.last_name, c.company, c.title, c.timezone,
       c.fields, c.tags, c.sms_opted_out_at, c.email_opted_out_at, c.bounced_at, c.phone_bounced_at, c.created_at, c.updated_at
FROM drumbeat.contacts c
WHERE c.id = %(id)s AND c.deleted_at IS NULL

-- name: list_contacts
-- q: a case-insensitive substring of the name ("first last"), email or phone; tag: contacts carrying it;
-- opted_out: true = opted out of SMS or email, false = of neither. NULL filters match everything.
SELECT c.id, c.workspace_id, c.phone, c.email, c.first_name, c.last_name, c.company, c.title, c.timezone,
       c.fields, c.tags, c.sms_opted_out_at, c.email_opted_out_at, c.bounced_at, c.phone_bounced_at, c.created_at, c.updated_at
FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s AND c.deleted_at IS NULL
  AND (%(q)s::text IS NULL
       OR pg_catalog.concat_ws(' ', c.first_name, c.last_name) ILIKE %(q)s
       OR c.email ILIKE %(q)s OR c.phone ILIKE %(q)s)
  AND (%(tag)s::text IS NULL OR %(tag)s::text = ANY (c.tags))
  AND (%(opted_out)s::boolean IS NULL
       OR %(opted_out)s::boolean = (c.sms_opted_out_at IS NOT NULL OR c.email_opted_out_at IS NOT NULL))
ORDER BY c.created_at, c.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_contacts
-- The total, when the page itself cannot show it (a full page, or one past the end): app/api/paging.py.
SELECT pg_catalog.count(*) AS total
FROM drumbeat.contacts c
WHERE c.workspace_id = %(workspace_id)s AND c.deleted_at IS NULL
  AND (%(q)s::text IS NULL
       OR pg_catalog.concat_ws(' ', c.first_name, c.last_name) ILIKE %(q)s
       OR c.email ILIKE %(q)s OR c.phone ILIKE %(q)s)
  AND (%(tag)s::text IS NULL OR %(tag)s::text = ANY (c.tags))
  AND (%(opted_out)s::boolean IS NULL
       OR %(opted_out)s::boolean = (c.sms_opted_out_at IS NOT NULL OR c.email_opted_out_at IS NOT NULL))

-- name: contact_enrollments
SELECT e.id, e.sequence_id, s.name AS sequence_name, e.status, st.position AS current_step_position,
       e.next_action_at, e.enrolled_at, e.started_at, e.paused_at, e.completed_at, e.exit_reason
FROM drumbeat.enrollments e
JOIN drumbeat.sequences s ON s.id = e.sequence_id
JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
WHERE e.contact_id = %(contact_id)s
ORDER BY e.enrolled_at DESC, e.id DESC
