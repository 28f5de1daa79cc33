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
