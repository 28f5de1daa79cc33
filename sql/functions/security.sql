-- Who the caller is and what they may see: the identity and role helpers every contract function and
-- policy uses, and the row-level security policies of every table (RLS itself is switched on, and
-- forced, where each table is created). The caller's workspaces come from request.jwt.claims.sub through
-- workspace_members, for Supabase RPC callers and HTTP API callers alike.

-- Why: the caller's identity is the JWT `sub` that PostgREST (and our API) put in request.jwt.claims.
CREATE OR REPLACE FUNCTION drumbeat.current_user_id()
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sub text := NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub';
BEGIN
    RETURN v_sub::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;  -- a non-uuid subject is no Drumbeat user
END
$$;

-- Why: the role the session acts as. Inside a contract function (SECURITY DEFINER) current_user names
-- its owner, drumbeat_contract, not the caller; the caller is the role SET ROLE chose (PostgREST and the
-- API set it for each transaction) or, when none was set, the login itself.
CREATE OR REPLACE FUNCTION drumbeat.calling_role()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE pg_catalog.current_setting('role') WHEN 'none' THEN session_user::text
                ELSE pg_catalog.current_setting('role') END
$$;

-- Why: service_role (and superusers) bypass RLS; functions then skip membership checks the same way.
CREATE OR REPLACE FUNCTION drumbeat.is_trusted_caller()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.rolname = drumbeat.calling_role()
                     AND (r.rolname = 'service_role' OR r.rolsuper OR r.rolbypassrls))
$$;

-- Why: policies on every table need the caller's workspaces. Reading workspace_members from inside a
-- policy on workspace_members would recurse, so this one look-up runs as drumbeat_definer, which may
-- read (only) the membership table. Not in an exposed schema; returns only the caller's own rows.
CREATE OR REPLACE FUNCTION drumbeat.member_workspace_ids()
RETURNS uuid[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(m.workspace_id), '{}')
    FROM drumbeat.workspace_members m
    WHERE m.user_id = drumbeat.current_user_id()
$$;
ALTER FUNCTION drumbeat.member_workspace_ids() OWNER TO drumbeat_definer;

-- Why: the caller's role in one workspace (NULL when not a member), for write policies and role checks.
CREATE OR REPLACE FUNCTION drumbeat.workspace_role(p_workspace_id uuid)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.role FROM drumbeat.workspace_members m
    WHERE m.workspace_id = p_workspace_id AND m.user_id = drumbeat.current_user_id()
$$;
ALTER FUNCTION drumbeat.workspace_role(uuid) OWNER TO drumbeat_definer;

-- Why: create_workspace makes its caller the first owner; this tells a brand-new workspace (no
-- members yet) from one the caller is trying to join uninvited.
CREATE OR REPLACE FUNCTION drumbeat.workspace_has_members(p_workspace_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM drumbeat.workspace_members m WHERE m.workspace_id = p_workspace_id)
$$;
ALTER FUNCTION drumbeat.workspace_has_members(uuid) OWNER TO drumbeat_definer;

-- Why: owner > admin > member; a role "at least" another one may do what that one may.
CREATE OR REPLACE FUNCTION drumbeat.role_rank(p_role text)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE p_role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 ELSE 0 END $$;

-- Why: every contract function checks the caller before touching anything, so that an anonymous call
-- is PT401, another tenant's workspace is PT404 (never confirm it exists) and a too-weak role is PT403.
-- service_role and superusers (trusted server-side callers) pass.
CREATE OR REPLACE FUNCTION drumbeat.require_role(p_workspace_id uuid, p_min_role text DEFAULT 'member')
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text;
BEGIN
    IF drumbeat.is_trusted_caller() THEN
        IF NOT EXISTS (SELECT 1 FROM drumbeat.workspaces w WHERE w.id = p_workspace_id) THEN
            PERFORM drumbeat.raise_error('PT404', 'workspace not found', 'workspace_id');
        END IF;
        RETURN;
    END IF;
    IF drumbeat.current_user_id() IS NULL THEN
        PERFORM drumbeat.raise_error('PT401', 'authentication required: request.jwt.claims has no user (sub)');
    END IF;
    v_role := drumbeat.workspace_role(p_workspace_id);
    IF v_role IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', 'workspace not found', 'workspace_id');
    END IF;
    IF drumbeat.role_rank(v_role) < drumbeat.role_rank(p_min_role) THEN
        PERFORM drumbeat.raise_error('PT403', pg_catalog.format('this needs the %s role; you are %s', p_min_role, v_role));
    END IF;
