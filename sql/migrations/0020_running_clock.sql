-- 0020: the SQL clock can run fast. `drumbeat demo` plays a week-long sequence out in under a minute by
-- letting the clock run at a multiple of real time from a chosen instant; every scheduling decision still
-- goes through drumbeat.clock_now(), so no rule is bypassed. Production leaves all three settings unset.
--
--   drumbeat.clock        the instant the clock showed at drumbeat.clock_since (alone: a frozen clock, as before)
--   drumbeat.clock_since  the real instant the clock was set (timestamptz)
--   drumbeat.clock_rate   clock seconds per real second (e.g. 3600: an hour a second)

-- Why now() (transaction start) and not clock_timestamp(): the clock must read the same all through one
-- transaction, as now() does, so that every row a statement touches is judged at one instant.
CREATE OR REPLACE FUNCTION drumbeat.clock_now()
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = ''
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
