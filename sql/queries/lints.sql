-- Drumbeat's database linter: app/core/lints.py runs every statement of this file, `drumbeat doctor` and
-- tests/sql/test_linter.py report what they find. Each lint is our own equivalent of a security or
-- performance check of Supabase's database linter (splinter, github.com/supabase/splinter), named as
-- splinter names it (its number in the lint's comment), so that a finding here is one the Supabase
-- dashboard would show; the few that are Drumbeat's own say so. Each returns rows (name, level, detail):
-- the level splinter gives the check (ERROR, WARN or INFO), and a detail naming the object and the fix.
--
-- Scope: the schemas Drumbeat installs, passed as the parameter `schemas` (app/core/lints.LINT_SCHEMAS).
-- Objects that belong to an extension are left out, as splinter leaves them (the extension owns them).
-- anon and authenticated are Supabase's API roles (the first migration creates them on plain Postgres).
-- Names are rendered schema-qualified whatever the session's search_path. No percent sign in this file
-- but the parameter's: the statements run with parameters.

-- name: auth_rls_initplan
-- splinter 0003 (WARN, performance). A policy that calls auth.uid() (jwt, role, email) bare runs it once
-- per row; wrapped as (select auth.uid()) it runs once per statement. A policy counts when it has more
-- calls than wrapped calls.
SELECT 'auth_rls_initplan' AS name, 'WARN' AS level,
       'Table ' || tbl.name || ' has policy ' || pg_catalog.quote_ident(p.polname)
       || ' that calls auth.<function>() once per row: write (select auth.<function>()) instead' AS detail
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
CROSS JOIN LATERAL (
    SELECT pg_catalog.lower(pg_catalog.concat_ws(' ', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                                                 pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)))
) expr(body)
WHERE n.nspname = ANY(%(schemas)s) AND c.relrowsecurity
  AND (SELECT pg_catalog.count(*)
       FROM pg_catalog.regexp_matches(expr.body, 'auth\.(uid|jwt|role|email)\(\)', 'g'))
      > (SELECT pg_catalog.count(*)
         FROM pg_catalog.regexp_matches(expr.body, 'select\s+\(*auth\.(uid|jwt|role|email)\(\)', 'g'))
ORDER BY 3

-- name: multiple_permissive_policies
-- splinter 0006 (WARN, performance). Postgres ORs the permissive policies that apply to a role and an
-- action and runs every one of them for every row: two for the same role and action cost twice and should
-- be one. Counted per role a policy names (PUBLIC: every role) and per action (ALL: all four), leaving out
-- the roles RLS does not apply to (superusers, BYPASSRLS) and Postgres's own (pg_*).
SELECT 'multiple_permissive_policies' AS name, 'WARN' AS level,
       'Table ' || tbl.name || ' has ' || pg_catalog.count(*) || ' permissive policies for role '
       || pg_catalog.quote_ident(r.rolname) || ' on ' || action.cmd || ': '
       || pg_catalog.string_agg(pg_catalog.quote_ident(p.polname), ', ' ORDER BY p.polname)
       || ' (each runs for every row: merge them into one)' AS detail
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
JOIN pg_catalog.pg_roles r ON r.oid = ANY(p.polroles) OR p.polroles = ARRAY[0::oid]
CROSS JOIN LATERAL pg_catalog.unnest(CASE p.polcmd
    WHEN 'r' THEN ARRAY['SELECT'] WHEN 'a' THEN ARRAY['INSERT'] WHEN 'w' THEN ARRAY['UPDATE']
    WHEN 'd' THEN ARRAY['DELETE'] ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END) AS action(cmd)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND p.polpermissive
  AND NOT r.rolsuper AND NOT r.rolbypassrls AND NOT pg_catalog.starts_with(r.rolname, 'pg_')
GROUP BY tbl.name, r.rolname, action.cmd
HAVING pg_catalog.count(*) > 1
ORDER BY 3

-- name: policy_exists_rls_disabled
-- splinter 0007 (INFO, security). Policies on a table whose row level security is off filter nothing.
SELECT 'policy_exists_rls_disabled' AS name, 'INFO' AS level,
       'Table ' || tbl.name || ' has policies ('
       || pg_catalog.string_agg(pg_catalog.quote_ident(p.polname), ', ' ORDER BY p.polname)
       || ') but row level security is not enabled: they filter nothing' AS detail
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY tbl.name
ORDER BY 3

