-- Statements of `drumbeat keys` (app/cli.py): the operator's connection (DATABASE_URL) is a trusted
-- caller, so the permission checks of drumbeat_api.create_api_key do not apply; issue_api_key does the work.

-- name: issue
SELECT k.key_id, k.token FROM drumbeat.issue_api_key(%(workspace_id)s, %(name)s, %(role)s, NULL) AS k

-- name: revoke
SELECT drumbeat_api.revoke_api_key(%(key_id)s)

-- name: list
SELECT k.id, k.name, k.prefix, k.role, k.created_at, k.last_used_at, k.revoked_at
FROM drumbeat.api_keys k WHERE k.workspace_id = %(workspace_id)s ORDER BY k.created_at, k.id
