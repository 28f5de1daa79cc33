-- Reads for Supabase clients: what the HTTP API's GETs answer, one RPC call each, under the caller's RLS (the
-- contract's policies are scoped to the caller's workspaces), so a web app shows a sequence with its steps,
-- an enrollment's history, the task queue or what was sent without stitching tables together. Lists are
-- newest first (the task queue: soonest due first), p_limit 1-500 from p_offset; filters are optional.
-- Templates are returned as written (rendering is Jinja's, in Python: POST /steps/{id}/preview).

-- Why: a sequence and its live steps in order (the shape a PUT over HTTP, or update_sequence, takes back).
CREATE OR REPLACE FUNCTION drumbeat_api.get_sequence(p_sequence_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    RETURN (SELECT pg_catalog.jsonb_build_object(
                'id', s.id, 'workspace_id', s.workspace_id, 'name', s.name, 'description', s.description,
                'status', s.status, 'channel', s.channel, 'settings', s.settings, 'exit_conditions', s.exit_conditions,
                'version', s.version, 'scheduled_start_at', s.scheduled_start_at, 'created_at', s.created_at,
                'updated_at', s.updated_at, 'activated_at', s.activated_at, 'archived_at', s.archived_at,
                'steps', drumbeat.step_definitions(s.id))
            FROM drumbeat.sequences s WHERE s.id = p_sequence_id);
END
$$;

-- Why: one enrollment with what happened to it: its messages (status, times, the text as sent) and its
-- timeline of events, oldest first (the last 500).
CREATE OR REPLACE FUNCTION drumbeat_api.get_enrollment(p_enrollment_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('enrollments', p_enrollment_id, 'p_enrollment_id', 'member');
    RETURN (SELECT pg_catalog.to_jsonb(e) - 'current_step_id' || pg_catalog.jsonb_build_object(
                'current_step_id', e.current_step_id,
                'messages', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                 'id', d.id, 'step_id', d.step_id, 'channel', d.channel, 'status', d.status,
                                 'to_address', d.to_address, 'subject', d.subject, 'body', d.body,
                                 'provider_message_id', d.provider_message_id, 'error_code', d.error_code,
                                 'error_message', d.error_message, 'scheduled_for', d.scheduled_for,
                                 'sent_at', d.sent_at, 'delivered_at', d.delivered_at)
                                 ORDER BY d.created_at, d.id), '[]')
                             FROM drumbeat.deliveries d WHERE d.enrollment_id = e.id),
                'events', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                               'kind', ev.kind, 'occurred_at', ev.occurred_at, 'step_id', ev.step_id,
                               'delivery_id', ev.delivery_id, 'actor_id', ev.actor_id, 'payload', ev.payload)
                               ORDER BY ev.occurred_at, ev.id), '[]')
                           FROM (SELECT * FROM drumbeat.events x WHERE x.enrollment_id = e.id
                                 ORDER BY x.occurred_at DESC, x.id DESC LIMIT 500) AS ev))
            FROM drumbeat.enrollments e WHERE e.id = p_enrollment_id);
END
$$;

-- Why: a workspace's enrollments, newest first, by status, sequence or contact.
CREATE OR REPLACE FUNCTION drumbeat_api.list_enrollments(p_workspace_id uuid, p_status text DEFAULT NULL,
    p_sequence_id uuid DEFAULT NULL, p_contact_id uuid DEFAULT NULL, p_limit integer DEFAULT 50, p_offset integer DEFAULT 0)
