-- Workspaces and their senders (drumbeat_api.create_workspace, create_sender) and the checks shared by
-- the contract functions: the caller's identity and the workspace a row belongs to.

-- Why: anonymous calls are PT401 before anything else, so they never look like "not found".
CREATE OR REPLACE FUNCTION drumbeat.require_caller()
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT drumbeat.is_trusted_caller() AND drumbeat.current_user_id() IS NULL THEN
        PERFORM drumbeat.raise_error('PT401', 'authentication required: request.jwt.claims has no user (sub)');
    END IF;
END
$$;

-- Why: every function taking an id finds its workspace the same way: through RLS, so another
-- tenant's id is PT404 (indistinguishable from a missing one), then checks the caller's role.
CREATE OR REPLACE FUNCTION drumbeat.workspace_of(p_table text, p_id uuid, p_field text, p_min_role text DEFAULT 'member')
RETURNS uuid
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_workspace_id uuid;
BEGIN
    PERFORM drumbeat.require_caller();
    EXECUTE pg_catalog.format('SELECT workspace_id FROM drumbeat.%I WHERE id = $1', p_table)
        INTO v_workspace_id USING p_id;
    IF v_workspace_id IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', pg_catalog.format('%s not found', pg_catalog.rtrim(p_table, 's')), p_field);
    END IF;
    PERFORM drumbeat.require_role(v_workspace_id, p_min_role);
    RETURN v_workspace_id;
END
$$;

