-- Idempotency keys of the HTTP API (app/api/idempotency.py): a client that retries a POST with the same
-- Idempotency-Key header gets the first response again instead of a second effect. A key belongs to its
-- caller (an API key or a JWT user); its row is written in the transaction that does the request's work,
-- with the response, so the two commit (or vanish) together. Kept 24 hours.
CREATE TABLE drumbeat.idempotency_keys (
    caller_id uuid NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    status integer,
    content_type text,
    location text,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (caller_id, key),
    CONSTRAINT idempotency_keys_key_shape CHECK (key ~ '^[\x21-\x7e]{1,255}$'),
    CONSTRAINT idempotency_keys_fingerprint_shape CHECK (fingerprint ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE drumbeat.idempotency_keys IS 'The HTTP API''s Idempotency-Key header: per caller, the request''s fingerprint (SHA-256 of method, path, query and body) and the response to replay to a retry, for 24 hours.';
COMMENT ON COLUMN drumbeat.idempotency_keys.status IS 'The response stored in the request''s own transaction; a committed row always has one.';
COMMENT ON INDEX drumbeat.idempotency_keys_pkey IS 'Serves the look-up of a caller''s key (begin_idempotent_request).';
CREATE INDEX idempotency_keys_expiry ON drumbeat.idempotency_keys (caller_id, created_at);
COMMENT ON INDEX drumbeat.idempotency_keys_expiry IS 'Serves the deletion of a caller''s keys older than 24 hours (begin_idempotent_request).';
ALTER TABLE drumbeat.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.idempotency_keys FORCE ROW LEVEL SECURITY;
