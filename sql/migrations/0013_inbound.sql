-- 0013 inbound: SMS that contacts send to our numbers (STOP / START / HELP keywords, replies) and the
-- provider's delivery status callbacks. Called by the HTTP API's verified webhooks and by the worker.

-- Why: the carrier-standard keywords (CTIA; Twilio's Advanced Opt-Out uses the same lists), compared
-- trimmed and in any case. NULL for an ordinary message.
CREATE FUNCTION drumbeat.sms_keyword(p_body text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN k IN ('STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT') THEN 'opt_out'
        WHEN k IN ('START', 'UNSTOP', 'YES') THEN 'opt_in'
        WHEN k = 'HELP' THEN 'help'
    END
    FROM (SELECT pg_catalog.upper(pg_catalog.btrim(COALESCE(p_body, ''), E' \t\r\n.!')) AS k) AS keyword
$$;

-- Why: an inbound SMS is matched to the contact by phone within the workspace that owns the receiving
-- number. STOP-like keywords opt the contact out of SMS and end its SMS enrollments; START-like ones
-- opt it back in; HELP changes nothing; anything else is a reply (exit where on_reply). Returns what
-- it did: opted_out | opted_in | help | replied | unknown_contact | unknown_number.
CREATE FUNCTION drumbeat.inbound_sms(p_to text, p_from text, p_body text, p_message_sid text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_workspace_id uuid;
    v_contact_id uuid;
    v_keyword text := drumbeat.sms_keyword(p_body);
    v_payload jsonb := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'channel', 'sms', 'from', p_from, 'to', p_to, 'message_sid', p_message_sid, 'body', pg_catalog.left(p_body, 1600)));
BEGIN
    SELECT se.workspace_id INTO v_workspace_id FROM drumbeat.senders se
    WHERE se.channel = 'sms' AND se.address = p_to ORDER BY se.created_at LIMIT 1;
    IF v_workspace_id IS NULL THEN
        RETURN 'unknown_number';
    END IF;
    SELECT c.id INTO v_contact_id FROM drumbeat.contacts c WHERE c.workspace_id = v_workspace_id AND c.phone = p_from;
    IF v_contact_id IS NULL THEN
        INSERT INTO drumbeat.events (workspace_id, kind, payload) VALUES (v_workspace_id, 'inbound_unmatched', v_payload);
        RETURN 'unknown_contact';
    END IF;
    IF v_keyword = 'opt_out' THEN
        PERFORM drumbeat.apply_engagement(v_workspace_id, v_contact_id, 'unsubscribed', 'sms', v_payload);
        RETURN 'opted_out';
    ELSIF v_keyword = 'opt_in' THEN
        UPDATE drumbeat.contacts c SET sms_opted_out_at = NULL, updated_at = pg_catalog.now() WHERE c.id = v_contact_id;
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload) VALUES (v_workspace_id, 'opted_in', v_contact_id, v_payload);
        RETURN 'opted_in';
    ELSIF v_keyword = 'help' THEN
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload) VALUES (v_workspace_id, 'help_requested', v_contact_id, v_payload);
        RETURN 'help';
    END IF;
    PERFORM drumbeat.apply_engagement(v_workspace_id, v_contact_id, 'replied', 'sms', v_payload);
    RETURN 'replied';
END
$$;

-- Why: Twilio's status callback for a message we sent. delivered / undelivered / failed update the
-- delivery (never back to an earlier state); an undelivered message with a permanent carrier code
-- (unknown or unreachable destination, landline) counts as a bounce. Returns the delivery's new
-- status, or NULL when the message id is not ours.
CREATE FUNCTION drumbeat.delivery_status(p_provider_message_id text, p_status text, p_error_code text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_delivery drumbeat.deliveries;
    v_bounce boolean := p_status = 'undelivered' AND p_error_code IN ('30005', '30006', '21211', '21614');
BEGIN
    UPDATE drumbeat.deliveries d SET status = p_status, error_code = COALESCE(p_error_code, d.error_code),
        delivered_at = CASE WHEN p_status = 'delivered' THEN drumbeat.clock_now() ELSE d.delivered_at END
    WHERE d.provider_message_id = p_provider_message_id AND p_status IN ('delivered', 'undelivered', 'failed')
      AND d.status IN ('sending', 'sent', 'unknown')
    RETURNING * INTO v_delivery;
    IF NOT FOUND THEN
        RETURN (SELECT d.status FROM drumbeat.deliveries d WHERE d.provider_message_id = p_provider_message_id LIMIT 1);
    END IF;
    INSERT INTO drumbeat.events (workspace_id, kind, contact_id, sequence_id, enrollment_id, step_id, delivery_id, payload)
    VALUES (v_delivery.workspace_id, p_status, v_delivery.contact_id, v_delivery.sequence_id, v_delivery.enrollment_id,
            v_delivery.step_id, v_delivery.id, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('error_code', p_error_code)));
    IF v_bounce THEN
        PERFORM drumbeat.apply_engagement(v_delivery.workspace_id, v_delivery.contact_id, 'bounced', v_delivery.channel,
            pg_catalog.jsonb_build_object('delivery_id', v_delivery.id, 'error_code', p_error_code));
    END IF;
    RETURN v_delivery.status;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drumbeat.sms_keyword(text), drumbeat.inbound_sms(text, text, text, text),
    drumbeat.delivery_status(text, text, text) TO drumbeat_worker, service_role;
