-- Statements of `drumbeat senders` (app/commands/senders.py): the operator's connection (DATABASE_URL) is a
-- trusted caller. Sharing a number or from-address between workspaces is the operator's decision alone.

-- name: share
SELECT drumbeat.share_sender(%(workspace_id)s, %(address)s) AS sender_id

-- name: users
-- Every workspace that sends from an address: its owner first, then those it is shared with.
SELECT se.workspace_id, w.name, se.channel, se.shared, se.id
FROM drumbeat.senders se JOIN drumbeat.workspaces w ON w.id = se.workspace_id
WHERE se.address = CASE WHEN pg_catalog.strpos(%(address)s, '@') > 0 THEN pg_catalog.lower(pg_catalog.btrim(%(address)s))
                        ELSE pg_catalog.btrim(%(address)s) END
ORDER BY se.shared, se.created_at
