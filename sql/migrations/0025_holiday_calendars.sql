-- 0025: holiday calendars for the operator. drumbeat.holidays has always had room for a name per day and
-- for named shared calendars (workspace_id NULL, calendar 'US'), which a sequence opts into with settings
-- {"holiday_calendar": "US", "exclude_holidays": true}; but nothing could fill a shared calendar, and the
-- contract's set_holidays keeps dates only. `drumbeat holidays load` now stores names, and can load a
-- shared calendar that every workspace may use, through this one function.

-- Why: the operator's loader (the CLI, a trusted caller): replaces the days of one workspace's list or of
-- one shared calendar with the given [{"date": "2026-12-25", "name": "Christmas Day"}, ...]; returns how
-- many days it stored. Shared calendars belong to no tenant, so only a trusted caller may write them.
CREATE FUNCTION drumbeat.load_holidays(p_workspace_id uuid, p_calendar text, p_holidays jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_stored integer;
BEGIN
    IF NOT drumbeat.is_trusted_caller() THEN
        PERFORM drumbeat.raise_error('PT403', 'only the operator loads holiday calendars', NULL);
    END IF;
    IF (p_workspace_id IS NULL) = (p_calendar IS NULL) THEN
        PERFORM drumbeat.raise_error('PT422', 'give either a workspace or a calendar name', 'p_calendar');
    END IF;
    IF p_calendar !~ '^[A-Za-z0-9_-]{1,40}$' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 40 letters, digits, _ or -', 'p_calendar');
    END IF;
    IF p_holidays IS NULL OR pg_catalog.jsonb_typeof(p_holidays) <> 'array' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of {"date", "name"} objects', 'p_holidays');
    END IF;
    DELETE FROM drumbeat.holidays h
    WHERE h.workspace_id = p_workspace_id OR h.calendar = p_calendar;
    INSERT INTO drumbeat.holidays (workspace_id, calendar, day, name)
    SELECT DISTINCT ON (x.day) p_workspace_id, p_calendar, x.day, x.name
    FROM (SELECT (e ->> 'date')::date AS day, NULLIF(pg_catalog.btrim(e ->> 'name'), '') AS name
          FROM pg_catalog.jsonb_array_elements(p_holidays) AS e) AS x
    ORDER BY x.day, x.name;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    RETURN v_stored;
END
$$;

GRANT EXECUTE ON FUNCTION drumbeat.load_holidays(uuid, text, jsonb) TO service_role;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
