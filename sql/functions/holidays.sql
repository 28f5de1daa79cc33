-- Holidays: a workspace's own list, and shared named calendars (`drumbeat holidays load`) that a
-- sequence opts into with settings.holiday_calendar.

-- Why: the workspace's holiday list is replaced as a whole (what a calendar import wants).
CREATE OR REPLACE FUNCTION drumbeat_api.set_holidays(p_workspace_id uuid, p_dates date[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF p_dates IS NULL OR pg_catalog.array_position(p_dates, NULL) IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of dates without nulls', 'p_dates');
    END IF;
    DELETE FROM drumbeat.holidays h WHERE h.workspace_id = p_workspace_id;
    INSERT INTO drumbeat.holidays (workspace_id, day)
    SELECT DISTINCT p_workspace_id, d FROM pg_catalog.unnest(p_dates) AS d;
END
$$;

-- Why: the operator's loader (the CLI, a trusted caller): replaces the days of one workspace's list or of
-- one shared calendar with the given [{"date": "2026-12-25", "name": "Christmas Day"}, ...]; returns how
-- many days it stored. Shared calendars belong to no tenant, so only a trusted caller may write them.
CREATE OR REPLACE FUNCTION drumbeat.load_holidays(p_workspace_id uuid, p_calendar text, p_holidays jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
