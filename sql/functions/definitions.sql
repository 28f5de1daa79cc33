-- Validating a sequence definition (JSON, snake_case) before anything is written: every setting, step,
-- condition, action and template is checked, and an error names the field (SQLSTATE PT422).

-- Why: strict input; a misspelt key ("send_At") must be an error, not a silently ignored setting.
CREATE OR REPLACE FUNCTION drumbeat.check_object(p_value jsonb, p_field text, p_allowed text[])
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text;
BEGIN
    IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) <> 'object' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON object', p_field);
    END IF;
    SELECT k INTO v_key FROM pg_catalog.jsonb_object_keys(p_value) AS k WHERE k <> ALL (p_allowed) LIMIT 1;
    IF v_key IS NOT NULL THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown field; expected one of: %s',
            pg_catalog.array_to_string(p_allowed, ', ')), p_field || '.' || v_key);
    END IF;
END
$$;

-- Why: one place that reads a string member, so every "must be a string" error reads the same.
CREATE OR REPLACE FUNCTION drumbeat.json_text(p_value jsonb, p_field text, p_required boolean DEFAULT false, p_max_length integer DEFAULT 10000)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL OR p_value = 'null'::jsonb THEN
        IF p_required THEN
            PERFORM drumbeat.raise_error('PT422', 'is required', p_field);
        END IF;
        RETURN NULL;
    END IF;
    IF pg_catalog.jsonb_typeof(p_value) <> 'string' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a string', p_field);
    END IF;
    IF p_required AND pg_catalog.btrim(p_value #>> '{}') = '' THEN
        PERFORM drumbeat.raise_error('PT422', 'must not be empty', p_field);
    END IF;
    IF pg_catalog.length(p_value #>> '{}') > p_max_length THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('must be at most %s characters', p_max_length), p_field);
    END IF;
    RETURN p_value #>> '{}';
END
$$;

-- Why: integers arrive as JSON numbers; 2.5 days or "3" is an error naming the field. A whole number
-- written as 2.0 is accepted; out of [p_min, p_max] is PT422 naming the field.
CREATE OR REPLACE FUNCTION drumbeat.json_int(p_value jsonb, p_field text, p_min bigint, p_max bigint)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) <> 'number'
       OR (p_value #>> '{}')::numeric <> pg_catalog.trunc((p_value #>> '{}')::numeric) THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a whole number', p_field);
    END IF;
    IF (p_value #>> '{}')::numeric NOT BETWEEN p_min AND p_max THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('must be between %s and %s', p_min, p_max), p_field);
    END IF;
    RETURN (p_value #>> '{}')::numeric::bigint;
END
$$;

CREATE OR REPLACE FUNCTION drumbeat.json_bool(p_value jsonb, p_field text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.jsonb_typeof(p_value) <> 'boolean' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be true or false', p_field);
    END IF;
    RETURN (p_value #>> '{}')::boolean;
END
$$;

-- Why: times of day are "HH:MM" (a window's end may be "24:00"); returned as an interval since midnight
-- so that 24:00 is representable.
CREATE OR REPLACE FUNCTION drumbeat.json_time_of_day(p_value jsonb, p_field text, p_allow_24 boolean DEFAULT false)
RETURNS interval
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text := drumbeat.json_text(p_value, p_field, true);
BEGIN
    IF v_text ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' OR (p_allow_24 AND v_text = '24:00') THEN
        RETURN (v_text || ':00')::interval;
    END IF;
    PERFORM drumbeat.raise_error('PT422', pg_catalog.format('must be a time of day "HH:MM"%s, got %s',
        CASE WHEN p_allow_24 THEN ' (00:00-24:00)' ELSE ' (00:00-23:59)' END, p_value), p_field);
END
$$;

-- Why: {"start": "HH:MM", "end": "HH:MM"} with start < end; used by business hours and quiet hours.
CREATE OR REPLACE FUNCTION drumbeat.check_time_window(p_value jsonb, p_field text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.check_object(p_value, p_field, ARRAY['start', 'end']);
    IF drumbeat.json_time_of_day(p_value -> 'start', p_field || '.start')
       >= drumbeat.json_time_of_day(p_value -> 'end', p_field || '.end', true) THEN
        PERFORM drumbeat.raise_error('PT422', 'must be after start', p_field || '.end');
    END IF;
END
$$;

-- Why: {"value": N, "unit": "minutes|hours|days|weeks"} -> interval. Days and weeks become interval
-- days (calendar time, see the calculus); minutes and hours stay clock time. 0 means at once.
CREATE OR REPLACE FUNCTION drumbeat.parse_delay(p_delay jsonb, p_field text)
RETURNS interval
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_value bigint;
    v_unit text;
BEGIN
    IF p_delay IS NULL OR p_delay = 'null'::jsonb THEN
        RETURN '0'::interval;
    END IF;
    PERFORM drumbeat.check_object(p_delay, p_field, ARRAY['value', 'unit']);
    v_value := drumbeat.json_int(p_delay -> 'value', p_field || '.value', 0, 525600);
    v_unit := drumbeat.json_text(p_delay -> 'unit', p_field || '.unit', true);
    RETURN CASE v_unit
        WHEN 'minutes' THEN pg_catalog.make_interval(mins => v_value::integer)
        WHEN 'hours' THEN pg_catalog.make_interval(hours => v_value::integer)
        WHEN 'days' THEN pg_catalog.make_interval(days => v_value::integer)
        WHEN 'weeks' THEN pg_catalog.make_interval(days => (v_value * 7)::integer)
        ELSE drumbeat.raise_error('PT422', pg_catalog.format(
            'unknown unit %s: use minutes, hours, days or weeks', pg_catalog.to_jsonb(v_unit)), p_field || '.unit')::text::interval
    END;
END
$$;

-- Why: templates are user input. The full Jinja2 sandbox compile happens in the API (app/core/templates.py,
-- which also checks every member named); here, for RPC callers, every {{ }} and {% %} must be closed and
-- every {{ expression }} that starts with a name must start from a variable a message has (the context of
-- claim_messages), one the template itself sets ({% set x %}, {% for x, y in %}, loop) or one of Jinja's
-- own (range, namespace, ...), so a typo is a 422 at save rather than a failed delivery at 3 a.m.
CREATE OR REPLACE FUNCTION drumbeat.check_template(p_template text, p_field text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_expression text;
    v_known text[] := ARRAY['contact', 'sender', 'sequence', 'workspace', 'enrollment', 'unsubscribe_url', 'loop',
                            'range', 'namespace', 'dict', 'lipsum', 'cycler', 'joiner', 'true', 'false', 'none',
                            'True', 'False', 'None', 'not', 'caller', 'varargs', 'kwargs', 'self', 'super'];
BEGIN
    IF p_template IS NULL THEN
        RETURN;
    END IF;
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.regexp_matches(p_template, '\{\{', 'g'))
       <> (SELECT pg_catalog.count(*) FROM pg_catalog.regexp_matches(p_template, '\{\{.*?\}\}', 'g'))
       OR (SELECT pg_catalog.count(*) FROM pg_catalog.regexp_matches(p_template, '\{%', 'g'))
       <> (SELECT pg_catalog.count(*) FROM pg_catalog.regexp_matches(p_template, '\{%.*?%\}', 'g')) THEN
        PERFORM drumbeat.raise_error('PT422', 'template has an unclosed {{ or {%', p_field);
    END IF;
    -- The template's own names: {% set a = %}, {% for a in %}, {% for a, b in %}, {% for (a, b) in %},
    -- {% with a = 1, b = 2 %}, and a macro's name and parameters, {% macro m(a, b=1) %}.
    v_known := v_known || ARRAY(
        SELECT pg_catalog.unnest(pg_catalog.regexp_split_to_array(pg_catalog.btrim(m[2], '() '), '\s*,\s*'))
        FROM pg_catalog.regexp_matches(p_template,
            '\{%-?\s*(set|for)\s+(\(?\s*[A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*\s*\)?)', 'g') AS m)
    || ARRAY(
        SELECT a[1]
        FROM pg_catalog.regexp_matches(p_template, '\{%-?\s*with\s+([^%]*)%\}', 'g') AS w,
             pg_catalog.regexp_matches(w[1], '([A-Za-z_]\w*)\s*=', 'g') AS a)
    || ARRAY(
        SELECT m[1] FROM pg_catalog.regexp_matches(p_template, '\{%-?\s*macro\s+([A-Za-z_]\w*)', 'g') AS m)
    || ARRAY(
        SELECT a[1]
        FROM pg_catalog.regexp_matches(p_template, '\{%-?\s*macro\s+[A-Za-z_]\w*\s*\(([^)]*)\)', 'g') AS m,
             pg_catalog.regexp_matches(m[1], '([A-Za-z_]\w*)\s*(=|,|$)', 'g') AS a);
    -- [^}]* rather than .*?: in PostgreSQL a regex takes the greediness of its first quantifier.
    SELECT x.expression INTO v_expression
    FROM (SELECT pg_catalog.btrim(m[1], E' \t\n-') AS expression
          FROM pg_catalog.regexp_matches(p_template, '\{\{([^}]*)\}\}', 'g') AS m) AS x
    WHERE pg_catalog.substring(x.expression, '^[A-Za-z_]\w*') <> ALL (v_known)
    LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown template variable in {{ %s }}: use contact.*, '
            'sender.*, sequence.*, workspace.*, enrollment.* or unsubscribe_url', v_expression), p_field);
    END IF;
END
$$;

-- Why: a settings sender must be this workspace's sender of the right channel.
CREATE OR REPLACE FUNCTION drumbeat.check_sender_setting(p_settings jsonb, p_key text, p_channel text, p_workspace_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text := drumbeat.json_text(p_settings -> p_key, 'settings.' || p_key);
BEGIN
    IF v_text IS NULL THEN
        RETURN;
    END IF;
    IF v_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR NOT EXISTS (SELECT 1 FROM drumbeat.senders s WHERE s.id = v_text::uuid
                      AND s.workspace_id = p_workspace_id AND s.channel = p_channel) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('no %s sender %s in this workspace', p_channel, v_text),
            'settings.' || p_key);
    END IF;
END
$$;

-- Why: sequence settings drive the calculus; each one is checked here so that scheduling never
-- meets a malformed value. The tracking switches (track_opens, track_clicks) are booleans; a
-- holiday_calendar must name a loaded calendar (in any case), never silently meaning "no holidays".
CREATE OR REPLACE FUNCTION drumbeat.validate_settings(p_settings jsonb, p_workspace_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day text;
    v_calendar text;
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
            drumbeat.json_bool(p_settings -> 'track_clicks', 'settings.track_clicks');
    -- a calendar exists once the operator has loaded it (load_holidays): known by a name is_holiday finds
    v_calendar := drumbeat.json_text(p_settings -> 'holiday_calendar', 'settings.holiday_calendar', false, 40);
    IF v_calendar IS NOT NULL AND NOT EXISTS (SELECT 1 FROM drumbeat.holidays h
            WHERE h.calendar IN (v_calendar, pg_catalog.upper(v_calendar))) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown holiday calendar %s: use the name of a calendar '
            'the operator loaded (drumbeat holidays load --calendar)', p_settings -> 'holiday_calendar'),
            'settings.holiday_calendar');
    END IF;
    IF p_settings ? 'max_per_day' THEN
        PERFORM drumbeat.json_int(p_settings -> 'max_per_day', 'settings.max_per_day', 1, 1000000);
    END IF;
    PERFORM drumbeat.check_sender_setting(p_settings, 'sms_sender_id', 'sms', p_workspace_id),
            drumbeat.check_sender_setting(p_settings, 'email_sender_id', 'email', p_workspace_id);
END
$$;

-- Why: exit conditions default to "stop on everything"; only booleans are accepted.
CREATE OR REPLACE FUNCTION drumbeat.normalize_exit_conditions(p_exit jsonb)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text;
    v_result jsonb := '{"on_reply": true, "on_bounce": true, "on_unsubscribe": true, "on_meeting_booked": true}';
BEGIN
    IF p_exit IS NULL OR p_exit = 'null'::jsonb THEN
        RETURN v_result;
    END IF;
    PERFORM drumbeat.check_object(p_exit, 'exit_conditions', ARRAY['on_reply', 'on_bounce', 'on_unsubscribe', 'on_meeting_booked']);
    FOR v_key IN SELECT pg_catalog.jsonb_object_keys(p_exit) LOOP
        v_result := v_result || pg_catalog.jsonb_build_object(v_key, drumbeat.json_bool(p_exit -> v_key, 'exit_conditions.' || v_key));
    END LOOP;
    RETURN v_result;
END
$$;

-- Why: a condition's branch is "continue", "exit" or {"goto": N} with N after the condition itself
-- (forward only, so a sequence can never loop) and no further than the last step.
CREATE OR REPLACE FUNCTION drumbeat.check_branch(p_branch jsonb, p_field text, p_position integer, p_step_count integer)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_branch IS NULL OR p_branch IN ('"continue"'::jsonb, '"exit"'::jsonb) THEN
        RETURN;
    END IF;
    IF pg_catalog.jsonb_typeof(p_branch) <> 'object' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be "continue", "exit" or {"goto": N}', p_field);
    END IF;
    PERFORM drumbeat.check_object(p_branch, p_field, ARRAY['goto']);
    PERFORM drumbeat.json_int(p_branch -> 'goto', p_field || '.goto', p_position + 1, p_step_count);
END
$$;

-- Why: conditions look back at an earlier message step: replied/clicked need an sms or email step,
-- opened an email step (SMS has no open tracking).
CREATE OR REPLACE FUNCTION drumbeat.check_condition(p_step jsonb, p_field text, p_position integer, p_steps jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_condition jsonb := p_step -> 'condition';
    v_if text;
    v_target_kind text;
BEGIN
    PERFORM drumbeat.check_object(v_condition, p_field || '.condition', ARRAY['if', 'step', 'within', 'link', 'link_name']);
    v_if := drumbeat.json_text(v_condition -> 'if', p_field || '.condition.if', true);
    IF v_if NOT IN ('replied', 'opened', 'clicked', 'not_replied', 'not_opened', 'not_clicked') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be one of replied, opened, clicked, not_replied, not_opened, not_clicked',
            p_field || '.condition.if');
    END IF;
    IF p_position = 1 THEN
        PERFORM drumbeat.raise_error('PT422', 'a condition cannot be the first step: it looks at an earlier step', p_field || '.kind');
    END IF;
    v_target_kind := p_steps -> (drumbeat.json_int(v_condition -> 'step', p_field || '.condition.step', 1, p_position - 1)::integer - 1) ->> 'kind';
    IF v_target_kind NOT IN ('sms', 'email') OR (v_if LIKE '%opened' AND v_target_kind <> 'email') THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('step %s is a %s step; %s needs %s', v_condition -> 'step',
            v_target_kind, v_if, CASE WHEN v_if LIKE '%opened' THEN 'an email step' ELSE 'an sms or email step' END),
            p_field || '.condition.step');
    END IF;
    PERFORM drumbeat.parse_delay(v_condition -> 'within', p_field || '.condition.within');
    IF v_condition ? 'link' AND (v_if NOT LIKE '%clicked'
            OR drumbeat.json_text(v_condition -> 'link', p_field || '.condition.link', true, 2000) !~* '^https?://[^\s/]+') THEN
        PERFORM drumbeat.raise_error('PT422', CASE WHEN v_if NOT LIKE '%clicked' THEN 'only clicked and not_clicked look at a link'
            ELSE 'must be an http(s) URL, e.g. https://acme.example/pricing' END, p_field || '.condition.link');
    END IF;
    -- A link's name is what a template wrote in <a data-link-name="...">: the pattern the sender accepts.
    IF v_condition ? 'link_name' AND (v_if NOT LIKE '%clicked' OR v_condition ? 'link'
            OR drumbeat.json_text(v_condition -> 'link_name', p_field || '.condition.link_name', true, 64)
               !~ '^[A-Za-z0-9]([A-Za-z0-9 _.-]*[A-Za-z0-9_.-])?$') THEN
        PERFORM drumbeat.raise_error('PT422', CASE WHEN v_if NOT LIKE '%clicked' THEN 'only clicked and not_clicked look at a link'
            WHEN v_condition ? 'link' THEN 'name the link by its URL (link) or its name (link_name), not both'
            ELSE 'must be a link name: letters, digits, spaces, "_", "-" and "." (as in <a data-link-name="pricing">)' END,
            p_field || '.condition.link_name');
    END IF;
    PERFORM drumbeat.check_branch(p_step -> 'then', p_field || '.then', p_position, pg_catalog.jsonb_array_length(p_steps)),
            drumbeat.check_branch(p_step -> 'else', p_field || '.else', p_position, pg_catalog.jsonb_array_length(p_steps));
END
$$;

-- Why: actions change the contact or reach another sequence; each type has its own required fields.
CREATE OR REPLACE FUNCTION drumbeat.check_action(p_action jsonb, p_field text, p_workspace_id uuid, p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type text;
    v_target text;
BEGIN
    PERFORM drumbeat.check_object(p_action, p_field, ARRAY['type', 'tag', 'field', 'value', 'sequence_id', 'event', 'endpoint_id']);
    v_type := drumbeat.json_text(p_action -> 'type', p_field || '.type', true);
    CASE v_type
        WHEN 'tag', 'untag' THEN PERFORM drumbeat.json_text(p_action -> 'tag', p_field || '.tag', true, 100);
        WHEN 'set_field' THEN PERFORM drumbeat.json_text(p_action -> 'field', p_field || '.field', true, 100);
            IF NOT p_action ? 'value' THEN PERFORM drumbeat.raise_error('PT422', 'is required', p_field || '.value'); END IF;
        WHEN 'webhook' THEN PERFORM drumbeat.json_text(p_action -> 'event', p_field || '.event', true, 100);
            -- optional: only this endpoint gets it (else every endpoint taking sequence.step.webhook)
            v_target := drumbeat.json_text(p_action -> 'endpoint_id', p_field || '.endpoint_id');
            IF v_target IS NOT NULL AND (v_target !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
               OR NOT EXISTS (SELECT 1 FROM drumbeat.webhook_endpoints e WHERE e.id = v_target::uuid AND e.workspace_id = p_workspace_id)) THEN
                PERFORM drumbeat.raise_error('PT422', 'must be a webhook endpoint of this workspace', p_field || '.endpoint_id');
            END IF;
        WHEN 'enroll' THEN
            v_target := drumbeat.json_text(p_action -> 'sequence_id', p_field || '.sequence_id', true);
            IF v_target !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
               OR v_target::uuid IS NOT DISTINCT FROM p_sequence_id
               OR NOT EXISTS (SELECT 1 FROM drumbeat.sequences s WHERE s.id = v_target::uuid AND s.workspace_id = p_workspace_id) THEN
                PERFORM drumbeat.raise_error('PT422', 'must be another sequence of this workspace', p_field || '.sequence_id');
            END IF;
        ELSE PERFORM drumbeat.raise_error('PT422', 'must be one of tag, untag, set_field, enroll, webhook', p_field || '.type');
    END CASE;
END
$$;

-- Why: message content (and each A/B variant's) must be present for its kind and a valid template.
CREATE OR REPLACE FUNCTION drumbeat.check_message(p_step jsonb, p_field text, p_kind text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_variant record;
BEGIN
    PERFORM drumbeat.check_template(drumbeat.json_text(p_step -> 'body', p_field || '.body', true,
        CASE p_kind WHEN 'sms' THEN 1600 ELSE 100000 END), p_field || '.body');
    -- An email step without a subject follows up in the thread (check_step requires one of the first).
    PERFORM drumbeat.check_template(drumbeat.json_text(p_step -> 'subject', p_field || '.subject', false, 998), p_field || '.subject');
    PERFORM drumbeat.check_template(drumbeat.json_text(p_step -> 'html_body', p_field || '.html_body', false, 500000), p_field || '.html_body');
    IF p_step ? 'variants' AND pg_catalog.jsonb_typeof(p_step -> 'variants') <> 'array' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array', p_field || '.variants');
    END IF;
    FOR v_variant IN SELECT v.value, v.ordinality - 1 AS i, p_field || '.variants[' || (v.ordinality - 1) || ']' AS path
                     FROM pg_catalog.jsonb_array_elements(COALESCE(p_step -> 'variants', '[]')) WITH ORDINALITY AS v LOOP
        PERFORM drumbeat.check_object(v_variant.value, v_variant.path, ARRAY['key', 'weight', 'subject', 'body', 'html_body']);
        PERFORM drumbeat.json_text(v_variant.value -> 'key', v_variant.path || '.key', true, 20),
                drumbeat.json_int(v_variant.value -> 'weight', v_variant.path || '.weight', 1, 1000),
                drumbeat.check_template(drumbeat.json_text(v_variant.value -> 'subject', v_variant.path || '.subject'), v_variant.path || '.subject'),
                drumbeat.check_template(drumbeat.json_text(v_variant.value -> 'body', v_variant.path || '.body'), v_variant.path || '.body'),
                drumbeat.check_template(drumbeat.json_text(v_variant.value -> 'html_body', v_variant.path || '.html_body'), v_variant.path || '.html_body');
        IF (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements(p_step -> 'variants') w
            WHERE w ->> 'key' = v_variant.value ->> 'key') > 1 THEN
            PERFORM drumbeat.raise_error('PT422', 'duplicate variant key', v_variant.path || '.key');
        END IF;
    END LOOP;
END
$$;

-- Why: one step of a definition, checked field by field; p_index is its 0-based index in "steps".
CREATE OR REPLACE FUNCTION drumbeat.check_step(p_steps jsonb, p_index integer, p_channel text, p_settings jsonb,
                                    p_workspace_id uuid, p_sequence_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_step jsonb := p_steps -> p_index;
    v_field text := 'steps[' || p_index || ']';
    v_kind text;
BEGIN
    PERFORM drumbeat.check_object(v_step, v_field, ARRAY['id', 'kind', 'name', 'delay', 'send_at', 'subject', 'body',
        'html_body', 'variants', 'condition', 'then', 'else', 'action', 'task_description', 'is_active']);
    v_kind := drumbeat.json_text(v_step -> 'kind', v_field || '.kind', true);
    IF v_kind NOT IN ('sms', 'email', 'manual_email', 'call', 'linkedin', 'task', 'condition', 'action') THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown step kind %s: use sms, email, manual_email, call, '
            'linkedin, task, condition or action', v_step -> 'kind'), v_field || '.kind');
    END IF;
    IF (v_kind = 'sms' AND p_channel = 'email') OR (v_kind = 'email' AND p_channel = 'sms') THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('a %s step cannot be in an %s sequence (use channel "multi")',
            v_kind, p_channel), v_field || '.kind');
    END IF;
    PERFORM drumbeat.json_text(v_step -> 'name', v_field || '.name', false, 200),
            drumbeat.json_text(v_step -> 'task_description', v_field || '.task_description'),
            drumbeat.json_bool(v_step -> 'is_active', v_field || '.is_active'),
            drumbeat.parse_delay(v_step -> 'delay', v_field || '.delay');
    IF v_step ? 'send_at' THEN
        PERFORM drumbeat.json_time_of_day(v_step -> 'send_at', v_field || '.send_at');
    END IF;
    IF v_kind IN ('sms', 'email') THEN
        PERFORM drumbeat.check_message(v_step, v_field, v_kind);
        -- A subject-less email replies in the thread of the contact's previous email: the first one starts it.
        IF v_kind = 'email' AND drumbeat.json_text(v_step -> 'subject', v_field || '.subject') IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(p_steps) WITH ORDINALITY AS t(e, o)
                           WHERE t.o <= p_index AND t.e ->> 'kind' = 'email') THEN
            PERFORM drumbeat.raise_error('PT422', 'the first email step needs a subject (a later one without a subject replies in its thread)',
                v_field || '.subject');
        END IF;
    ELSIF v_step ?| ARRAY['subject', 'body', 'html_body', 'variants'] AND v_kind <> 'manual_email' THEN
        PERFORM drumbeat.raise_error('PT422', 'only sms, email and manual_email steps carry message content', v_field);
    END IF;
    IF v_kind = 'condition' THEN
        PERFORM drumbeat.check_condition(v_step, v_field, p_index + 1, p_steps);
    ELSIF v_step ?| ARRAY['condition', 'then', 'else'] THEN
        PERFORM drumbeat.raise_error('PT422', 'only condition steps have condition/then/else', v_field);
    END IF;
    IF v_kind = 'action' THEN
        PERFORM drumbeat.check_action(v_step -> 'action', v_field || '.action', p_workspace_id, p_sequence_id);
    ELSIF v_step ? 'action' THEN
        PERFORM drumbeat.raise_error('PT422', 'only action steps have an action', v_field || '.action');
    END IF;
    IF v_kind NOT IN ('condition', 'action') AND NOT drumbeat.has_allowed_window(p_settings, v_kind) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('step %s (%s%s) has no allowed window on any weekday with '
            'these settings (business_hours, exclude_weekends%s)', p_index + 1, v_kind,
            COALESCE(', "' || (v_step ->> 'name') || '"', ''), CASE WHEN v_kind = 'sms' THEN ', quiet_hours' ELSE '' END), v_field);
    END IF;
END
$$;

-- Why: the whole sequence definition (docs/ARCHITECTURE.md, "The contract"), checked before anything is written (nothing half-saved).
CREATE OR REPLACE FUNCTION drumbeat.validate_definition(p_definition jsonb, p_workspace_id uuid, p_sequence_id uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_channel text;
    v_settings jsonb := COALESCE(p_definition -> 'settings', '{}');
BEGIN
    PERFORM drumbeat.check_object(p_definition, 'definition', ARRAY['name', 'description', 'channel', 'settings', 'exit_conditions', 'steps']);
    PERFORM drumbeat.json_text(p_definition -> 'name', 'name', true, 200),
            drumbeat.json_text(p_definition -> 'description', 'description', false, 5000),
            drumbeat.normalize_exit_conditions(p_definition -> 'exit_conditions'),
            drumbeat.validate_settings(v_settings, p_workspace_id);
    v_channel := drumbeat.json_text(p_definition -> 'channel', 'channel', true);
    IF v_channel NOT IN ('sms', 'email', 'multi') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be sms, email or multi', 'channel');
    END IF;
    IF pg_catalog.jsonb_typeof(p_definition -> 'steps') IS DISTINCT FROM 'array'
       OR pg_catalog.jsonb_array_length(p_definition -> 'steps') NOT BETWEEN 1 AND 100 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be an array of 1 to 100 steps', 'steps');
    END IF;
    FOR v_index IN 0 .. pg_catalog.jsonb_array_length(p_definition -> 'steps') - 1 LOOP
        PERFORM drumbeat.check_step(p_definition -> 'steps', v_index, v_channel, v_settings, p_workspace_id, p_sequence_id);
    END LOOP;
END
$$;
