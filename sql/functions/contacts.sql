-- Contacts: upsert in bulk (matched on phone, then email), check without writing, update, delete (soft:
-- the opt-outs stay, so a re-import never re-subscribes anyone).

-- Why: bulk contact input is checked in one pass, set-based (CSV imports send 100k rows); the first
-- bad row is reported with its path, e.g. p_contacts[41].phone, and nothing is written.
CREATE OR REPLACE FUNCTION drumbeat.contact_input_errors(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, field text, message text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH input AS (
        SELECT t.o - 1 AS i, 'p_contacts[' || (t.o - 1) || ']' AS path, t.e AS obj,
               NULLIF(pg_catalog.btrim(t.e ->> 'phone'), '') AS phone,
               pg_catalog.lower(NULLIF(pg_catalog.btrim(t.e ->> 'email'), '')) AS email
        FROM pg_catalog.jsonb_array_elements(p_contacts) WITH ORDINALITY AS t(e, o)
    ), matched AS (
        SELECT input.*, by_phone.id AS by_phone, by_email.id AS by_email
        FROM input
        LEFT JOIN drumbeat.contacts by_phone ON by_phone.workspace_id = p_workspace_id AND by_phone.phone = input.phone
        LEFT JOIN drumbeat.contacts by_email ON by_email.workspace_id = p_workspace_id AND by_email.email = input.email
    )
    SELECT i, path, 'must be a JSON object' FROM input WHERE pg_catalog.jsonb_typeof(obj) <> 'object'
    UNION ALL
    SELECT i, path || '.' || k, 'unknown field; expected phone, email, first_name, last_name, company, title, timezone, fields, tags'
    FROM input, pg_catalog.jsonb_object_keys(CASE WHEN pg_catalog.jsonb_typeof(obj) = 'object' THEN obj ELSE '{}' END) AS k
    WHERE k NOT IN ('phone', 'email', 'first_name', 'last_name', 'company', 'title', 'timezone', 'fields', 'tags')
    UNION ALL
    SELECT i, path || '.' || k, 'must be a string'
    FROM input, pg_catalog.unnest(ARRAY['phone', 'email', 'first_name', 'last_name', 'company', 'title', 'timezone']) AS k
    WHERE pg_catalog.jsonb_typeof(obj -> k) NOT IN ('string', 'null')
    UNION ALL
    SELECT i, path, 'needs a phone or an email' FROM input WHERE phone IS NULL AND email IS NULL
    UNION ALL
    SELECT i, path || '.phone', 'must be an E.164 number such as +15551234567' FROM input WHERE phone !~ '^\+[1-9][0-9]{6,14}$'
    UNION ALL
    SELECT i, path || '.email', 'must be an email address such as ada@example.com'
    FROM input WHERE email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' OR pg_catalog.length(email) > 254
    UNION ALL
    SELECT i, path || '.timezone', pg_catalog.format('unknown time zone %s: use an IANA name such as America/New_York', obj -> 'timezone')
    FROM input WHERE obj ->> 'timezone' IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM drumbeat.timezones z WHERE z.name = obj ->> 'timezone')
    UNION ALL
    -- An address an erased person had, unless a stored contact has it now (a number given to someone new):
    -- its digest is on the suppression list. Checked only when the workspace has erased anyone.
    SELECT i, path || '.' || k.kind, 'was erased at the person''s request: it cannot be added again'
    FROM matched, LATERAL (VALUES ('phone', matched.phone, matched.by_phone), ('email', matched.email, matched.by_email))
                  AS k(kind, address, stored)
    WHERE EXISTS (SELECT 1 FROM drumbeat.erased_identities x WHERE x.workspace_id = p_workspace_id)
      AND k.stored IS NULL AND drumbeat.is_erased_identity(p_workspace_id, k.kind, k.address)
    UNION ALL
    SELECT i, path || '.fields', 'must be a JSON object' FROM input WHERE pg_catalog.jsonb_typeof(obj -> 'fields') NOT IN ('object', 'null')
    UNION ALL
    SELECT i, path || '.tags', 'must be an array of strings' FROM input
    WHERE pg_catalog.jsonb_typeof(obj -> 'tags') NOT IN ('array', 'null')
       OR (pg_catalog.jsonb_typeof(obj -> 'tags') = 'array' AND EXISTS (
           SELECT 1 FROM pg_catalog.jsonb_array_elements(obj -> 'tags') g WHERE pg_catalog.jsonb_typeof(g) <> 'string'))
    UNION ALL
    SELECT i, path || '.email', 'belongs to another contact than the phone number' FROM matched
    WHERE by_phone IS NOT NULL AND by_email IS NOT NULL AND by_phone <> by_email
    UNION ALL
    -- Two rows for one contact (same phone, same email, or matching the same stored contact): window
    -- functions find the first row of each key, keeping this linear for 100k-row imports.
    SELECT d.i, d.path, pg_catalog.format('matches the same contact as p_contacts[%s]', pg_catalog.min(d.first))
    FROM (
        SELECT i, path, pg_catalog.min(i) OVER (PARTITION BY phone) AS first FROM matched WHERE phone IS NOT NULL
        UNION ALL
        SELECT i, path, pg_catalog.min(i) OVER (PARTITION BY email) FROM matched WHERE email IS NOT NULL
        UNION ALL
        SELECT i, path, pg_catalog.min(i) OVER (PARTITION BY COALESCE(by_phone, by_email))
        FROM matched WHERE COALESCE(by_phone, by_email) IS NOT NULL
    ) AS d
    WHERE d.first < d.i
    GROUP BY d.i, d.path
