-- Statements of the workspace endpoints (app/api/workspaces.py). They run as the caller (role
-- authenticated, request.jwt.claims set): RLS limits every SELECT to the caller's workspaces.

-- name: create_workspace
SELECT drumbeat_api.create_workspace(%(name)s, %(timezone)s) AS id

-- name: list_workspaces
SELECT w.id, w.name, w.timezone, w.sms_credits, m.role, w.created_at
FROM drumbeat.workspaces w
JOIN drumbeat.workspace_members m ON m.workspace_id = w.id AND m.user_id = drumbeat.current_user_id()
ORDER BY w.created_at, w.id

-- name: get_workspace
SELECT w.id, w.name, w.timezone, w.sms_credits, m.role, w.created_at
FROM drumbeat.workspaces w
JOIN drumbeat.workspace_members m ON m.workspace_id = w.id AND m.user_id = drumbeat.current_user_id()
WHERE w.id = %(id)s

-- name: update_workspace
SELECT drumbeat_api.update_workspace(%(id)s, %(name)s, %(timezone)s)

-- name: list_holidays
SELECT h.day FROM drumbeat.holidays h WHERE h.workspace_id = %(workspace_id)s ORDER BY h.day

-- name: set_holidays
SELECT drumbeat_api.set_holidays(%(workspace_id)s, %(dates)s)

-- name: create_sender
SELECT drumbeat_api.create_sender(%(workspace_id)s, %(channel)s, %(address)s, %(settings)s) AS id

-- name: list_senders
SELECT se.id, se.workspace_id, se.channel, se.address, se.name, se.rate_per_second, se.daily_cap, se.user_id, se.created_at
FROM drumbeat.senders se WHERE se.workspace_id = %(workspace_id)s
ORDER BY se.created_at, se.id

-- name: get_sender
SELECT se.id, se.workspace_id, se.channel, se.address, se.name, se.rate_per_second, se.daily_cap, se.user_id, se.created_at
FROM drumbeat.senders se WHERE se.id = %(id)s

-- name: update_sender
SELECT drumbeat_api.update_sender(%(id)s, %(changes)s)

-- name: delete_sender
SELECT drumbeat_api.delete_sender(%(id)s)

-- name: list_channel_holds
-- RLS shows whole-channel holds and the caller's senders' holds; the filter keeps this workspace's.
SELECT h.channel, h.sender_id, se.address AS sender_address, h.reason, h.error_code, h.held_since,
       h.probe_at AS next_probe_at
FROM drumbeat.channel_holds h LEFT JOIN drumbeat.senders se ON se.id = h.sender_id
WHERE h.sender_id IS NULL OR se.workspace_id = %(workspace_id)s
ORDER BY h.channel, h.sender_id NULLS FIRST

-- name: create_api_key
SELECT k.key_id, k.token FROM drumbeat_api.create_api_key(%(workspace_id)s, %(name)s, %(role)s) AS k

-- name: list_api_keys
SELECT k.id, k.workspace_id, k.name, k.prefix, k.role, k.created_at, k.last_used_at, k.revoked_at
FROM drumbeat.api_keys k WHERE k.workspace_id = %(workspace_id)s
ORDER BY k.created_at, k.id

-- name: get_api_key
SELECT k.id, k.workspace_id, k.name, k.prefix, k.role, k.created_at, k.last_used_at, k.revoked_at
FROM drumbeat.api_keys k WHERE k.id = %(id)s

-- name: revoke_api_key
SELECT drumbeat_api.revoke_api_key(%(id)s)

-- name: delete_workspace
SELECT drumbeat_api.delete_workspace(%(id)s)

-- name: list_members
-- People and API keys alike (a key is a member with its own id); keys are managed as keys.
SELECT m.user_id, m.role, (k.id IS NOT NULL) AS api_key, m.created_at
FROM drumbeat.workspace_members m LEFT JOIN drumbeat.api_keys k ON k.id = m.user_id
WHERE m.workspace_id = %(workspace_id)s
ORDER BY m.created_at, m.user_id

-- name: get_member
SELECT m.user_id, m.role, (k.id IS NOT NULL) AS api_key, m.created_at
FROM drumbeat.workspace_members m LEFT JOIN drumbeat.api_keys k ON k.id = m.user_id
WHERE m.workspace_id = %(workspace_id)s AND m.user_id = %(user_id)s

-- name: add_member
SELECT drumbeat_api.add_member(%(workspace_id)s, %(user_id)s, %(role)s)

-- name: update_member_role
SELECT drumbeat_api.update_member_role(%(workspace_id)s, %(user_id)s, %(role)s)

-- name: remove_member
SELECT drumbeat_api.remove_member(%(workspace_id)s, %(user_id)s)

-- name: rotate_inbound_secret
SELECT drumbeat_api.rotate_inbound_secret(%(id)s)

-- name: set_sender_mailbox
SELECT drumbeat_api.set_sender_mailbox(%(sender_id)s, %(mailbox)s)

-- name: get_sender_mailbox
-- Never the password: tenants may not read it (a column grant), and it is sealed besides.
SELECT m.sender_id, m.host, m.port, m.security, m.username, m.folder, m.checked_at, m.error, m.updated_at
FROM drumbeat.sender_mailboxes m WHERE m.sender_id = %(sender_id)s
