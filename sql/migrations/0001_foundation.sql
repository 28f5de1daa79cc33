-- 0001 foundation: roles, schemas, the caller's identity, error helpers, the clock.
--
-- Plain SQL, forward-only. Apply in order with
--   psql -v ON_ERROR_STOP=1 -1 -f sql/migrations/0001_foundation.sql
-- or with `drumbeat migrate`; both give the same schema.

-- Roles. Supabase already has anon/authenticated/service_role; plain Postgres gets them here.
-- service_role bypasses RLS as it does on Supabase (only when we may grant that attribute).
DO $roles$
DECLARE
    v_can_bypass boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        IF v_can_bypass THEN
            CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
        ELSE
            CREATE ROLE service_role NOLOGIN NOINHERIT;
        END IF;
    END IF;
    -- Owns the few SECURITY DEFINER helpers that RLS policies need (membership look-ups), so that
    -- no policy has to query the table it protects and nothing else runs with elevated rights.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_definer') THEN
        CREATE ROLE drumbeat_definer NOLOGIN NOINHERIT;
    END IF;
END
$roles$;

-- The role applying migrations must be able to hand objects to drumbeat_definer.
GRANT drumbeat_definer TO current_user;

CREATE SCHEMA IF NOT EXISTS drumbeat;
COMMENT ON SCHEMA drumbeat IS 'Drumbeat private schema: tables and internal functions. Never expose over REST.';
CREATE SCHEMA IF NOT EXISTS drumbeat_api;
COMMENT ON SCHEMA drumbeat_api IS 'Drumbeat public contract: SECURITY INVOKER functions called over RPC and by the HTTP API.';

REVOKE ALL ON SCHEMA drumbeat FROM PUBLIC;
REVOKE ALL ON SCHEMA drumbeat_api FROM PUBLIC;
GRANT USAGE ON SCHEMA drumbeat TO authenticated, service_role, drumbeat_definer;
GRANT USAGE ON SCHEMA drumbeat_api TO authenticated, service_role;

-- Functions are executable by PUBLIC when created, and per-schema default privileges can only add
-- grants, never take PUBLIC's away. So every migration that creates functions ends by revoking
-- EXECUTE from PUBLIC on both schemas and granting it explicitly.

-- Why: PostgREST turns SQLSTATE 'PTxyz' into HTTP status xyz, so Supabase callers get the same
-- 404/409/422/403 that the Litestar API maps. `field` names the offending input path.
CREATE FUNCTION drumbeat.raise_error(p_code text, p_message text, p_field text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF p_field IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_field || ': ' || p_message,
        DETAIL = 'field: ' || p_field, COLUMN = p_field;
END
$$;
COMMENT ON FUNCTION drumbeat.raise_error(text, text, text) IS
    'Raise a Drumbeat error: PT401 unauthenticated, PT403 forbidden, PT404 not found, PT409 conflict, PT422 invalid input.';

-- Why: a value-returning wrapper lets validation run inside expressions (CASE/COALESCE).
CREATE FUNCTION drumbeat.invalid(p_field text, p_message text)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$ SELECT drumbeat.raise_error('PT422', p_message, p_field) $$;

-- Why: the caller's identity is the JWT `sub` that PostgREST (and our API) put in request.jwt.claims.
CREATE FUNCTION drumbeat.current_user_id()
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    v_sub text := NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub';
BEGIN
    RETURN v_sub::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;  -- a non-uuid subject is no Drumbeat user
END
$$;

-- Why: service_role (and superusers) bypass RLS; functions then skip membership checks the same way.
CREATE FUNCTION drumbeat.is_trusted_caller()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT current_user = 'service_role'
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls))
$$;

-- Why: one clock for every scheduling decision, so tests and `drumbeat demo` can move time
-- (SET drumbeat.clock = '2026-03-08 01:00Z') without sleeping; production leaves it unset.
CREATE FUNCTION drumbeat.clock_now()
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT COALESCE(NULLIF(pg_catalog.current_setting('drumbeat.clock', true), '')::timestamptz,
                    pg_catalog.now())
$$;

GRANT EXECUTE ON FUNCTION drumbeat.raise_error(text, text, text), drumbeat.invalid(text, text),
    drumbeat.current_user_id(), drumbeat.is_trusted_caller(), drumbeat.clock_now()
    TO authenticated, service_role, drumbeat_definer;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
