-- 0040: outgoing webhooks (README, "Events out"). A workspace's admins register endpoints; the worker fans
-- the event feed out to each endpoint from its own position in the feed (never skipping: the same
-- (transaction, id) order and settled horizon as drumbeat_api.list_events), one message per event and
-- endpoint, and sends each message, signed the Standard Webhooks way, until it is delivered or its
-- retries run out. Every attempt is logged. Functions: sql/functions/webhooks.sql.

CREATE TABLE drumbeat.webhook_endpoints (
    id uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid() PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    event_types text[] NOT NULL DEFAULT '{*}',
    include_bodies boolean NOT NULL DEFAULT false,
    enabled boolean NOT NULL DEFAULT true,
    disabled_at timestamptz,
    disabled_reason text,
    -- The signing secret must be readable to sign (an HMAC key cannot be hashed); tenants never read it
    -- back (grants.sql), only the worker does. The previous one keeps signing until it expires (rotation).
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    -- Where the fan-out stands in the feed: the (transaction, id) of the last event it looked at.
    -- Starts at the oldest transaction still running when the endpoint is made: every event committed after
    -- that is sent (a few from just before may be too), none skipped.
    feed_tx xid8 NOT NULL DEFAULT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()),
    feed_id bigint NOT NULL DEFAULT 0,
    failing_since timestamptz,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT webhook_endpoints_workspace_key UNIQUE (workspace_id, id),
    CONSTRAINT webhook_endpoints_url_form CHECK (pg_catalog.length(url) <= 2000 AND url ~* '^https?://'),
    CONSTRAINT webhook_endpoints_description_length CHECK (pg_catalog.length(description) <= 500),
    CONSTRAINT webhook_endpoints_types_given CHECK (pg_catalog.cardinality(event_types) BETWEEN 1 AND 100),
    CONSTRAINT webhook_endpoints_secret_form CHECK (secret ~ '^whsec_' AND (previous_secret IS NULL OR previous_secret ~ '^whsec_')),
    CONSTRAINT webhook_endpoints_disabled_reason CHECK (enabled OR disabled_at IS NOT NULL)
);
COMMENT ON TABLE drumbeat.webhook_endpoints IS 'Where a workspace''s events are POSTed (Standard Webhooks): URL, the types it takes, its signing secret(s) and its position in the event feed.';
COMMENT ON COLUMN drumbeat.webhook_endpoints.secret IS 'The whsec_ signing secret, shown once at creation and rotation; readable by the worker only.';
COMMENT ON COLUMN drumbeat.webhook_endpoints.failing_since IS 'When the endpoint started failing (no 2xx since); five days of it disables the endpoint.';
COMMENT ON INDEX drumbeat.webhook_endpoints_pkey IS 'Serves the contract''s look-ups of one endpoint and the fan-out''s position updates.';
COMMENT ON INDEX drumbeat.webhook_endpoints_workspace_key IS 'Serves the workspace_id foreign key, listing a workspace''s endpoints, and the messages'' (workspace_id, endpoint_id) foreign key.';
ALTER TABLE drumbeat.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.webhook_endpoints FORCE ROW LEVEL SECURITY;

-- One message per event and endpoint (its webhook-id, the same on every retry), plus test pings. 'sending'
-- is leased: next_attempt_at is then when the lease lapses, and a message whose worker died is due again.
CREATE TABLE drumbeat.webhook_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id bigint,
    msg_id text NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT pg_catalog.now(),
    lease uuid,  -- the claim that is sending it: only that claim's record moves it on
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at timestamptz,
    CONSTRAINT webhook_messages_endpoint_fkey FOREIGN KEY (workspace_id, endpoint_id)
        REFERENCES drumbeat.webhook_endpoints (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT webhook_messages_event_key UNIQUE (endpoint_id, event_id),
    CONSTRAINT webhook_messages_status_known CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    CONSTRAINT webhook_messages_due_when_waiting CHECK ((status IN ('pending', 'sending')) = (next_attempt_at IS NOT NULL))
);
COMMENT ON TABLE drumbeat.webhook_messages IS 'Each event (or test ping) to send to one endpoint: its webhook-id, body and delivery state.';
COMMENT ON INDEX drumbeat.webhook_messages_pkey IS 'Serves the claim''s update and the record of each attempt.';
COMMENT ON INDEX drumbeat.webhook_messages_event_key IS 'One message per event and endpoint: the fan-out and re-sends never queue an event twice.';
CREATE INDEX webhook_messages_endpoint_idx ON drumbeat.webhook_messages (workspace_id, endpoint_id, id);
COMMENT ON INDEX drumbeat.webhook_messages_endpoint_idx IS 'Serves the endpoint foreign key and re-sending an endpoint''s messages.';
CREATE INDEX webhook_messages_due_idx ON drumbeat.webhook_messages (endpoint_id, next_attempt_at) WHERE status IN ('pending', 'sending');
COMMENT ON INDEX drumbeat.webhook_messages_due_idx IS 'Serves the worker''s claim: each endpoint''s due messages, and its count of those in flight.';
ALTER TABLE drumbeat.webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.webhook_messages FORCE ROW LEVEL SECURITY;

-- Every attempt, as the endpoint's delivery log.
CREATE TABLE drumbeat.webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    message_id bigint NOT NULL REFERENCES drumbeat.webhook_messages (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code integer,
    latency_ms integer NOT NULL,
    outcome text NOT NULL,
    error text,
    next_retry_at timestamptz,
    CONSTRAINT webhook_attempts_outcome_known CHECK (outcome IN ('delivered', 'retry', 'disable', 'refused')),
    CONSTRAINT webhook_attempts_error_length CHECK (pg_catalog.length(error) <= 500)
);
COMMENT ON TABLE drumbeat.webhook_attempts IS 'The delivery log: one row per attempt to send a webhook message (time, status, latency, error, next retry).';
COMMENT ON INDEX drumbeat.webhook_attempts_pkey IS 'Identifies an attempt (the delivery log''s paging key).';
CREATE INDEX webhook_attempts_message_idx ON drumbeat.webhook_attempts (message_id);
COMMENT ON INDEX drumbeat.webhook_attempts_message_idx IS 'Serves the message foreign key (a message''s attempts go with it).';
CREATE INDEX webhook_attempts_endpoint_idx ON drumbeat.webhook_attempts (endpoint_id, id);
COMMENT ON INDEX drumbeat.webhook_attempts_endpoint_idx IS 'Serves an endpoint''s delivery log, newest first.';
ALTER TABLE drumbeat.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.webhook_attempts FORCE ROW LEVEL SECURITY;

-- Two more published kinds: the `webhook` step action, and an endpoint the worker had to switch off.
INSERT INTO drumbeat.event_types (kind, type, type_without_delivery) VALUES
    ('webhook', 'sequence.step.webhook', NULL),
    ('webhook_disabled', 'webhook_endpoint.disabled', NULL);
