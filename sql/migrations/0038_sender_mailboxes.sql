-- 0038: an email sender's inbox watched over IMAP, the alternative to the inbound email webhook for
-- workspaces that cannot point an inbound-parse service at us (a rep's own mailbox). One row per watched
-- sender: how to reach the mailbox (the password sealed with DRUMBEAT_SECRET_KEY by the API: tenants read
-- every column but that one), and where reading stopped (UIDVALIDITY and the last UID handled, so nothing
-- is read twice or skipped), with the last check's time and error for the console.
CREATE TABLE drumbeat.sender_mailboxes (
    sender_id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    host text NOT NULL,
    port integer NOT NULL,
    security text NOT NULL,
    username text NOT NULL,
    password_sealed text NOT NULL,
    folder text NOT NULL DEFAULT 'INBOX',
    uidvalidity bigint,
    last_uid bigint,
    checked_at timestamptz,
    error text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT sender_mailboxes_sender_fkey FOREIGN KEY (workspace_id, sender_id)
        REFERENCES drumbeat.senders (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT sender_mailboxes_host_length CHECK (pg_catalog.length(host) BETWEEN 1 AND 255),
    CONSTRAINT sender_mailboxes_port_range CHECK (port BETWEEN 1 AND 65535),
    CONSTRAINT sender_mailboxes_security_known CHECK (security IN ('ssl', 'starttls', 'none')),
    CONSTRAINT sender_mailboxes_username_length CHECK (pg_catalog.length(username) BETWEEN 1 AND 320),
    CONSTRAINT sender_mailboxes_password_sealed CHECK (password_sealed ~ '^v[0-9]+:'),
    CONSTRAINT sender_mailboxes_folder_length CHECK (pg_catalog.length(folder) BETWEEN 1 AND 255),
    CONSTRAINT sender_mailboxes_position_whole CHECK ((uidvalidity IS NULL) = (last_uid IS NULL))
);
COMMENT ON TABLE drumbeat.sender_mailboxes IS 'Email senders whose inbox the worker watches over IMAP for replies; the position says where reading stopped.';
COMMENT ON COLUMN drumbeat.sender_mailboxes.password_sealed IS 'The IMAP password sealed with a key derived from DRUMBEAT_SECRET_KEY (app/core/secret_box.py); never readable by tenants.';
CREATE INDEX sender_mailboxes_workspace_idx ON drumbeat.sender_mailboxes (workspace_id);
COMMENT ON INDEX drumbeat.sender_mailboxes_workspace_idx IS 'Serves the workspace_id foreign key and listing a workspace''s mailboxes.';
COMMENT ON INDEX drumbeat.sender_mailboxes_pkey IS 'One mailbox per sender; serves the worker''s position updates.';
ALTER TABLE drumbeat.sender_mailboxes ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.sender_mailboxes FORCE ROW LEVEL SECURITY;
