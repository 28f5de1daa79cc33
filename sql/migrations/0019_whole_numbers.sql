-- 0019: a whole number written with a fraction part (100.0, as some JSON encoders write every number)
-- passed json_int's whole-number check and then failed the cast to bigint with SQLSTATE 22P02, an
-- error no caller can act on. It is now accepted as the whole number it is.

-- Why: as in 0006, a JSON whole number within bounds, or PT422 naming the field.
CREATE OR REPLACE FUNCTION drumbeat.json_int(p_value jsonb, p_field text, p_min bigint, p_max bigint)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
SET search_path = ''
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
