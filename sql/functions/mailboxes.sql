-- Email senders' inboxes watched over IMAP for replies (workers/mailboxes.py): an admin sets a mailbox up
-- (the HTTP API seals its password first), the worker reads where it stopped and records how far it got.

-- Why: sets up (or, with NULL, stops) the watching of an email sender's inbox (admins). p_mailbox: {host,
-- port, security: ssl | starttls | none, username, password_sealed, folder (default INBOX)}. The password
-- arrives sealed (app/core/secret_box.py): `PUT /api/v1/senders/{id}/mailbox` seals it. A new host, user or
-- folder starts reading afresh (from the next message to arrive).
CREATE OR REPLACE FUNCTION drumbeat_api.set_sender_mailbox(p_sender_id uuid, p_mailbox jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('senders', p_sender_id, 'p_sender_id', 'admin');
    v_security text;
BEGIN
    IF (SELECT se.channel FROM drumbeat.senders se WHERE se.id = p_sender_id) <> 'email' THEN
        PERFORM drumbeat.raise_error('PT422', 'only an email sender has an inbox to watch', 'p_sender_id');
    END IF;
    IF p_mailbox IS NULL OR p_mailbox = 'null'::jsonb THEN
        DELETE FROM drumbeat.sender_mailboxes m WHERE m.sender_id = p_sender_id;
        RETURN;
    END IF;
    PERFORM drumbeat.check_object(p_mailbox, 'p_mailbox', ARRAY['host', 'port', 'security', 'username', 'password_sealed', 'folder']);
    v_security := COALESCE(drumbeat.json_text(p_mailbox -> 'security', 'p_mailbox.security'), 'ssl');
    IF v_security NOT IN ('ssl', 'starttls', 'none') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be ssl, starttls or none', 'p_mailbox.security');
    END IF;
    IF drumbeat.json_text(p_mailbox -> 'password_sealed', 'p_mailbox.password_sealed', true) !~ '^v[0-9]+:' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a password sealed by the API (PUT /api/v1/senders/{id}/mailbox)', 'p_mailbox.password_sealed');
    END IF;
    INSERT INTO drumbeat.sender_mailboxes AS m (sender_id, workspace_id, host, port, security, username, password_sealed, folder)
    VALUES (p_sender_id, v_workspace_id,
            drumbeat.json_text(p_mailbox -> 'host', 'p_mailbox.host', true, 255),
            CASE WHEN p_mailbox ? 'port' THEN drumbeat.json_int(p_mailbox -> 'port', 'p_mailbox.port', 1, 65535)
                 WHEN v_security = 'ssl' THEN 993 ELSE 143 END,
            v_security,
            drumbeat.json_text(p_mailbox -> 'username', 'p_mailbox.username', true, 320),
            p_mailbox ->> 'password_sealed',
            COALESCE(drumbeat.json_text(p_mailbox -> 'folder', 'p_mailbox.folder', false, 255), 'INBOX'))
    ON CONFLICT (sender_id) DO UPDATE SET
        host = excluded.host, port = excluded.port, security = excluded.security, username = excluded.username,
        password_sealed = excluded.password_sealed, folder = excluded.folder, error = NULL, updated_at = pg_catalog.now(),
        uidvalidity = CASE WHEN (m.host, m.username, m.folder) = (excluded.host, excluded.username, excluded.folder) THEN m.uidvalidity END,
        last_uid = CASE WHEN (m.host, m.username, m.folder) = (excluded.host, excluded.username, excluded.folder) THEN m.last_uid END;
END
$$;

-- Why: the mailboxes the worker watches, with where reading stopped (updated_at tells a watcher that its
-- settings changed under it).
CREATE OR REPLACE FUNCTION drumbeat.watched_mailboxes()
RETURNS TABLE(sender_id uuid, workspace_id uuid, host text, port integer, security text, username text,
              password_sealed text, folder text, uidvalidity bigint, last_uid bigint, updated_at timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.sender_id, m.workspace_id, m.host, m.port, m.security, m.username, m.password_sealed, m.folder,
           m.uidvalidity, m.last_uid, m.updated_at
    FROM drumbeat.sender_mailboxes m ORDER BY m.sender_id
$$;

-- Why: how far the worker got (after handling the messages up to p_last_uid, in the same transaction as
-- their events), or what stopped it (p_error, shown to the workspace; NULL once a check succeeds).
CREATE OR REPLACE FUNCTION drumbeat.mailbox_checked(p_sender_id uuid, p_uidvalidity bigint, p_last_uid bigint, p_error text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE drumbeat.sender_mailboxes m SET
        uidvalidity = COALESCE(p_uidvalidity, m.uidvalidity), last_uid = COALESCE(p_last_uid, m.last_uid),
        checked_at = drumbeat.clock_now(), error = pg_catalog.left(p_error, 500)
    WHERE m.sender_id = p_sender_id
$$;