$$;

-- Why: the matched-or-new contact of each input row (phone first, then email), with a fresh id for
-- new ones; materialized once so the UPDATE, the INSERT and the result agree.
CREATE OR REPLACE FUNCTION drumbeat.match_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, obj jsonb, phone text, email text, contact_id uuid, created boolean)
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Joins, not per-row look-ups: a 100k-row import reads the workspace's contacts once (hash joins).
    SELECT input.i, input.obj, input.phone, input.email,
           COALESCE(by_phone.id, by_email.id, pg_catalog.gen_random_uuid()), by_phone.id IS NULL AND by_email.id IS NULL
    FROM (SELECT t.o - 1 AS i, t.e AS obj,
                 NULLIF(pg_catalog.btrim(t.e ->> 'phone'), '') AS phone,
                 pg_catalog.lower(NULLIF(pg_catalog.btrim(t.e ->> 'email'), '')) AS email
          FROM pg_catalog.jsonb_array_elements(p_contacts) WITH ORDINALITY AS t(e, o)) AS input
    LEFT JOIN drumbeat.contacts by_phone ON by_phone.workspace_id = p_workspace_id AND by_phone.phone = input.phone
    LEFT JOIN drumbeat.contacts by_email ON by_email.workspace_id = p_workspace_id AND by_email.email = input.email
$$;