END
$$;

-- Row-level security policies.
--
-- What each role sees and changes, one permissive policy per role and command (what Supabase's linter
-- asks for: several would all be evaluated for every row):
--   authenticated      reads the rows of its own workspaces, and nothing more: it changes state only
--                      through the contract (drumbeat_api), which checks its role first;
--   drumbeat_contract  owns the contract functions: reads and writes the rows of the caller's workspaces
--                      (the caller's JWT sub decides, as for authenticated), every row for a trusted caller;
--   drumbeat_worker, service_role  every row: the dispatcher serves every tenant, service_role is the
--                      trusted server side;
--   drumbeat_definer   the membership and key look-ups.
-- What each role may do at all (SELECT only, append only...) is in grants.sql.

-- Policies are re-created from this file as a whole: every policy on Drumbeat's tables is dropped first,
-- so one removed here is gone from the database too (all in the migrator's one transaction).
DO $drop_policies$
DECLARE
    v_policy record;
BEGIN
    FOR v_policy IN SELECT p.policyname, p.tablename FROM pg_catalog.pg_policies p WHERE p.schemaname = 'drumbeat'
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %I ON drumbeat.%I', v_policy.policyname, v_policy.tablename);
    END LOOP;
END
$drop_policies$;

-- Trusted server-side callers see everything (on Supabase service_role also has BYPASSRLS); so does the
-- dispatcher's role, which serves every tenant.
DO $trusted$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['timezones', 'workspaces', 'workspace_members', 'api_keys', 'senders',
        'contacts', 'sequences', 'sequence_steps', 'enrollments', 'deliveries', 'tasks', 'events', 'holidays',
        'outbox', 'channel_holds', 'sender_mailboxes', 'event_types', 'webhook_endpoints', 'webhook_messages',
        'webhook_attempts', 'phone_timezones', 'phone_number_plans', 'erased_identities', 'idempotency_keys']
    LOOP
        EXECUTE pg_catalog.format(
            'CREATE POLICY %I ON drumbeat.%I TO service_role USING (true) WITH CHECK (true)',
            v_table || '_service_role', v_table);
        EXECUTE pg_catalog.format(
            'CREATE POLICY %I ON drumbeat.%I TO drumbeat_worker USING (true) WITH CHECK (true)',
            v_table || '_worker', v_table);
    END LOOP;
END
$trusted$;

-- Tables whose rows belong to one workspace: members read them, the contract reads and writes them (which
-- commands at all: grants.sql; which role may make which change: the contract functions).
DO $workspace_tables$
DECLARE
    v_table text;
    v_mine text := 'workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[])';
    v_contract text := '(SELECT drumbeat.is_trusted_caller()) OR ' || v_mine;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['api_keys', 'senders', 'contacts', 'sequences', 'sequence_steps',
        'enrollments', 'tasks', 'deliveries', 'events', 'outbox', 'sender_mailboxes']
    LOOP
        EXECUTE pg_catalog.format('CREATE POLICY %I ON drumbeat.%I FOR SELECT TO authenticated USING (%s)',
            v_table || '_member_read', v_table, v_mine);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON drumbeat.%I TO drumbeat_contract USING (%s) WITH CHECK (%s)',
            v_table || '_contract', v_table, v_contract, v_contract);
    END LOOP;
END
$workspace_tables$;

-- Webhook endpoints, their messages and delivery log: an endpoint's URL can carry the receiver's own token,
-- so tenants reach them only through the contract, whose functions let admins alone in. So does the
-- suppression list of erased contacts (digests of addresses: nothing for a tenant to browse).
DO $admin_tables$
DECLARE
    v_table text;
    v_contract text := '(SELECT drumbeat.is_trusted_caller()) OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[])';
BEGIN
    FOREACH v_table IN ARRAY ARRAY['webhook_endpoints', 'webhook_messages', 'webhook_attempts', 'erased_identities']
    LOOP
        EXECUTE pg_catalog.format('CREATE POLICY %I ON drumbeat.%I TO drumbeat_contract USING (%s) WITH CHECK (%s)',
            v_table || '_contract', v_table, v_contract, v_contract);
    END LOOP;
END
$admin_tables$;

-- An idempotency key is its caller's alone (an API key or a JWT user), whatever the workspace.
CREATE POLICY idempotency_keys_own ON drumbeat.idempotency_keys TO drumbeat_contract
    USING (caller_id = (SELECT drumbeat.current_user_id())) WITH CHECK (caller_id = (SELECT drumbeat.current_user_id()));

CREATE POLICY timezones_read ON drumbeat.timezones FOR SELECT TO authenticated, drumbeat_contract USING (true);

CREATE POLICY event_types_read ON drumbeat.event_types FOR SELECT TO authenticated, drumbeat_contract USING (true);

CREATE POLICY phone_timezones_read ON drumbeat.phone_timezones FOR SELECT TO authenticated, drumbeat_contract USING (true);

CREATE POLICY phone_number_plans_read ON drumbeat.phone_number_plans FOR SELECT TO authenticated, drumbeat_contract USING (true);

CREATE POLICY workspaces_member_read ON drumbeat.workspaces FOR SELECT TO authenticated
    USING (id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

-- create_workspace inserts the workspace before its first owner joins: a caller with a user id may add
-- one that nobody belongs to yet.
CREATE POLICY workspaces_contract ON drumbeat.workspaces TO drumbeat_contract
    USING ((SELECT drumbeat.is_trusted_caller()) OR id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]))
    WITH CHECK ((SELECT drumbeat.is_trusted_caller()) OR id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[])
                OR (drumbeat.current_user_id() IS NOT NULL AND NOT drumbeat.workspace_has_members(id)));

