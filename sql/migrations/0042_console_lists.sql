-- 0042: the console's lists that are a workspace's rows newest first (app/console, sql/queries/console.sql):
-- what was sent (the messages page) and the contacts. Without these, each page sorts all of a workspace's
-- deliveries or contacts; with them it reads one page down the index, however many there are.
-- Building them locks writes to the two tables for the build's duration: on a large install, apply in a
-- quiet hour.
CREATE INDEX deliveries_workspace_created_idx ON drumbeat.deliveries (workspace_id, created_at);
COMMENT ON INDEX drumbeat.deliveries_workspace_created_idx IS 'Serves the console''s messages page: a workspace''s deliveries, newest first.';
CREATE INDEX contacts_workspace_created_idx ON drumbeat.contacts (workspace_id, created_at);
COMMENT ON INDEX drumbeat.contacts_workspace_created_idx IS 'Serves the console''s contacts page: a workspace''s contacts, newest first.';
