-- A person's data on request (GDPR articles 15 and 17): everything held about a contact, exported; and
-- erased, everywhere, while the anonymous rows that make the counts stay.

-- Why: an erased phone or email is remembered only as this digest, enough to recognise it at a re-import
-- and nothing more. Scoped by workspace (one tenant's list says nothing about another's). A digest of a
-- phone number could be reversed by trying every number; what it protects against is reading the list,
-- and the list is readable by the contract's functions only.
CREATE OR REPLACE FUNCTION drumbeat.identity_digest(p_workspace_id uuid, p_kind text, p_address text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
        p_workspace_id::text || ':' || p_kind || ':' || p_address, 'UTF8')), 'hex')
$$;

-- Why: is this address one a person had erased? Imports and edits refuse it (contact_input_errors,
-- update_contact): a re-import must not put them back into a sequence.
CREATE OR REPLACE FUNCTION drumbeat.is_erased_identity(p_workspace_id uuid, p_kind text, p_address text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_address IS NOT NULL AND EXISTS (
        SELECT 1 FROM drumbeat.erased_identities x
        WHERE x.workspace_id = p_workspace_id AND x.kind = p_kind
          AND x.digest = drumbeat.identity_digest(p_workspace_id, p_kind, p_address))
$$;

-- Why: what of an event's payload may stay once its person is erased: an allow-list of the engine's own
-- keys (ids, statuses, codes, outcomes), because integrations put anything in payloads (record_event takes
-- free-form JSON: an attendee's email, a note) and inbound ones carry texts, subjects, addresses, URLs. A
-- transition's or reassignment's "from" and "to" are statuses or member ids, not addresses, and stay; a
-- resubscription's reason is free text and goes.
CREATE OR REPLACE FUNCTION drumbeat.scrubbed_payload(p_kind text, p_payload jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_object_agg(k.key, k.value), '{}')
    FROM pg_catalog.jsonb_each(p_payload) AS k
    WHERE k.key IN ('channel', 'status', 'outcome', 'error_code', 'exit_reason', 'task_id', 'delivery_id',
                    'via_delivery_id', 'enrollment_id', 'step_id', 'kind', 'result', 'branch', 'action', 'event',
                    'endpoint_id', 'until', 'attempt', 'transient', 'message_sid', 'email_key', 'version',
                    'enrollments_replanned', 'link_name')
       OR (k.key IN ('from', 'to') AND p_kind IN ('started', 'resumed', 'paused', 'completed', 'exited',
                                                  'enrollment_reassigned', 'task_reassigned'))
       OR (k.key = 'reason' AND p_kind <> 'resubscribed')
$$;

-- Why: erasure on request (admins). The contact's live enrollments end (cancelled, contact_erased); its
-- name, addresses, fields and tags, the texts and addresses of every message sent to it (deliveries and
-- outbox), what it wrote back and its addresses in event payloads (its own events, and unmatched inbound
-- messages from its phone or email), message texts in queued webhook payloads, its tasks' notes and its
-- enrollments' metadata are wiped. What remains is anonymous: the contact row (erased_at, no name, no
-- address), deliveries with their statuses and times, events with their kinds, so every count stays. Its
-- phone and email (and the addresses its messages went to) go on the suppression list as digests. Logged
-- as contact_erased with the counts. Erasing twice changes nothing. Returns the counts.
CREATE OR REPLACE FUNCTION drumbeat_api.erase_contact(p_contact_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'admin');
    v_contact drumbeat.contacts;
    v_addresses text[];  -- every phone and email the person had here: the contact's and its messages'
    v_counts jsonb;
BEGIN
    SELECT * INTO v_contact FROM drumbeat.contacts c WHERE c.id = p_contact_id FOR UPDATE;
    IF v_contact.erased_at IS NOT NULL THEN
        RETURN pg_catalog.jsonb_build_object('contact_id', p_contact_id, 'erased_at', v_contact.erased_at, 'already_erased', true);
    END IF;
    PERFORM drumbeat.exit_enrollments(ARRAY(SELECT e.id FROM drumbeat.enrollments e WHERE e.contact_id = p_contact_id),
                                      'cancelled', 'contact_erased');
    SELECT pg_catalog.array_agg(DISTINCT a.address) INTO v_addresses
    FROM (SELECT v_contact.phone UNION SELECT v_contact.email
          UNION SELECT pg_catalog.lower(d.to_address)
          FROM drumbeat.enrollments e JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
          WHERE e.contact_id = p_contact_id) AS a(address)
    WHERE a.address IS NOT NULL;
    WITH suppressed AS (
        INSERT INTO drumbeat.erased_identities (workspace_id, kind, digest)
        SELECT DISTINCT v_workspace_id, k.kind, drumbeat.identity_digest(v_workspace_id, k.kind, a.address)
        FROM pg_catalog.unnest(v_addresses) AS a(address),
             LATERAL (SELECT CASE WHEN a.address LIKE '%@%' THEN 'email' ELSE 'phone' END AS kind) AS k
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), messages AS (  -- through the enrollments: deliveries have no index on contact_id
        UPDATE drumbeat.deliveries d SET to_address = NULL, subject = NULL, body = NULL, error_message = NULL
        FROM drumbeat.enrollments e WHERE e.contact_id = p_contact_id AND d.enrollment_id = e.id
        RETURNING d.id
    ), outbox AS (
        DELETE FROM drumbeat.outbox o USING messages m WHERE o.delivery_id = m.id RETURNING 1
    ), own_events AS (
        UPDATE drumbeat.events ev SET payload = drumbeat.scrubbed_payload(ev.kind, ev.payload)
        WHERE ev.contact_id = p_contact_id AND ev.payload <> drumbeat.scrubbed_payload(ev.kind, ev.payload)
        RETURNING 1
    ), unmatched AS (  -- messages from (or bounces about) any of its addresses that matched no contact then
        UPDATE drumbeat.events ev SET payload = drumbeat.scrubbed_payload(ev.kind, ev.payload)
        WHERE ev.workspace_id = v_workspace_id AND ev.kind = 'inbound_unmatched'
          AND (pg_catalog.lower(ev.payload ->> 'from') = ANY (v_addresses)
               OR COALESCE(ev.payload #> '{bounce,recipients}', '[]') ?| v_addresses)
        RETURNING 1
    ), webhook_texts AS (
        UPDATE drumbeat.webhook_messages m SET payload = m.payload #- '{data,message}' #- '{data,inbound}'
        FROM drumbeat.events ev
        WHERE ev.contact_id = p_contact_id AND m.event_id = ev.id AND m.workspace_id = v_workspace_id
          AND (m.payload #> '{data,message}' IS NOT NULL OR m.payload #> '{data,inbound}' IS NOT NULL)
        RETURNING 1
    ), tasks AS (
        UPDATE drumbeat.tasks t SET description = NULL, notes = NULL
        FROM drumbeat.enrollments e WHERE e.contact_id = p_contact_id AND t.enrollment_id = e.id
        RETURNING 1
    ), metadata AS (
        UPDATE drumbeat.enrollments e SET metadata = '{}', updated_at = pg_catalog.now()
        WHERE e.contact_id = p_contact_id AND e.metadata <> '{}'
        RETURNING 1
    )
    SELECT pg_catalog.jsonb_build_object(
        'addresses_suppressed', (SELECT pg_catalog.count(*) FROM suppressed),
        'messages_wiped', (SELECT pg_catalog.count(*) FROM messages),
        'outbox_rows_deleted', (SELECT pg_catalog.count(*) FROM outbox),
        'events_wiped', (SELECT pg_catalog.count(*) FROM own_events) + (SELECT pg_catalog.count(*) FROM unmatched),
        'webhook_messages_wiped', (SELECT pg_catalog.count(*) FROM webhook_texts),
        'tasks_wiped', (SELECT pg_catalog.count(*) FROM tasks),
        'enrollments_wiped', (SELECT pg_catalog.count(*) FROM metadata))
    INTO v_counts;
    UPDATE drumbeat.contacts c SET phone = NULL, email = NULL, first_name = NULL, last_name = NULL, company = NULL,
        title = NULL, timezone = NULL, fields = '{}', tags = '{}', phone_bounced_at = NULL,
        deleted_at = COALESCE(c.deleted_at, drumbeat.clock_now()), erased_at = drumbeat.clock_now(),
        updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, actor_id, payload)
    VALUES (v_workspace_id, 'contact_erased', p_contact_id, drumbeat.current_user_id(), v_counts);
    RETURN pg_catalog.jsonb_build_object('contact_id', p_contact_id, 'erased_at', drumbeat.clock_now(),
                                         'already_erased', false) || v_counts;
END
$$;

-- Why: a person's right of access (admins): everything held about the contact, as one JSON document: the
-- contact, its enrollments (with their sequence's name), every message sent to it with its text, its tasks
-- and its timeline of events (what it wrote back included). Logged as contact_exported.
CREATE OR REPLACE FUNCTION drumbeat_api.export_contact(p_contact_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'admin');
    v_export jsonb;
BEGIN
    SELECT pg_catalog.jsonb_build_object(
        'exported_at', drumbeat.clock_now(),
        'contact', pg_catalog.to_jsonb(c) - 'workspace_id',
        'enrollments', COALESCE((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', e.id, 'sequence_id', e.sequence_id, 'sequence', s.name, 'status', e.status,
                       'exit_reason', e.exit_reason, 'started_at', e.started_at, 'completed_at', e.completed_at,
                       'assigned_to', e.assigned_to, 'metadata', e.metadata, 'enrolled_at', e.enrolled_at)
                   ORDER BY e.enrolled_at, e.id)
            FROM drumbeat.enrollments e JOIN drumbeat.sequences s ON s.id = e.sequence_id
            WHERE e.contact_id = p_contact_id), '[]'),
        'messages', COALESCE((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', d.id, 'enrollment_id', d.enrollment_id, 'channel', d.channel, 'status', d.status,
                       'to', d.to_address, 'subject', d.subject, 'body', d.body, 'sent_at', d.sent_at,
                       'delivered_at', d.delivered_at, 'error_code', d.error_code)
                   ORDER BY d.claimed_at, d.id)
            FROM drumbeat.enrollments e JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
            WHERE e.contact_id = p_contact_id), '[]'),
        'tasks', COALESCE((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', t.id, 'kind', t.kind, 'title', t.title, 'description', t.description, 'status', t.status,
                       'due_at', t.due_at, 'completed_at', t.completed_at, 'outcome', t.outcome, 'notes', t.notes)
                   ORDER BY t.created_at, t.id)
            FROM drumbeat.enrollments e JOIN drumbeat.tasks t ON t.enrollment_id = e.id
            WHERE e.contact_id = p_contact_id), '[]'),
        'events', COALESCE((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'kind', ev.kind, 'occurred_at', ev.occurred_at, 'sequence_id', ev.sequence_id,
                       'enrollment_id', ev.enrollment_id, 'delivery_id', ev.delivery_id, 'payload', ev.payload)
                   ORDER BY ev.occurred_at, ev.id)
            FROM drumbeat.events ev WHERE ev.contact_id = p_contact_id), '[]'))
    INTO v_export
    FROM drumbeat.contacts c WHERE c.id = p_contact_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, actor_id)
    VALUES (v_workspace_id, 'contact_exported', p_contact_id, drumbeat.current_user_id());
    RETURN v_export;
END
$$;
