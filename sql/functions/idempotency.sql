-- Idempotency keys of the HTTP API's POSTs (Stripe's semantics), for app/api/idempotency.py. Called inside the
-- request's own transaction, as the caller: the key's row and the request's work commit together, or neither.
-- Part of the contract (drumbeat_api) because they run as it, under RLS, on the caller's own keys only; a
-- Supabase client gains nothing by calling them (a key means something across HTTP retries), and loses
-- nothing either.

-- Why: the first request with a key takes it (its row, inserted here, is this transaction's until it commits);
-- a retry gets what the first one answered. A retry arriving while the first is still running waits here, on
-- the key's row, and gets its answer once it commits, or takes the key itself if it rolled back (an error is
-- never stored: the request is simply tried again). The same key with another request (method, path, query
-- or body: p_fingerprint) is refused. Keys older than 24 hours are forgotten. Returns NULL (go ahead) or the
-- stored response as {status, content_type, location, body (base64, null when it was withheld)}.
CREATE OR REPLACE FUNCTION drumbeat_api.begin_idempotent_request(p_key text, p_fingerprint text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller uuid := drumbeat.idempotency_caller(p_key, p_fingerprint);
    v_row drumbeat.idempotency_keys;
BEGIN
    -- SKIP LOCKED: an expired key another of this caller's requests is deleting (or re-taking) right now
    -- is that request's to clean; waiting for it would make the caller's requests take turns.
    DELETE FROM drumbeat.idempotency_keys k
    WHERE k.ctid IN (SELECT x.ctid FROM drumbeat.idempotency_keys x
                     WHERE x.caller_id = v_caller AND x.created_at < pg_catalog.now() - interval '24 hours'
                     FOR UPDATE SKIP LOCKED);
    INSERT INTO drumbeat.idempotency_keys (caller_id, key, fingerprint) VALUES (v_caller, p_key, p_fingerprint)
    ON CONFLICT (caller_id, key) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_row FROM drumbeat.idempotency_keys k WHERE k.caller_id = v_caller AND k.key = p_key;
    IF v_row.fingerprint <> p_fingerprint THEN
        PERFORM drumbeat.raise_error('PT422', 'this key was used for another request (method, path or body) in the '
            'last 24 hours: send a new key with a new request', 'Idempotency-Key');
    END IF;
    IF v_row.status IS NULL THEN  -- (a committed key always has its response: stored before the commit)
        PERFORM drumbeat.raise_error('PT409', 'the request with this key left no response to replay: send a new key',
            'Idempotency-Key');
    END IF;
    RETURN pg_catalog.jsonb_build_object('status', v_row.status, 'content_type', v_row.content_type,
        'location', v_row.location, 'body', pg_catalog.encode(v_row.body, 'base64'));
END
$$;

-- Why: the response of the request that took the key, stored in its transaction just before the commit
-- (p_body NULL: withheld, the answer showed a secret once). The key is the caller's own: stored even when this
-- transaction did not take it first, which changes only what that caller's own retries get.
CREATE OR REPLACE FUNCTION drumbeat_api.finish_idempotent_request(p_key text, p_fingerprint text, p_status integer,
    p_content_type text, p_location text, p_body bytea)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_status IS NULL OR p_status NOT BETWEEN 200 AND 599 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an HTTP status, 200 to 599', 'p_status');
    END IF;
    IF pg_catalog.octet_length(p_body) > 10485760 OR pg_catalog.length(p_content_type) > 200
       OR pg_catalog.length(p_location) > 2000 THEN
        PERFORM drumbeat.raise_error('PT422', 'a stored answer is at most 10 MiB (a 200-character content type, a '
            '2,000-character location)', 'p_body');
    END IF;
    INSERT INTO drumbeat.idempotency_keys AS k (caller_id, key, fingerprint, status, content_type, location, body)
    VALUES (drumbeat.idempotency_caller(p_key, p_fingerprint), p_key, p_fingerprint, p_status, p_content_type,
            p_location, p_body)
    ON CONFLICT (caller_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, content_type = EXCLUDED.content_type,
        location = EXCLUDED.location, body = EXCLUDED.body;
END
$$;

-- Why: both functions' checks, in one place: who the caller is (keys are a user's or an API key's own) and
-- that the key and fingerprint are well formed (the errors name the header).
CREATE OR REPLACE FUNCTION drumbeat.idempotency_caller(p_key text, p_fingerprint text)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller uuid := drumbeat.current_user_id();
BEGIN
    IF v_caller IS NULL THEN
        PERFORM drumbeat.raise_error('PT401', 'authentication required: request.jwt.claims has no user (sub)');
    END IF;
    IF p_key IS NULL OR p_key !~ '^[\x21-\x7e]{1,255}$' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 255 visible ASCII characters (a UUID is a good key)',
            'Idempotency-Key');
    END IF;
    IF p_fingerprint IS NULL OR p_fingerprint !~ '^[0-9a-f]{64}$' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a SHA-256 digest in hex', 'p_fingerprint');
    END IF;
    RETURN v_caller;
END
$$;

-- Why: a caller's expired keys go at its next keyed request, but a caller may never come back (a revoked key,
-- a deleted workspace): the worker's periodic clean-up deletes every key past its 24 hours, a batch at a
-- time (SKIP LOCKED: never waits for a request holding one). Returns how many went.
CREATE OR REPLACE FUNCTION drumbeat.prune_idempotency_keys(p_limit integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH old AS (
        SELECT k.ctid FROM drumbeat.idempotency_keys k
        WHERE k.created_at < pg_catalog.now() - interval '24 hours'
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM drumbeat.idempotency_keys k USING old WHERE k.ctid = old.ctid RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer FROM gone
$$;
