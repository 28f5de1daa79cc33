-- Events out (README, "Events out"): the feed that never skips an event, and the NOTIFY that tells listeners
-- something was written. Which kinds are published, and under which type: drumbeat.event_types (0039).

-- Why: what an event says to the outside: every id it concerns and the status it leaves behind, never a
-- message's text (an inbound reply's, a subject) nor who typed it.
CREATE OR REPLACE FUNCTION drumbeat.event_data(p_event drumbeat.events)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'workspace_id', p_event.workspace_id, 'sequence_id', p_event.sequence_id,
        'enrollment_id', p_event.enrollment_id, 'contact_id', p_event.contact_id, 'step_id', p_event.step_id,
        'delivery_id', p_event.delivery_id, 'task_id', p_event.payload ->> 'task_id',
        -- "from" and "to" are states only in a transition's payload; in a message's, they are addresses.
        'status', CASE WHEN p_event.kind IN ('started', 'resumed', 'paused', 'completed', 'exited')
                       THEN p_event.payload ->> 'to' ELSE p_event.payload ->> 'status' END,
        'previous_status', CASE WHEN p_event.kind IN ('started', 'resumed', 'paused', 'completed', 'exited')
                                THEN p_event.payload ->> 'from' END,
        'exit_reason', p_event.payload ->> 'exit_reason',
        'assigned_to', CASE WHEN p_event.kind IN ('enrollment_reassigned', 'task_reassigned') THEN p_event.payload ->> 'to' END,
        'previous_assigned_to', CASE WHEN p_event.kind IN ('enrollment_reassigned', 'task_reassigned')
                                     THEN p_event.payload ->> 'from' END,
        'channel', p_event.payload ->> 'channel', 'outcome', p_event.payload ->> 'outcome',
        'error_code', p_event.payload ->> 'error_code',
        -- a `webhook` step's event name and the endpoint it is for; the endpoint a disabled event is about
        'event', CASE WHEN p_event.kind = 'webhook' THEN p_event.payload ->> 'event' END,
        'endpoint_id', CASE WHEN p_event.kind IN ('webhook', 'webhook_disabled') THEN p_event.payload ->> 'endpoint_id' END,
        'reason', CASE WHEN p_event.kind = 'webhook_disabled' THEN p_event.payload ->> 'reason' END))
$$;

-- Why: a cursor is the (transaction, id) of the last event a consumer saw, written "tx.id" (opaque to
-- consumers). NULL or '' starts at the beginning; anything else is PT422 naming p_after.
CREATE OR REPLACE FUNCTION drumbeat.feed_position(p_after text, OUT tx xid8, OUT id bigint)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF COALESCE(p_after, '') = '' THEN
        tx := '0'; id := 0;
    ELSIF p_after !~ '^[0-9]{1,19}\.[0-9]{1,18}$' THEN
        PERFORM drumbeat.raise_error('PT422', 'is not a cursor this feed gave out', 'p_after');
    ELSE
        tx := pg_catalog.split_part(p_after, '.', 1)::xid8;
        id := pg_catalog.split_part(p_after, '.', 2)::bigint;
    END IF;
END
$$;

-- Why: the workspace's published events after a cursor, oldest first, at most p_limit (1 to 1000), of the
-- given types (NULL: all). It never skips one: only events of transactions older than every one still
-- running are shown (pg_snapshot_xmin), in (transaction, id) order, so an event committed late never
-- lands behind a cursor already given out (migration 0039). An event therefore appears once the
-- transactions that began before its own have ended, usually within milliseconds. Any member may read.
CREATE OR REPLACE FUNCTION drumbeat_api.list_events(p_workspace_id uuid, p_after text DEFAULT NULL,
                                                   p_types text[] DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS TABLE(cursor text, id bigint, type text, occurred_at timestamptz, data jsonb)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_after record := drumbeat.feed_position(p_after);
    v_settled xid8 := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'member');
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be between 1 and 1000', 'p_limit');
    END IF;
    RETURN QUERY
        SELECT ev.tx::text || '.' || ev.id, ev.id, published.type, ev.occurred_at, drumbeat.event_data(ev)
        FROM drumbeat.events ev
        JOIN drumbeat.event_types et ON et.kind = ev.kind
        CROSS JOIN LATERAL (SELECT CASE WHEN ev.delivery_id IS NULL THEN COALESCE(et.type_without_delivery, et.type)
                                        ELSE et.type END AS type) AS published
        WHERE ev.workspace_id = p_workspace_id AND (ev.tx, ev.id) > (v_after.tx, v_after.id) AND ev.tx < v_settled
          AND (p_types IS NULL OR published.type = ANY (p_types))
        ORDER BY ev.tx, ev.id
        LIMIT p_limit;
END
$$;

-- Why: listeners (`LISTEN drumbeat_events`) hear of new events when their transaction commits (NOTIFY is
-- delivered at commit), with {workspace_id, id, type}: one notification per published event, or, for a
-- statement that wrote many (a bulk enrollment), one per workspace and type naming the last id and how
-- many there were. A listener catches up through the feed either way.
CREATE OR REPLACE FUNCTION drumbeat.notify_events()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Counted once, into a variable: as a subquery of the statement below, the planner re-ran it per row.
    v_bulk boolean := (SELECT pg_catalog.count(*) > 100 FROM inserted);
BEGIN
    PERFORM pg_catalog.pg_notify('drumbeat_events', pg_catalog.json_build_object(
                'workspace_id', g.workspace_id, 'id', g.last_id, 'type', g.type,
                'count', CASE WHEN g.count > 1 THEN g.count END)::text)
    FROM (SELECT n.workspace_id,
                 CASE WHEN n.delivery_id IS NULL THEN COALESCE(et.type_without_delivery, et.type) ELSE et.type END AS type,
                 CASE WHEN v_bulk THEN NULL ELSE n.id END AS single, pg_catalog.max(n.id) AS last_id,
                 pg_catalog.count(*) AS count
          FROM inserted n
          JOIN drumbeat.event_types et ON et.kind = n.kind
          GROUP BY 1, 2, 3) AS g;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER events_notify AFTER INSERT ON drumbeat.events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION drumbeat.notify_events();
