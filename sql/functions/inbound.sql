-- What providers tell us: inbound SMS (STOP / START / HELP keywords, replies) and delivery status
-- callbacks.

-- Why: the carrier-standard keywords (CTIA; Twilio's Advanced Opt-Out uses the same lists), compared in
-- any case, punctuation and spacing ignored; and, for opting out, the short phrases people really send
-- ("stop please", "please remove me", "do not text me again"): an opt-out must be honoured however it is
-- worded. Only a short message that is all opt-out counts: "Stop by tomorrow?" is a reply. NULL for an
-- ordinary message.
CREATE OR REPLACE FUNCTION drumbeat.sms_keyword(p_body text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN k IN ('STOP', 'STOPALL', 'STOP ALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'REVOKE', 'OPTOUT', 'OPT OUT')
          OR k ~ '^(PLEASE )?(STOP|STOPALL|UNSUBSCRIBE|OPT ?OUT|REVOKE)( (ME|IT|NOW|PLEASE|THANKS|THANK YOU|TEXTING( ME)?|MESSAGING( ME)?|SENDING( ME)?( TEXTS| MESSAGES)?|ALL( TEXTS| MESSAGES)?))*$'
          OR k ~ '^(PLEASE )?(REMOVE ME|TAKE ME OFF|UNSUBSCRIBE ME)( FROM)?( (YOUR|THE|THIS|THAT))?( (TEXT|TEXTING|SMS|MAILING|CONTACT))?( LIST)?( (NOW|PLEASE|THANKS|THANK YOU))*$'
          OR k ~ '^(PLEASE )?(DO NOT|DONT|DON T|NEVER) (TEXT|MESSAGE|CONTACT|SMS) ME( AGAIN| ANYMORE| ANY MORE)?( PLEASE)?$'
          OR k ~ '^NO MORE (TEXTS|MESSAGES)( PLEASE)?$'
          THEN 'opt_out'
        WHEN k IN ('START', 'UNSTOP', 'YES') THEN 'opt_in'
        WHEN k = 'HELP' THEN 'help'
    END
    FROM (SELECT pg_catalog.btrim(pg_catalog.regexp_replace(pg_catalog.upper(COALESCE(p_body, '')), '[^A-Z0-9]+', ' ', 'g')) AS k) AS keyword
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
SET search_path = pg_catalog, pg_temp
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
SET search_path = pg_catalog, pg_temp
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

-- Why: an inbound email for one workspace (the one whose API key or inbound secret delivered it, or whose
-- IMAP inbox it came from), as app/core/inbound_email.py read it: {dedupe_key, message_id, from_address,
-- subject, references[], kind: reply | auto_reply | bounce | unsubscribe_request, text, return_date,
-- bounce: {permanent, status, recipients[], diagnostic}}. It is matched to what we sent by the Message-IDs
-- it refers to (a reply's In-Reply-To / References, a bounce's original message), else to a contact by
-- address (a bounce's failed recipients, else the sender). Then:
--   * a reply is `replied` for the enrollment it answers (the sequence exits per on_reply; a reply after
--     the last step still counts for that step); one matched by address only, for every live enrollment;
--   * an auto-reply is `auto_replied`, not a reply; when it says when the person is back, the enrollment's
--     next step waits until the day after (in the recipient's time zone);
--   * a permanent bounce (5.x.x) bounces the contact's address and the delivery (email enrollments exit per
--     on_bounce); a temporary one (4.x.x) is logged as `soft_bounced`, nothing more;
--   * "unsubscribe me" opts the contact out of email;
--   * a message matching no one is the workspace's `inbound_unmatched`.
-- Handled once per workspace and dedupe_key (the Message-ID, else a hash of the message): a provider's
-- retry, or the same message seen by both paths, returns duplicate. Returns what it did: replied |
-- auto_replied | bounced | soft_bounced | unsubscribed | unknown_contact | duplicate.
CREATE OR REPLACE FUNCTION drumbeat.inbound_email(p_workspace_id uuid, p_email jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text := p_email ->> 'dedupe_key';
    v_kind text := p_email ->> 'kind';
    v_references text[] := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(COALESCE(p_email -> 'references', '[]')));
    v_permanent boolean := COALESCE((p_email #>> '{bounce,permanent}')::boolean, false);
    v_delivery drumbeat.deliveries;
    v_contact_id uuid;
    v_payload jsonb;
    v_outcome text;
BEGIN
    IF v_key IS NULL OR v_kind IS NULL OR v_kind NOT IN ('reply', 'auto_reply', 'bounce', 'unsubscribe_request') THEN
        PERFORM drumbeat.raise_error('PT422', 'must carry a dedupe_key and a kind (reply, auto_reply, bounce, unsubscribe_request)', 'p_email');
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('drumbeat.inbound_email:' || p_workspace_id::text || ':' || v_key, 0));
    IF EXISTS (SELECT 1 FROM drumbeat.events ev
               WHERE ev.payload ? 'email_key' AND ev.payload ->> 'email_key' = v_key AND ev.workspace_id = p_workspace_id) THEN
        RETURN 'duplicate';
    END IF;
    SELECT d.* INTO v_delivery FROM drumbeat.deliveries d
    WHERE d.provider_message_id = ANY (v_references) AND d.workspace_id = p_workspace_id AND d.channel = 'email'
    ORDER BY pg_catalog.array_position(v_references, d.provider_message_id) LIMIT 1;
    v_contact_id := COALESCE(v_delivery.contact_id, drumbeat.inbound_email_contact(p_workspace_id,
        CASE WHEN v_kind = 'bounce' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(COALESCE(p_email #> '{bounce,recipients}', '[]')))
             ELSE ARRAY[pg_catalog.lower(p_email ->> 'from_address')] END));
    IF v_delivery.id IS NULL AND v_contact_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM drumbeat.enrollments e WHERE e.contact_id = v_contact_id AND e.status IN ('scheduled', 'active', 'paused')) THEN
        -- No live enrollment to answer: the reply still counts for the last email it can follow.
        SELECT d.* INTO v_delivery
        FROM drumbeat.enrollments e JOIN drumbeat.deliveries d ON d.enrollment_id = e.id  -- indexed, unlike contact_id
        WHERE e.contact_id = v_contact_id AND d.workspace_id = p_workspace_id AND d.channel = 'email' AND d.sent_at IS NOT NULL
        ORDER BY d.sent_at DESC LIMIT 1;
    END IF;
    v_payload := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'channel', 'email', 'email_key', v_key, 'message_id', p_email ->> 'message_id',
        'from', p_email ->> 'from_address', 'subject', pg_catalog.left(p_email ->> 'subject', 500),
        'text', pg_catalog.left(p_email ->> 'text', 10000), 'delivery_id', v_delivery.id,
        'return_date', p_email ->> 'return_date', 'bounce', p_email -> 'bounce'));
    IF v_contact_id IS NULL THEN
        INSERT INTO drumbeat.events (workspace_id, kind, payload) VALUES (p_workspace_id, 'inbound_unmatched', v_payload);
        RETURN 'unknown_contact';
    END IF;
    v_outcome := CASE v_kind WHEN 'reply' THEN 'replied' WHEN 'auto_reply' THEN 'auto_replied'
                             WHEN 'bounce' THEN CASE WHEN v_permanent THEN 'bounced' ELSE 'soft_bounced' END
                             ELSE 'unsubscribed' END;
    PERFORM drumbeat.apply_engagement(p_workspace_id, v_contact_id, v_outcome, 'email', v_payload);
    IF v_outcome = 'bounced' AND v_delivery.id IS NOT NULL THEN
        UPDATE drumbeat.deliveries d SET status = 'bounced', error_code = p_email #>> '{bounce,status}',
            error_message = pg_catalog.left(p_email #>> '{bounce,diagnostic}', 1000)
        WHERE d.id = v_delivery.id AND d.status IN ('sent', 'delivered', 'unknown');
    ELSIF v_kind = 'auto_reply' AND p_email ->> 'return_date' IS NOT NULL THEN
        PERFORM drumbeat.hold_until_back(ARRAY(SELECT t.enrollment_id FROM drumbeat.event_targets(v_contact_id, v_payload) AS t),
                                         (p_email ->> 'return_date')::date);
    END IF;
    RETURN v_outcome;
END
$$;

-- Why: the contact an inbound email is from (or, for a bounce, to) when it names nothing we sent: the
-- workspace's live contact with one of these addresses, one with a live enrollment first.
CREATE OR REPLACE FUNCTION drumbeat.inbound_email_contact(p_workspace_id uuid, p_addresses text[])
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id FROM drumbeat.contacts c
    WHERE c.workspace_id = p_workspace_id AND c.email = ANY (p_addresses) AND c.deleted_at IS NULL
    ORDER BY EXISTS (SELECT 1 FROM drumbeat.enrollments e
                     WHERE e.contact_id = c.id AND e.status IN ('scheduled', 'active', 'paused')) DESC,
             c.created_at, c.id
    LIMIT 1
$$;

-- Why: an out-of-office that says when the person is back: their active enrollments' next steps wait until
-- the day after, at the first moment their windows allow in the recipient's time zone (and no earlier than
-- planned). The enrollments stay active: nothing needs resuming.
CREATE OR REPLACE FUNCTION drumbeat.hold_until_back(p_enrollment_ids uuid[], p_back date)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE drumbeat.enrollments e SET next_action_at = drumbeat.planned_at(e.current_step_id, e.contact_id, e.step_done_at,
        GREATEST(e.next_action_at, ((p_back + 1)::timestamp AT TIME ZONE drumbeat.recipient_timezone(c.timezone, s.settings, w.timezone))))
    FROM drumbeat.contacts c, drumbeat.sequences s, drumbeat.workspaces w
    WHERE e.id = ANY (p_enrollment_ids) AND e.status = 'active' AND e.next_action_at IS NOT NULL
      AND c.id = e.contact_id AND s.id = e.sequence_id AND w.id = e.workspace_id
$$;