CREATE POLICY workspace_members_member_read ON drumbeat.workspace_members FOR SELECT TO authenticated
    USING (workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

-- ...and then makes its caller the owner of that still memberless workspace.
CREATE POLICY workspace_members_contract ON drumbeat.workspace_members TO drumbeat_contract
    USING ((SELECT drumbeat.is_trusted_caller()) OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]))
    WITH CHECK ((SELECT drumbeat.is_trusted_caller())
                OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[])
                OR (user_id = drumbeat.current_user_id() AND role = 'owner'
                    AND NOT drumbeat.workspace_has_members(workspace_id)));

-- The membership look-ups behind every policy (member_workspace_ids & co.) run as drumbeat_definer.
CREATE POLICY workspace_members_definer ON drumbeat.workspace_members TO drumbeat_definer USING (true);

-- Holidays: a workspace's own list and shared named calendars (everyone reads; only the operator's
-- loader, a trusted caller, writes a calendar).
CREATE POLICY holidays_member_read ON drumbeat.holidays FOR SELECT TO authenticated
    USING (calendar IS NOT NULL OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

CREATE POLICY holidays_contract_read ON drumbeat.holidays FOR SELECT TO drumbeat_contract
    USING (calendar IS NOT NULL OR (SELECT drumbeat.is_trusted_caller())
           OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

CREATE POLICY holidays_contract_insert ON drumbeat.holidays FOR INSERT TO drumbeat_contract
    WITH CHECK ((SELECT drumbeat.is_trusted_caller())
                OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

CREATE POLICY holidays_contract_delete ON drumbeat.holidays FOR DELETE TO drumbeat_contract
    USING ((SELECT drumbeat.is_trusted_caller())
           OR workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));

-- Held channels: every member sees the holds of a whole channel (the operator's shared credentials) and
-- those of its own workspace's senders; only the dispatcher writes them.
CREATE POLICY channel_holds_member_read ON drumbeat.channel_holds FOR SELECT TO authenticated, drumbeat_contract
    USING (sender_id IS NULL OR sender_id IN (SELECT se.id FROM drumbeat.senders se
                                              WHERE se.workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[])));

-- authenticate_api_key runs as drumbeat_definer (before any user is known) and stamps last_used_at.
CREATE POLICY api_keys_definer ON drumbeat.api_keys TO drumbeat_definer USING (true) WITH CHECK (true);
