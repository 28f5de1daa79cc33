-- Outgoing webhooks (README, "Events out"; tables: migration 0040). Admins manage a workspace's endpoints
-- through the contract; the worker (workers/webhooks.py) fans the event feed out into messages, claims
-- the due ones with a per-endpoint cap on messages in flight, sends them (workers/webhook_sender.py) and
-- records each attempt here. Delivery is at least once: a message whose worker died is sent again, with
-- the same webhook-id, once its lease lapses.

-- Why: addresses no endpoint may name (loopback, private, link-local, cloud metadata...), refused when an
-- endpoint is saved; the worker checks again after resolving the name, at every send (the authoritative
-- check: a name can resolve anywhere). Here only literal addresses and local names can be told; the HTTP
-- API also resolves the name before saving. Development and tests allow them: the API sets
-- drumbeat.webhook_allow_private for its transaction when DRUMBEAT_WEBHOOK_ALLOW_PRIVATE is true.
CREATE OR REPLACE FUNCTION drumbeat.webhook_url_problem(p_url text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[] := pg_catalog.regexp_match(p_url, '^(https?)://([^/?#]*)([/?#].*)?$', 'i');
    v_host text;
    v_address inet;
BEGIN
    IF v_parts IS NULL THEN
        RETURN 'must be an http:// or https:// URL';
    END IF;
    IF pg_catalog.strpos(v_parts[2], '@') > 0 THEN
        RETURN 'must not carry a user name or password (put a token in the path or query instead)';
    END IF;
    v_host := pg_catalog.lower(pg_catalog.rtrim(pg_catalog.regexp_replace(v_parts[2], '^\[([^]]*)\](:[0-9]*)?$|:[0-9]*$', '\1'), '.'));
    IF v_host = '' THEN
        RETURN 'has no host';
    END IF;
    IF COALESCE(pg_catalog.current_setting('drumbeat.webhook_allow_private', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF v_host = 'localhost' OR v_host LIKE '%.localhost' OR v_host LIKE '%.internal' OR v_host LIKE '%.local' THEN
        RETURN pg_catalog.format('names a local host (%s): webhooks go to public addresses only', v_host);
    END IF;
    BEGIN
        v_address := v_host::inet;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN NULL;  -- a name: checked once resolved (the API, and the worker at every send)
    END;
    -- IPv4-mapped and NAT64 forms are refused whole: they hide an IPv4 address, and no receiver needs them.
    IF v_address << ANY (ARRAY['0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16',
            '172.16.0.0/12', '192.0.0.0/24', '192.168.0.0/16', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
            '::/127', '::ffff:0:0/96', '::ffff:0:0:0/96', '64:ff9b::/96', '64:ff9b:1::/48', 'fc00::/7', 'fe80::/10', 'ff00::/8']::inet[])
       OR v_address IN ('0.0.0.0'::inet, '255.255.255.255'::inet, '::'::inet, '::1'::inet) THEN
        RETURN pg_catalog.format('names a private, loopback or link-local address (%s): webhooks go to public addresses only', pg_catalog.host(v_address));
    END IF;
    RETURN NULL;
END
$$;

-- Why: the types an endpoint takes: ["*"] or published types (drumbeat.event_types, and "ping"), named
-- in the error when one is unknown.
CREATE OR REPLACE FUNCTION drumbeat.check_event_types(p_types jsonb, p_field text)
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_types text[];
    v_unknown text;
BEGIN
    IF pg_catalog.jsonb_typeof(p_types) IS DISTINCT FROM 'array' OR pg_catalog.jsonb_array_length(p_types) NOT BETWEEN 1 AND 100
       OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(p_types) t WHERE pg_catalog.jsonb_typeof(t) <> 'string') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be ["*"] or a list of 1 to 100 event types', p_field);
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT t ORDER BY t) INTO v_types FROM pg_catalog.jsonb_array_elements_text(p_types) t;
    SELECT t INTO v_unknown FROM pg_catalog.unnest(v_types) t
    WHERE t <> '*' AND t <> 'ping' AND NOT EXISTS (
        SELECT 1 FROM drumbeat.event_types et WHERE t IN (et.type, et.type_without_delivery))
    LIMIT 1;
    IF v_unknown IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('has an unknown event type %L (README, "Events out", lists them)', v_unknown), p_field);
    END IF;
    RETURN v_types;
END
$$;

