-- 0027: an inbound SMS to a number that several workspaces use (each may register it: senders are unique
-- per workspace, and one Twilio number or Messaging Service can serve several brands) reached only the
-- workspace that registered it first. A STOP from a contact of another of them came back
-- 'unknown_contact', and that workspace went on texting someone who had opted out. Now:
--   * STOP / START / HELP apply to the sender's contact in every workspace that uses the number: the
--     carrier blocks the number for that recipient whichever workspace it sends for;
--   * a reply goes to the workspace that last texted the contact from that number (the conversation it
--     answers), else to the oldest of them;
--   * an unmatched message is logged in every workspace that uses the number.

-- Why: an inbound SMS, matched by phone to contacts of the workspaces that use the receiving number (see
-- the header). Returns what it did: opted_out | opted_in | help | replied | unknown_contact | unknown_number.
CREATE OR REPLACE FUNCTION drumbeat.inbound_sms(p_to text, p_from text, p_body text, p_message_sid text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_workspaces uuid[];
    v_contacts uuid[];  -- the sender's contact in each of those workspaces that has one, oldest first
    v_workspace_id uuid;
    v_contact_id uuid;
    v_keyword text := drumbeat.sms_keyword(p_body);
    v_payload jsonb := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'channel', 'sms', 'from', p_from, 'to', p_to, 'message_sid', p_message_sid, 'body', pg_catalog.left(p_body, 1600)));
BEGIN
    SELECT pg_catalog.array_agg(se.workspace_id ORDER BY se.created_at) INTO v_workspaces
    FROM drumbeat.senders se WHERE se.channel = 'sms' AND se.address = p_to;
    IF v_workspaces IS NULL THEN
        RETURN 'unknown_number';
    END IF;
    SELECT pg_catalog.array_agg(c.id ORDER BY c.created_at, c.id) INTO v_contacts
    FROM drumbeat.contacts c WHERE c.workspace_id = ANY (v_workspaces) AND c.phone = p_from;
    IF v_contacts IS NULL THEN
        INSERT INTO drumbeat.events (workspace_id, kind, payload)
        SELECT w, 'inbound_unmatched', v_payload FROM pg_catalog.unnest(v_workspaces) AS w;
        RETURN 'unknown_contact';
    END IF;
    IF v_keyword IS NULL THEN
        SELECT c.workspace_id, c.id INTO v_workspace_id, v_contact_id
        FROM drumbeat.contacts c WHERE c.id = ANY (v_contacts)
        ORDER BY (SELECT pg_catalog.max(d.sent_at) FROM drumbeat.enrollments e
                  JOIN drumbeat.deliveries d ON d.enrollment_id = e.id
                  JOIN drumbeat.senders se ON se.id = d.sender_id AND se.address = p_to
                  WHERE e.contact_id = c.id AND d.channel = 'sms') DESC NULLS LAST,
                 c.created_at, c.id
        LIMIT 1;
        PERFORM drumbeat.apply_engagement(v_workspace_id, v_contact_id, 'replied', 'sms', v_payload);
        RETURN 'replied';
    END IF;
    FOR v_workspace_id, v_contact_id IN
        SELECT c.workspace_id, c.id FROM drumbeat.contacts c WHERE c.id = ANY (v_contacts) ORDER BY c.created_at, c.id
    LOOP
        IF v_keyword = 'opt_out' THEN
            PERFORM drumbeat.apply_engagement(v_workspace_id, v_contact_id, 'unsubscribed', 'sms', v_payload);
        ELSIF v_keyword = 'opt_in' THEN
            UPDATE drumbeat.contacts c SET sms_opted_out_at = NULL, updated_at = pg_catalog.now() WHERE c.id = v_contact_id;
            INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload)
            VALUES (v_workspace_id, 'opted_in', v_contact_id, v_payload);
        ELSE
            INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload)
            VALUES (v_workspace_id, 'help_requested', v_contact_id, v_payload);
        END IF;
    END LOOP;
    RETURN CASE v_keyword WHEN 'opt_out' THEN 'opted_out' WHEN 'opt_in' THEN 'opted_in' ELSE 'help' END;
END
$$;

REVOKE EXECUTE ON FUNCTION drumbeat.inbound_sms(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drumbeat.inbound_sms(text, text, text, text) TO drumbeat_worker, service_role;