-- name: rls_enabled_no_policy
-- splinter 0008 (INFO, security). Row level security on and no policy: only the roles that bypass it
-- (and the owner, unless it is forced) see a row.
SELECT 'rls_enabled_no_policy' AS name, 'INFO' AS level,
       'Table ' || tbl.name || ' has row level security enabled but no policy' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND c.relrowsecurity
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3

-- name: security_definer_view
-- splinter 0010 (ERROR, security). A view runs its query as its owner unless it is security_invoker: one
-- that anon or authenticated may read shows them what its owner sees, past row level security.
SELECT 'security_definer_view' AS name, 'ERROR' AS level,
       'View ' || tbl.name || ' is readable by anon or authenticated and runs as its owner: '
       || 'create it WITH (security_invoker = true)' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'v'
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT pg_catalog.lower(coalesce(c.reloptions, '{}')::text)::text[]
          && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes']
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3

-- name: definer_search_path_temp_first
-- Ours (no splinter number; WARN, security). A SECURITY DEFINER function whose search_path does not name
-- pg_temp searches the caller's temporary schema FIRST for relations and types: a caller who can create
-- temporary objects (CREATE DOMAIN pg_temp.uuid ... CHECK (evil())) then runs code with the owner's rights.
-- PostgreSQL's advice: list pg_temp last, explicitly.
SELECT 'definer_search_path_temp_first' AS name, 'WARN' AS level,
       'SECURITY DEFINER function ' || fn.signature || ' searches the caller''s temporary schema first: '
       || 'set search_path = pg_catalog, pg_temp (pg_temp last)' AS detail
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN LATERAL (
    SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
) fn(signature)
WHERE n.nspname = ANY(%(schemas)s) AND p.prosecdef
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) AS setting
                  WHERE pg_catalog.starts_with(setting, 'search_path=')
                    AND setting ~ '(^search_path=|, *)pg_temp *$')
ORDER BY 3

-- name: function_search_path_mutable
-- splinter 0011 (WARN, security). A function without a search_path of its own resolves unqualified names
-- through its caller's, which the caller controls. Every kind of routine counts, as in splinter.
SELECT 'function_search_path_mutable' AS name, 'WARN' AS level,
       'Function ' || fn.signature || ' has no search_path of its own: add SET search_path = pg_catalog, '
       || 'pg_temp (and qualify names) or a fixed list of trusted schemas ending with pg_temp' AS detail
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN LATERAL (
    SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
) fn(signature)
WHERE n.nspname = ANY(%(schemas)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) AS setting
                  WHERE pg_catalog.starts_with(setting, 'search_path='))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 3

-- name: rls_disabled_in_public
-- splinter 0013 (ERROR, security). Supabase serves schema public over REST: a table there without row
-- level security is as open as its grants.
SELECT 'rls_disabled_in_public' AS name, 'ERROR' AS level,
       'Table ' || tbl.name || ' is in schema public without row level security: enable it' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = 'public' AND n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p')
  AND NOT c.relrowsecurity
ORDER BY 3

-- name: rls_disabled_granted
-- Drumbeat's own (ERROR, security): what splinter 0013 and 0023 look for, wherever the API roles reach. A
-- table without row level security on which anon or authenticated holds a privilege (and USAGE on its
-- schema) hands them every row, whatever its schema and whether or not PostgREST serves that schema.
SELECT 'rls_disabled_granted' AS name, 'ERROR' AS level,
       'Table ' || tbl.name || ' has no row level security but ' || api.role
       || ' may use it: enable row level security or revoke the grant' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