-- Why: an endpoint as the contract shows it: everything but its secrets.
CREATE OR REPLACE FUNCTION drumbeat.webhook_endpoint_json(p_endpoint drumbeat.webhook_endpoints)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', p_endpoint.id, 'workspace_id', p_endpoint.workspace_id, 'url', p_endpoint.url,
        'description', p_endpoint.description, 'event_types', pg_catalog.to_jsonb(p_endpoint.event_types),
        'include_bodies', p_endpoint.include_bodies, 'enabled', p_endpoint.enabled,
        'disabled_at', p_endpoint.disabled_at, 'disabled_reason', p_endpoint.disabled_reason,
        'failing_since', p_endpoint.failing_since,
        'previous_secret_expires_at', CASE WHEN p_endpoint.previous_secret_expires_at > pg_catalog.now()
                                           THEN p_endpoint.previous_secret_expires_at END,
        'created_at', p_endpoint.created_at, 'updated_at', p_endpoint.updated_at)
$$;

-- Why: a fresh signing secret, "whsec_" and the base64 of 32 random bytes (two random UUIDs' 244 random
-- bits), in SQL so that Supabase callers get one too.
CREATE OR REPLACE FUNCTION drumbeat.new_webhook_secret()
RETURNS text
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'whsec_' || pg_catalog.encode(pg_catalog.decode(pg_catalog.replace(
        pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, '-', ''), 'hex'), 'base64')
$$;

-- Why: the checks of a new or changed endpoint's fields, one message naming each bad one.
CREATE OR REPLACE FUNCTION drumbeat.check_webhook_endpoint(p_endpoint jsonb, p_allowed text[])
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
BEGIN
    PERFORM drumbeat.check_object(p_endpoint, 'p_endpoint', p_allowed);
    IF p_endpoint ? 'url' THEN
        v_problem := drumbeat.webhook_url_problem(drumbeat.json_text(p_endpoint -> 'url', 'url', true, 2000));
        IF v_problem IS NOT NULL THEN
            PERFORM drumbeat.raise_error('PT422', v_problem, 'url');
        END IF;
    END IF;
    IF p_endpoint ? 'event_types' THEN
        PERFORM drumbeat.check_event_types(p_endpoint -> 'event_types', 'event_types');
    END IF;
    IF p_endpoint ? 'description' THEN
        PERFORM drumbeat.json_text(p_endpoint -> 'description', 'description', false, 500);
    END IF;
    IF p_endpoint ? 'include_bodies' AND pg_catalog.jsonb_typeof(p_endpoint -> 'include_bodies') <> 'boolean' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be true or false', 'include_bodies');
    END IF;
    IF p_endpoint ? 'enabled' AND pg_catalog.jsonb_typeof(p_endpoint -> 'enabled') <> 'boolean' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be true or false', 'enabled');
    END IF;
END
$$;

