-- 0037: inbound email (replies, auto-replies, bounces) is handled once per message: a provider's retry or
-- the same message seen by the webhook and by IMAP carries the same dedupe key (its Message-ID, else a
-- hash), recorded in the payload of the event it produced. The look-up needs an index, as 0032's for SMS.
CREATE INDEX events_email_key_idx ON drumbeat.events (workspace_id, (payload ->> 'email_key'))
    WHERE payload ? 'email_key';
COMMENT ON INDEX drumbeat.events_email_key_idx IS 'Serves drumbeat.inbound_email: has this workspace handled this email already (a retried webhook, or the other inbound path).';
