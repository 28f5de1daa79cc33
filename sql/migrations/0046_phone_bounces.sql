-- A number Twilio refuses for good (invalid, not a mobile, unreachable: 21211, 21614, 30005, 30006) is
-- bounced like a refused mailbox, in its own column: the email address may still be good.
ALTER TABLE drumbeat.contacts ADD COLUMN phone_bounced_at timestamptz;
COMMENT ON COLUMN drumbeat.contacts.phone_bounced_at IS 'When an SMS to this number failed permanently (invalid, not a mobile, unreachable): no SMS goes to it again until the number changes.';
COMMENT ON COLUMN drumbeat.contacts.bounced_at IS 'When an email to this address bounced permanently: no email goes to it again.';