-- Why: register an endpoint (admins). It receives the events written after it is created; the signing
-- secret is in the answer, and never shown again (rotate_webhook_secret makes a new one).
CREATE OR REPLACE FUNCTION drumbeat_api.create_webhook_endpoint(p_workspace_id uuid, p_endpoint jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints;
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF NOT p_endpoint ? 'url' THEN
        PERFORM drumbeat.raise_error('PT422', 'is required', 'url');
    END IF;
    PERFORM drumbeat.check_webhook_endpoint(p_endpoint, ARRAY['url', 'event_types', 'description', 'include_bodies']);
    INSERT INTO drumbeat.webhook_endpoints (workspace_id, url, description, event_types, include_bodies, secret, created_by)
    VALUES (p_workspace_id, p_endpoint ->> 'url', COALESCE(p_endpoint ->> 'description', ''),
            CASE WHEN p_endpoint ? 'event_types' THEN drumbeat.check_event_types(p_endpoint -> 'event_types', 'event_types') ELSE '{*}' END,
            COALESCE((p_endpoint ->> 'include_bodies')::boolean, false), drumbeat.new_webhook_secret(),
            drumbeat.current_user_id())
    RETURNING * INTO v_endpoint;
    RETURN drumbeat.webhook_endpoint_json(v_endpoint) || pg_catalog.jsonb_build_object('secret', v_endpoint.secret);
END
$$;

-- Why: an endpoint the caller administers, locked for a change; PT404 for another tenant's (or none).
CREATE OR REPLACE FUNCTION drumbeat.administered_endpoint(p_endpoint_id uuid)
RETURNS drumbeat.webhook_endpoints
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints;
BEGIN
    PERFORM drumbeat.workspace_of('webhook_endpoints', p_endpoint_id, 'endpoint_id', 'admin');
    SELECT * INTO v_endpoint FROM drumbeat.webhook_endpoints e WHERE e.id = p_endpoint_id FOR UPDATE;
    RETURN v_endpoint;
END
$$;

CREATE OR REPLACE FUNCTION drumbeat_api.list_webhook_endpoints(p_workspace_id uuid)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    RETURN QUERY SELECT drumbeat.webhook_endpoint_json(e) FROM drumbeat.webhook_endpoints e
                 WHERE e.workspace_id = p_workspace_id ORDER BY e.created_at, e.id;
END
$$;

CREATE OR REPLACE FUNCTION drumbeat_api.get_webhook_endpoint(p_endpoint_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('webhook_endpoints', p_endpoint_id, 'endpoint_id', 'admin');
    RETURN (SELECT drumbeat.webhook_endpoint_json(e) FROM drumbeat.webhook_endpoints e WHERE e.id = p_endpoint_id);
END
$$;

-- Why: change url, event_types, description, include_bodies or enabled. Switching an endpoint back on
-- clears why it was off and its failing streak; its messages still waiting are sent. Events written while
-- it was off are not (resend_webhook_messages fetches them).
CREATE OR REPLACE FUNCTION drumbeat_api.update_webhook_endpoint(p_endpoint_id uuid, p_changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
    v_enable boolean := (p_changes ->> 'enabled')::boolean;
BEGIN
    PERFORM drumbeat.check_webhook_endpoint(p_changes, ARRAY['url', 'event_types', 'description', 'include_bodies', 'enabled']);
    UPDATE drumbeat.webhook_endpoints e SET
        url = COALESCE(p_changes ->> 'url', e.url),
        event_types = CASE WHEN p_changes ? 'event_types' THEN drumbeat.check_event_types(p_changes -> 'event_types', 'event_types') ELSE e.event_types END,
        description = CASE WHEN p_changes ? 'description' THEN COALESCE(p_changes ->> 'description', '') ELSE e.description END,
        include_bodies = COALESCE((p_changes ->> 'include_bodies')::boolean, e.include_bodies),
        enabled = COALESCE(v_enable, e.enabled),
        disabled_at = CASE WHEN v_enable THEN NULL WHEN v_enable = false AND e.enabled THEN pg_catalog.now() ELSE e.disabled_at END,
        disabled_reason = CASE WHEN v_enable THEN NULL WHEN v_enable = false AND e.enabled THEN 'switched off by a user' ELSE e.disabled_reason END,
        failing_since = CASE WHEN v_enable AND NOT e.enabled THEN NULL ELSE e.failing_since END,
        -- Back on: follow the feed from now, not from where it stopped (possibly days of events at once).
        feed_tx = CASE WHEN v_enable AND NOT e.enabled THEN pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
                       ELSE e.feed_tx END,
        feed_id = CASE WHEN v_enable AND NOT e.enabled THEN 0 ELSE e.feed_id END,
        updated_at = pg_catalog.now()
    WHERE e.id = v_endpoint.id
    RETURNING * INTO v_endpoint;
    RETURN drumbeat.webhook_endpoint_json(v_endpoint);
END
$$;

CREATE OR REPLACE FUNCTION drumbeat_api.delete_webhook_endpoint(p_endpoint_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
BEGIN
    DELETE FROM drumbeat.webhook_endpoints e WHERE e.id = v_endpoint.id;
END
$$;

-- Why: a new signing secret; for 24 hours the old one signs beside it (two v1 signatures), so receivers
-- can switch over without missing a message. Rotating again within the day drops the oldest.
CREATE OR REPLACE FUNCTION drumbeat_api.rotate_webhook_secret(p_endpoint_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
BEGIN
    UPDATE drumbeat.webhook_endpoints e SET previous_secret = e.secret, secret = drumbeat.new_webhook_secret(),
        previous_secret_expires_at = pg_catalog.now() + interval '24 hours', updated_at = pg_catalog.now()
    WHERE e.id = v_endpoint.id
    RETURNING * INTO v_endpoint;
    RETURN drumbeat.webhook_endpoint_json(v_endpoint) || pg_catalog.jsonb_build_object('secret', v_endpoint.secret);
END
$$;

-- Why: the message log's view of one message (the contract's answer to a test or a re-send).
CREATE OR REPLACE FUNCTION drumbeat.webhook_message_json(p_message drumbeat.webhook_messages)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'message_id', p_message.msg_id, 'endpoint_id', p_message.endpoint_id, 'type', p_message.type,
        'event_id', p_message.event_id, 'status', p_message.status, 'attempts', p_message.attempts,
        'next_attempt_at', CASE WHEN p_message.status = 'pending' THEN p_message.next_attempt_at END,
        'created_at', p_message.created_at, 'delivered_at', p_message.delivered_at)
$$;

-- Why: "does my endpoint work?": a `ping` message, sent (and retried) like any other.
CREATE OR REPLACE FUNCTION drumbeat_api.test_webhook_endpoint(p_endpoint_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
    v_message drumbeat.webhook_messages;
BEGIN
    INSERT INTO drumbeat.webhook_messages (workspace_id, endpoint_id, msg_id, type, payload)
    VALUES (v_endpoint.workspace_id, v_endpoint.id, 'msg_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''),
            'ping', pg_catalog.jsonb_build_object('type', 'ping', 'timestamp', drumbeat.webhook_timestamp(pg_catalog.now()),
                'data', pg_catalog.jsonb_build_object('workspace_id', v_endpoint.workspace_id, 'endpoint_id', v_endpoint.id)))
    RETURNING * INTO v_message;
    RETURN drumbeat.webhook_message_json(v_message);
END
$$;

-- Why: the body's "timestamp": when the event happened, ISO 8601 in UTC whatever the session's TimeZone.
CREATE OR REPLACE FUNCTION drumbeat.webhook_timestamp(p_at timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- Why: the endpoint's delivery log, newest first: every attempt with its time, status code, latency, error
-- and when the next one is due, and the message it belongs to (re-send it by its message_id). Paged with
-- p_before (the id of the last attempt seen).
CREATE OR REPLACE FUNCTION drumbeat_api.list_webhook_deliveries(p_endpoint_id uuid, p_before bigint DEFAULT NULL,
                                                               p_limit integer DEFAULT 50)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.workspace_of('webhook_endpoints', p_endpoint_id, 'endpoint_id', 'admin');
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 500 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be between 1 and 500', 'p_limit');
    END IF;
    RETURN QUERY
        SELECT pg_catalog.jsonb_build_object(
            'id', a.id, 'message_id', m.msg_id, 'type', m.type, 'event_id', m.event_id, 'attempt', a.attempt,
            'attempted_at', a.attempted_at, 'status_code', a.status_code, 'latency_ms', a.latency_ms,
            'outcome', a.outcome, 'error', a.error, 'next_retry_at', a.next_retry_at, 'message_status', m.status)
        FROM drumbeat.webhook_attempts a JOIN drumbeat.webhook_messages m ON m.id = a.message_id
        WHERE a.endpoint_id = p_endpoint_id AND (p_before IS NULL OR a.id < p_before)
        ORDER BY a.id DESC
        LIMIT p_limit;
END
$$;

-- Why: send one message again now, whatever became of it (same webhook-id: receivers that kept it
-- recognise it), with a fresh run of retries. PT404 for a message id the endpoint does not have.
CREATE OR REPLACE FUNCTION drumbeat_api.resend_webhook_message(p_endpoint_id uuid, p_message_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
    v_message drumbeat.webhook_messages;
BEGIN
    UPDATE drumbeat.webhook_messages m SET status = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(), lease = NULL
    WHERE m.endpoint_id = v_endpoint.id AND m.msg_id = p_message_id AND m.status <> 'sending'
    RETURNING * INTO v_message;
    IF v_message.id IS NULL THEN
        SELECT * INTO v_message FROM drumbeat.webhook_messages m WHERE m.endpoint_id = v_endpoint.id AND m.msg_id = p_message_id;
        IF v_message.id IS NULL THEN
            PERFORM drumbeat.raise_error('PT404', 'this endpoint has no message with that id', 'message_id');
        END IF;  -- being sent right now: it is on its way already
    END IF;
    RETURN drumbeat.webhook_message_json(v_message);
END
$$;

-- Why: send again everything since a time: each event the endpoint takes that happened at or after
-- p_since, whether it was delivered, failed, or never queued (the endpoint was off, or not yet created),
-- oldest first (by time, then id), at most 10,000 per call, each with its body as the endpoint's settings
-- now make it. When there were more, "next" holds where to go on: call again with p_since =
-- next.since and p_after_event_id = next.after_event_id (events of one instant are paged by id).
CREATE OR REPLACE FUNCTION drumbeat_api.resend_webhook_messages(p_endpoint_id uuid, p_since timestamptz,
                                                               p_after_event_id bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint drumbeat.webhook_endpoints := drumbeat.administered_endpoint(p_endpoint_id);
    v_settled xid8 := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    v_limit constant integer := 10000;
    v_queued integer;
    v_found integer;
    v_last record;
BEGIN
    IF p_since IS NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'is required', 'p_since');
    END IF;
    WITH due AS MATERIALIZED (
        SELECT ev.* FROM drumbeat.events ev
        WHERE ev.workspace_id = v_endpoint.workspace_id AND ev.tx < v_settled
          AND (ev.occurred_at, ev.id) > (p_since, COALESCE(p_after_event_id, -1))
          AND ev.kind IN (SELECT et.kind FROM drumbeat.event_types et)
        ORDER BY ev.occurred_at, ev.id
        LIMIT v_limit
    ), queued AS (
        INSERT INTO drumbeat.webhook_messages AS m (workspace_id, endpoint_id, event_id, msg_id, type, payload)
        SELECT d.workspace_id, v_endpoint.id, d.id, 'msg_' || d.id, p.payload ->> 'type', p.payload
        FROM due d CROSS JOIN LATERAL drumbeat.webhook_payload(d, v_endpoint) AS p(payload)
        WHERE p.payload IS NOT NULL
        ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', attempts = 0, lease = NULL,
            next_attempt_at = pg_catalog.now(), type = excluded.type, payload = excluded.payload
            WHERE m.status <> 'sending'
        RETURNING 1
    )
    SELECT (SELECT pg_catalog.count(*) FROM queued) AS queued, (SELECT pg_catalog.count(*) FROM due) AS found,
           last.occurred_at, last.id
    INTO v_last
    FROM (SELECT d.occurred_at, d.id FROM due d ORDER BY d.occurred_at DESC, d.id DESC LIMIT 1) AS last
    RIGHT JOIN (SELECT) AS always ON true;
    RETURN pg_catalog.jsonb_build_object('queued', COALESCE(v_last.queued, 0),
        'next', CASE WHEN v_last.found = v_limit THEN
                    pg_catalog.jsonb_build_object('since', v_last.occurred_at, 'after_event_id', v_last.id) END);
END
$$;

-- Why: the message an event makes for one endpoint: the Standard Webhooks body {type, timestamp, data}
-- under its public type, or NULL when the endpoint does not take it (its types, or a `webhook` step aimed at
-- another endpoint). Bodies only for an endpoint that asked for them: the text of what was sent (message.*)
-- and of what came back (a reply, an opt-out). PL/pgSQL, not SQL: a SQL function with a SET clause that
-- reads a table is planned again on every call (~200 µs a row); this one keeps its plan (~35 µs), and the
-- fan-out calls it for every event and endpoint.
CREATE OR REPLACE FUNCTION drumbeat.webhook_payload(p_event drumbeat.events, p_endpoint drumbeat.webhook_endpoints)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type text;
BEGIN
    SELECT CASE WHEN p_event.delivery_id IS NULL THEN COALESCE(et.type_without_delivery, et.type) ELSE et.type END
    INTO v_type
    FROM drumbeat.event_types et WHERE et.kind = p_event.kind;
    IF v_type IS NULL OR NOT ('*' = ANY (p_endpoint.event_types) OR v_type = ANY (p_endpoint.event_types))
       OR (p_event.kind = 'webhook' AND (p_event.payload ->> 'endpoint_id')::uuid <> p_endpoint.id) THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'type', v_type, 'timestamp', drumbeat.webhook_timestamp(p_event.occurred_at),
        'data', drumbeat.event_data(p_event)
                || CASE WHEN p_endpoint.include_bodies THEN drumbeat.event_bodies(p_event) ELSE '{}' END);
END
$$;

-- Why: the texts an endpoint with include_bodies gets: the message sent (subject, body) for events about a
-- delivery, the inbound text for a reply or an opt-out by message. (PL/pgSQL for its cached plan: see
-- webhook_payload.)
CREATE OR REPLACE FUNCTION drumbeat.event_bodies(p_event drumbeat.events)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_message jsonb;
    v_inbound text := COALESCE(p_event.payload ->> 'text', p_event.payload ->> 'body');
BEGIN
    IF p_event.kind NOT IN ('replied', 'auto_replied') THEN
        SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('subject', d.subject, 'body', d.body))
        INTO v_message
        FROM drumbeat.deliveries d WHERE d.id = p_event.delivery_id;
    END IF;
    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'message', v_message,
        'inbound', CASE WHEN v_inbound IS NOT NULL THEN
                       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                           'from', p_event.payload ->> 'from', 'subject', p_event.payload ->> 'subject',
                           'text', v_inbound)) END));
