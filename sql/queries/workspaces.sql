-- Statements of `drumbeat workspaces` (app/commands/workspaces.py), run as the operator (a trusted caller).

-- name: create
SELECT drumbeat_api.create_workspace(%(name)s, %(timezone)s)

-- name: list
SELECT w.id, w.name, w.timezone, w.created_at,
       (SELECT count(*) FROM drumbeat.sequences s WHERE s.workspace_id = w.id AND s.status = 'active') AS active_sequences,
       (SELECT count(*) FROM drumbeat.api_keys k WHERE k.workspace_id = w.id AND k.revoked_at IS NULL) AS live_keys
FROM drumbeat.workspaces w
ORDER BY w.created_at, w.id
