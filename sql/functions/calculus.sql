-- The scheduling calculus (docs/ARCHITECTURE.md, "Scheduling calculus"): when a step runs, in the
-- recipient's time zone, from the instant the previous step was done: delay, send_at, business hours,
-- quiet hours, weekends and holidays. The same rule powers preview_schedule, the dry run.

-- Why: the recipient's zone is the contact's, else the sequence's, else the workspace's, else UTC;
-- one definition so that enrollment, dispatch and preview agree.
CREATE OR REPLACE FUNCTION drumbeat.recipient_timezone(p_contact_tz text, p_sequence_settings jsonb, p_workspace_tz text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(NULLIF(p_contact_tz, ''), NULLIF(p_sequence_settings ->> 'timezone', ''),
                    NULLIF(p_workspace_tz, ''), 'UTC')
$$;

-- Why: the allowed local window of a weekday for a step kind, before holidays: business_hours of that
-- day (or the whole day; an absent weekday is excluded when business_hours is given), weekends out when
-- exclude_weekends, cut to quiet_hours (default 08:00-21:00) for sms; condition/action: the whole day.
-- window_end may be 24:00. Both NULL when the weekday has no window. plpgsql simple expressions only:
-- this runs once per candidate day of every next_action_at.
CREATE OR REPLACE FUNCTION drumbeat.weekday_window(p_settings jsonb, p_kind text, p_isodow integer,
                                        OUT window_start time, OUT window_end time)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hours jsonb := '{}';
BEGIN
    IF p_kind NOT IN ('condition', 'action') THEN
        IF p_isodow >= 6 AND COALESCE((p_settings ->> 'exclude_weekends')::boolean, false) THEN
            RETURN;
        END IF;
        IF pg_catalog.jsonb_typeof(p_settings -> 'business_hours') = 'object' THEN
            v_hours := NULLIF(p_settings -> 'business_hours' -> (ARRAY['monday', 'tuesday', 'wednesday',
                           'thursday', 'friday', 'saturday', 'sunday'])[p_isodow], 'null'::jsonb);
        END IF;
    END IF;
    window_start := COALESCE(v_hours ->> 'start', '00:00')::time;
    window_end := COALESCE(v_hours ->> 'end', '24:00')::time;
    IF p_kind = 'sms' THEN
        window_start := GREATEST(window_start, COALESCE(p_settings #>> '{quiet_hours,start}', '08:00')::time);
        window_end := LEAST(window_end, COALESCE(p_settings #>> '{quiet_hours,end}', '21:00')::time);
    END IF;
    IF v_hours IS NULL OR window_start >= window_end THEN
        window_start := NULL;
        window_end := NULL;
    END IF;
END
$$;

-- Why: a holiday is a day in the workspace's own list or in the shared calendar the sequence names;
-- each look-up probes a unique partial index (holidays_workspace_day_key, holidays_calendar_day_key).
-- Calendar names are case-insensitive: load_holidays stores them upper-case, so "us" finds "US"; the
-- name as written still finds a calendar stored before that (validate_settings accepts the same names).
CREATE OR REPLACE FUNCTION drumbeat.is_holiday(p_workspace_id uuid, p_calendar text, p_day date)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql rather than sql: the plan of this query is cached for the session
    RETURN EXISTS (SELECT 1 FROM drumbeat.holidays h WHERE h.workspace_id = p_workspace_id AND h.day = p_day)
        OR EXISTS (SELECT 1 FROM drumbeat.holidays h
                   WHERE h.calendar IN (p_calendar, pg_catalog.upper(p_calendar)) AND h.day = p_day);
END
$$;

-- Why: the allowed local window [window_start, window_end) on one local day for a step kind, or no row
-- when the day is excluded (weekend, holiday when exclude_holidays, weekday absent from business_hours,
-- or an empty window). The same rule first_allowed_instant applies, for previews and checks.
CREATE OR REPLACE FUNCTION drumbeat.day_window(p_settings jsonb, p_kind text, p_day date, p_workspace_id uuid DEFAULT NULL)
RETURNS TABLE (window_start time, window_end time)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.window_start, w.window_end
    FROM drumbeat.weekday_window(COALESCE(p_settings, '{}'), p_kind, EXTRACT(ISODOW FROM p_day)::integer) AS w
    WHERE w.window_start IS NOT NULL
      AND (p_kind IN ('condition', 'action')
           OR NOT COALESCE((p_settings ->> 'exclude_holidays')::boolean, false)
           OR NOT drumbeat.is_holiday(p_workspace_id, p_settings ->> 'holiday_calendar', p_day))
$$;

-- Why: save-time validation (DESIGN rule 5) rejects settings that leave a kind no window on any weekday,
-- so that no send is ever discovered impossible at dispatch. Holidays are ignored here.
CREATE OR REPLACE FUNCTION drumbeat.has_allowed_window(p_settings jsonb, p_kind text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.generate_series(1, 7) AS d(isodow),
                   LATERAL drumbeat.weekday_window(COALESCE(p_settings, '{}'), p_kind, d.isodow) AS w
                   WHERE w.window_start IS NOT NULL)
$$;

-- Why: rules 1-2 of the calculus. A delay's day part is calendar time (added to the local wall clock),
-- its time part elapsed time; send_at then picks the first such local time at or after the base, the
-- base being pulled back to its local midnight (never before done) for day delays and zero delays.
CREATE OR REPLACE FUNCTION drumbeat.delay_base(p_done timestamptz, p_delay interval, p_send_at time, p_tz text)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days integer := EXTRACT(DAY FROM COALESCE(p_delay, '0'))::integer;
    v_elapsed interval := COALESCE(p_delay, '0') - pg_catalog.make_interval(days => v_days);
    v_base timestamptz := p_done;
    v_local timestamp;
    v_at timestamptz;
BEGIN
    IF v_days <> 0 THEN
        v_base := ((p_done AT TIME ZONE p_tz) + pg_catalog.make_interval(days => v_days)) AT TIME ZONE p_tz;
    END IF;
    v_base := v_base + v_elapsed;  -- no day part: elapsed time, independent of the session zone
    IF p_send_at IS NULL THEN
        RETURN v_base;
    END IF;
    v_local := v_base AT TIME ZONE p_tz;
    IF v_days <> 0 OR v_elapsed = '0' THEN
        v_base := GREATEST(p_done, pg_catalog.date_trunc('day', v_local) AT TIME ZONE p_tz);
        v_local := v_base AT TIME ZONE p_tz;
    END IF;
    FOR i IN 0..2 LOOP
        v_at := (v_local::date + i + p_send_at) AT TIME ZONE p_tz;
        IF v_at >= v_base THEN
            RETURN v_at;
        END IF;
    END LOOP;
    RETURN v_at;
END
$$;

-- Why: rule 3 of the calculus. The first allowed instant at or after p_base: inside a window it stays
-- exactly p_base (never round-tripped through local time), before it the window's start, after it the
-- next allowed day's start. condition/action steps have no window. Nothing within 366 days is PT422.
CREATE OR REPLACE FUNCTION drumbeat.first_allowed_instant(p_base timestamptz, p_kind text, p_tz text, p_settings jsonb,
                                               p_workspace_id uuid)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day date := (p_base AT TIME ZONE p_tz)::date;
    v_isodow integer := EXTRACT(ISODOW FROM (p_base AT TIME ZONE p_tz))::integer;
    v_holidays boolean := COALESCE((p_settings ->> 'exclude_holidays')::boolean, false);
    v_calendar text := p_settings ->> 'holiday_calendar';
    v_start timestamptz;
    v_end timestamptz;
    w record;
BEGIN
    IF p_base IS NULL OR p_kind IN ('condition', 'action') THEN
        RETURN p_base;
    END IF;
    FOR i IN 0..366 LOOP
        w := drumbeat.weekday_window(p_settings, p_kind, (v_isodow + i - 1) % 7 + 1);
        CONTINUE WHEN w.window_start IS NULL
                   OR (v_holidays AND drumbeat.is_holiday(p_workspace_id, v_calendar, v_day + i));
        v_start := (v_day + i + w.window_start) AT TIME ZONE p_tz;
        v_end := (v_day + i + w.window_end) AT TIME ZONE p_tz;
        IF p_base < v_end AND v_start < v_end THEN
            RETURN GREATEST(p_base, v_start);
        END IF;
    END LOOP;
    PERFORM drumbeat.raise_error('PT422', 'no allowed send time within 366 days', 'settings');
    RETURN NULL;
END
$$;

-- Why: the one scheduling rule (docs/ARCHITECTURE.md, "Scheduling calculus") used by enrollment, dispatch, resume,
-- edits and preview: delay and send_at (delay_base), the p_not_before floor (resume/edit: never in the
-- past), then the windows (first_allowed_instant). NULL when p_done is NULL. p_tz NULL/'' means UTC.
-- A step with a send_at that the windows moved to a later local day (past a weekend, a holiday, the
-- window's end) goes at its send_at on that day when that day's window allows it, not at the window's
-- start: "Friday 10:00" past the weekend is Monday 10:00.
CREATE OR REPLACE FUNCTION drumbeat.next_action_at(p_done timestamptz, p_delay interval, p_send_at time, p_kind text,
                                        p_tz text, p_settings jsonb, p_workspace_id uuid,
                                        p_not_before timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tz text := COALESCE(NULLIF(p_tz, ''), 'UTC');
    v_base timestamptz;
    v_at timestamptz;
    v_day date;
    v_send timestamptz;
    w record;
BEGIN
    IF p_done IS NULL THEN
        RETURN NULL;
    END IF;
    v_base := GREATEST(drumbeat.delay_base(p_done, p_delay, p_send_at, v_tz), p_not_before);
    v_at := drumbeat.first_allowed_instant(v_base, p_kind, v_tz, COALESCE(p_settings, '{}'), p_workspace_id);
    v_day := (v_at AT TIME ZONE v_tz)::date;
    IF p_send_at IS NULL OR v_day <= (v_base AT TIME ZONE v_tz)::date THEN
        RETURN v_at;  -- no send_at, or not moved to another day: the window's own answer
    END IF;
    -- moved to a later day, so v_at is that day's window start: send_at instead when inside the window
    v_send := (v_day + p_send_at) AT TIME ZONE v_tz;
    w := drumbeat.weekday_window(COALESCE(p_settings, '{}'), p_kind, EXTRACT(ISODOW FROM v_day)::integer);
    IF v_send > v_at AND v_send < (v_day + w.window_end) AT TIME ZONE v_tz THEN
        RETURN v_send;
    END IF;
    RETURN v_at;
END
$$;

-- Why: the dry run's branch choice: with no engagement assumed, "replied"/"opened"/"clicked" are false
-- and their not_ forms true. Returns the next position to look after, or NULL to stop.
CREATE OR REPLACE FUNCTION drumbeat.preview_branch(p_condition jsonb, p_position integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN b = '"exit"'::jsonb THEN NULL
        WHEN pg_catalog.jsonb_typeof(b) = 'object' THEN (b ->> 'goto')::integer - 1
        ELSE p_position
    END
    FROM (SELECT CASE WHEN p_condition ->> 'if' LIKE 'not\_%' THEN p_condition -> 'then' ELSE p_condition -> 'else' END AS b) AS branch
$$;

-- Why: what would happen to this contact: every step planned with the same calculus the dispatcher
-- uses, each assumed done at its planned time, no engagement (so conditions take their "no" branch).
CREATE OR REPLACE FUNCTION drumbeat_api.preview_schedule(p_sequence_id uuid, p_contact_id uuid, p_start_at timestamptz DEFAULT NULL)
RETURNS TABLE(step_position integer, step_id uuid, kind text, planned_at timestamptz)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_workspace_id uuid := drumbeat.workspace_of('sequences', p_sequence_id, 'p_sequence_id', 'member');
    v_done timestamptz;
    v_after integer := 0;
    v_step drumbeat.sequence_steps;
BEGIN
    IF drumbeat.workspace_of('contacts', p_contact_id, 'p_contact_id', 'member') <> v_workspace_id THEN
        PERFORM drumbeat.raise_error('PT404', 'contact not found', 'p_contact_id');
    END IF;
    SELECT GREATEST(p_start_at, s.scheduled_start_at, drumbeat.clock_now()) INTO v_done FROM drumbeat.sequences s WHERE s.id = p_sequence_id;
    LOOP
        SELECT * INTO v_step FROM drumbeat.sequence_steps st WHERE st.id = drumbeat.next_live_step(p_sequence_id, v_after);
        EXIT WHEN NOT FOUND;
        v_done := drumbeat.planned_at(v_step.id, p_contact_id, v_done);
        RETURN QUERY SELECT v_step.position, v_step.id, v_step.kind, v_done;
        v_after := CASE WHEN v_step.kind = 'condition' THEN drumbeat.preview_branch(v_step.condition, v_step.position) ELSE v_step.position END;
        EXIT WHEN v_after IS NULL;
    END LOOP;
END
$$;