END
$$;

-- Why: the worker's fan-out: for each enabled endpoint (one worker at a time: SKIP LOCKED), the events
-- after its feed position, at most p_limit, become its messages, and the position moves past them, in one
-- transaction, so that an event is queued once and none is skipped (same settled horizon and order as
-- list_events). Returns how many messages it queued; called again while the answer is positive.
CREATE OR REPLACE FUNCTION drumbeat.fan_out_webhooks(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_settled xid8 := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    v_endpoint drumbeat.webhook_endpoints;
    v_queued integer := 0;
    v_last record;
BEGIN
    FOR v_endpoint IN
        SELECT e.* FROM drumbeat.webhook_endpoints e
        WHERE e.enabled AND EXISTS (
            SELECT 1 FROM drumbeat.events ev
            WHERE ev.workspace_id = e.workspace_id AND (ev.tx, ev.id) > (e.feed_tx, e.feed_id) AND ev.tx < v_settled)
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        WITH batch AS MATERIALIZED (
            SELECT ev.* FROM drumbeat.events ev
            WHERE ev.workspace_id = v_endpoint.workspace_id AND (ev.tx, ev.id) > (v_endpoint.feed_tx, v_endpoint.feed_id)
              AND ev.tx < v_settled
            ORDER BY ev.tx, ev.id
            LIMIT p_limit
        ), queued AS (
            INSERT INTO drumbeat.webhook_messages (workspace_id, endpoint_id, event_id, msg_id, type, payload)
            SELECT b.workspace_id, v_endpoint.id, b.id, 'msg_' || b.id, p.payload ->> 'type', p.payload
            FROM batch b CROSS JOIN LATERAL drumbeat.webhook_payload(b, v_endpoint) AS p(payload)
            WHERE p.payload IS NOT NULL
            ON CONFLICT (endpoint_id, event_id) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT pg_catalog.count(*) FROM queued) AS queued, last.tx, last.id INTO v_last
        FROM (SELECT b.tx, b.id FROM batch b ORDER BY b.tx DESC, b.id DESC LIMIT 1) AS last;
        UPDATE drumbeat.webhook_endpoints e SET feed_tx = v_last.tx, feed_id = v_last.id WHERE e.id = v_endpoint.id;
        v_queued := v_queued + v_last.queued;
    END LOOP;
    RETURN v_queued;
END
$$;

-- Why: the worker takes due messages (pending and due, or 'sending' whose worker's lease lapsed), at most
-- p_limit, and at most p_per_endpoint in flight per endpoint across all workers, so that a slow or dead
-- endpoint holds that many sends and never the others' (one claim at a time: an advisory lock, tried; a
-- worker that does not get it claims at its next turn). Each claimed message is leased for
-- p_lease_seconds and its attempt counted; the worker signs with every secret given.
-- Why enable_seqscan off: the worker's functions take tens of rows by key, in plans its connection caches.
-- Cached while the tables were nearly empty (a new deployment's first burst, the minute before autovacuum
-- analyses them), the plans scanned whole tables, which soon held thousands of rows: 15 ms a claim and
-- 30 ms a record at 10,000 due messages, and growing. With it off, a plan made at any size uses the keys.
-- And jit off: a disabled scan counts as an enormous cost, which would make every plan here look worth
-- compiling (350 ms of JIT for a 0.2 ms statement).
CREATE OR REPLACE FUNCTION drumbeat.claim_webhook_messages(p_limit integer, p_per_endpoint integer, p_lease_seconds integer)
RETURNS TABLE(id bigint, msg_id text, endpoint_id uuid, url text, secrets text[], body text, attempt integer, lease uuid)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v_ids bigint[];
BEGIN
    -- The key: "webhooks" as a number (the claim is the only user of this advisory lock).
    IF NOT pg_catalog.pg_try_advisory_xact_lock(7770406604) THEN
        RETURN;
    END IF;
    SELECT pg_catalog.array_agg(picked.id) INTO v_ids
    FROM (
        SELECT due.id
        FROM drumbeat.webhook_endpoints e
        CROSS JOIN LATERAL (
            SELECT p_per_endpoint - pg_catalog.count(*)::integer AS free
            FROM drumbeat.webhook_messages f
            WHERE f.endpoint_id = e.id AND f.status IN ('pending', 'sending')
              AND f.status = 'sending' AND f.next_attempt_at > pg_catalog.now()) AS open
        CROSS JOIN LATERAL (
            -- Locked as taken: a record committing meanwhile (delivered, given up) is skipped, not revived.
            SELECT m.id, m.next_attempt_at FROM drumbeat.webhook_messages m
            WHERE m.endpoint_id = e.id AND m.status IN ('pending', 'sending') AND m.next_attempt_at <= pg_catalog.now()
            ORDER BY m.next_attempt_at
            LIMIT GREATEST(open.free, 0)
            FOR UPDATE SKIP LOCKED) AS due
        WHERE e.enabled
        ORDER BY due.next_attempt_at
        LIMIT p_limit) AS picked;
    RETURN QUERY
        UPDATE drumbeat.webhook_messages m
        SET status = 'sending', attempts = m.attempts + 1, lease = pg_catalog.gen_random_uuid(),
            next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => p_lease_seconds)
        FROM drumbeat.webhook_endpoints e
        -- (No test of the status here: the rows are this transaction's, locked as they were picked. One would
        -- also let a stale plan take the partial due index for the primary key.)
        WHERE m.id = ANY (v_ids) AND e.id = m.endpoint_id
        RETURNING m.id, m.msg_id, m.endpoint_id, e.url,
                  CASE WHEN e.previous_secret_expires_at > pg_catalog.now() THEN ARRAY[e.secret, e.previous_secret]
                       ELSE ARRAY[e.secret] END,
                  m.payload::text, m.attempts, m.lease;
