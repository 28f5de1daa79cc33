-- Email opens and clicks, from the signed tracking links, applied as engagement.

-- Why: open pixels, click redirects and unsubscribe links carry a delivery id only (signed by the API).
-- Opens and clicks are logged for the delivery's own enrollment and step (conditions such as if_opened
-- look for events on that step); a repeat (same delivery, and for a click the same URL) logs nothing.
-- An unsubscribe opts the contact out of the delivery's channel and ends its live enrollments as
-- apply_engagement decides (sequences on that channel; multi-channel ones per on_unsubscribe); once
-- the contact is opted out of that channel, a repeat changes nothing. Returns recorded | duplicate |
-- unknown_delivery (the delivery was deleted with its workspace or contact).
CREATE OR REPLACE FUNCTION drumbeat.record_delivery_engagement(p_delivery_id uuid, p_kind text, p_payload jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_delivery drumbeat.deliveries;
    v_payload jsonb := COALESCE(p_payload, '{}');
    v_opted_out boolean;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('opened', 'clicked', 'unsubscribed') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be one of opened, clicked, unsubscribed', 'p_kind');
    END IF;
    IF pg_catalog.jsonb_typeof(v_payload) <> 'object' THEN
        PERFORM drumbeat.raise_error('PT422', 'must be a JSON object', 'p_payload');
    END IF;
    -- Concurrent loads of one pixel (mail clients and proxies fetch in parallel) take turns here, so
    -- the duplicate check below is exact. Transaction-scoped: released at commit.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_delivery_id::text || ':' || p_kind, 18));
    SELECT * INTO v_delivery FROM drumbeat.deliveries d WHERE d.id = p_delivery_id;
    IF NOT FOUND THEN
        RETURN 'unknown_delivery';
    END IF;
    IF p_kind = 'unsubscribed' THEN
        SELECT CASE v_delivery.channel WHEN 'sms' THEN c.sms_opted_out_at IS NOT NULL ELSE c.email_opted_out_at IS NOT NULL END
        INTO v_opted_out FROM drumbeat.contacts c WHERE c.id = v_delivery.contact_id;
        IF v_opted_out THEN
            RETURN 'duplicate';
        END IF;
        -- No delivery_id in the payload: event_targets then picks every live enrollment of the contact,
        -- so an unsubscribe ends all of its sequences on that channel, not only the one that sent this.
        PERFORM drumbeat.apply_engagement(v_delivery.workspace_id, v_delivery.contact_id, 'unsubscribed', v_delivery.channel,
            (v_payload - 'delivery_id' - 'enrollment_id') || pg_catalog.jsonb_build_object('channel', v_delivery.channel, 'via_delivery_id', v_delivery.id));
        RETURN 'recorded';
    END IF;
    IF EXISTS (SELECT 1 FROM drumbeat.events ev
               WHERE ev.enrollment_id = v_delivery.enrollment_id AND ev.kind = p_kind AND ev.delivery_id = v_delivery.id
                 AND (p_kind <> 'clicked' OR ev.payload ->> 'url' IS NOT DISTINCT FROM v_payload ->> 'url')) THEN
        RETURN 'duplicate';
    END IF;
    PERFORM drumbeat.apply_engagement(v_delivery.workspace_id, v_delivery.contact_id, p_kind, v_delivery.channel,
        v_payload || pg_catalog.jsonb_build_object('channel', v_delivery.channel, 'delivery_id', v_delivery.id));
    RETURN 'recorded';
END
$$;
