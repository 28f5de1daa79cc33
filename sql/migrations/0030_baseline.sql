-- 0030 baseline: Drumbeat's tables as of migration 0030, in one file. Roles, schemas, tables, indexes,
-- the time zone list, and row-level security switched on (and forced) for every table.
--
-- Numbered migrations hold only what must happen in order: tables, columns, indexes, data moves, drops
-- and renames. Functions, triggers, policies and grants are not here: their current text lives once, in
-- sql/functions/, and `drumbeat migrate` re-applies a file there whenever its content changes.
--
-- This file replaces the thirty migrations that built the schema up to 0030 (they restated functions in
-- full each time one changed; their history is in git). A database on which all of them were applied
-- takes this file as applied; a fresh one runs it. A database part-way through them must first be
-- brought to 0030 by an earlier Drumbeat release.
-- replaces: 0001_foundation.sql 0002_tables.sql 0003_security.sql 0004_calculus.sql
-- replaces: 0005_state_machine.sql 0006_definitions.sql 0007_api_workspaces.sql 0008_api_sequences.sql
-- replaces: 0009_api_enrollments.sql 0010_api_events.sql 0011_dispatch.sql 0012_outbox.sql
-- replaces: 0013_inbound.sql 0014_tracking.sql 0015_dispatch_speed.sql 0016_api_keys.sql
-- replaces: 0017_contacts.sql 0018_tracking_events.sql 0019_whole_numbers.sql 0020_running_clock.sql
-- replaces: 0021_worker_queue_grants.sql 0022_events_on_the_clock.sql
-- replaces: 0023_late_claims_respect_windows.sql 0024_replies_count_for_their_step.sql
-- replaces: 0025_holiday_calendars.sql 0026_claims_settle_steps_already_sent.sql
-- replaces: 0027_shared_numbers_inbound.sql 0028_deactivated_steps.sql 0029_bounces_at_send.sql
-- replaces: 0030_future_starts_hold.sql
--
-- `drumbeat migrate --sql` prints the script for a database (`--from-scratch` for an empty one) for
-- review and for applying with psql; see README, "Applying migrations".

-- Roles. Supabase already has anon/authenticated/service_role; plain Postgres gets them here.
-- service_role bypasses RLS as it does on Supabase (only when we may grant that attribute).
DO $roles$
DECLARE
    v_can_bypass boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        IF v_can_bypass THEN
            CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
        ELSE
            CREATE ROLE service_role NOLOGIN NOINHERIT;
        END IF;
    END IF;
    -- Owns the few SECURITY DEFINER helpers that RLS policies need (membership look-ups), so that
    -- no policy has to query the table it protects and nothing else runs with elevated rights.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_definer') THEN
        CREATE ROLE drumbeat_definer NOLOGIN NOINHERIT;
    END IF;
END
$roles$;

-- The role applying migrations must be able to hand objects to drumbeat_definer.
GRANT drumbeat_definer TO current_user;

-- The dispatcher's role: operators create a login role in it (CREATE ROLE drumbeat_worker_login LOGIN
-- IN ROLE drumbeat_worker). It sees every tenant's rows (it serves them all) and executes only the
-- worker-side functions.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_worker') THEN
        CREATE ROLE drumbeat_worker NOLOGIN;
    END IF;
END
$roles$;

-- The role the HTTP API's login role belongs to: it may look keys up (before any user is known) and
-- act as `authenticated`. Operators: CREATE ROLE drumbeat_api_login LOGIN PASSWORD '...' IN ROLE drumbeat_authenticator.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drumbeat_authenticator') THEN
        CREATE ROLE drumbeat_authenticator NOLOGIN;
    END IF;
END
$roles$;
GRANT authenticated TO drumbeat_authenticator;
-- The API's webhook handlers (Twilio callbacks, tracking links) and /metrics act for no user: the API's
-- login role switches to drumbeat_worker for them, one transaction at a time (SET LOCAL ROLE). It is the
-- narrowest existing role that can read a delivery of any tenant and apply engagement (INSERT events,
-- UPDATE contacts/enrollments/tasks, EXECUTE the drumbeat helpers). service_role could too, but it may
-- also DELETE anything and call the whole contract: more than a webhook needs.
GRANT drumbeat_worker TO drumbeat_authenticator;