END
$$;

-- Why: what the worker learnt from its attempts (a JSON array of {id, lease, attempt, attempted_at,
-- status_code, latency_ms, outcome, error, next_attempt_at}; next_attempt_at null: no retry left). Every
-- attempt is logged; the message moves on only under the lease its claim took (a lease that lapsed meanwhile
-- gave it to another worker, a re-send replaced it). An endpoint answering 410, or whose URL is refused at
-- send time, or failing for five days with no success, is switched off, with a webhook_endpoint.disabled
-- event. The endpoints are locked first, in id order, as deleting one does: the two never deadlock. (KEY
-- SHARE: it holds off a delete, not the fan-out, which moves an endpoint's feed position meanwhile.)
-- Returns how many attempts it logged.
CREATE OR REPLACE FUNCTION drumbeat.record_webhook_attempts(p_attempts jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- (both: see claim_webhook_messages)
SET jit = off
AS $$
DECLARE
    v_logged integer;
    v_ids bigint[] := ARRAY(SELECT (a ->> 'id')::bigint FROM pg_catalog.jsonb_array_elements(p_attempts) a);
BEGIN
    PERFORM 1 FROM drumbeat.webhook_endpoints e
    WHERE e.id IN (SELECT DISTINCT m.endpoint_id FROM drumbeat.webhook_messages m WHERE m.id = ANY (v_ids))
    ORDER BY e.id FOR KEY SHARE;
    -- One statement, the batch read once: the worker records a batch per turn, hundreds a second.
    WITH batch AS MATERIALIZED (
        SELECT * FROM drumbeat.webhook_attempt_batch(p_attempts, v_ids)
    ), logged AS (
        INSERT INTO drumbeat.webhook_attempts (workspace_id, endpoint_id, message_id, attempt, attempted_at, status_code,
                                               latency_ms, outcome, error, next_retry_at)
        SELECT b.workspace_id, b.endpoint_id, b.id, b.attempt, b.attempted_at, b.status_code, b.latency_ms, b.outcome,
               pg_catalog.left(b.error, 500), CASE WHEN b.outcome = 'retry' THEN b.next_attempt_at END
        FROM batch b
        RETURNING 1
    ), moved AS (
        UPDATE drumbeat.webhook_messages m SET
            status = CASE WHEN b.outcome = 'delivered' THEN 'delivered'
                          WHEN b.outcome = 'retry' AND b.next_attempt_at IS NOT NULL THEN 'pending' ELSE 'failed' END,
            next_attempt_at = CASE WHEN b.outcome = 'retry' THEN b.next_attempt_at END, lease = NULL,
            last_attempt_at = b.attempted_at, last_status_code = b.status_code, last_error = pg_catalog.left(b.error, 500),
            delivered_at = CASE WHEN b.outcome = 'delivered' THEN b.attempted_at END
        FROM batch b
        -- The lease alone says it: a claim sets it, a record or a re-send clears it. (A status test here made
        -- the planner take 'sending' for rare and scan the whole table instead of the primary key.)
        WHERE m.id = ANY (v_ids) AND m.id = b.id AND m.lease = b.lease
        RETURNING 1
    ), per_endpoint AS (
        SELECT b.endpoint_id,
               pg_catalog.min(b.attempted_at) FILTER (WHERE b.outcome <> 'delivered') AS first_failure,
               pg_catalog.max(b.attempted_at) FILTER (WHERE b.outcome = 'delivered') AS last_success
        FROM batch b GROUP BY b.endpoint_id
    ), health AS (
        -- An endpoint is failing since its first failure after its last success (none: it is not).
        SELECT h.endpoint_id,
               CASE WHEN h.last_success IS NULL THEN COALESCE(x.failing_since, h.first_failure)
                    ELSE (SELECT pg_catalog.min(f.attempted_at) FROM batch f
                          WHERE f.endpoint_id = h.endpoint_id AND f.outcome <> 'delivered'
                            AND f.attempted_at > h.last_success) END AS failing_since
        FROM per_endpoint h JOIN drumbeat.webhook_endpoints x ON x.id = h.endpoint_id
    ), healed AS (
        UPDATE drumbeat.webhook_endpoints e SET failing_since = health.failing_since
        FROM health
        WHERE e.id = health.endpoint_id AND e.failing_since IS DISTINCT FROM health.failing_since
        RETURNING 1
    )
    -- (moved and healed run to completion unread, as every data-modifying WITH does)
    SELECT pg_catalog.count(*) INTO v_logged FROM logged;

    IF pg_catalog.jsonb_path_exists(p_attempts, '$[*] ? (@.outcome == "disable" || @.outcome == "refused")') THEN
        PERFORM drumbeat.disable_webhook_endpoint(x.endpoint_id, x.reason, x.detail)
        FROM (SELECT DISTINCT ON (b.endpoint_id) b.endpoint_id,
                     CASE b.outcome WHEN 'disable' THEN 'gone' ELSE 'refused' END AS reason,
                     CASE b.outcome WHEN 'disable' THEN 'the receiver answered 410 Gone'
                                    ELSE 'the URL was refused at send time: ' || b.error END AS detail
              FROM drumbeat.webhook_attempt_batch(p_attempts, v_ids) b WHERE b.outcome IN ('disable', 'refused')
              ORDER BY b.endpoint_id, b.attempted_at) AS x;
    END IF;
    PERFORM drumbeat.disable_webhook_endpoint(e.id, 'failing', 'failing for 5 days: no delivery succeeded since '
                                                                || drumbeat.webhook_timestamp(e.failing_since))
    FROM drumbeat.webhook_endpoints e
    WHERE e.failing_since < pg_catalog.now() - interval '5 days' AND e.enabled
      AND e.id IN (SELECT m.endpoint_id FROM drumbeat.webhook_messages m WHERE m.id = ANY (v_ids));
    RETURN v_logged;
END
$$;

-- Why: the worker's report of its attempts as rows, with the workspace and endpoint of each message
-- (p_ids: the messages' ids, for a look-up by primary key).
CREATE OR REPLACE FUNCTION drumbeat.webhook_attempt_batch(p_attempts jsonb, p_ids bigint[])
RETURNS TABLE(id bigint, lease uuid, attempt integer, attempted_at timestamptz, status_code integer,
              latency_ms integer, outcome text, error text, next_attempt_at timestamptz, workspace_id uuid,
              endpoint_id uuid)
LANGUAGE plpgsql
STABLE
-- A worker's turn: tens of attempts, not the default guess of 1000 rows, which led the record to
-- hash-join against a full scan of the messages instead of looking each one up by its key.
ROWS 50
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- (PL/pgSQL for its cached plan: see webhook_payload.)
    RETURN QUERY
        SELECT a.id, a.lease, a.attempt, a.attempted_at, a.status_code, a.latency_ms, a.outcome, a.error,
               a.next_attempt_at, m.workspace_id, m.endpoint_id
        FROM pg_catalog.jsonb_to_recordset(p_attempts) AS a(id bigint, lease uuid, attempt integer,
                 attempted_at timestamptz, status_code integer, latency_ms integer, outcome text, error text,
                 next_attempt_at timestamptz)
        JOIN drumbeat.webhook_messages m ON m.id = a.id
        WHERE m.id = ANY (p_ids);
END
$$;

-- Why: the worker switches an endpoint off (it stays, with its log; an admin switches it back on) and says
-- so with an event, which the workspace's other endpoints, the feed and NOTIFY carry: the reason as a code
-- (gone, refused, failing), since every member reads events; the detail (which can name the host and the
-- address it resolved to) stays on the endpoint, for admins.
CREATE OR REPLACE FUNCTION drumbeat.disable_webhook_endpoint(p_endpoint_id uuid, p_reason text, p_detail text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid;
BEGIN
    UPDATE drumbeat.webhook_endpoints e SET enabled = false, disabled_at = pg_catalog.now(),
        disabled_reason = pg_catalog.left(p_detail, 500), updated_at = pg_catalog.now()
    WHERE e.id = p_endpoint_id AND e.enabled
    RETURNING e.workspace_id INTO v_workspace_id;
    IF v_workspace_id IS NOT NULL THEN
        INSERT INTO drumbeat.events (workspace_id, kind, payload)
        VALUES (v_workspace_id, 'webhook_disabled', pg_catalog.jsonb_build_object('endpoint_id', p_endpoint_id, 'reason', p_reason));
    END IF;
END
$$;

-- Why: the message log is kept for 30 days (README, "Events out: webhooks"): older delivered and failed
-- messages go, with their attempts, a bounded number at a time (the worker calls it every few minutes).
-- Returns how many it deleted.
CREATE OR REPLACE FUNCTION drumbeat.prune_webhook_messages(p_older_than interval, p_limit integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH old AS (
        SELECT m.id FROM drumbeat.webhook_messages m
        WHERE m.status IN ('delivered', 'failed') AND m.created_at < pg_catalog.now() - p_older_than
        LIMIT p_limit
    ), gone AS (
        DELETE FROM drumbeat.webhook_messages m USING old WHERE m.id = old.id RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer FROM gone
$$;
