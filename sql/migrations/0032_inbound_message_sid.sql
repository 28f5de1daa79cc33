-- 0032: inbound SMS are deduplicated by Twilio's MessageSid (a webhook Twilio retries, because it got no
-- 2xx in time, carries the same one). The look-up needs an index on the events that recorded a message.
-- Building it locks writes to events for the build's duration: on a large install, apply in a quiet hour.
CREATE INDEX events_message_sid_idx ON drumbeat.events ((payload ->> 'message_sid'))
    WHERE payload ? 'message_sid';
COMMENT ON INDEX drumbeat.events_message_sid_idx IS 'Serves drumbeat.inbound_sms: has this MessageSid been handled already (a retried webhook).';
