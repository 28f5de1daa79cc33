-- 0034: the circuit breaker (docs/ARCHITECTURE.md, "Dispatch protocol"). A provider that refuses our
-- credentials, cannot be reached or answers 429 holds the sends of its channel (or of one sender) instead of
-- failing them: the enrollments wait, and a claim lets a probe through once probe_at comes. One row per hold;
-- the table is empty while every provider answers.
CREATE TABLE drumbeat.channel_holds (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    channel text NOT NULL,
    sender_id uuid REFERENCES drumbeat.senders (id) ON DELETE CASCADE,
    reason text NOT NULL,
    error_code text,
    error_message text,
    held_since timestamptz NOT NULL,
    probe_at timestamptz NOT NULL,
    CONSTRAINT channel_holds_channel_known CHECK (channel IN ('sms', 'email')),
    CONSTRAINT channel_holds_reason_known CHECK (reason IN ('auth', 'unreachable', 'outage', 'rate_limited')),
    CONSTRAINT channel_holds_one_per_scope UNIQUE NULLS NOT DISTINCT (channel, sender_id)
);
COMMENT ON TABLE drumbeat.channel_holds IS 'Channels (sender_id NULL) or single senders whose provider refused our credentials, could not be reached or rate-limited us: their sends wait until a probe succeeds.';
COMMENT ON COLUMN drumbeat.channel_holds.probe_at IS 'When a claim may next let a send through to test the provider; until then the channel''s (or sender''s) due steps wait.';
COMMENT ON INDEX drumbeat.channel_holds_pkey IS 'Identifies a hold (the API and doctor name it).';
COMMENT ON INDEX drumbeat.channel_holds_one_per_scope IS 'One hold per channel and per sender: a repeated refusal extends it.';
ALTER TABLE drumbeat.channel_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.channel_holds FORCE ROW LEVEL SECURITY;

-- start_sending gained p_bodies (sql/functions/dispatch.sql re-creates it): the old signature goes, or it
-- would stay behind as an overload.
DROP FUNCTION IF EXISTS drumbeat.start_sending(uuid[], uuid[]);
