-- 0007 contract: caller checks, workspaces, holidays, senders, contacts.
-- drumbeat_api functions are SECURITY INVOKER: they run with the caller's rights, so RLS decides what
-- they can see; the explicit checks only turn "nothing visible" into the right error code.

-- Why: anonymous calls are PT401 before anything else, so they never look like "not found".
CREATE FUNCTION drumbeat.require_caller()
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF NOT drumbeat.is_trusted_caller() AND drumbeat.current_user_id() IS NULL THEN
        PERFORM drumbeat.raise_error('PT401', 'authentication required: request.jwt.claims has no user (sub)');
    END IF;
END
$$;

-- Why: every function taking an id finds its workspace the same way: through RLS, so another
-- tenant's id is PT404 (indistinguishable from a missing one), then checks the caller's role.
CREATE FUNCTION drumbeat.workspace_of(p_table text, p_id uuid, p_field text, p_min_role text DEFAULT 'member')
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    v_workspace_id uuid;
BEGIN
    PERFORM drumbeat.require_caller();
    EXECUTE pg_catalog.format('SELECT workspace_id FROM drumbeat.%I WHERE id = $1', p_table)
        INTO v_workspace_id USING p_id;
    IF v_workspace_id IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', pg_catalog.format('%s not found', pg_catalog.rtrim(p_table, 's')), p_field);
    END IF;
    PERFORM drumbeat.require_role(v_workspace_id, p_min_role);
    RETURN v_workspace_id;
END
$$;

-- Why: time zones are IANA names; checked against the reference table with a clear message.
CREATE FUNCTION drumbeat.check_timezone(p_timezone text, p_field text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    IF p_timezone IS NOT NULL AND NOT EXISTS (SELECT 1 FROM drumbeat.timezones z WHERE z.name = p_timezone) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown time zone %s: use an IANA name such as America/New_York',
            pg_catalog.to_jsonb(p_timezone)), p_field);
    END IF;
    RETURN p_timezone;
END
$$;

GRANT EXECUTE ON FUNCTION drumbeat.require_caller(), drumbeat.workspace_of(text, uuid, text, text),
    drumbeat.check_timezone(text, text) TO authenticated, service_role;

