-- What every other file stands on: errors with named SQLSTATEs (PostgREST maps PTxyz to HTTP xyz), the
-- one clock every scheduling decision reads, and the IANA time zone list.

-- Why: PostgREST turns SQLSTATE 'PTxyz' into HTTP status xyz, so Supabase callers get the same
-- 404/409/422/403 that the Litestar API maps. `field` names the offending input path.
CREATE OR REPLACE FUNCTION drumbeat.raise_error(p_code text, p_message text, p_field text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_field IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_field || ': ' || p_message,
        DETAIL = 'field: ' || p_field, COLUMN = p_field;
END
$$;
COMMENT ON FUNCTION drumbeat.raise_error(text, text, text) IS
    'Raise a Drumbeat error: PT401 unauthenticated, PT403 forbidden, PT404 not found, PT409 conflict, PT422 invalid input.';

-- Why: a value-returning wrapper lets validation run inside expressions (CASE/COALESCE).
CREATE OR REPLACE FUNCTION drumbeat.invalid(p_field text, p_message text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT drumbeat.raise_error('PT422', p_message, p_field) $$;

-- Why: one clock for every scheduling decision, so tests can move time (SET drumbeat.clock = '...')
-- without sleeping, and `drumbeat demo` can play a week out in a minute; production leaves all three
-- settings unset:
--   drumbeat.clock        the instant the clock showed at drumbeat.clock_since (alone: a frozen clock)
--   drumbeat.clock_since  the real instant the clock was set (timestamptz)
--   drumbeat.clock_rate   clock seconds per real second (e.g. 3600: an hour a second)
-- Why now() (transaction start) and not clock_timestamp(): the clock must read the same all through one
-- transaction, as now() does, so that every row a statement touches is judged at one instant.
CREATE OR REPLACE FUNCTION drumbeat.clock_now()
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN NULLIF(pg_catalog.current_setting('drumbeat.clock', true), '') IS NULL THEN pg_catalog.now()
        WHEN NULLIF(pg_catalog.current_setting('drumbeat.clock_rate', true), '') IS NULL
            THEN pg_catalog.current_setting('drumbeat.clock', true)::timestamptz
        ELSE pg_catalog.current_setting('drumbeat.clock', true)::timestamptz
            + (pg_catalog.now() - pg_catalog.current_setting('drumbeat.clock_since', true)::timestamptz)
              * pg_catalog.current_setting('drumbeat.clock_rate', true)::float8
    END
$$;

CREATE OR REPLACE FUNCTION drumbeat.refresh_timezones()
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH added AS (
        INSERT INTO drumbeat.timezones (name)
        SELECT name FROM pg_catalog.pg_timezone_names
        ON CONFLICT (name) DO NOTHING
        RETURNING 1
    )
    SELECT pg_catalog.count(*)::integer FROM added
$$;
COMMENT ON FUNCTION drumbeat.refresh_timezones() IS 'Add zone names that a newer tzdata brought; returns how many.';

-- Why: events take their time from the same clock as sends, so conditions such as "replied within
-- 2 days" compare two instants of one clock. A column default, so it is set here, once the clock exists.
ALTER TABLE drumbeat.events ALTER COLUMN occurred_at SET DEFAULT drumbeat.clock_now();
