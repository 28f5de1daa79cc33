-- Workspace membership: who belongs to a workspace, with which role (README, "Roles"). owner > admin >
-- member. Admins manage members and admins; only an owner grants, changes or takes away the owner role;
-- anyone may leave; a workspace always keeps an owner. API keys are members too, but are managed as keys
-- (create_api_key, revoke_api_key). Every change is logged as an event naming who made it.

-- Why: one message for a role that is not one of the three, wherever a role is given.
CREATE OR REPLACE FUNCTION drumbeat.check_member_role(p_role text, p_field text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('owner', 'admin', 'member') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be owner, admin or member', p_field);
    END IF;
    RETURN p_role;
END
$$;

-- Why: the owner role is the owners' to give and take: an admin may not make anyone owner, nor change
-- or remove an owner (p_from: the member's role now, NULL for a new member; p_to: NULL for a removal).
CREATE OR REPLACE FUNCTION drumbeat.require_owner_for_owner_role(p_workspace_id uuid, p_from text, p_to text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF 'owner' IN (p_from, p_to) AND NOT drumbeat.is_trusted_caller()
       AND drumbeat.workspace_role(p_workspace_id) <> 'owner' THEN
        PERFORM drumbeat.raise_error('PT403', 'only an owner can grant, change or take away the owner role',
            CASE WHEN p_to IS NULL THEN 'p_user_id' ELSE 'p_role' END);
    END IF;
END
$$;

-- Why: the member row a change is about, locked; PT404 when there is none, PT422 for an API key's.
CREATE OR REPLACE FUNCTION drumbeat.locked_member(p_workspace_id uuid, p_user_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text;
BEGIN
    SELECT m.role INTO v_role FROM drumbeat.workspace_members m
    WHERE m.workspace_id = p_workspace_id AND m.user_id = p_user_id FOR UPDATE;
    IF v_role IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', 'member not found', 'p_user_id');
    END IF;
    IF EXISTS (SELECT 1 FROM drumbeat.api_keys k WHERE k.id = p_user_id) THEN
        PERFORM drumbeat.raise_error('PT422', 'is an API key: revoke it (revoke_api_key) and create another instead', 'p_user_id');
    END IF;
    RETURN v_role;
END
$$;

-- Why: a workspace always keeps an owner who is a person (an owner API key can be revoked by anyone who
-- holds it). The owners' rows are locked first, so that two owners demoting (or removing) each other at
-- the same moment cannot both succeed.
CREATE OR REPLACE FUNCTION drumbeat.require_another_owner(p_workspace_id uuid, p_user_id uuid, p_message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM drumbeat.workspace_members m WHERE m.workspace_id = p_workspace_id AND m.role = 'owner' FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM drumbeat.workspace_members m
                   WHERE m.workspace_id = p_workspace_id AND m.role = 'owner' AND m.user_id <> p_user_id
                     AND NOT EXISTS (SELECT 1 FROM drumbeat.api_keys k WHERE k.id = m.user_id)) THEN
        PERFORM drumbeat.raise_error('PT409', p_message, 'p_user_id');
    END IF;
END
$$;

-- Why: a key never outranks the person who made it: when someone is demoted, the keys they created above
-- their new role are revoked (all of them when they leave), or a removed admin could walk back in with one.
CREATE OR REPLACE FUNCTION drumbeat.revoke_keys_above(p_workspace_id uuid, p_user_id uuid, p_role text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH revoked AS (
        UPDATE drumbeat.api_keys k SET revoked_at = pg_catalog.now()
        WHERE k.workspace_id = p_workspace_id AND k.created_by = p_user_id AND k.revoked_at IS NULL
          AND (p_role IS NULL OR drumbeat.role_rank(k.role) > drumbeat.role_rank(p_role))
        RETURNING k.id
    ), gone AS (
        DELETE FROM drumbeat.workspace_members m
        WHERE m.workspace_id = p_workspace_id AND m.user_id IN (SELECT r.id FROM revoked r)
    )
    INSERT INTO drumbeat.events (workspace_id, kind, actor_id, payload)
    SELECT p_workspace_id, 'api_keys_revoked', drumbeat.current_user_id(),
           pg_catalog.jsonb_build_object('created_by', p_user_id, 'key_ids', pg_catalog.jsonb_agg(r.id))
    FROM revoked r HAVING pg_catalog.count(*) > 0
$$;

-- Why: membership changes are part of the workspace's audit trail: who did what to whom.
CREATE OR REPLACE FUNCTION drumbeat.log_member_event(p_workspace_id uuid, p_kind text, p_payload jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO drumbeat.events (workspace_id, kind, actor_id, payload)
    VALUES (p_workspace_id, p_kind, drumbeat.current_user_id(), p_payload)
$$;

-- Why: adds a user (the JWT `sub` they sign in with) to a workspace. Admins add members and admins,
-- owners anyone.
CREATE OR REPLACE FUNCTION drumbeat_api.add_member(p_workspace_id uuid, p_user_id uuid, p_role text DEFAULT 'member')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    PERFORM drumbeat.check_member_role(p_role, 'p_role');
    IF p_user_id IS NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'is required: the user id (JWT sub) of the person to add', 'p_user_id');
    END IF;
    PERFORM drumbeat.require_owner_for_owner_role(p_workspace_id, NULL, p_role);
    INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (p_workspace_id, p_user_id, p_role)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        PERFORM drumbeat.raise_error('PT409', 'is already a member of this workspace', 'p_user_id');
    END IF;
    PERFORM drumbeat.log_member_event(p_workspace_id, 'member_added',
        pg_catalog.jsonb_build_object('user_id', p_user_id, 'role', p_role));
END
$$;

-- Why: promotes or demotes a member. Admins move members and admins between those two roles; only an
-- owner makes someone owner or demotes an owner, and never the last one.
CREATE OR REPLACE FUNCTION drumbeat_api.update_member_role(p_workspace_id uuid, p_user_id uuid, p_role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from text;
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    PERFORM drumbeat.check_member_role(p_role, 'p_role');
    v_from := drumbeat.locked_member(p_workspace_id, p_user_id);
    PERFORM drumbeat.require_owner_for_owner_role(p_workspace_id, v_from, p_role);
    IF v_from = p_role THEN
        RETURN;
    END IF;
    IF v_from = 'owner' THEN
        PERFORM drumbeat.require_another_owner(p_workspace_id, p_user_id,
            'the last owner cannot be demoted: make another member owner first');
    END IF;
    UPDATE drumbeat.workspace_members m SET role = p_role
    WHERE m.workspace_id = p_workspace_id AND m.user_id = p_user_id;
    PERFORM drumbeat.revoke_keys_above(p_workspace_id, p_user_id, p_role);
    PERFORM drumbeat.log_member_event(p_workspace_id, 'member_role_changed',
        pg_catalog.jsonb_build_object('user_id', p_user_id, 'from', v_from, 'to', p_role));
END
$$;

-- Why: removes a member. Anyone may leave; admins remove members and admins, only an owner removes an
-- owner, and the last owner cannot leave (delete the workspace instead). The member's past work stays.
CREATE OR REPLACE FUNCTION drumbeat_api.remove_member(p_workspace_id uuid, p_user_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_leaving boolean := p_user_id IS NOT DISTINCT FROM drumbeat.current_user_id();
    v_role text;
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, CASE WHEN v_leaving THEN 'member' ELSE 'admin' END);
    v_role := drumbeat.locked_member(p_workspace_id, p_user_id);
    IF NOT v_leaving THEN
        PERFORM drumbeat.require_owner_for_owner_role(p_workspace_id, v_role, NULL);
    END IF;
    IF v_role = 'owner' THEN
        PERFORM drumbeat.require_another_owner(p_workspace_id, p_user_id,
            'the last owner cannot leave: make another member owner first, or delete the workspace');
    END IF;
    -- Logged first: a member who leaves may no longer write to the workspace once gone.
    PERFORM drumbeat.log_member_event(p_workspace_id, 'member_removed',
        pg_catalog.jsonb_build_object('user_id', p_user_id, 'role', v_role));
    PERFORM drumbeat.revoke_keys_above(p_workspace_id, p_user_id, NULL);
    DELETE FROM drumbeat.workspace_members m WHERE m.workspace_id = p_workspace_id AND m.user_id = p_user_id;
END
$$;