-- Why: a workspace is the tenant; its creator becomes its owner (a service_role caller with no user
-- creates an ownerless workspace and adds members itself).
CREATE FUNCTION drumbeat_api.create_workspace(p_name text, p_timezone text DEFAULT 'UTC')
RETURNS uuid
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    PERFORM drumbeat.require_caller();
    IF p_name IS NULL OR pg_catalog.length(pg_catalog.btrim(p_name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 200 characters', 'p_name');
    END IF;
    PERFORM drumbeat.check_timezone(COALESCE(p_timezone, 'UTC'), 'p_timezone');
    INSERT INTO drumbeat.workspaces (id, name, timezone) VALUES (v_id, pg_catalog.btrim(p_name), COALESCE(p_timezone, 'UTC'));
    IF drumbeat.current_user_id() IS NOT NULL THEN
        INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (v_id, drumbeat.current_user_id(), 'owner');
    END IF;
    RETURN v_id;
END
$$;

-- Why: the workspace's holiday list is replaced as a whole (what a calendar import wants).
CREATE FUNCTION drumbeat_api.set_holidays(p_workspace_id uuid, p_dates date[])
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF p_dates IS NULL OR pg_catalog.array_position(p_dates, NULL) IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of dates without nulls', 'p_dates');
    END IF;
    DELETE FROM drumbeat.holidays h WHERE h.workspace_id = p_workspace_id;
    INSERT INTO drumbeat.holidays (workspace_id, day)
    SELECT DISTINCT p_workspace_id, d FROM pg_catalog.unnest(p_dates) AS d;
END
$$;

-- Why: senders are the numbers / from-addresses steps go out from; admins manage them.
CREATE FUNCTION drumbeat_api.create_sender(p_workspace_id uuid, p_channel text, p_address text, p_settings jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
    v_settings jsonb := COALESCE(p_settings, '{}');
    v_address text := pg_catalog.btrim(p_address);
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF p_channel IS NULL OR p_channel NOT IN ('sms', 'email') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be sms or email', 'p_channel');
    END IF;
    v_address := CASE p_channel WHEN 'email' THEN pg_catalog.lower(v_address) ELSE v_address END;
    IF p_channel = 'sms' AND v_address !~ '^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$' OR v_address IS NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'an sms sender is an E.164 number (+15551234567) or a Messaging Service SID (MG...)', 'p_address');
    ELSIF p_channel = 'email' AND v_address !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN
        PERFORM drumbeat.raise_error('PT422', 'an email sender is an address such as sales@example.com', 'p_address');
    END IF;
    PERFORM drumbeat.check_object(v_settings, 'p_settings', ARRAY['name', 'rate_per_second', 'daily_cap']);
    INSERT INTO drumbeat.senders (id, workspace_id, channel, address, name, rate_per_second, daily_cap)
    VALUES (v_id, p_workspace_id, p_channel, v_address,
            drumbeat.json_text(v_settings -> 'name', 'p_settings.name', false, 200),
            CASE WHEN v_settings ? 'rate_per_second'
                 THEN drumbeat.json_int(v_settings -> 'rate_per_second', 'p_settings.rate_per_second', 1, 1000) ELSE 1 END,
            CASE WHEN v_settings ? 'daily_cap' THEN drumbeat.json_int(v_settings -> 'daily_cap', 'p_settings.daily_cap', 1, 10000000) END)
    ON CONFLICT ON CONSTRAINT senders_address_unique DO NOTHING;
    IF NOT FOUND THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('this workspace already has %s sender %s', p_channel, v_address), 'p_address');
    END IF;
    RETURN v_id;
END
$$;

-- Why: bulk contact input is checked in one pass, set-based (CSV imports send 100k rows); the first
-- bad row is reported with its path, e.g. p_contacts[41].phone, and nothing is written.
CREATE FUNCTION drumbeat.contact_input_errors(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, field text, message text)
LANGUAGE sql
STABLE
SET search_path = ''
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
CREATE FUNCTION drumbeat.match_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(i bigint, obj jsonb, phone text, email text, contact_id uuid, created boolean)
LANGUAGE sql
VOLATILE
SET search_path = ''
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

-- Why: CRMs push contacts in bulk; a contact is matched on phone, then email. Keys present in the
-- input overwrite (null clears), absent keys are kept, custom fields merge. Opt-outs are never
-- touched here (only record_event changes them), and a re-imported deleted contact comes back with
-- its opt-outs intact.
CREATE FUNCTION drumbeat_api.upsert_contacts(p_workspace_id uuid, p_contacts jsonb)
RETURNS TABLE(contact_id uuid, created boolean)
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = ''
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
            phone = CASE WHEN m.obj ? 'phone' THEN m.phone ELSE c.phone END,
            email = CASE WHEN m.obj ? 'email' THEN m.email ELSE c.email END,
            first_name = CASE WHEN m.obj ? 'first_name' THEN m.obj ->> 'first_name' ELSE c.first_name END,
            last_name = CASE WHEN m.obj ? 'last_name' THEN m.obj ->> 'last_name' ELSE c.last_name END,
            company = CASE WHEN m.obj ? 'company' THEN m.obj ->> 'company' ELSE c.company END,
            title = CASE WHEN m.obj ? 'title' THEN m.obj ->> 'title' ELSE c.title END,
            timezone = CASE WHEN m.obj ? 'timezone' THEN m.obj ->> 'timezone' ELSE c.timezone END,
            fields = c.fields || COALESCE(NULLIF(m.obj -> 'fields', 'null'), '{}'),
            tags = CASE WHEN m.obj ? 'tags' THEN drumbeat.jsonb_text_array(m.obj -> 'tags') ELSE c.tags END,
            deleted_at = NULL,
            updated_at = pg_catalog.now()
        FROM m WHERE c.id = m.contact_id AND NOT m.created
        RETURNING c.id
    ), inserted AS (
        INSERT INTO drumbeat.contacts (id, workspace_id, phone, email, first_name, last_name, company, title, timezone, fields, tags)
        SELECT m.contact_id, p_workspace_id, m.phone, m.email, m.obj ->> 'first_name', m.obj ->> 'last_name',
               m.obj ->> 'company', m.obj ->> 'title', m.obj ->> 'timezone',
               COALESCE(NULLIF(m.obj -> 'fields', 'null'), '{}'), drumbeat.jsonb_text_array(m.obj -> 'tags')
        FROM m WHERE m.created
        RETURNING id
    )
    -- Data-modifying CTEs always run to completion, whether or not the result reads them.
    SELECT m.contact_id, m.created FROM m ORDER BY m.i;
END
$$;

-- Why: tags arrive as a JSON array; stored as text[] (deduplicated, order kept).
CREATE FUNCTION drumbeat.jsonb_text_array(p_value jsonb)
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT COALESCE(pg_catalog.array_agg(t.tag ORDER BY t.first), '{}')
    FROM (SELECT e AS tag, pg_catalog.min(o) AS first
          FROM pg_catalog.jsonb_array_elements_text(COALESCE(NULLIF(p_value, 'null'), '[]')) WITH ORDINALITY AS x(e, o)
          GROUP BY e) AS t
$$;

GRANT EXECUTE ON FUNCTION drumbeat.contact_input_errors(uuid, jsonb), drumbeat.match_contacts(uuid, jsonb),
    drumbeat.jsonb_text_array(jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION drumbeat_api.create_workspace(text, text), drumbeat_api.set_holidays(uuid, date[]),
    drumbeat_api.create_sender(uuid, text, text, jsonb), drumbeat_api.upsert_contacts(uuid, jsonb)
    TO authenticated, service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
