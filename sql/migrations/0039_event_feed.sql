-- 0039: the events feed that never skips one (drumbeat_api.list_events, GET /api/v1/events). Events get
-- their ids when inserted but become visible when their transaction commits, so "every id after the last
-- one I saw" would miss an event whose transaction committed after a later one's. Each event now carries
-- its transaction's id (tx); the feed orders by (tx, id) and shows only events of transactions older than
-- every transaction still running (pg_snapshot_xmin): those can no longer change, and any transaction
-- still to commit has a larger id than every one shown. Rows from before this migration get tx 0 (all
-- long committed): a constant default, so adding the column rewrites nothing; new rows get the real one.
ALTER TABLE drumbeat.events ADD COLUMN tx xid8 NOT NULL DEFAULT '0';
ALTER TABLE drumbeat.events ALTER COLUMN tx SET DEFAULT pg_catalog.pg_current_xact_id();
COMMENT ON COLUMN drumbeat.events.tx IS 'The writing transaction''s id (0 for events before migration 0039): the feed''s order, so that it never skips an event committed late.';

-- Building it locks writes to events for the build's duration: on a large install, apply in a quiet hour.
CREATE INDEX events_feed_idx ON drumbeat.events (workspace_id, tx, id);
COMMENT ON INDEX drumbeat.events_feed_idx IS 'Serves drumbeat_api.list_events: a workspace''s events in (transaction, id) order after a cursor.';

-- The type each event kind is published under (webhooks, the feed, NOTIFY). A table rather than a function:
-- the NOTIFY trigger fires for every statement that writes events (a bulk enrollment writes 100k at once,
-- each send batch hundreds), and a join is set-based where a function call per row (with its pinned
-- search_path) cost more than the insert itself. Kinds not listed stay inside (sequence edits, member
-- changes, reconciliation notes). A bounce is a message's when it names a delivery, else the contact's.
CREATE TABLE drumbeat.event_types (
    kind text PRIMARY KEY,
    type text NOT NULL,
    type_without_delivery text
);
COMMENT ON TABLE drumbeat.event_types IS 'Reference list: the public type of each published event kind (README, "Events out").';
COMMENT ON INDEX drumbeat.event_types_pkey IS 'Serves the join of events to their public type (the feed, NOTIFY).';
ALTER TABLE drumbeat.event_types ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.event_types FORCE ROW LEVEL SECURITY;
INSERT INTO drumbeat.event_types (kind, type, type_without_delivery) VALUES
    ('enrolled', 'sequence.enrollment.created', NULL),
    ('started', 'sequence.enrollment.started', NULL),
    ('completed', 'sequence.enrollment.completed', NULL),
    ('replied', 'sequence.enrollment.replied', NULL),
    ('exited', 'sequence.enrollment.exited', NULL),
    ('paused', 'sequence.enrollment.paused', NULL),
    ('resumed', 'sequence.enrollment.resumed', NULL),
    ('step_executed', 'sequence.step.executed', NULL),
    ('task_created', 'sequence.step.pending_manual', NULL),
    ('task_completed', 'task.completed', NULL),
    ('sent', 'message.sent', NULL),
    ('delivered', 'message.delivered', NULL),
    ('failed', 'message.failed', NULL),
    ('undelivered', 'message.failed', NULL),
    ('delivery_unknown', 'message.unknown', NULL),
    ('opened', 'message.opened', NULL),
    ('clicked', 'message.clicked', NULL),
    ('auto_replied', 'message.auto_replied', NULL),
    ('bounced', 'message.bounced', 'contact.bounced'),
    ('unsubscribed', 'contact.opted_out', NULL),
    ('opted_in', 'contact.opted_in', NULL),
    ('resubscribed', 'contact.opted_in', NULL);
