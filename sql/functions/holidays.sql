-- Holidays: a workspace's own list, and shared named calendars (`drumbeat holidays load`) that a
-- sequence opts into with settings.holiday_calendar. Calendar names are case-insensitive (stored
-- upper-case). Whatever writes holidays, the steps already planned on a day that became one move off it.

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
-- A calendar's name is stored upper-case and replaces the calendar of that name in any case ("us" is "US").
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
    WHERE h.workspace_id = p_workspace_id OR pg_catalog.upper(h.calendar) = pg_catalog.upper(p_calendar);
    INSERT INTO drumbeat.holidays (workspace_id, calendar, day, name)
    SELECT DISTINCT ON (x.day) p_workspace_id, pg_catalog.upper(p_calendar), x.day, x.name
    FROM (SELECT (e ->> 'date')::date AS day, NULLIF(pg_catalog.btrim(e ->> 'name'), '') AS name
          FROM pg_catalog.jsonb_array_elements(p_holidays) AS e) AS x
    ORDER BY x.day, x.name;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    RETURN v_stored;
END
$$;

-- Why: a holiday added after enrollments were planned (set_holidays, load_holidays or any other write)
-- applies to them too: a live enrollment of a sequence that excludes holidays (its workspace's list,
-- and the calendar its settings name) whose next step is planned on a day that is now one is re-planned
-- by the calculus from where it stands: the planned instant is kept as the floor (a retry's backoff or a
-- skip is not undone), the windows move it to the first allowed day, at the step's send_at. Only those
-- move; condition and action steps have no windows. Set-based: one UPDATE per writing statement.
CREATE OR REPLACE FUNCTION drumbeat.holidays_after_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH owners AS (
        SELECT DISTINCT n.workspace_id, n.calendar FROM new_days n
    ), excluding AS (
        SELECT s.id, s.workspace_id, s.settings FROM drumbeat.sequences s
        WHERE COALESCE((s.settings ->> 'exclude_holidays')::boolean, false)
          AND EXISTS (SELECT 1 FROM owners o WHERE o.workspace_id = s.workspace_id
                      OR o.calendar IN (s.settings ->> 'holiday_calendar',
                                        pg_catalog.upper(s.settings ->> 'holiday_calendar')))
    ), planned AS (
        SELECT e.id, st.send_at, st.kind, q.workspace_id, q.settings,
               drumbeat.recipient_timezone(c.timezone, q.settings, w.timezone) AS tz
        FROM excluding q
        JOIN drumbeat.enrollments e ON e.sequence_id = q.id
        JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
        JOIN drumbeat.contacts c ON c.id = e.contact_id
        JOIN drumbeat.workspaces w ON w.id = q.workspace_id
        WHERE e.status IN ('scheduled', 'active') AND e.next_action_at IS NOT NULL
          AND st.kind NOT IN ('condition', 'action')
    )
    UPDATE drumbeat.enrollments e
    SET next_action_at = drumbeat.next_action_at(e.next_action_at, '0', p.send_at, p.kind, p.tz, p.settings,
                                                 p.workspace_id, drumbeat.clock_now()),
        updated_at = pg_catalog.now()
    FROM planned p
    WHERE e.id = p.id
      AND EXISTS (SELECT 1 FROM new_days n
                  WHERE n.day = (e.next_action_at AT TIME ZONE p.tz)::date
                    AND (n.workspace_id = p.workspace_id
                         OR n.calendar IN (p.settings ->> 'holiday_calendar',
                                           pg_catalog.upper(p.settings ->> 'holiday_calendar'))));
    RETURN NULL;
END
$$;

-- Why: every way a holiday is written (insert, or a day changed in place) re-plans what it now excludes.
CREATE OR REPLACE TRIGGER holidays_replan_insert AFTER INSERT ON drumbeat.holidays
    REFERENCING NEW TABLE AS new_days FOR EACH STATEMENT EXECUTE FUNCTION drumbeat.holidays_after_write();

CREATE OR REPLACE TRIGGER holidays_replan_update AFTER UPDATE ON drumbeat.holidays
    REFERENCING NEW TABLE AS new_days FOR EACH STATEMENT EXECUTE FUNCTION drumbeat.holidays_after_write();
