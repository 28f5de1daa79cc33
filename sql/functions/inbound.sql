-- What providers tell us: inbound SMS (STOP / START / HELP keywords, replies) and delivery status
-- callbacks.

-- Why: the carrier-standard keywords (CTIA; Twilio's Advanced Opt-Out uses the same lists), compared
-- trimmed and in any case. NULL for an ordinary message.
CREATE OR REPLACE FUNCTION drumbeat.sms_keyword(p_body text)
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

-- Why: an inbound SMS is matched by phone to the contacts of the workspaces that use the receiving
-- number: the one that owns it and those the operator shared it with (drumbeat.share_sender):
--   * STOP / START apply to the sender's contact in every such workspace: the carrier blocks the number
--     for that recipient whichever workspace it sends for; STOP ends its SMS enrollments;
--   * anything else (a reply, HELP) reaches only a workspace that texted the person from that number, or
--     the owner: a reply goes to the one that texted them last (the conversation it answers; exit where
--     on_reply), HELP is logged in each;
--   * an unmatched message is logged in the workspace that owns the number.
-- Returns what it did: opted_out | opted_in | help | replied | unknown_contact | unknown_number, or
-- duplicate for a MessageSid already handled (a retried webhook: nothing is done again).
CREATE OR REPLACE FUNCTION drumbeat.inbound_sms(p_to text, p_from text, p_body text, p_message_sid text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_workspaces uuid[];  -- the workspaces using the number, its owner first
    v_contacts uuid[];  -- the sender's contact in each of those workspaces that has one, oldest first
    v_addressed uuid[];  -- those the message may reach: texted from this number (last texted first), or the owner's
    v_workspace_id uuid;
    v_contact_id uuid;
    v_keyword text := drumbeat.sms_keyword(p_body);
    v_payload jsonb := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'channel', 'sms', 'from', p_from, 'to', p_to, 'message_sid', p_message_sid, 'body', pg_catalog.left(p_body, 1600)));
BEGIN
    IF p_message_sid IS NOT NULL THEN
        -- Twilio retries a webhook it got no 2xx for, with the same MessageSid: act once. The lock makes a
        -- retry that arrives while the first delivery is still being handled wait for it, then see it.
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('drumbeat.inbound_sms:' || p_message_sid, 0));
        IF EXISTS (SELECT 1 FROM drumbeat.events ev
                   WHERE ev.payload ? 'message_sid' AND ev.payload ->> 'message_sid' = p_message_sid) THEN
            RETURN 'duplicate';
        END IF;
    END IF;
    SELECT pg_catalog.array_agg(se.workspace_id ORDER BY se.shared, se.created_at) INTO v_workspaces
    FROM drumbeat.senders se WHERE se.channel = 'sms' AND se.address = p_to;
    IF v_workspaces IS NULL THEN
        RETURN 'unknown_number';
    END IF;
    SELECT pg_catalog.array_agg(c.id ORDER BY c.created_at, c.id) INTO v_contacts
    FROM drumbeat.contacts c WHERE c.workspace_id = ANY (v_workspaces) AND c.phone = p_from;
    IF v_keyword IN ('opt_out', 'opt_in') THEN
        FOR v_workspace_id, v_contact_id IN
            SELECT c.workspace_id, c.id FROM drumbeat.contacts c WHERE c.id = ANY (v_contacts) ORDER BY c.created_at, c.id
        LOOP
            IF v_keyword = 'opt_out' THEN
                PERFORM drumbeat.apply_engagement(v_workspace_id, v_contact_id, 'unsubscribed', 'sms', v_payload);
            ELSE
                UPDATE drumbeat.contacts c SET sms_opted_out_at = NULL, updated_at = pg_catalog.now() WHERE c.id = v_contact_id;
                INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload)
                VALUES (v_workspace_id, 'opted_in', v_contact_id, v_payload);
            END IF;
        END LOOP;
    ELSE
        SELECT pg_catalog.array_agg(t.id ORDER BY t.last_texted DESC NULLS LAST, t.created_at, t.id) INTO v_addressed
        FROM (SELECT c.id, c.workspace_id, c.created_at,
                     (SELECT pg_catalog.max(d.sent_at) FROM drumbeat.enrollments e
                      JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
                      JOIN drumbeat.senders se ON se.id = d.sender_id AND se.address = p_to
                      WHERE e.contact_id = c.id AND d.channel = 'sms') AS last_texted
              FROM drumbeat.contacts c WHERE c.id = ANY (v_contacts)) AS t
        WHERE t.last_texted IS NOT NULL OR t.workspace_id = v_workspaces[1];
        v_contacts := v_addressed;
    END IF;
    IF v_contacts IS NULL THEN
        INSERT INTO drumbeat.events (workspace_id, kind, payload) VALUES (v_workspaces[1], 'inbound_unmatched', v_payload);
        RETURN 'unknown_contact';
    END IF;
    IF v_keyword IS NULL THEN
        SELECT c.workspace_id INTO v_workspace_id FROM drumbeat.contacts c WHERE c.id = v_addressed[1];
        PERFORM drumbeat.apply_engagement(v_workspace_id, v_addressed[1], 'replied', 'sms', v_payload);
        RETURN 'replied';
    ELSIF v_keyword = 'help' THEN
        INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload)
        SELECT c.workspace_id, 'help_requested', c.id, v_payload FROM drumbeat.contacts c WHERE c.id = ANY (v_addressed);
    END IF;
    RETURN CASE v_keyword WHEN 'opt_out' THEN 'opted_out' WHEN 'opt_in' THEN 'opted_in' ELSE 'help' END;
END
$$;

-- Why: Twilio's status callback for a message we sent. delivered / undelivered / failed update the
-- delivery (never back to an earlier state); an undelivered message with a permanent carrier code
-- (unknown or unreachable destination, landline) counts as a bounce. Returns the delivery's new
-- status, or NULL when the message id is not ours.
CREATE OR REPLACE FUNCTION drumbeat.delivery_status(p_provider_message_id text, p_status text, p_error_code text DEFAULT NULL)
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
