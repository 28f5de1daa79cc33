-- 0017 contract: one contact at a time (update, soft delete) and the checks of a bulk import.
-- Creating contacts stays upsert_contacts (0007); these functions complete the set the HTTP API's
-- /contacts endpoints need. SECURITY INVOKER: RLS decides which contacts the caller can touch.

-- Why: a bulk import reports every bad row and imports the rest, where upsert_contacts stops at the
-- first; both run the very same checks (contact_input_errors), so a chunk cleared by this one is
-- accepted by upsert_contacts. Field paths read p_contacts[i].phone, as upsert_contacts reports them.
CREATE FUNCTION drumbeat_api.check_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, field text, message text)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'member');
    IF pg_catalog.jsonb_typeof(p_contacts) IS DISTINCT FROM 'array' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON array of contact objects', 'p_contacts');
    END IF;
    RETURN QUERY SELECT e.i, e.field, e.message FROM drumbeat.contact_input_errors(p_workspace_id, p_contacts) AS e
    ORDER BY e.i, e.field;
END
$$;

-- Why: a partial update of one live contact. Keys present in p_changes overwrite (null clears), absent
-- keys are kept; `fields` is merged key by key (a null value removes that key, `"fields": null` clears
-- them all); `tags` is replaced. Phone and email stay unique in the workspace (PT409 naming the field)
-- and a contact keeps a phone or an email. Opt-outs are never touched here (only record_event).
CREATE FUNCTION drumbeat_api.update_contact(p_contact_id uuid, p_changes jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'member');
    v_row drumbeat.contacts;
    v_key text;
    v_phone text;
    v_email text;
    v_fields jsonb;
BEGIN
    SELECT * INTO v_row FROM drumbeat.contacts c WHERE c.id = p_contact_id FOR UPDATE;
    IF v_row.deleted_at IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT404', 'contact not found', 'p_contact_id');
    END IF;
    PERFORM drumbeat.check_object(p_changes, 'p_changes',
        ARRAY['phone', 'email', 'first_name', 'last_name', 'company', 'title', 'timezone', 'fields', 'tags']);
    FOREACH v_key IN ARRAY ARRAY['phone', 'email', 'first_name', 'last_name', 'company', 'title', 'timezone'] LOOP
        PERFORM drumbeat.json_text(p_changes -> v_key, 'p_changes.' || v_key, false, 1000);
    END LOOP;
    v_phone := CASE WHEN p_changes ? 'phone' THEN NULLIF(pg_catalog.btrim(p_changes ->> 'phone'), '') ELSE v_row.phone END;
    v_email := CASE WHEN p_changes ? 'email'
                    THEN pg_catalog.lower(NULLIF(pg_catalog.btrim(p_changes ->> 'email'), '')) ELSE v_row.email END;
    IF v_phone !~ '^\+[1-9][0-9]{6,14}$' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an E.164 number such as +15551234567', 'p_changes.phone');
    END IF;
    IF v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' OR pg_catalog.length(v_email) > 254 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an email address such as ada@example.com', 'p_changes.email');
    END IF;
    IF v_phone IS NULL AND v_email IS NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'a contact needs a phone or an email',
            CASE WHEN p_changes ? 'phone' THEN 'p_changes.phone' ELSE 'p_changes.email' END);
    END IF;
    PERFORM drumbeat.check_timezone(p_changes ->> 'timezone', 'p_changes.timezone');
    IF pg_catalog.jsonb_typeof(p_changes -> 'fields') NOT IN ('object', 'null') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON object', 'p_changes.fields');
    END IF;
    IF pg_catalog.jsonb_typeof(p_changes -> 'tags') NOT IN ('array', 'null')
       OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(p_changes -> 'tags') = 'array'
                                                                    THEN p_changes -> 'tags' ELSE '[]' END) AS g
                  WHERE pg_catalog.jsonb_typeof(g) <> 'string') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of strings', 'p_changes.tags');
    END IF;
    -- Deleted contacts count: they keep their phone and email (and opt-outs) until re-imported.
    IF v_phone IS DISTINCT FROM v_row.phone AND EXISTS (SELECT 1 FROM drumbeat.contacts c
            WHERE c.workspace_id = v_workspace_id AND c.phone = v_phone AND c.id <> p_contact_id) THEN
        PERFORM drumbeat.raise_error('PT409', 'belongs to another contact', 'p_changes.phone');
    END IF;
    IF v_email IS DISTINCT FROM v_row.email AND EXISTS (SELECT 1 FROM drumbeat.contacts c
            WHERE c.workspace_id = v_workspace_id AND c.email = v_email AND c.id <> p_contact_id) THEN
        PERFORM drumbeat.raise_error('PT409', 'belongs to another contact', 'p_changes.email');
    END IF;
    v_fields := CASE
        WHEN NOT p_changes ? 'fields' THEN v_row.fields
        WHEN p_changes -> 'fields' = 'null' THEN '{}'
        ELSE (v_row.fields || (p_changes -> 'fields'))
             - ARRAY(SELECT f.key FROM pg_catalog.jsonb_each(p_changes -> 'fields') AS f WHERE f.value = 'null')
    END;
    UPDATE drumbeat.contacts c SET
        phone = v_phone,
        email = v_email,
        first_name = CASE WHEN p_changes ? 'first_name' THEN p_changes ->> 'first_name' ELSE c.first_name END,
        last_name = CASE WHEN p_changes ? 'last_name' THEN p_changes ->> 'last_name' ELSE c.last_name END,
        company = CASE WHEN p_changes ? 'company' THEN p_changes ->> 'company' ELSE c.company END,
        title = CASE WHEN p_changes ? 'title' THEN p_changes ->> 'title' ELSE c.title END,
        timezone = CASE WHEN p_changes ? 'timezone' THEN p_changes ->> 'timezone' ELSE c.timezone END,
        fields = v_fields,
        tags = CASE WHEN p_changes ? 'tags' THEN drumbeat.jsonb_text_array(p_changes -> 'tags') ELSE c.tags END,
        updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id;
