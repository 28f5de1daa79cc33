-- Statements of the operator's commands (app/commands/doctor.py, import_contacts.py, holidays.py). They run
-- as DATABASE_URL's login, a trusted caller (superuser, BYPASSRLS or service_role): RLS does not narrow
-- what they see, and the contract functions skip their membership checks.

-- name: workspace_name
SELECT w.name FROM drumbeat.workspaces w WHERE w.id = %(workspace_id)s

-- name: load_holidays
-- Replaces a workspace's list (workspace_id) or a shared calendar (calendar), names kept.
SELECT drumbeat.load_holidays(%(workspace_id)s, %(calendar)s, %(holidays)s::jsonb)

-- name: holiday_count
SELECT pg_catalog.count(*) FROM drumbeat.holidays h
WHERE h.workspace_id = %(workspace_id)s OR h.calendar = pg_catalog.upper(%(calendar)s)

-- name: holidays
SELECT h.day, h.name FROM drumbeat.holidays h
WHERE h.workspace_id = %(workspace_id)s OR h.calendar = pg_catalog.upper(%(calendar)s) ORDER BY h.day

-- name: procrastinate_installed
-- procrastinate's tables live in their own schema (app/core/migrate.py), applied by `drumbeat migrate`. Read from
-- the catalog, not with to_regclass: that needs USAGE on the schema, which a login may lack.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'procrastinate' AND c.relname = 'procrastinate_jobs')

-- name: workspace_counts
SELECT (SELECT pg_catalog.count(*) FROM drumbeat.workspaces) AS workspaces,
       (SELECT pg_catalog.count(DISTINCT s.workspace_id) FROM drumbeat.sequences s WHERE s.status = 'active')
           AS with_active_sequences

-- name: missing_senders
-- Workspaces with an active sequence whose live message steps use a channel the workspace has no sender
-- for, with those channels (the dispatcher would fail those steps).
SELECT w.id, w.name, pg_catalog.array_agg(DISTINCT st.kind ORDER BY st.kind) AS channels
FROM drumbeat.sequences s
JOIN drumbeat.sequence_steps st ON st.sequence_id = s.id AND st.removed_at IS NULL AND st.is_active
JOIN drumbeat.workspaces w ON w.id = s.workspace_id
WHERE s.status = 'active' AND st.kind IN ('sms', 'email')
  AND NOT EXISTS (SELECT 1 FROM drumbeat.senders se WHERE se.workspace_id = s.workspace_id AND se.channel = st.kind)
GROUP BY w.id, w.name
ORDER BY w.name, w.id

-- name: login_capabilities
-- What DATABASE_URL's login may do (README, "Database roles"): trusted as drumbeat.is_trusted_caller()
-- judges it (superuser, BYPASSRLS or service_role: the operator commands), run the worker (a member of
-- drumbeat_worker), serve the API (a member of drumbeat_authenticator). Superusers are members of every role.
SELECT r.rolname AS login, r.rolsuper OR r.rolbypassrls OR r.rolname = 'service_role' AS trusted,
       pg_catalog.pg_has_role(r.rolname, 'drumbeat_worker', 'MEMBER') AS worker,
       pg_catalog.pg_has_role(r.rolname, 'drumbeat_authenticator', 'MEMBER') AS api
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user

-- name: channel_holds
-- The circuit breaker's holds (empty while every provider answers): whole channels (sender_id NULL) and senders.
SELECT h.channel, h.sender_id, h.reason, h.error_code, h.held_since, h.probe_at
FROM drumbeat.channel_holds h ORDER BY h.channel, h.sender_id NULLS FIRST
