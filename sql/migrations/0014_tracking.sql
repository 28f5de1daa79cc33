-- 0014 tracking: sequence settings `track_opens` and `track_clicks` (booleans, default true) decide
-- whether the worker adds an open pixel to an email's HTML part and routes its links through signed
-- click-tracking redirects. The claim hands both flags to the worker with the rest of the context.

-- Why: the settings of 0006 plus the two tracking switches; everything else is checked as before.
CREATE OR REPLACE FUNCTION drumbeat.validate_settings(p_settings jsonb, p_workspace_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    v_day text;
BEGIN
    PERFORM drumbeat.check_object(p_settings, 'settings', ARRAY['timezone', 'business_hours', 'exclude_weekends',
        'exclude_holidays', 'holiday_calendar', 'quiet_hours', 'max_per_day', 'sms_sender_id', 'email_sender_id',
        'track_opens', 'track_clicks']);
    IF p_settings ? 'timezone' AND NOT EXISTS (SELECT 1 FROM drumbeat.timezones z
            WHERE z.name = drumbeat.json_text(p_settings -> 'timezone', 'settings.timezone', true)) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown time zone %s: use an IANA name such as America/New_York',
            p_settings -> 'timezone'), 'settings.timezone');
    END IF;
    IF p_settings ? 'business_hours' THEN
        PERFORM drumbeat.check_object(p_settings -> 'business_hours', 'settings.business_hours',
            ARRAY['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']);
        FOR v_day IN SELECT pg_catalog.jsonb_object_keys(p_settings -> 'business_hours') LOOP
            PERFORM drumbeat.check_time_window(p_settings -> 'business_hours' -> v_day, 'settings.business_hours.' || v_day);
        END LOOP;
    END IF;
    IF p_settings ? 'quiet_hours' THEN
        PERFORM drumbeat.check_time_window(p_settings -> 'quiet_hours', 'settings.quiet_hours');
    END IF;
    PERFORM drumbeat.json_bool(p_settings -> 'exclude_weekends', 'settings.exclude_weekends'),
            drumbeat.json_bool(p_settings -> 'exclude_holidays', 'settings.exclude_holidays'),
            drumbeat.json_bool(p_settings -> 'track_opens', 'settings.track_opens'),
            drumbeat.json_bool(p_settings -> 'track_clicks', 'settings.track_clicks'),
            drumbeat.json_text(p_settings -> 'holiday_calendar', 'settings.holiday_calendar', false, 40);
    IF p_settings ? 'max_per_day' THEN
        PERFORM drumbeat.json_int(p_settings -> 'max_per_day', 'settings.max_per_day', 1, 1000000);
    END IF;
    PERFORM drumbeat.check_sender_setting(p_settings, 'sms_sender_id', 'sms', p_workspace_id),
            drumbeat.check_sender_setting(p_settings, 'email_sender_id', 'email', p_workspace_id);
END
$$;
