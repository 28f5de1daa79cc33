-- API keys: issued once (only a SHA-256 hash is stored), revoked, and looked up for each HTTP request.

-- Why: the hex SHA-256 of a key's secret, the only form in which it is stored.
CREATE OR REPLACE FUNCTION drumbeat.api_key_hash(p_token text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8')), 'hex') $$;

-- Why: a new key for a workspace: "dbk_" + 12 hex characters of prefix (stored, shown in lists) + "_" +
-- 64 hex characters of secret (256 random bits from the server's strong random source). The key
-- joins the workspace as a member with its own id as user id. Callers check permissions first.
CREATE OR REPLACE FUNCTION drumbeat.issue_api_key(p_workspace_id uuid, p_name text, p_role text, p_created_by uuid)
RETURNS TABLE(key_id uuid, token text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prefix text := 'dbk_' || pg_catalog.left(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 12);
    v_token text := v_prefix || '_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, '-', '');
    v_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('owner', 'admin', 'member') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be owner, admin or member', 'role');
    END IF;
    IF p_name IS NULL OR pg_catalog.length(pg_catalog.btrim(p_name)) NOT BETWEEN 1 AND 100 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 100 characters', 'name');
    END IF;
    INSERT INTO drumbeat.api_keys (id, workspace_id, name, prefix, hash, role, created_by)
    VALUES (v_id, p_workspace_id, pg_catalog.btrim(p_name), v_prefix, drumbeat.api_key_hash(v_token), p_role, p_created_by);
    INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (p_workspace_id, v_id, p_role);
    RETURN QUERY SELECT v_id, v_token;
END
$$;

-- Why: the contract's way to create a key: admins and owners only, and never a key that outranks
-- its creator (an admin cannot mint an owner key).
CREATE OR REPLACE FUNCTION drumbeat_api.create_api_key(p_workspace_id uuid, p_name text, p_role text DEFAULT 'member')
RETURNS TABLE(key_id uuid, token text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF NOT drumbeat.is_trusted_caller()
       AND drumbeat.role_rank(p_role) > drumbeat.role_rank(drumbeat.workspace_role(p_workspace_id)) THEN
        PERFORM drumbeat.raise_error('PT403', pg_catalog.format('a %s cannot create a key with the %s role',
            drumbeat.workspace_role(p_workspace_id), p_role), 'role');
    END IF;
    RETURN QUERY SELECT * FROM drumbeat.issue_api_key(p_workspace_id, p_name, p_role, drumbeat.current_user_id());
END
$$;

-- Why: a revoked key stops working at once: its membership goes, so RLS shows it nothing even if
-- a request with it were already past authentication.
CREATE OR REPLACE FUNCTION drumbeat_api.revoke_api_key(p_key_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('api_keys', p_key_id, 'p_key_id', 'admin');
BEGIN
    UPDATE drumbeat.api_keys k SET revoked_at = COALESCE(k.revoked_at, pg_catalog.now()) WHERE k.id = p_key_id;
    DELETE FROM drumbeat.workspace_members m WHERE m.workspace_id = v_workspace_id AND m.user_id = p_key_id;
END
$$;

-- Why: the HTTP API's look-up of a bearer token, before anyone is known (hence SECURITY DEFINER, in the
-- private schema, executable only by drumbeat_authenticator). Returns the key's id (the user id its
-- requests act as), or nothing for an unknown, altered or revoked key. last_used_at is refreshed at
-- most once a minute so that authentication is not a write per request.
CREATE OR REPLACE FUNCTION drumbeat.authenticate_api_key(p_token text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key drumbeat.api_keys;
BEGIN
    SELECT * INTO v_key FROM drumbeat.api_keys k
    WHERE k.prefix = pg_catalog.left(p_token, 16) AND k.revoked_at IS NULL
      AND k.hash = drumbeat.api_key_hash(p_token);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_key.last_used_at IS NULL OR v_key.last_used_at < pg_catalog.now() - '1 minute'::interval THEN
        UPDATE drumbeat.api_keys k SET last_used_at = pg_catalog.now() WHERE k.id = v_key.id;
    END IF;
    RETURN v_key.id;
END
$$;
ALTER FUNCTION drumbeat.authenticate_api_key(text) OWNER TO drumbeat_definer;