-- Why: time zones are IANA names; checked against the reference table with a clear message.
CREATE OR REPLACE FUNCTION drumbeat.check_timezone(p_timezone text, p_field text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_timezone IS NOT NULL AND NOT EXISTS (SELECT 1 FROM drumbeat.timezones z WHERE z.name = p_timezone) THEN
        PERFORM drumbeat.raise_error('PT422', pg_catalog.format('unknown time zone %s: use an IANA name such as America/New_York',
            pg_catalog.to_jsonb(p_timezone)), p_field);
    END IF;
    RETURN p_timezone;
END
$$;

-- Why: a workspace is the tenant; its creator becomes its owner (a service_role caller with no user
-- creates an ownerless workspace and adds members itself).
CREATE OR REPLACE FUNCTION drumbeat_api.create_workspace(p_name text, p_timezone text DEFAULT 'UTC')
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    PERFORM drumbeat.require_caller();
    -- An API key is a member of the one workspace it was made for, and every call it makes is about that
    -- workspace; joining a second one would leave it unable to say which.
    IF EXISTS (SELECT 1 FROM drumbeat.api_keys k WHERE k.id = drumbeat.current_user_id()) THEN
        PERFORM drumbeat.raise_error('PT403', 'an API key belongs to its one workspace: create workspaces as a '
            'signed-in user (a JWT) or with `drumbeat workspaces create`');
    END IF;
    IF p_name IS NULL OR pg_catalog.length(pg_catalog.btrim(p_name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 200 characters', 'p_name');
    END IF;
    PERFORM drumbeat.check_timezone(COALESCE(p_timezone, 'UTC'), 'p_timezone');
    INSERT INTO drumbeat.workspaces (id, name, timezone) VALUES (v_id, pg_catalog.btrim(p_name), COALESCE(p_timezone, 'UTC'));
    IF drumbeat.current_user_id() IS NOT NULL THEN
        INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (v_id, drumbeat.current_user_id(), 'owner');
    END IF;
    RETURN v_id;
END
$$;

-- Why: admins rename a workspace or change its time zone (the zone of contacts and sequences that name
-- none). A null argument leaves that setting as it is. A new zone applies to steps planned from then on:
-- a step already planned keeps its instant.
CREATE OR REPLACE FUNCTION drumbeat_api.update_workspace(p_workspace_id uuid, p_name text DEFAULT NULL, p_timezone text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF p_name IS NOT NULL AND pg_catalog.length(pg_catalog.btrim(p_name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM drumbeat.raise_error('PT422', 'must be 1 to 200 characters', 'p_name');
    END IF;
    IF p_timezone IS NOT NULL THEN
        PERFORM drumbeat.check_timezone(p_timezone, 'p_timezone');
    END IF;
    UPDATE drumbeat.workspaces w
    SET name = COALESCE(pg_catalog.btrim(p_name), w.name), timezone = COALESCE(p_timezone, w.timezone)
    WHERE w.id = p_workspace_id;
END
$$;

-- Why: senders are the numbers / from-addresses steps go out from; admins manage them. A number or
-- from-address belongs to one workspace (PT409 when another already uses it): replies to it are routed
-- by it. The operator may share one (drumbeat.share_sender). settings.user_id makes it a member's own
-- sender (a rep's mailbox): the enrollments assigned to that member go out from it.
CREATE OR REPLACE FUNCTION drumbeat_api.create_sender(p_workspace_id uuid, p_channel text, p_address text, p_settings jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid := pg_catalog.gen_random_uuid();
    v_settings jsonb := COALESCE(p_settings, '{}');
    v_address text := pg_catalog.btrim(p_address);
    v_added boolean;
    v_constraint text;
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    IF p_channel IS NULL OR p_channel NOT IN ('sms', 'email') THEN
        PERFORM drumbeat.raise_error('PT422', 'must be sms or email', 'p_channel');
    END IF;
    v_address := CASE p_channel WHEN 'email' THEN pg_catalog.lower(v_address) ELSE v_address END;
    IF p_channel = 'sms' AND v_address !~ '^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$' OR v_address IS NULL THEN
        PERFORM drumbeat.raise_error('PT422', 'an sms sender is an E.164 number (+15551234567) or a Messaging Service SID (MG...)', 'p_address');
    ELSIF p_channel = 'email' AND v_address !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' THEN
        PERFORM drumbeat.raise_error('PT422', 'an email sender is an address such as sales@example.com', 'p_address');
    END IF;
    PERFORM drumbeat.check_object(v_settings, 'p_settings', ARRAY['name', 'rate_per_second', 'daily_cap', 'user_id']);
    PERFORM drumbeat.check_sender_owner(p_workspace_id, v_settings -> 'user_id', 'p_settings.user_id');
    BEGIN
        INSERT INTO drumbeat.senders (id, workspace_id, channel, address, name, rate_per_second, daily_cap, user_id)
        VALUES (v_id, p_workspace_id, p_channel, v_address,
                drumbeat.json_text(v_settings -> 'name', 'p_settings.name', false, 200),
                CASE WHEN v_settings ? 'rate_per_second'
                     THEN drumbeat.json_int(v_settings -> 'rate_per_second', 'p_settings.rate_per_second', 1, 1000) ELSE 1 END,
                CASE WHEN v_settings ? 'daily_cap' THEN drumbeat.json_int(v_settings -> 'daily_cap', 'p_settings.daily_cap', 1, 10000000) END,
                pg_catalog.lower(v_settings ->> 'user_id')::uuid)
        ON CONFLICT ON CONSTRAINT senders_address_unique DO NOTHING;
        v_added := FOUND;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        IF v_constraint <> 'senders_owner_key' THEN
            RAISE;
        END IF;
        -- Its replies and unmatched texts would reach the wrong tenant: sharing is the operator's call.
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format(
            '%s is already used by another workspace: a number or address belongs to one workspace unless the operator shares it (drumbeat senders share)',
            v_address), 'p_address');
    END;
    IF NOT v_added THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('this workspace already has %s sender %s', p_channel, v_address), 'p_address');
    END IF;
    RETURN v_id;
END
$$;

-- Why: a member's own sender (settings.user_id) must belong to a person of the workspace, not an API key;
-- null (or no value) is a shared sender.
CREATE OR REPLACE FUNCTION drumbeat.check_sender_owner(p_workspace_id uuid, p_user_id jsonb, p_field text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_user_id IS NOT NULL AND p_user_id <> 'null'::jsonb AND NOT EXISTS (
            SELECT 1 FROM drumbeat.workspace_members m
            WHERE m.workspace_id = p_workspace_id AND m.user_id::text = pg_catalog.lower(p_user_id #>> '{}')
              AND NOT EXISTS (SELECT 1 FROM drumbeat.api_keys k WHERE k.id = m.user_id)) THEN
        PERFORM drumbeat.raise_error('PT422', 'must be the user id of a member of this workspace (whose own sender this is)', p_field);
    END IF;
END
$$;

-- Why: admins rename a sender, change its pace (rate_per_second, daily_cap: null lifts the cap) or whose own
-- it is (user_id; null: shared). Its channel and address stay: another number is another sender, because
-- deliveries and replies are tied to the address they used. Returns nothing; 404 for another tenant's.
CREATE OR REPLACE FUNCTION drumbeat_api.update_sender(p_sender_id uuid, p_changes jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sender drumbeat.senders := drumbeat.administered_sender(p_sender_id);
    v_changes jsonb := COALESCE(p_changes, '{}');
BEGIN
    PERFORM drumbeat.check_object(v_changes, 'p_changes', ARRAY['name', 'rate_per_second', 'daily_cap', 'user_id']);
    PERFORM drumbeat.check_sender_owner(v_sender.workspace_id, v_changes -> 'user_id', 'p_changes.user_id');
    UPDATE drumbeat.senders se SET
        name = CASE WHEN v_changes ? 'name' THEN drumbeat.json_text(v_changes -> 'name', 'p_changes.name', false, 200)
                    ELSE se.name END,
        rate_per_second = CASE WHEN v_changes ? 'rate_per_second'
                               THEN drumbeat.json_int(v_changes -> 'rate_per_second', 'p_changes.rate_per_second', 1, 1000)
                               ELSE se.rate_per_second END,
        daily_cap = CASE WHEN NOT v_changes ? 'daily_cap' THEN se.daily_cap
                         WHEN v_changes -> 'daily_cap' = 'null'::jsonb THEN NULL
                         ELSE drumbeat.json_int(v_changes -> 'daily_cap', 'p_changes.daily_cap', 1, 10000000) END,
        user_id = CASE WHEN v_changes ? 'user_id' THEN pg_catalog.lower(v_changes ->> 'user_id')::uuid ELSE se.user_id END
    WHERE se.id = p_sender_id;
END
$$;

-- Why: admins remove a sender nothing depends on. One that has sent keeps its deliveries pointing at it (the
-- record of who sent what), one a sequence's settings name would leave that sequence without its sender, and
-- the last sender of a channel would leave an active sequence's steps on that channel with none: each is a
-- PT409 saying so. Its inbox watch and holds go with it.
CREATE OR REPLACE FUNCTION drumbeat_api.delete_sender(p_sender_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sender drumbeat.senders := drumbeat.administered_sender(p_sender_id);
    v_sequence text;
BEGIN
    -- The workspace's senders of that channel, locked: two admins removing its last two at once take turns,
    -- and the second sees that only one is left.
    PERFORM 1 FROM drumbeat.senders se
    WHERE se.workspace_id = v_sender.workspace_id AND se.channel = v_sender.channel
    ORDER BY se.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM drumbeat.deliveries d WHERE d.sender_id = p_sender_id) THEN
        PERFORM drumbeat.raise_error('PT409', 'this sender has sent messages, which keep pointing at it: it stays '
            '(rename it, or name another sender in the sequences'' settings)', 'p_sender_id');
    END IF;
    SELECT s.name INTO v_sequence FROM drumbeat.sequences s
    WHERE s.workspace_id = v_sender.workspace_id AND s.status <> 'archived'
      AND s.settings ->> (v_sender.channel || '_sender_id') = p_sender_id::text
    ORDER BY s.created_at LIMIT 1;
    IF FOUND THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('sequence %L sends from this sender (its settings '
            'name it): name another one there first', v_sequence), 'p_sender_id');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM drumbeat.senders se WHERE se.workspace_id = v_sender.workspace_id
                     AND se.channel = v_sender.channel AND se.id <> p_sender_id) THEN
        SELECT s.name INTO v_sequence FROM drumbeat.sequences s
        WHERE s.workspace_id = v_sender.workspace_id AND s.status = 'active'
          AND EXISTS (SELECT 1 FROM drumbeat.sequence_steps st
                      WHERE st.sequence_id = s.id AND st.kind = v_sender.channel AND st.removed_at IS NULL)
        ORDER BY s.created_at LIMIT 1;
        IF FOUND THEN
            PERFORM drumbeat.raise_error('PT409', pg_catalog.format('this is the workspace''s last %s sender and '
                'active sequence %L has %s steps: add another sender first', v_sender.channel, v_sequence,
                v_sender.channel), 'p_sender_id');
        END IF;
    END IF;
    DELETE FROM drumbeat.senders se WHERE se.id = p_sender_id;
END
$$;

-- Why: the sender a contract function changes: the caller's to see (RLS: PT404 otherwise, as for any
-- other tenant's id) and an admin's to change (PT403).
CREATE OR REPLACE FUNCTION drumbeat.administered_sender(p_sender_id uuid)
RETURNS drumbeat.senders
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sender drumbeat.senders;
BEGIN
    PERFORM drumbeat.require_caller();
    SELECT * INTO v_sender FROM drumbeat.senders se WHERE se.id = p_sender_id;
    IF NOT FOUND THEN
        PERFORM drumbeat.raise_error('PT404', 'sender not found', 'p_sender_id');
    END IF;
    PERFORM drumbeat.require_role(v_sender.workspace_id, 'admin');
    RETURN v_sender;
END
$$;

-- Why: sharing a number or from-address between workspaces (an agency texting for several brands from
-- one number) is the operator's decision (`drumbeat senders share`), never a tenant's: the workspace
-- gets a sender of its own marked shared, the address stays its owner's. Inbound texts to it reach a
-- sharing workspace only when that workspace texted the person (drumbeat.inbound_sms). Returns the
-- sender's id (the existing one when the workspace already has it). Trusted callers only.
CREATE OR REPLACE FUNCTION drumbeat.share_sender(p_workspace_id uuid, p_address text)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_address text := pg_catalog.btrim(p_address);
    v_channel text := CASE WHEN pg_catalog.strpos(p_address, '@') > 0 THEN 'email' ELSE 'sms' END;
    v_owner drumbeat.senders;
    v_id uuid;
BEGIN
    v_address := CASE v_channel WHEN 'email' THEN pg_catalog.lower(v_address) ELSE v_address END;
    IF NOT EXISTS (SELECT 1 FROM drumbeat.workspaces w WHERE w.id = p_workspace_id) THEN
        PERFORM drumbeat.raise_error('PT404', 'workspace not found', 'workspace_id');
    END IF;
    SELECT * INTO v_owner FROM drumbeat.senders se
    WHERE se.channel = v_channel AND se.address = v_address AND NOT se.shared;
    IF v_owner.id IS NULL THEN
        PERFORM drumbeat.raise_error('PT404', pg_catalog.format(
            'no workspace uses %s: its owner adds it first (create_sender), then it can be shared', v_address), 'address');
    END IF;
    IF v_owner.workspace_id = p_workspace_id THEN
        PERFORM drumbeat.raise_error('PT409', pg_catalog.format('this workspace owns %s already', v_address), 'workspace_id');
    END IF;
    INSERT INTO drumbeat.senders (workspace_id, channel, address, name, rate_per_second, daily_cap, shared)
    VALUES (p_workspace_id, v_channel, v_address, v_owner.name, v_owner.rate_per_second, v_owner.daily_cap, true)
    ON CONFLICT ON CONSTRAINT senders_address_unique DO NOTHING
    RETURNING id INTO v_id;
    RETURN COALESCE(v_id, (SELECT se.id FROM drumbeat.senders se WHERE se.workspace_id = p_workspace_id
                                          AND se.channel = v_channel AND se.address = v_address));
END
$$;

-- Why: an owner deletes a workspace and everything in it (members, keys, senders, contacts, sequences,
-- their history): the rows go with it (ON DELETE CASCADE). Irreversible.
CREATE OR REPLACE FUNCTION drumbeat_api.delete_workspace(p_workspace_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'owner');
    DELETE FROM drumbeat.workspaces w WHERE w.id = p_workspace_id;
END
$$;

-- Why: a new inbound secret for the workspace (admins): "dbi_" + 64 hex characters (256 random bits),
-- returned once; only its SHA-256 is kept, and the previous secret stops working at once. Inbound-parse
-- services authenticate with it (HTTP basic auth, user = the workspace id) and can do nothing else.
CREATE OR REPLACE FUNCTION drumbeat_api.rotate_inbound_secret(p_workspace_id uuid)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_secret text := 'dbi_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, '-', '');
BEGIN
    PERFORM drumbeat.require_caller();
    PERFORM drumbeat.require_role(p_workspace_id, 'admin');
    UPDATE drumbeat.workspaces w SET inbound_secret_hash = drumbeat.api_key_hash(v_secret) WHERE w.id = p_workspace_id;
    RETURN v_secret;
END
$$;

-- Why: the inbound email webhook's check of basic-auth credentials (run as drumbeat_worker, before
-- anything is read): the workspace's current inbound secret, or false.
CREATE OR REPLACE FUNCTION drumbeat.inbound_secret_matches(p_workspace_id uuid, p_secret text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE((SELECT w.inbound_secret_hash = drumbeat.api_key_hash(p_secret)
                     FROM drumbeat.workspaces w WHERE w.id = p_workspace_id), false)
$$;

-- Why: the workspace an API key belongs to, for webhooks that take one (the key was authenticated first).
CREATE OR REPLACE FUNCTION drumbeat.api_key_workspace(p_key_id uuid)
RETURNS uuid
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT k.workspace_id FROM drumbeat.api_keys k WHERE k.id = p_key_id AND k.revoked_at IS NULL $$;
