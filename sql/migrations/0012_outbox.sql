-- 0012 the outbox: where the outbox transport records each fully rendered message instead of sending
-- it (development without provider credentials, demos, tests). One row per delivery.

CREATE TABLE drumbeat.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    delivery_id uuid NOT NULL,
    channel text NOT NULL,
    to_address text NOT NULL,
    from_address text NOT NULL,
    subject text,
    text_body text NOT NULL,
    html_body text,
    headers jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT outbox_channel_known CHECK (channel IN ('sms', 'email')),
    CONSTRAINT outbox_headers_is_object CHECK (pg_catalog.jsonb_typeof(headers) = 'object'),
    CONSTRAINT outbox_delivery_unique UNIQUE (delivery_id),
    CONSTRAINT outbox_delivery_fkey FOREIGN KEY (workspace_id, delivery_id)
        REFERENCES drumbeat.deliveries (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE drumbeat.outbox IS 'Messages the outbox transport recorded instead of sending them.';
COMMENT ON INDEX drumbeat.outbox_pkey IS 'Serves reading the outbox in order.';
COMMENT ON INDEX drumbeat.outbox_delivery_unique IS 'One outbox row per delivery: recording a delivery twice is a no-op.';
CREATE INDEX outbox_workspace_idx ON drumbeat.outbox (workspace_id, id);
COMMENT ON INDEX drumbeat.outbox_workspace_idx IS 'Serves listing a workspace''s outbox, newest last.';

ALTER TABLE drumbeat.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY outbox_service_role ON drumbeat.outbox TO service_role USING (true) WITH CHECK (true);
CREATE POLICY outbox_worker ON drumbeat.outbox TO drumbeat_worker USING (true) WITH CHECK (true);
CREATE POLICY outbox_member_read ON drumbeat.outbox FOR SELECT TO authenticated
    USING (workspace_id = ANY ((SELECT drumbeat.member_workspace_ids())::uuid[]));
REVOKE ALL ON drumbeat.outbox FROM PUBLIC, anon;
GRANT SELECT ON drumbeat.outbox TO authenticated;
GRANT SELECT, INSERT ON drumbeat.outbox TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON drumbeat.outbox TO service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA drumbeat TO authenticated, service_role, drumbeat_worker;
