-- Statements of `drumbeat up` (app/commands/up.py), run as the operator (a trusted caller).

-- name: lock_first_run
-- Two `drumbeat up` starting at once on a new database must not both create a default workspace.
SELECT pg_advisory_xact_lock(hashtext('drumbeat.up.first_run'))

-- name: first_workspace
SELECT w.id, w.name, (SELECT count(*) FROM drumbeat.workspaces) AS workspaces
FROM drumbeat.workspaces w ORDER BY w.created_at, w.id LIMIT 1

-- name: create_workspace
SELECT drumbeat_api.create_workspace(%(name)s, %(timezone)s)
