-- 0035: the contract is the only write path for tenants. Every drumbeat_api function becomes SECURITY
-- DEFINER, owned by drumbeat_contract: a role with no login, no BYPASSRLS and its own row-level security
-- policies, scoped to the caller's workspaces exactly as `authenticated`'s were. `authenticated` keeps
-- SELECT on its own workspaces' rows and EXECUTE on the contract; it can no longer INSERT, UPDATE or
-- DELETE anything directly (sql/functions/grants.sql, security.sql).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_contract') THEN
        CREATE ROLE drumbeat_contract NOLOGIN NOINHERIT;
    END IF;
END
$roles$;

-- The role applying migrations hands the contract functions to drumbeat_contract (grants.sql).
GRANT drumbeat_contract TO current_user;

COMMENT ON SCHEMA drumbeat_api IS 'Drumbeat public contract: SECURITY DEFINER functions owned by drumbeat_contract (under RLS, scoped to the caller''s workspaces), called over RPC and by the HTTP API.';

-- drumbeat.is_admin served only the tenants' write policies, which are gone (CASCADE drops them here;
-- security.sql re-creates the policies that remain, in this same run).
DROP FUNCTION IF EXISTS drumbeat.is_admin(uuid) CASCADE;