END
$$;

-- Why: deleting a contact is soft (deleted_at): its opt-outs must survive so that a re-import can never
-- re-subscribe anyone, and its history stays. Its live enrollments end at once as 'cancelled' with
-- exit_reason 'contact_deleted' (the trigger cancels pending tasks and records each exit), and a
-- 'contact_deleted' event is logged. Returns how many enrollments ended. A deleted contact is gone for
-- the API (PT404), until upsert_contacts brings it back.
CREATE FUNCTION drumbeat_api.delete_contact(p_contact_id uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'member');
    v_live uuid[];
BEGIN
    UPDATE drumbeat.contacts c SET deleted_at = drumbeat.clock_now(), updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id AND c.deleted_at IS NULL;
    IF NOT FOUND THEN
        PERFORM drumbeat.raise_error('PT404', 'contact not found', 'p_contact_id');
    END IF;
    v_live := ARRAY(SELECT e.id FROM drumbeat.enrollments e
                    WHERE e.contact_id = p_contact_id AND e.status IN ('scheduled', 'active', 'paused') FOR UPDATE);
    PERFORM drumbeat.exit_enrollments(v_live, 'cancelled', 'contact_deleted');
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, actor_id, payload)
    VALUES (v_workspace_id, 'contact_deleted', p_contact_id, drumbeat.current_user_id(),
            pg_catalog.jsonb_build_object('enrollments_ended', pg_catalog.cardinality(v_live)));
    RETURN pg_catalog.cardinality(v_live);
END
$$;

GRANT EXECUTE ON FUNCTION drumbeat_api.check_contacts(uuid, jsonb), drumbeat_api.update_contact(uuid, jsonb),
    drumbeat_api.delete_contact(uuid)
    TO authenticated, service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