-- Why: a contact without a time zone would get texts at the workspace's hours, 3 a.m. its own; its
-- number often says where it is. Both the HTTP API and RPC callers get this through upsert_contacts and
-- update_contact, so they infer alike, by libphonenumber's rule:
-- * only a landline's digits say where it is; a mobile (outside the few countries whose mobile numbers
--   carry an area code) or a toll-free number says only its country. The first region of the country
--   code (in rank order) that claims the number, by its leading digits or else by the number having a
--   type there, decides which it is; a number of no type there is not valid and implies nothing;
-- * a landline is looked up by its longest listed prefix (+1 212: America/New_York), another valid
--   number by its country code alone (+7 9..: Russia spans eleven zones, so none); a prefix spanning
--   several zones (+1 alone, +1 800) implies none.
-- PL/pgSQL for its cached plans: a 100k-row import calls it once per row without a time zone.
CREATE OR REPLACE FUNCTION drumbeat.phone_timezone(p_phone text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_digits text := pg_catalog.substr(p_phone, 2);
    v_country_code text;
    v_national text;
    v_plan drumbeat.phone_number_plans;
    v_geographic boolean;
BEGIN
    SELECT p.country_code INTO v_country_code  -- country codes are prefix-free: at most one matches
    FROM drumbeat.phone_number_plans p
    WHERE p.country_code IN (pg_catalog.substr(v_digits, 1, 1), pg_catalog.substr(v_digits, 1, 2),
                             pg_catalog.substr(v_digits, 1, 3))
    LIMIT 1;
    v_national := pg_catalog.substr(v_digits, pg_catalog.length(v_country_code) + 1);
    -- A loop, not a query: the patterns of a region are tried only when the regions before it did not
    -- claim the number (a query's filter tries those of all 25 regions sharing +1).
    FOR v_plan IN SELECT * FROM drumbeat.phone_number_plans p WHERE p.country_code = v_country_code ORDER BY p.rank LOOP
        CONTINUE WHEN v_plan.leading_digits IS NOT NULL AND NOT v_national ~ v_plan.leading_digits;
        v_geographic := CASE  -- null: of no known type in this region
            WHEN NOT v_national ~ v_plan.valid THEN NULL
            WHEN v_national ~ v_plan.special THEN false
            WHEN v_national ~ v_plan.fixed_line THEN true
            WHEN NOT v_plan.same_mobile_and_fixed_line AND v_national ~ v_plan.mobile THEN v_plan.mobile_is_geographic
        END;
        EXIT WHEN v_plan.leading_digits IS NOT NULL OR v_geographic IS NOT NULL;
    END LOOP;
    IF v_geographic IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT t.timezone
            FROM drumbeat.phone_timezones t
            WHERE t.prefix = ANY (ARRAY(SELECT pg_catalog.substr(CASE WHEN v_geographic THEN v_digits ELSE v_country_code END, 1, n)
                                        FROM pg_catalog.generate_series(1, 9) AS n))
            ORDER BY pg_catalog.length(t.prefix) DESC
            LIMIT 1);
END
$$;

-- Why: CRMs push contacts in bulk; a contact is matched on phone, then email. Keys present in the
-- input overwrite (null clears), absent keys are kept (an absent time zone is inferred from the phone
-- when the contact has none: drumbeat.phone_timezone), custom fields merge. Opt-outs are never
-- touched here (only record_event changes them), a contact opted out of a channel keeps that channel's
-- address, and a re-imported deleted contact comes back with its opt-outs intact.
CREATE OR REPLACE FUNCTION drumbeat_api.upsert_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(contact_id uuid, created boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_error record;
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'member');
    IF pg_catalog.jsonb_typeof(p_contacts) IS DISTINCT FROM 'array' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON array of contact objects', 'p_contacts');
    END IF;
    SELECT * INTO v_error FROM drumbeat.contact_input_errors(p_workspace_id, p_contacts) e ORDER BY e.i LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT422', v_error.message, v_error.field);
    END IF;
    RETURN QUERY
    WITH m AS MATERIALIZED (SELECT * FROM drumbeat.match_contacts(p_workspace_id, p_contacts)),
    updated AS (
        UPDATE drumbeat.contacts c SET
            -- An opt-out belongs to the address: an opted-out contact keeps its number or email, so that
            -- moving it away cannot free the address for a new, subscribed contact.
            phone = CASE WHEN m.obj ? 'phone' AND c.sms_opted_out_at IS NULL THEN m.phone ELSE c.phone END,
            phone_bounced_at = CASE WHEN m.obj ? 'phone' AND c.sms_opted_out_at IS NULL AND m.phone IS DISTINCT FROM c.phone
                                    THEN NULL ELSE c.phone_bounced_at END,  -- a new number has not bounced
            email = CASE WHEN m.obj ? 'email' AND c.email_opted_out_at IS NULL THEN m.email ELSE c.email END,
            first_name = CASE WHEN m.obj ? 'first_name' THEN m.obj ->> 'first_name' ELSE c.first_name END,
            last_name = CASE WHEN m.obj ? 'last_name' THEN m.obj ->> 'last_name' ELSE c.last_name END,
            company = CASE WHEN m.obj ? 'company' THEN m.obj ->> 'company' ELSE c.company END,
            title = CASE WHEN m.obj ? 'title' THEN m.obj ->> 'title' ELSE c.title END,
            timezone = CASE WHEN m.obj ? 'timezone' THEN m.obj ->> 'timezone'
                            ELSE COALESCE(c.timezone, drumbeat.phone_timezone(
                                CASE WHEN m.obj ? 'phone' AND c.sms_opted_out_at IS NULL THEN m.phone ELSE c.phone END)) END,
            fields = c.fields || COALESCE(NULLIF(m.obj -> 'fields', 'null'), '{}'),
            tags = CASE WHEN m.obj ? 'tags' THEN drumbeat.jsonb_text_array(m.obj -> 'tags') ELSE c.tags END,
            deleted_at = NULL,
            updated_at = pg_catalog.now()
        FROM m WHERE c.id = m.contact_id AND NOT m.created
        RETURNING c.id
    ), inserted AS (
        INSERT INTO drumbeat.contacts (id, workspace_id, phone, email, first_name, last_name, company, title, timezone, fields, tags)
        SELECT m.contact_id, p_workspace_id, m.phone, m.email, m.obj ->> 'first_name', m.obj ->> 'last_name',
               m.obj ->> 'company', m.obj ->> 'title',
               CASE WHEN m.obj ? 'timezone' THEN m.obj ->> 'timezone' ELSE drumbeat.phone_timezone(m.phone) END,
               COALESCE(NULLIF(m.obj -> 'fields', 'null'), '{}'), drumbeat.jsonb_text_array(m.obj -> 'tags')
        FROM m WHERE m.created
        RETURNING id
    )
    -- Data-modifying CTEs always run to completion, whether or not the result reads them.
    SELECT m.contact_id, m.created FROM m ORDER BY m.i;
END
$$;

-- Why: tags arrive as a JSON array; stored as text[] (deduplicated, order kept).
CREATE OR REPLACE FUNCTION drumbeat.jsonb_text_array(p_value jsonb)
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(t.tag ORDER BY t.first), '{}')
    FROM (SELECT e AS tag, pg_catalog.min(o) AS first
          FROM pg_catalog.jsonb_array_elements_text(COALESCE(NULLIF(p_value, 'null'), '[]')) WITH ORDINALITY AS x(e, o)
          GROUP BY e) AS t