CROSS JOIN (VALUES ('anon'), ('authenticated')) AS api(role)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
  AND pg_catalog.has_schema_privilege(api.role, n.oid, 'USAGE')
  AND (pg_catalog.has_table_privilege(api.role, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
       OR pg_catalog.has_any_column_privilege(api.role, c.oid, 'SELECT, INSERT, UPDATE'))
ORDER BY 3

-- name: rls_policy_always_true
-- splinter 0024 (WARN, security). A permissive policy for PUBLIC, anon or authenticated that lets any row
-- be changed is no row level security: USING true (or none) on UPDATE, DELETE or ALL; WITH CHECK true,
-- or none on INSERT, or none behind USING true on UPDATE or ALL. SELECT USING (true) is left out, as
-- splinter leaves it: reference data is meant to be read by everyone (drumbeat.timezones).
SELECT 'rls_policy_always_true' AS name, 'WARN' AS level,
       'Table ' || tbl.name || ' has policy ' || pg_catalog.quote_ident(p.polname) || ' for ' || expr.cmd
       || CASE WHEN allows.using_all AND allows.check_all THEN ' whose USING and WITH CHECK are'
               WHEN allows.using_all THEN ' whose USING is' ELSE ' whose WITH CHECK is' END
       || ' always true: it lets every row through' AS detail
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
CROSS JOIN LATERAL (
    SELECT CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                         WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
           pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.pg_get_expr(p.polqual, p.polrelid)),
                                     '\s', '', 'g'),
           pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)),
                                     '\s', '', 'g')
) expr(cmd, using_text, check_text)
CROSS JOIN LATERAL (
    SELECT expr.cmd IN ('UPDATE', 'DELETE', 'ALL')
               AND coalesce(expr.using_text IN ('true', '(true)', '1=1', '(1=1)'), true),
           coalesce(expr.check_text IN ('true', '(true)', '1=1', '(1=1)'), false)
               OR (expr.check_text IS NULL AND expr.cmd = 'INSERT')
               OR (expr.check_text IS NULL AND expr.cmd IN ('UPDATE', 'ALL')
                   AND coalesce(expr.using_text IN ('true', '(true)', '1=1', '(1=1)'), false))
) allows(using_all, check_all)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND c.relrowsecurity AND p.polpermissive
  AND (p.polroles = ARRAY[0::oid]
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                  WHERE r.oid = ANY(p.polroles) AND r.rolname IN ('anon', 'authenticated')))
  AND (allows.using_all OR allows.check_all)
ORDER BY 3

-- name: anon_security_definer_function_executable
-- splinter 0028 (WARN, security). A SECURITY DEFINER function runs with its owner's privileges; anon (the
-- public API key, no sign-in) may call none of Drumbeat's.
SELECT 'anon_security_definer_function_executable' AS name, 'WARN' AS level,
       'SECURITY DEFINER function ' || fn.signature || ' (owner ' || pg_catalog.quote_ident(owner.rolname)
       || ') is executable by anon: revoke EXECUTE from anon and PUBLIC' AS detail
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles owner ON owner.oid = p.proowner
CROSS JOIN LATERAL (
    SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
) fn(signature)
WHERE n.nspname = ANY(%(schemas)s) AND p.prosecdef
  AND pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 3

-- name: authenticated_security_definer_function_executable
-- splinter 0029 (WARN, security), with the intended ones suppressed per object, as Supabase's docs for
-- this lint advise: the contract (every function of drumbeat_api, what signed-in users call) and the RLS
-- look-up drumbeat.member_workspace_ids() (a policy cannot read workspace_members through that table's
-- own policies) run as their owner on purpose. They count as intended only while that owner is subject
-- to row level security (neither superuser nor BYPASSRLS): owned by a role that bypasses it, they are
-- reported too. Any other SECURITY DEFINER function authenticated may call is reported.
SELECT 'authenticated_security_definer_function_executable' AS name, 'WARN' AS level,
       'SECURITY DEFINER function ' || fn.signature || ' (owner ' || pg_catalog.quote_ident(owner.rolname)
       || ') is executable by authenticated'
       || CASE WHEN fn.intended THEN ' and its owner bypasses row level security: give it an owner RLS applies to'
               ELSE ': revoke EXECUTE from authenticated and PUBLIC, or make it SECURITY INVOKER' END AS detail
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles owner ON owner.oid = p.proowner
CROSS JOIN LATERAL (
    SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
           n.nspname = 'drumbeat_api' OR p.oid = pg_catalog.to_regprocedure('drumbeat.member_workspace_ids()')
) fn(signature, intended)
WHERE n.nspname = ANY(%(schemas)s) AND p.prosecdef
  AND pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE')
  AND NOT (fn.intended AND NOT owner.rolsuper AND NOT owner.rolbypassrls)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 3