CREATE SCHEMA IF NOT EXISTS drumbeat;
COMMENT ON SCHEMA drumbeat IS 'Drumbeat private schema: tables and internal functions. Never expose over REST.';

CREATE SCHEMA IF NOT EXISTS drumbeat_api;
COMMENT ON SCHEMA drumbeat_api IS 'Drumbeat public contract: SECURITY INVOKER functions called over RPC and by the HTTP API.';

-- IANA zone names, copied from pg_timezone_names (a 30 ms catalog scan) into a table so that a
-- contact's time zone is checked by a foreign key at index speed. drumbeat.refresh_timezones()
-- re-reads it after a tzdata upgrade.
CREATE TABLE drumbeat.timezones (
    name text PRIMARY KEY
);
COMMENT ON TABLE drumbeat.timezones IS 'Reference list of valid IANA time zone names (from pg_timezone_names).';

INSERT INTO drumbeat.timezones (name) SELECT name FROM pg_catalog.pg_timezone_names;

CREATE TABLE drumbeat.workspaces (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC' REFERENCES drumbeat.timezones (name),
    settings jsonb NOT NULL DEFAULT '{}',
    sms_credits bigint,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT workspaces_name_length CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    CONSTRAINT workspaces_settings_is_object CHECK (pg_catalog.jsonb_typeof(settings) = 'object'),
    CONSTRAINT workspaces_sms_credits_not_negative CHECK (sms_credits IS NULL OR sms_credits >= 0)
);
COMMENT ON COLUMN drumbeat.workspaces.sms_credits IS 'SMS segments left to send; NULL means unlimited.';

CREATE TABLE drumbeat.workspace_members (
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'member',
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (workspace_id, user_id),
    CONSTRAINT workspace_members_role_known CHECK (role IN ('owner', 'admin', 'member'))
);

CREATE INDEX workspace_members_user_idx ON drumbeat.workspace_members (user_id, workspace_id);
COMMENT ON INDEX drumbeat.workspace_members_user_idx IS 'Serves drumbeat.member_workspace_ids(): the caller''s workspaces, used by every RLS policy.';