RETURNS TABLE(id uuid, sequence_id uuid, sequence_name text, contact_id uuid, status text, current_step_position integer,
              next_action_at timestamptz, assigned_to uuid, metadata jsonb, enrolled_at timestamptz,
              completed_at timestamptz, exit_reason text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_role(p_workspace_id, 'member'), drumbeat.check_page(p_limit, p_offset);
    RETURN QUERY
        SELECT e.id, e.sequence_id, s.name, e.contact_id, e.status, st.position, e.next_action_at, e.assigned_to,
               e.metadata, e.enrolled_at, e.completed_at, e.exit_reason
        FROM drumbeat.enrollments e
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        LEFT JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        WHERE e.workspace_id = p_workspace_id
          AND (p_status IS NULL OR e.status = p_status)
          AND (p_sequence_id IS NULL OR e.sequence_id = p_sequence_id)
          AND (p_contact_id IS NULL OR e.contact_id = p_contact_id)
        ORDER BY e.id DESC
        LIMIT p_limit OFFSET p_offset;
END
$$;

-- Why: the task queue as a rep works it: soonest due first, with who to call or write (name, phone,
-- email, company) and which sequence and step it comes from.
CREATE OR REPLACE FUNCTION drumbeat_api.list_tasks(p_workspace_id uuid, p_status text DEFAULT 'pending',
    p_assigned_to uuid DEFAULT NULL, p_limit integer DEFAULT 50, p_offset integer DEFAULT 0)
RETURNS TABLE(id uuid, kind text, title text, description text, status text, due_at timestamptz,
              assigned_to uuid, enrollment_id uuid, sequence_id uuid, sequence_name text, step_id uuid, step_name text,
              contact_id uuid, contact jsonb, completed_at timestamptz, outcome text, notes text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_role(p_workspace_id, 'member'), drumbeat.check_page(p_limit, p_offset);
    RETURN QUERY
        SELECT t.id, t.kind, t.title, t.description, t.status, t.due_at, t.assigned_to, t.enrollment_id, e.sequence_id,
               s.name, t.step_id, st.name, t.contact_id,
               pg_catalog.jsonb_build_object('first_name', c.first_name, 'last_name', c.last_name, 'phone', c.phone,
                   'email', c.email, 'company', c.company, 'title', c.title, 'timezone', c.timezone),
               t.completed_at, t.outcome, t.notes
        FROM drumbeat.tasks t
        JOIN drumbeat.enrollments e ON e.id = t.enrollment_id
        JOIN drumbeat.sequences s ON s.id = e.sequence_id
        JOIN drumbeat.sequence_steps st ON st.id = t.step_id
        JOIN drumbeat.contacts c ON c.id = t.contact_id
        WHERE t.workspace_id = p_workspace_id
          AND (p_status IS NULL OR t.status = p_status)
          AND (p_assigned_to IS NULL OR t.assigned_to = p_assigned_to)
        ORDER BY t.due_at, t.id
        LIMIT p_limit OFFSET p_offset;
END
$$;

-- Why: what was sent, newest first: the text as sent, from and to, the provider's id and the status.
CREATE OR REPLACE FUNCTION drumbeat_api.list_messages(p_workspace_id uuid, p_contact_id uuid DEFAULT NULL,
    p_sequence_id uuid DEFAULT NULL, p_status text DEFAULT NULL, p_limit integer DEFAULT 50, p_offset integer DEFAULT 0)
RETURNS TABLE(id uuid, channel text, status text, contact_id uuid, enrollment_id uuid, sequence_id uuid, step_id uuid,
              sender_id uuid, from_address text, to_address text, subject text, body text, provider_message_id text,
              error_code text, error_message text, sent_at timestamptz, delivered_at timestamptz, created_at timestamptz)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_role(p_workspace_id, 'member'), drumbeat.check_page(p_limit, p_offset);
    RETURN QUERY
        SELECT d.id, d.channel, d.status, d.contact_id, d.enrollment_id, d.sequence_id, d.step_id, d.sender_id,
               se.address, d.to_address, d.subject, d.body, d.provider_message_id, d.error_code, d.error_message,
               d.sent_at, d.delivered_at, d.created_at
        FROM drumbeat.deliveries d
        LEFT JOIN drumbeat.senders se ON se.id = d.sender_id
        WHERE d.workspace_id = p_workspace_id
          AND (p_contact_id IS NULL OR d.contact_id = p_contact_id)
          AND (p_sequence_id IS NULL OR d.sequence_id = p_sequence_id)
          AND (p_status IS NULL OR d.status = p_status)
        ORDER BY d.created_at DESC, d.id DESC
        LIMIT p_limit OFFSET p_offset;
END
$$;

-- Why: one page's bounds, checked alike for every list (errors name the argument).
CREATE OR REPLACE FUNCTION drumbeat.check_page(p_limit integer, p_offset integer)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 500 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be between 1 and 500', 'p_limit');
    END IF;
    IF p_offset IS NULL OR p_offset < 0 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 0 or more', 'p_offset');
    END IF;
END
$$;
