-- What was sent to one contact, newest first (GET /api/v1/messages?contact_id=, a CRM's contact timeline):
-- without it the list walked the workspace's deliveries until it found that contact's.
CREATE INDEX deliveries_contact_created_idx ON drumbeat.deliveries (workspace_id, contact_id, created_at);
COMMENT ON INDEX drumbeat.deliveries_contact_created_idx IS 'Serves GET /api/v1/messages?contact_id= (list_messages): one contact''s messages, newest first.';