CREATE TABLE drumbeat.api_keys (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    prefix text NOT NULL,
    hash text NOT NULL,
    role text NOT NULL DEFAULT 'member',
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_used_at timestamptz,
    revoked_at timestamptz,
    CONSTRAINT api_keys_prefix_unique UNIQUE (prefix),
    CONSTRAINT api_keys_role_known CHECK (role IN ('owner', 'admin', 'member')),
    CONSTRAINT api_keys_hash_is_sha256 CHECK (hash ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE drumbeat.api_keys IS 'API keys: only a SHA-256 hash of the secret is stored; the prefix identifies the key.';

CREATE INDEX api_keys_workspace_idx ON drumbeat.api_keys (workspace_id);
COMMENT ON INDEX drumbeat.api_keys_workspace_idx IS 'Serves listing a workspace''s keys and the workspace_id foreign key.';

CREATE TABLE drumbeat.senders (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    channel text NOT NULL,
    address text NOT NULL,
    name text,
    rate_per_second numeric NOT NULL DEFAULT 1,
    daily_cap integer,
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT senders_channel_known CHECK (channel IN ('sms', 'email')),
    CONSTRAINT senders_address_fits_channel CHECK (
        (channel = 'sms' AND address ~ '^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$')
        OR (channel = 'email' AND address ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' AND pg_catalog.length(address) <= 254)),
    CONSTRAINT senders_rate_positive CHECK (rate_per_second > 0),
    CONSTRAINT senders_daily_cap_positive CHECK (daily_cap IS NULL OR daily_cap > 0),
    CONSTRAINT senders_settings_is_object CHECK (pg_catalog.jsonb_typeof(settings) = 'object'),
    CONSTRAINT senders_address_unique UNIQUE (workspace_id, channel, address),
    CONSTRAINT senders_workspace_id_key UNIQUE (workspace_id, id)
);
COMMENT ON INDEX drumbeat.senders_address_unique IS 'Serves choosing a workspace''s default sender per channel and inbound routing by address.';

CREATE TABLE drumbeat.contacts (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    phone text,
    email text,
    first_name text,
    last_name text,
    company text,
    title text,
    timezone text REFERENCES drumbeat.timezones (name),
    fields jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    sms_opted_out_at timestamptz,
    email_opted_out_at timestamptz,
    bounced_at timestamptz,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT contacts_reachable CHECK (phone IS NOT NULL OR email IS NOT NULL),
    CONSTRAINT contacts_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    CONSTRAINT contacts_email_shape CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' AND pg_catalog.length(email) <= 254),
    CONSTRAINT contacts_email_lowercase CHECK (email = pg_catalog.lower(email)),
    CONSTRAINT contacts_fields_is_object CHECK (pg_catalog.jsonb_typeof(fields) = 'object'),
    CONSTRAINT contacts_workspace_id_key UNIQUE (workspace_id, id)
);
COMMENT ON TABLE drumbeat.contacts IS 'Contacts. Soft-deleted rows keep their opt-outs, so a re-import can never re-subscribe anyone.';

CREATE UNIQUE INDEX contacts_workspace_phone_key ON drumbeat.contacts (workspace_id, phone) WHERE phone IS NOT NULL;
COMMENT ON INDEX drumbeat.contacts_workspace_phone_key IS 'One contact per phone per workspace; serves upsert matching and inbound SMS routing.';

CREATE UNIQUE INDEX contacts_workspace_email_key ON drumbeat.contacts (workspace_id, email) WHERE email IS NOT NULL;
COMMENT ON INDEX drumbeat.contacts_workspace_email_key IS 'One contact per email per workspace; serves upsert matching on email.';

CREATE TABLE drumbeat.sequences (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text,
    status text NOT NULL DEFAULT 'draft',
    channel text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}',
    exit_conditions jsonb NOT NULL DEFAULT '{}',
    version integer NOT NULL DEFAULT 1,
    scheduled_start_at timestamptz,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    activated_at timestamptz,
    archived_at timestamptz,
    CONSTRAINT sequences_name_length CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    CONSTRAINT sequences_status_known CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    CONSTRAINT sequences_channel_known CHECK (channel IN ('sms', 'email', 'multi')),
    CONSTRAINT sequences_settings_is_object CHECK (pg_catalog.jsonb_typeof(settings) = 'object'),
    CONSTRAINT sequences_exit_conditions_is_object CHECK (pg_catalog.jsonb_typeof(exit_conditions) = 'object'),
    CONSTRAINT sequences_version_positive CHECK (version >= 1),
    CONSTRAINT sequences_archived_has_time CHECK ((status = 'archived') = (archived_at IS NOT NULL)),
    CONSTRAINT sequences_workspace_id_key UNIQUE (workspace_id, id)
);

CREATE INDEX sequences_workspace_idx ON drumbeat.sequences (workspace_id, created_at);
COMMENT ON INDEX drumbeat.sequences_workspace_idx IS 'Serves listing a workspace''s sequences, newest last.';

CREATE TABLE drumbeat.sequence_steps (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    sequence_id uuid NOT NULL,
    position integer NOT NULL,
    kind text NOT NULL,
    name text,
    delay interval NOT NULL DEFAULT '0',
    send_at time,
    subject text,
    body text,
    html_body text,
    variants jsonb NOT NULL DEFAULT '[]',
    condition jsonb,
    action jsonb,
    task_description text,
    is_active boolean NOT NULL DEFAULT true,
    removed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT sequence_steps_position_positive CHECK (position >= 1),
    CONSTRAINT sequence_steps_kind_known CHECK (kind IN ('sms', 'email', 'manual_email', 'call', 'linkedin', 'task', 'condition', 'action')),
    CONSTRAINT sequence_steps_delay_zero_or_minute CHECK (delay = '0' OR delay >= '1 minute'),
    CONSTRAINT sequence_steps_delay_no_months CHECK (pg_catalog.date_part('month', delay) = 0 AND pg_catalog.date_part('year', delay) = 0),
    CONSTRAINT sequence_steps_message_has_body CHECK (kind NOT IN ('sms', 'email') OR body IS NOT NULL),
    CONSTRAINT sequence_steps_email_has_subject CHECK (kind <> 'email' OR subject IS NOT NULL),
    CONSTRAINT sequence_steps_condition_has_rule CHECK ((kind = 'condition') = (condition IS NOT NULL)),
    CONSTRAINT sequence_steps_action_has_rule CHECK ((kind = 'action') = (action IS NOT NULL)),
    CONSTRAINT sequence_steps_variants_is_array CHECK (pg_catalog.jsonb_typeof(variants) = 'array'),
    -- Deferred so that a reorder can swap positions inside one statement; removed steps keep
    -- their last position for the record but no longer hold it.
    CONSTRAINT sequence_steps_position_unique EXCLUDE USING btree (sequence_id WITH =, position WITH =)
        WHERE (removed_at IS NULL) DEFERRABLE INITIALLY DEFERRED,
    -- Composite keys keep every reference inside one tenant: a row of workspace A can never point at
    -- workspace B's rows, whatever a direct INSERT says.
    CONSTRAINT sequence_steps_sequence_fkey FOREIGN KEY (workspace_id, sequence_id)
        REFERENCES drumbeat.sequences (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT sequence_steps_sequence_id_key UNIQUE (workspace_id, sequence_id, id),
    CONSTRAINT sequence_steps_workspace_id_key UNIQUE (workspace_id, id)
);
COMMENT ON TABLE drumbeat.sequence_steps IS 'Steps keep stable ids across edits; removed steps stay (removed_at) because deliveries and events point at them.';
COMMENT ON INDEX drumbeat.sequence_steps_position_unique IS 'One live step per position; serves finding a sequence''s steps in order and the next step after a position.';

CREATE TABLE drumbeat.enrollments (
    -- Time-ordered ids (UUIDv7 layout, RFC 9562: 48 bits of Unix milliseconds, then random bits): bulk
    -- enrollment appends to the right edge of the id indexes instead of dirtying random leaf pages.
    id uuid PRIMARY KEY DEFAULT pg_catalog.encode(pg_catalog.set_bit(pg_catalog.set_bit(pg_catalog.overlay(
        pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), pg_catalog.substr(pg_catalog.int8send(
        pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint), 3),
        1, 6), 52, 1), 53, 1), 'hex')::uuid,
    -- No foreign key of its own: the composite keys to contacts and sequence_steps below imply the
    -- workspace, and deleting a workspace cascades through them (one RI probe less per row).
    workspace_id uuid NOT NULL,
    sequence_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    status text NOT NULL,
    current_step_id uuid NOT NULL,
    step_done_at timestamptz NOT NULL,
    step_attempt integer NOT NULL DEFAULT 1,
    next_action_at timestamptz,
    assigned_to uuid,
    enrolled_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at timestamptz,
    paused_at timestamptz,
    completed_at timestamptz,
    exit_reason text,
    metadata jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT enrollments_status_known CHECK (status IN ('scheduled', 'active', 'paused', 'completed', 'replied', 'bounced', 'unsubscribed', 'cancelled', 'failed')),
    -- An active enrollment with no next_action_at waits for a manual step's task to be completed.
    CONSTRAINT enrollments_scheduled_has_time CHECK (status <> 'scheduled' OR next_action_at IS NOT NULL),
    CONSTRAINT enrollments_paused_not_due CHECK (status <> 'paused' OR next_action_at IS NULL),
    CONSTRAINT enrollments_step_attempt_range CHECK (step_attempt BETWEEN 1 AND 10),
    CONSTRAINT enrollments_ended_has_time CHECK ((status IN ('completed', 'replied', 'bounced', 'unsubscribed', 'cancelled', 'failed')) = (completed_at IS NOT NULL)),
    CONSTRAINT enrollments_ended_not_due CHECK (completed_at IS NULL OR next_action_at IS NULL),
    CONSTRAINT enrollments_paused_has_time CHECK ((status = 'paused') = (paused_at IS NOT NULL)),
    CONSTRAINT enrollments_metadata_is_object CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'),
    CONSTRAINT enrollments_contact_fkey FOREIGN KEY (workspace_id, contact_id)
        REFERENCES drumbeat.contacts (workspace_id, id) ON DELETE CASCADE,
    -- One key checks workspace, sequence and step together: the step an enrollment is at belongs to its
    -- own sequence, in its own workspace (and the sequence to the workspace, through sequence_steps).
    -- One foreign-key probe per row instead of two matters for bulk enrollment.
    CONSTRAINT enrollments_current_step_fkey FOREIGN KEY (workspace_id, sequence_id, current_step_id)
        REFERENCES drumbeat.sequence_steps (workspace_id, sequence_id, id) ON DELETE CASCADE,
    CONSTRAINT enrollments_workspace_id_key UNIQUE (workspace_id, id)
);
COMMENT ON COLUMN drumbeat.enrollments.step_done_at IS 'The "done" instant of DESIGN.md: when the previous step was done (the start, before the first step).';
COMMENT ON COLUMN drumbeat.enrollments.step_attempt IS 'Which attempt of its current step the enrollment is on (retries of transient send errors).';
COMMENT ON COLUMN drumbeat.enrollments.current_step_id IS 'The step this enrollment waits on; once ended, the step it stopped at.';

CREATE UNIQUE INDEX enrollments_one_live_per_contact ON drumbeat.enrollments (sequence_id, contact_id)
    WHERE status IN ('scheduled', 'active', 'paused');
COMMENT ON INDEX drumbeat.enrollments_one_live_per_contact IS 'At most one live enrollment per contact per sequence; serves enroll_contacts'' ON CONFLICT and a sequence''s live enrollments.';

CREATE INDEX enrollments_due_idx ON drumbeat.enrollments (next_action_at)
    WHERE status IN ('scheduled', 'active');
COMMENT ON INDEX drumbeat.enrollments_due_idx IS 'Partial index of waiting enrollments by due time: serves the dispatcher''s claim (next_action_at <= now, FOR UPDATE SKIP LOCKED).';

CREATE INDEX enrollments_contact_idx ON drumbeat.enrollments (contact_id, status);
COMMENT ON INDEX drumbeat.enrollments_contact_idx IS 'Serves record_event (a contact''s live enrollments) and a contact''s enrollment list.';

CREATE INDEX enrollments_sequence_status_idx ON drumbeat.enrollments (sequence_id, status);
COMMENT ON INDEX drumbeat.enrollments_sequence_status_idx IS 'Serves sequence_stats, listing a sequence''s enrollments by status, and update_sequence re-planning its live enrollments.';

CREATE TABLE drumbeat.deliveries (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    enrollment_id uuid NOT NULL,
    step_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    sender_id uuid,
    variant text,
    channel text NOT NULL,
    status text NOT NULL DEFAULT 'sending',
    idempotency_key text NOT NULL,
    attempt integer NOT NULL DEFAULT 1,
    scheduled_for timestamptz NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at timestamptz,
    delivered_at timestamptz,
    provider_message_id text,
    error_code text,
    error_message text,
    subject text,
    body text,
    segments integer,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sequence_id uuid,
    to_address text,
    CONSTRAINT deliveries_idempotency_key_unique UNIQUE (idempotency_key),
    CONSTRAINT deliveries_channel_known CHECK (channel IN ('sms', 'email')),
    CONSTRAINT deliveries_status_known CHECK (status IN ('sending', 'sent', 'delivered', 'failed', 'undelivered', 'bounced', 'unknown')),
    CONSTRAINT deliveries_attempt_range CHECK (attempt BETWEEN 1 AND 10),
    CONSTRAINT deliveries_sent_has_time CHECK (status NOT IN ('sent', 'delivered') OR sent_at IS NOT NULL),
    CONSTRAINT deliveries_enrollment_fkey FOREIGN KEY (workspace_id, enrollment_id)
        REFERENCES drumbeat.enrollments (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT deliveries_step_fkey FOREIGN KEY (workspace_id, step_id) REFERENCES drumbeat.sequence_steps (workspace_id, id),
    CONSTRAINT deliveries_contact_fkey FOREIGN KEY (workspace_id, contact_id)
        REFERENCES drumbeat.contacts (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT deliveries_sender_fkey FOREIGN KEY (workspace_id, sender_id) REFERENCES drumbeat.senders (workspace_id, id),
    CONSTRAINT deliveries_workspace_id_key UNIQUE (workspace_id, id)
);
COMMENT ON COLUMN drumbeat.deliveries.to_address IS 'The phone number or email address the message went to (the contact may change later).';
COMMENT ON COLUMN drumbeat.deliveries.sequence_id IS 'The enrollment''s sequence, kept here so that max_per_day is one index range.';
COMMENT ON INDEX drumbeat.deliveries_idempotency_key_unique IS 'Never send twice: one delivery per (enrollment, step, attempt).';

CREATE INDEX deliveries_enrollment_idx ON drumbeat.deliveries (enrollment_id, step_id);
COMMENT ON INDEX drumbeat.deliveries_enrollment_idx IS 'Serves an enrollment''s deliveries and condition checks on an earlier step''s delivery.';

CREATE INDEX deliveries_step_status_idx ON drumbeat.deliveries (step_id, status);
COMMENT ON INDEX drumbeat.deliveries_step_status_idx IS 'Serves sequence_stats per step.';

CREATE INDEX deliveries_sending_idx ON drumbeat.deliveries (claimed_at) WHERE status = 'sending';
COMMENT ON INDEX drumbeat.deliveries_sending_idx IS 'Serves recovery of deliveries left in sending past their lease.';

CREATE INDEX deliveries_provider_message_idx ON drumbeat.deliveries (provider_message_id) WHERE provider_message_id IS NOT NULL;
COMMENT ON INDEX drumbeat.deliveries_provider_message_idx IS 'Serves provider status callbacks, which name the provider''s message id.';

CREATE INDEX deliveries_sender_claimed_idx ON drumbeat.deliveries (sender_id, claimed_at);
COMMENT ON INDEX drumbeat.deliveries_sender_claimed_idx IS 'Serves the sender caps at claim: deliveries of a sender in the last second and since local midnight.';

CREATE INDEX deliveries_sequence_claimed_idx ON drumbeat.deliveries (sequence_id, claimed_at);
COMMENT ON INDEX drumbeat.deliveries_sequence_claimed_idx IS 'Serves the sequence''s max_per_day at claim: its deliveries since local midnight.';

-- Bounded-window reads over recent deliveries (/metrics: deliveries per status and send lateness over
-- the last hour). BRIN: deliveries are appended in claim order, and a BRIN index costs the dispatcher's
-- hot INSERT path next to nothing (a btree on claimed_at would cost one more index insert per delivery).
CREATE INDEX deliveries_claimed_at_brin ON drumbeat.deliveries USING brin (claimed_at) WITH (autosummarize = on);
COMMENT ON INDEX drumbeat.deliveries_claimed_at_brin IS 'Serves /metrics: deliveries claimed in the last hour (per status, send lateness) without scanning the whole table.';

CREATE TABLE drumbeat.tasks (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    enrollment_id uuid NOT NULL,
    step_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    kind text NOT NULL,
    title text NOT NULL,
    description text,
    assigned_to uuid,
    status text NOT NULL DEFAULT 'pending',
    due_at timestamptz NOT NULL,
    completed_at timestamptz,
    completed_by uuid,
    outcome text,
    notes text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT tasks_kind_known CHECK (kind IN ('manual_email', 'call', 'linkedin', 'task')),
    CONSTRAINT tasks_status_known CHECK (status IN ('pending', 'completed', 'cancelled')),
    CONSTRAINT tasks_completed_has_time CHECK ((status = 'pending') = (completed_at IS NULL)),
    CONSTRAINT tasks_enrollment_fkey FOREIGN KEY (workspace_id, enrollment_id)
        REFERENCES drumbeat.enrollments (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT tasks_step_fkey FOREIGN KEY (workspace_id, step_id) REFERENCES drumbeat.sequence_steps (workspace_id, id),
    CONSTRAINT tasks_contact_fkey FOREIGN KEY (workspace_id, contact_id)
        REFERENCES drumbeat.contacts (workspace_id, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX tasks_one_pending_per_enrollment ON drumbeat.tasks (enrollment_id) WHERE status = 'pending';
COMMENT ON INDEX drumbeat.tasks_one_pending_per_enrollment IS 'An enrollment waits on at most one task; serves cancelling it when the enrollment exits.';

CREATE INDEX tasks_assignee_idx ON drumbeat.tasks (workspace_id, assigned_to, status, due_at);
COMMENT ON INDEX drumbeat.tasks_assignee_idx IS 'Serves the task list: by assignee, status, due date.';

CREATE TABLE drumbeat.events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    kind text NOT NULL,
    contact_id uuid,
    sequence_id uuid,
    enrollment_id uuid,
    step_id uuid,
    delivery_id uuid,
    actor_id uuid,
    payload jsonb NOT NULL DEFAULT '{}',
    -- Partition-ready: the time column is in the key, and no foreign key points here or from
    -- here to rows that may be deleted, so the table can become PARTITION BY RANGE (occurred_at).
    PRIMARY KEY (id, occurred_at),
    -- kind ~ '^[a-z][a-z_]{1,39}$' without running a regex for each of 100k bulk 'enrolled' events.
    CONSTRAINT events_kind_format CHECK (pg_catalog.length(kind) BETWEEN 2 AND 40 AND pg_catalog.ascii(kind) BETWEEN 97 AND 122
        AND pg_catalog.ltrim(kind, 'abcdefghijklmnopqrstuvwxyz_') = ''),
    CONSTRAINT events_payload_is_object CHECK (pg_catalog.jsonb_typeof(payload) = 'object')
);
COMMENT ON TABLE drumbeat.events IS 'Append-only audit and engagement log: state transitions, sends, replies, opens, edits.';

CREATE INDEX events_enrollment_idx ON drumbeat.events (enrollment_id, occurred_at) WHERE enrollment_id IS NOT NULL;
COMMENT ON INDEX drumbeat.events_enrollment_idx IS 'Serves an enrollment''s timeline and condition checks (did this enrollment see a reply/open/click).';

-- 'enrolled' rows (one per enrollment, written in bulk) stay out of these two: a contact's or a
-- sequence's enrollments are found through the enrollments indexes.
CREATE INDEX events_contact_kind_idx ON drumbeat.events (contact_id, kind, occurred_at)
    WHERE contact_id IS NOT NULL AND kind <> 'enrolled';
COMMENT ON INDEX drumbeat.events_contact_kind_idx IS 'Serves a contact''s engagement look-ups by kind (conditions: did they reply/open/click).';

CREATE INDEX events_sequence_kind_idx ON drumbeat.events (sequence_id, kind, step_id)
    WHERE sequence_id IS NOT NULL AND kind <> 'enrolled';
COMMENT ON INDEX drumbeat.events_sequence_kind_idx IS 'Serves sequence_stats: engagement counts per step.';

CREATE TABLE drumbeat.holidays (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id uuid REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    calendar text,
    day date NOT NULL,
    name text,
    CONSTRAINT holidays_owner_one_of CHECK ((workspace_id IS NULL) <> (calendar IS NULL)),
    CONSTRAINT holidays_calendar_format CHECK (calendar ~ '^[A-Za-z0-9_-]{1,40}$')
);
COMMENT ON TABLE drumbeat.holidays IS 'Days without sends: a workspace''s own list, or a named shared calendar a workspace opts into (settings.holiday_calendar).';

CREATE UNIQUE INDEX holidays_workspace_day_key ON drumbeat.holidays (workspace_id, day) WHERE workspace_id IS NOT NULL;
COMMENT ON INDEX drumbeat.holidays_workspace_day_key IS 'Serves the scheduler''s "is this local day a holiday" check for a workspace.';

CREATE UNIQUE INDEX holidays_calendar_day_key ON drumbeat.holidays (calendar, day) WHERE calendar IS NOT NULL;
COMMENT ON INDEX drumbeat.holidays_calendar_day_key IS 'Serves the same check against a shared calendar.';

-- Primary keys serve look-ups by id (every contract function taking an id, and the foreign keys).
COMMENT ON INDEX drumbeat.timezones_pkey IS 'Serves the time zone foreign keys: is this an IANA zone name.';
COMMENT ON INDEX drumbeat.workspaces_pkey IS 'Serves look-ups by workspace id and every workspace_id foreign key.';
COMMENT ON INDEX drumbeat.workspace_members_pkey IS 'Serves drumbeat.workspace_role(): the caller''s role in one workspace.';
COMMENT ON INDEX drumbeat.api_keys_pkey IS 'Serves revoking a key by id.';
COMMENT ON INDEX drumbeat.api_keys_prefix_unique IS 'Serves authenticating a request: find the key by its public prefix, then compare hashes.';
COMMENT ON INDEX drumbeat.senders_pkey IS 'Serves look-ups by sender id (settings.sms_sender_id / email_sender_id).';
COMMENT ON INDEX drumbeat.contacts_pkey IS 'Serves look-ups by contact id (enroll_contacts, record_event, preview_schedule).';
COMMENT ON INDEX drumbeat.sequences_pkey IS 'Serves look-ups by sequence id (every sequence function).';
COMMENT ON INDEX drumbeat.sequence_steps_pkey IS 'Serves look-ups by step id (update_sequence matching steps by id, planned_at).';
COMMENT ON INDEX drumbeat.enrollments_pkey IS 'Serves look-ups by enrollment id (pause/resume/cancel/skip, the dispatcher''s record).';
COMMENT ON INDEX drumbeat.deliveries_pkey IS 'Serves look-ups by delivery id (record, tracking links).';
COMMENT ON INDEX drumbeat.tasks_pkey IS 'Serves complete_task.';
COMMENT ON INDEX drumbeat.events_pkey IS 'Identity of an event (append-only; the time is in the key for partitioning).';
COMMENT ON INDEX drumbeat.holidays_pkey IS 'Identity of a holiday row.';

-- Targets of the composite (workspace_id, id) foreign keys that keep references inside one tenant.
COMMENT ON INDEX drumbeat.senders_workspace_id_key IS 'Serves the tenant-safe foreign key from deliveries.sender_id.';
COMMENT ON INDEX drumbeat.contacts_workspace_id_key IS 'Serves the tenant-safe foreign keys from enrollments, deliveries and tasks.';
COMMENT ON INDEX drumbeat.sequences_workspace_id_key IS 'Serves the tenant-safe foreign keys from sequence_steps and enrollments.';
COMMENT ON INDEX drumbeat.sequence_steps_sequence_id_key IS 'Serves the foreign key that keeps an enrollment''s current step inside its own sequence.';
COMMENT ON INDEX drumbeat.sequence_steps_workspace_id_key IS 'Serves the tenant-safe foreign keys from deliveries and tasks.';
COMMENT ON INDEX drumbeat.deliveries_workspace_id_key IS 'Serves the tenant-safe foreign key from the outbox.';
COMMENT ON INDEX drumbeat.enrollments_workspace_id_key IS 'Serves the tenant-safe foreign keys from deliveries and tasks.';

CREATE TABLE drumbeat.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    delivery_id uuid NOT NULL,
    channel text NOT NULL,
    to_address text NOT NULL,
    from_address text NOT NULL,
    subject text,
    text_body text NOT NULL,
    html_body text,
    headers jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT outbox_channel_known CHECK (channel IN ('sms', 'email')),
    CONSTRAINT outbox_headers_is_object CHECK (pg_catalog.jsonb_typeof(headers) = 'object'),
    CONSTRAINT outbox_delivery_unique UNIQUE (delivery_id),
    CONSTRAINT outbox_delivery_fkey FOREIGN KEY (workspace_id, delivery_id)
        REFERENCES drumbeat.deliveries (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE drumbeat.outbox IS 'Messages the outbox transport recorded instead of sending them.';
COMMENT ON INDEX drumbeat.outbox_pkey IS 'Serves reading the outbox in order.';
COMMENT ON INDEX drumbeat.outbox_delivery_unique IS 'One outbox row per delivery: recording a delivery twice is a no-op.';

CREATE INDEX outbox_workspace_idx ON drumbeat.outbox (workspace_id, id);
COMMENT ON INDEX drumbeat.outbox_workspace_idx IS 'Serves listing a workspace''s outbox, newest last.';

-- Row-level security, enabled and forced (the owner is not exempt) on every table. The policies are in
-- sql/functions/security.sql: with none, a table shows nothing to anyone but a superuser.
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['timezones', 'workspaces', 'workspace_members', 'api_keys', 'senders',
        'contacts', 'sequences', 'sequence_steps', 'enrollments', 'deliveries', 'tasks', 'events', 'holidays',
        'outbox']
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE drumbeat.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE pg_catalog.format('ALTER TABLE drumbeat.%I FORCE ROW LEVEL SECURITY', v_table);
    END LOOP;
END
$rls$;