$$;

-- Why: a bulk import reports every bad row and imports the rest, where upsert_contacts stops at the
-- first; both run the very same checks (contact_input_errors), so a chunk cleared by this one is
-- accepted by upsert_contacts. Field paths read p_contacts[i].phone, as upsert_contacts reports them.
CREATE OR REPLACE FUNCTION drumbeat_api.check_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, field text, message text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
CREATE OR REPLACE FUNCTION drumbeat_api.update_contact(p_contact_id uuid, p_changes jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    -- An opt-out belongs to the address: moving it off the contact would let a new contact take the
    -- address, subscribed. A contact with a new number or email is a new contact.
    IF v_phone IS DISTINCT FROM v_row.phone AND v_row.sms_opted_out_at IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT409', 'this contact opted out of SMS at its number, which stays with it: add the new number as a new contact', 'p_changes.phone');
    END IF;
    IF v_email IS DISTINCT FROM v_row.email AND v_row.email_opted_out_at IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT409', 'this contact opted out of email at its address, which stays with it: add the new address as a new contact', 'p_changes.email');
    END IF;
    IF v_phone IS DISTINCT FROM v_row.phone AND drumbeat.is_erased_identity(v_workspace_id, 'phone', v_phone) THEN
        PERFORM drumbeat.raise_error('PT422', 'was erased at the person''s request: it cannot be added again', 'p_changes.phone');
    END IF;
    IF v_email IS DISTINCT FROM v_row.email AND drumbeat.is_erased_identity(v_workspace_id, 'email', v_email) THEN
        PERFORM drumbeat.raise_error('PT422', 'was erased at the person''s request: it cannot be added again', 'p_changes.email');
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
        phone_bounced_at = CASE WHEN v_phone IS DISTINCT FROM c.phone THEN NULL ELSE c.phone_bounced_at END,
        email = v_email,
        first_name = CASE WHEN p_changes ? 'first_name' THEN p_changes ->> 'first_name' ELSE c.first_name END,
        last_name = CASE WHEN p_changes ? 'last_name' THEN p_changes ->> 'last_name' ELSE c.last_name END,
        company = CASE WHEN p_changes ? 'company' THEN p_changes ->> 'company' ELSE c.company END,
        title = CASE WHEN p_changes ? 'title' THEN p_changes ->> 'title' ELSE c.title END,
        timezone = CASE WHEN p_changes ? 'timezone' THEN p_changes ->> 'timezone'
                        ELSE COALESCE(c.timezone, drumbeat.phone_timezone(v_phone)) END,
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
CREATE OR REPLACE FUNCTION drumbeat_api.delete_contact(p_contact_id uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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

-- Why: an opt-out is cleared by the contact (START to our number) or, explicitly and on the record, by
-- an admin: say someone asked by phone to hear from us again. The reason is required and logged with
-- who gave it and the opt-outs it cleared (a 'resubscribed' event). Nothing else clears an opt-out:
-- not update_contact, not upsert_contacts, not a re-import of a deleted contact.
CREATE OR REPLACE FUNCTION drumbeat_api.resubscribe_contact(p_contact_id uuid, p_channel text, p_reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'admin');
    v_contact drumbeat.contacts;
    v_reason text := pg_catalog.btrim(p_reason);
BEGIN
    IF p_channel IS NULL OR p_channel NOT IN ('sms', 'email', 'all') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be sms, email or all', 'p_channel');
    END IF;
    IF v_reason IS NULL OR pg_catalog.length(v_reason) NOT BETWEEN 1 AND 500 THEN
        PERFORM drumbeat.raise_error('PT422', 'is required (1 to 500 characters): why this contact may be messaged again', 'p_reason');
    END IF;
    SELECT * INTO v_contact FROM drumbeat.contacts c WHERE c.id = p_contact_id FOR UPDATE;
    IF v_contact.deleted_at IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT404', 'contact not found', 'p_contact_id');
    END IF;
    IF NOT ((p_channel IN ('sms', 'all') AND v_contact.sms_opted_out_at IS NOT NULL)
            OR (p_channel IN ('email', 'all') AND v_contact.email_opted_out_at IS NOT NULL)) THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('the contact is not opted out of %s', p_channel), 'p_channel');
    END IF;
    UPDATE drumbeat.contacts c SET
        sms_opted_out_at = CASE WHEN p_channel IN ('sms', 'all') THEN NULL ELSE c.sms_opted_out_at END,
        email_opted_out_at = CASE WHEN p_channel IN ('email', 'all') THEN NULL ELSE c.email_opted_out_at END,
        updated_at = pg_catalog.now()
    WHERE c.id = p_contact_id;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, actor_id, payload)
    VALUES (v_workspace_id, 'resubscribed', p_contact_id, drumbeat.current_user_id(), pg_catalog.jsonb_strip_nulls(
        pg_catalog.jsonb_build_object('channel', p_channel, 'reason', v_reason,
            'sms_opted_out_at', CASE WHEN p_channel IN ('sms', 'all') THEN v_contact.sms_opted_out_at END,
            'email_opted_out_at', CASE WHEN p_channel IN ('email', 'all') THEN v_contact.email_opted_out_at END)));
END
$$;
