-- 0037: inbound email (replies, auto-replies, bounces) is handled once per message: a provider's retry or
-- the same message seen by the webhook and by IMAP carries the same dedupe key (its Message-ID, else a
-- hash), recorded in the payload of the event it produced. The look-up needs an index, as 0032's for SMS.
CREATE INDEX events_email_key_idx ON drumbeat.events (workspace_id, (payload ->> 'email_key'))
    WHERE payload ? 'email_key';
COMMENT ON INDEX drumbeat.events_email_key_idx IS 'Serves drumbeat.inbound_email: has this workspace handled this email already (a retried webhook, or the other inbound path).';

-- Inbound-parse services (SendGrid, Mailgun, Postmark...) post to a URL with the credentials in it: each
-- workspace gets an inbound secret for that, which can do nothing else (an API key could do everything its
-- role may). Only its SHA-256 is kept; tenants cannot read it (sql/functions/grants.sql: column grants).
ALTER TABLE drumbeat.workspaces ADD COLUMN inbound_secret_hash text;
ALTER TABLE drumbeat.workspaces ADD CONSTRAINT workspaces_inbound_secret_is_sha256 CHECK (inbound_secret_hash ~ '^[0-9a-f]{64}$');
COMMENT ON COLUMN drumbeat.workspaces.inbound_secret_hash IS 'SHA-256 of the secret inbound-parse services authenticate with (HTTP basic auth: the workspace id and this secret); NULL until an admin creates one.';

-- An email step without a subject now follows up in the thread of the contact's previous email
-- (sql/functions/definitions.sql checks that the first email step of a sequence has one).
ALTER TABLE drumbeat.sequence_steps DROP CONSTRAINT sequence_steps_email_has_subject;

-- A member's own sender (a rep's mailbox or number): enrollments assigned to that member go out from it
-- (drumbeat.batch_senders, which now resolves senders per assignee too: its result gains a column).
ALTER TABLE drumbeat.senders ADD COLUMN user_id uuid;
COMMENT ON COLUMN drumbeat.senders.user_id IS 'The member whose own sender this is: enrollments assigned to them are sent from it; NULL for the workspace''s shared senders.';
DROP FUNCTION IF EXISTS drumbeat.batch_senders(uuid[]);