-- name: duplicate_index
-- splinter 0009 (WARN, performance). Identical indexes (same table, method, keys, operator classes,
-- collations, orderings, predicate and uniqueness) cost every write twice and serve the same queries.
SELECT 'duplicate_index' AS name, 'WARN' AS level,
       'Table ' || tbl.name || ' has identical indexes '
       || pg_catalog.string_agg(pg_catalog.quote_ident(ic.relname), ', ' ORDER BY ic.relname)
       || ': drop all but one' AS detail
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'm')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY tbl.name, ic.relam, i.indkey::text, i.indclass::text, i.indcollation::text, i.indoption::text,
         i.indisunique, i.indnullsnotdistinct, pg_catalog.pg_get_expr(i.indexprs, i.indrelid),
         pg_catalog.pg_get_expr(i.indpred, i.indrelid)
HAVING pg_catalog.count(*) > 1
ORDER BY 3

-- name: invalid_index
-- splinter 0030 invalid_index (WARN, performance). What a failed CREATE INDEX CONCURRENTLY leaves behind:
-- never used by the planner, still updated on every write. One still being built is left out.
SELECT 'invalid_index' AS name, 'WARN' AS level,
       'Index ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(ic.relname) || ' on '
       || tbl.name || ' is invalid (a failed CREATE INDEX CONCURRENTLY?): drop it and create it again'
       AS detail
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND NOT i.indisvalid AND i.indisready
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index b WHERE b.index_relid = ic.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = ic.oid AND d.deptype = 'e')
ORDER BY 3

-- name: extension_in_public
-- splinter 0014 (WARN, security). An extension's objects in schema public are served over REST and are on
-- every search_path; Supabase keeps extensions in schema extensions. plpgsql is built in.
SELECT 'extension_in_public' AS name, 'WARN' AS level,
       'Extension ' || pg_catalog.quote_ident(e.extname) || ' is installed in schema public: '
       || 'move it (ALTER EXTENSION ' || pg_catalog.quote_ident(e.extname) || ' SET SCHEMA extensions)' AS detail
FROM pg_catalog.pg_extension e
JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE n.nspname = 'public' AND n.nspname = ANY(%(schemas)s) AND e.extname <> 'plpgsql'
ORDER BY 3

-- name: rls_references_user_metadata
-- splinter 0015 (ERROR, security). Supabase Auth's user_metadata is whatever its user wrote there: a policy
-- that reads it from the JWT lets the user decide.
SELECT 'rls_references_user_metadata' AS name, 'ERROR' AS level,
       'Table ' || tbl.name || ' has policy ' || pg_catalog.quote_ident(p.polname)
       || ' that reads user_metadata from the JWT, which its user can edit: never grant access on it' AS detail
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
CROSS JOIN LATERAL (
    SELECT pg_catalog.concat_ws(' ', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                                pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
) expr(body)
WHERE n.nspname = ANY(%(schemas)s)
  AND expr.body ~* 'user_metadata' AND expr.body ~* '(auth\.jwt\(\)|request\.jwt\.claim)'
ORDER BY 3

-- name: materialized_view_in_api
-- splinter 0016 (WARN, security). A materialized view has no row level security: who may read it reads
-- all of it.
SELECT 'materialized_view_in_api' AS name, 'WARN' AS level,
       'Materialized view ' || tbl.name || ' is readable by anon or authenticated, without row level '
       || 'security: revoke SELECT' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'm'
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3

-- name: foreign_table_in_api
-- splinter 0017 (WARN, security). A foreign table has no row level security either.
SELECT 'foreign_table_in_api' AS name, 'WARN' AS level,
       'Foreign table ' || tbl.name || ' is readable by anon or authenticated, without row level '
       || 'security: revoke SELECT' AS detail
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'f'
  AND (pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3

-- name: unsupported_reg_types
-- splinter 0018 (WARN). pg_upgrade cannot carry a column of these reg* types over (they hold OIDs that
-- change), so a database holding one cannot be upgraded in place. regclass, regrole and regtype can.
SELECT 'unsupported_reg_types' AS name, 'WARN' AS level,
       'Column ' || pg_catalog.quote_ident(a.attname) || ' of ' || tbl.name || ' has type '
       || t.typname::text || ', which pg_upgrade cannot carry over: store the name as text' AS detail
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)) tbl(name)
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
  AND t.typnamespace = 'pg_catalog'::regnamespace
  AND t.typname IN ('regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper', 'regoperator',
                    'regproc', 'regprocedure')
ORDER BY 3
