-- Every privilege Drumbeat's roles hold on its schemas, tables and functions, in one place: what each
-- role may touch is read here, not pieced together from history. Applied last, and again whenever any
-- other file in sql/functions/ is, because a new function starts out executable by PUBLIC. Everything is
-- revoked from the project's roles first, so a grant removed here is gone from the database too (all in
-- the migrator's one transaction: no caller ever sees the gap).
--
-- Roles: authenticated (Supabase users and HTTP API callers: reads its workspaces under RLS, changes
-- state only by calling drumbeat_api), drumbeat_contract (owns the drumbeat_api functions, which run as
-- it: under RLS scoped to the caller, it writes what the contract writes), service_role (trusted server
-- side), drumbeat_worker (the dispatcher and the API's webhooks), drumbeat_definer (owns the few SECURITY
-- DEFINER look-ups), drumbeat_authenticator (the API's login role: key look-up, /readyz). anon gets nothing.

-- Schemas.
REVOKE ALL ON SCHEMA drumbeat, drumbeat_api FROM PUBLIC, anon, authenticated, service_role, drumbeat_worker, drumbeat_definer, drumbeat_contract, drumbeat_authenticator;
GRANT USAGE ON SCHEMA drumbeat TO authenticated, service_role, drumbeat_definer, drumbeat_contract, drumbeat_worker, drumbeat_authenticator;
GRANT USAGE ON SCHEMA drumbeat_api TO authenticated, service_role, drumbeat_contract;

-- The migrator's bookkeeping (created by `drumbeat migrate` and by the scripts it prints; absent when
-- these files are run by hand): /readyz compares it with the files the API ships.
DO $bookkeeping$
BEGIN
    IF pg_catalog.to_regclass('drumbeat_meta.schema_migrations') IS NOT NULL THEN
        REVOKE ALL ON SCHEMA drumbeat_meta FROM PUBLIC, anon, authenticated, service_role, drumbeat_worker,
            drumbeat_definer, drumbeat_contract, drumbeat_authenticator;
        REVOKE ALL ON drumbeat_meta.schema_migrations FROM PUBLIC, anon, authenticated, service_role,
            drumbeat_worker, drumbeat_definer, drumbeat_authenticator;
        GRANT USAGE ON SCHEMA drumbeat_meta TO drumbeat_authenticator;
        GRANT SELECT ON drumbeat_meta.schema_migrations TO drumbeat_authenticator;
    END IF;
END
$bookkeeping$;

-- Tables and sequences (column grants where a role may change one column only).
REVOKE ALL ON ALL TABLES IN SCHEMA drumbeat FROM PUBLIC, anon, authenticated, service_role, drumbeat_worker, drumbeat_definer, drumbeat_contract, drumbeat_authenticator;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA drumbeat FROM PUBLIC, anon, authenticated, service_role, drumbeat_worker, drumbeat_definer, drumbeat_contract, drumbeat_authenticator;
-- Tenants read their own workspaces' rows (RLS) and change nothing directly; an API key's hash stays hidden.
GRANT SELECT ON TABLE drumbeat.channel_holds, drumbeat.contacts, drumbeat.deliveries, drumbeat.enrollments,
    drumbeat.events, drumbeat.holidays, drumbeat.outbox, drumbeat.senders, drumbeat.sequence_steps,
    drumbeat.sequences, drumbeat.tasks, drumbeat.timezones, drumbeat.workspace_members TO authenticated;
GRANT SELECT (id, workspace_id, name, prefix, role, created_by, created_at, last_used_at, revoked_at)
    ON TABLE drumbeat.api_keys TO authenticated;
GRANT SELECT (id, name, timezone, settings, sms_credits, created_at) ON TABLE drumbeat.workspaces TO authenticated;
GRANT SELECT (sender_id, workspace_id, host, port, security, username, folder, uidvalidity, last_uid, checked_at,
    error, created_at, updated_at) ON TABLE drumbeat.sender_mailboxes TO authenticated;
-- The contract writes for them; events stay append-only (no UPDATE or DELETE for anyone but service_role).
GRANT SELECT ON TABLE drumbeat.channel_holds, drumbeat.deliveries, drumbeat.outbox, drumbeat.timezones TO
    drumbeat_contract;
GRANT SELECT, INSERT ON TABLE drumbeat.events TO drumbeat_contract;
-- Erasure on request (drumbeat_api.erase_contact) is the one exception to append-only events and to the
-- worker's own deliveries and outbox: it wipes the person's texts and addresses (event payloads, a
-- message's address and text, the outbox copy); the rows, their kinds, statuses and times stay.
GRANT UPDATE (payload) ON TABLE drumbeat.events TO drumbeat_contract;
GRANT UPDATE (to_address, subject, body, error_message) ON TABLE drumbeat.deliveries TO drumbeat_contract;
GRANT DELETE ON TABLE drumbeat.outbox TO drumbeat_contract;
GRANT SELECT, INSERT ON TABLE drumbeat.erased_identities TO drumbeat_contract;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.erased_identities TO service_role;
-- The HTTP API's idempotency keys: only its two functions touch them, as the contract, for the caller's own.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.idempotency_keys TO drumbeat_contract, service_role;
-- The periodic clean-up (UPDATE of one column only for its FOR UPDATE SKIP LOCKED: it changes nothing).
GRANT SELECT, DELETE, UPDATE (created_at) ON TABLE drumbeat.idempotency_keys TO drumbeat_worker;
GRANT SELECT, INSERT, DELETE ON TABLE drumbeat.holidays TO drumbeat_contract;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.api_keys, drumbeat.contacts, drumbeat.enrollments,
    drumbeat.sender_mailboxes, drumbeat.senders, drumbeat.sequence_steps, drumbeat.sequences, drumbeat.tasks,
    drumbeat.workspace_members, drumbeat.workspaces TO drumbeat_contract;
GRANT USAGE ON SEQUENCE drumbeat.events_id_seq TO drumbeat_contract;
GRANT SELECT ON TABLE drumbeat.api_keys, drumbeat.workspace_members TO drumbeat_definer;
GRANT SELECT ON TABLE drumbeat.api_keys, drumbeat.holidays, drumbeat.senders, drumbeat.sequence_steps,
    drumbeat.sequences, drumbeat.timezones, drumbeat.workspace_members, drumbeat.workspaces TO
    drumbeat_worker;
GRANT SELECT, INSERT ON TABLE drumbeat.events, drumbeat.outbox TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE ON TABLE drumbeat.contacts, drumbeat.deliveries, drumbeat.enrollments,
    drumbeat.tasks TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.api_keys, drumbeat.contacts, drumbeat.deliveries,
    drumbeat.enrollments, drumbeat.events, drumbeat.holidays, drumbeat.outbox, drumbeat.senders,
    drumbeat.sequence_steps, drumbeat.sequences, drumbeat.tasks, drumbeat.timezones,
    drumbeat.workspace_members, drumbeat.workspaces TO service_role;
GRANT USAGE ON SEQUENCE drumbeat.events_id_seq, drumbeat.outbox_id_seq TO drumbeat_worker;
GRANT USAGE ON SEQUENCE drumbeat.events_id_seq, drumbeat.outbox_id_seq TO service_role;
GRANT UPDATE (sms_credits) ON TABLE drumbeat.workspaces TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.channel_holds TO drumbeat_worker, service_role;
GRANT SELECT, UPDATE (uidvalidity, last_uid, checked_at, error) ON TABLE drumbeat.sender_mailboxes TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.sender_mailboxes TO service_role;
-- A reservation the worker never started leaves no row (drumbeat.release_reservations); nothing else deletes.
GRANT DELETE ON TABLE drumbeat.deliveries TO drumbeat_worker;
GRANT UPDATE (last_used_at) ON TABLE drumbeat.api_keys TO drumbeat_definer;

-- Functions. The SECURITY DEFINER look-ups are owned by drumbeat_definer, which keeps executing them.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA drumbeat, drumbeat_api FROM PUBLIC, anon, authenticated, service_role, drumbeat_worker, drumbeat_definer, drumbeat_contract, drumbeat_authenticator;
GRANT EXECUTE ON FUNCTION drumbeat.authenticate_api_key(p_token text), drumbeat.member_workspace_ids(),
    drumbeat.workspace_has_members(p_workspace_id uuid), drumbeat.workspace_role(p_workspace_id uuid) TO
    drumbeat_definer;

-- The dispatcher's own functions: claim, record, recover.
GRANT EXECUTE ON FUNCTION drumbeat.advance_after_send(p_delivery_ids uuid[], p_now timestamp with time zone),
    drumbeat.apply_action(p_enrollment drumbeat.enrollments, p_action jsonb, p_now timestamp with time zone),
    drumbeat.batch_senders(p_ids uuid[]), drumbeat.capped_steps(p_ids uuid[], p_now timestamp with time zone),
    drumbeat.claim_due(p_limit integer), drumbeat.email_thread(p_enrollment_id uuid, p_position integer),
    drumbeat.claim_messages(p_ids uuid[], p_now timestamp with time
    zone), drumbeat.classify_due(p_ids uuid[], p_now timestamp with time zone, OUT flow uuid[], OUT manual
    uuid[], OUT unreachable uuid[], OUT no_sender uuid[], OUT messages uuid[]),
    drumbeat.condition_holds(p_enrollment drumbeat.enrollments, p_condition jsonb), drumbeat.url_within(p_url text,
    p_link text), drumbeat.hold_capped(p_ids
    uuid[], p_now timestamp with time zone), drumbeat.is_hard_bounce(p_channel text, p_error_code text,
    p_error_message text), drumbeat.late_claim_tolerance(), drumbeat.local_day_start(p_at timestamp with time
    zone, p_tz text, p_days_ahead integer), drumbeat.lock_daily_caps(p_ids uuid[]), drumbeat.lock_due(p_limit
    integer, p_now timestamp with time zone), drumbeat.pick_variant(p_variants jsonb, p_enrollment_id uuid),
    drumbeat.record_deliveries(p_results jsonb), drumbeat.recorded_result(p_delivery drumbeat.deliveries),
    drumbeat.recover_deliveries(p_lease interval, p_reconcile text[]), drumbeat.refresh_timezones(),
    drumbeat.reachable(p_contact drumbeat.contacts, p_channel text), drumbeat.reservation_lease(),
    drumbeat.reconcile_delay(), drumbeat.reconcile_give_up(), drumbeat.reconcile_lease(),
    drumbeat.due_reconciliations(p_channels text[], p_limit integer), drumbeat.settle_reconciliations(p_results jsonb),
    drumbeat.release_reservations(p_ids uuid[]), drumbeat.hold_probe_interval(),
    drumbeat.hold_for_provider(p_ids uuid[], p_now timestamp with time zone),
    drumbeat.message_senders(p_ids uuid[], p_now timestamp with time zone), drumbeat.hold_deliveries(p_ids uuid[],
    p_channel text, p_sender_id uuid, p_reason text, p_error_code text, p_error_message text, p_seconds double precision),
    drumbeat.clear_holds(p_channel text, p_sender_id uuid), drumbeat.start_sending(p_start uuid[],
    p_keep uuid[], p_bodies text[]),
    drumbeat.enroll_by_action(p_enrollment drumbeat.enrollments, p_sequence_id uuid),
    drumbeat.sms_credits_recheck(), drumbeat.sms_segments(p_text text),
    drumbeat.sms_over_credits(p_start uuid[], p_bodies text[]),
    drumbeat.hold_for_credits(p_ids uuid[], p_now timestamp with time zone),
    drumbeat.run_flow_step(p_enrollment_id uuid, p_now timestamp with time zone),
    drumbeat.settle_already_claimed(p_ids uuid[], p_now timestamp with time zone),
    drumbeat.settle_enrollment(p_delivery drumbeat.deliveries, p_result jsonb, p_now timestamp with time
    zone), drumbeat.skip_unreachable(p_ids uuid[], p_now timestamp with time zone), drumbeat.start_tasks(p_ids
    uuid[], p_now timestamp with time zone), drumbeat.step_sender(p_workspace_id uuid, p_settings jsonb,
    p_channel text) TO drumbeat_worker;

-- Helpers both the contract and the dispatcher call.
GRANT EXECUTE ON FUNCTION drumbeat.advance_enrollment(p_enrollment_id uuid, p_done_at timestamp with time
    zone), drumbeat.apply_contact_event(p_contact_id uuid, p_kind text, p_channel text),
    drumbeat.apply_engagement(p_workspace_id uuid, p_contact_id uuid, p_kind text, p_channel text, p_payload
    jsonb), drumbeat.check_action(p_action jsonb, p_field text, p_workspace_id uuid, p_sequence_id uuid),
    drumbeat.check_branch(p_branch jsonb, p_field text, p_position integer, p_step_count integer),
    drumbeat.check_condition(p_step jsonb, p_field text, p_position integer, p_steps jsonb),
    drumbeat.check_enroll_arguments(p_sequence drumbeat.sequences, p_contact_ids uuid[], p_assigned_to uuid,
    p_metadata jsonb), drumbeat.check_message(p_step jsonb, p_field text, p_kind text),
    drumbeat.enroll_into(p_sequence drumbeat.sequences, p_step drumbeat.sequence_steps, p_contact_ids uuid[],
    p_start_at timestamp with time zone, p_assigned_to uuid, p_metadata jsonb),
    drumbeat.check_object(p_value jsonb, p_field text, p_allowed text[]),
    drumbeat.check_sender_setting(p_settings jsonb, p_key text, p_channel text, p_workspace_id uuid),
    drumbeat.check_senders(p_sequence_id uuid), drumbeat.check_step(p_steps jsonb, p_index integer, p_channel
    text, p_settings jsonb, p_workspace_id uuid, p_sequence_id uuid), drumbeat.check_template(p_template text,
    p_field text), drumbeat.check_time_window(p_value jsonb, p_field text), drumbeat.check_timezone(p_timezone
    text, p_field text), drumbeat.contact_input_errors(p_workspace_id uuid, p_contacts jsonb),
    drumbeat.day_window(p_settings jsonb, p_kind text, p_day date, p_workspace_id uuid),
    drumbeat.delay_base(p_done timestamp with time zone, p_delay interval, p_send_at time without time zone,
    p_tz text), drumbeat.enrollments_after_insert(), drumbeat.enrollments_after_update(),
    drumbeat.event_targets(p_contact_id uuid, p_payload jsonb), drumbeat.exit_enrollments(p_enrollment_ids
    uuid[], p_status text, p_reason text), drumbeat.first_allowed_instant(p_base timestamp with time zone,
    p_kind text, p_tz text, p_settings jsonb, p_workspace_id uuid), drumbeat.has_allowed_window(p_settings
    jsonb, p_kind text), drumbeat.is_holiday(p_workspace_id uuid,
    p_calendar text, p_day date), drumbeat.json_bool(p_value jsonb, p_field text), drumbeat.json_int(p_value
    jsonb, p_field text, p_min bigint, p_max bigint), drumbeat.json_text(p_value jsonb, p_field text,
    p_required boolean, p_max_length integer), drumbeat.json_time_of_day(p_value jsonb, p_field text,
    p_allow_24 boolean), drumbeat.jsonb_text_array(p_value jsonb), drumbeat.log_sequence_event(p_sequence_id
    uuid, p_kind text, p_payload jsonb), drumbeat.match_contacts(p_workspace_id uuid, p_contacts jsonb),
    drumbeat.member_workspace_ids(), drumbeat.move_off_removed_steps(p_sequence_id uuid, p_old_positions
    jsonb), drumbeat.next_action_at(p_done timestamp with time zone, p_delay interval, p_send_at time without
    time zone, p_kind text, p_tz text, p_settings jsonb, p_workspace_id uuid, p_not_before timestamp with time
    zone), drumbeat.next_live_step(p_sequence_id uuid, p_after_position integer),
    drumbeat.normalize_exit_conditions(p_exit jsonb), drumbeat.parse_delay(p_delay jsonb, p_field text),
    drumbeat.phone_timezone(p_phone text),
    drumbeat.planned_at(p_step_id uuid, p_contact_id uuid, p_done timestamp with time zone, p_not_before
    timestamp with time zone, p_skip_delay boolean), drumbeat.preview_branch(p_condition jsonb, p_position
    integer), drumbeat.recipient_timezone(p_contact_tz text, p_sequence_settings jsonb, p_workspace_tz text),
    drumbeat.replan_enrollments(p_sequence_id uuid, p_only_overdue boolean), drumbeat.replan_retimed(p_sequence_id
    uuid, p_timings_before jsonb), drumbeat.replanned_at(p_enrollment drumbeat.enrollments, p_not_before timestamp
    with time zone), drumbeat.step_timings(p_sequence_id uuid), drumbeat.require_caller(),
    drumbeat.require_enrollment_status(p_enrollment_id uuid, p_from text[], p_action text),
    drumbeat.require_role(p_workspace_id uuid, p_min_role text), drumbeat.role_rank(p_role text),
    drumbeat.save_steps(p_sequence_id uuid, p_workspace_id uuid, p_steps jsonb),
    drumbeat.step_stats(p_sequence_id uuid), drumbeat.variant_stats(p_sequence_id uuid),
    drumbeat.task_stats(p_step_id uuid), drumbeat.normal_p_value(p_z double precision),
    drumbeat.proportion_test(p_hits_a bigint, p_n_a bigint, p_hits_b bigint, p_n_b bigint),
    drumbeat.transition_allowed(p_from text, p_to text, p_exit_reason
    text), drumbeat.transition_event_kind(p_from text, p_to text), drumbeat.transition_sequence(p_sequence_id
    uuid, p_from text[], p_to text, p_start_at timestamp with time zone),
    drumbeat.validate_definition(p_definition jsonb, p_workspace_id uuid, p_sequence_id uuid),
    drumbeat.validate_settings(p_settings jsonb, p_workspace_id uuid), drumbeat.weekday_window(p_settings
    jsonb, p_kind text, p_isodow integer, OUT window_start time without time zone, OUT window_end time without
    time zone), drumbeat.workspace_has_members(p_workspace_id uuid), drumbeat.workspace_of(p_table text, p_id
    uuid, p_field text, p_min_role text), drumbeat.workspace_role(p_workspace_id uuid) TO drumbeat_contract,
    drumbeat_worker, service_role;

-- Used inside the SECURITY DEFINER look-ups as well.
GRANT EXECUTE ON FUNCTION drumbeat.api_key_hash(p_token text) TO drumbeat_contract, drumbeat_definer,
    drumbeat_worker, service_role;

-- A template preview (the API's and the console's) shows the sender a step would use: an invoker's
-- look-up, under the caller's RLS.
GRANT EXECUTE ON FUNCTION drumbeat.step_sender(p_workspace_id uuid, p_settings jsonb, p_channel text) TO authenticated;

-- The API's login role looks a key up before any user is known.
GRANT EXECUTE ON FUNCTION drumbeat.authenticate_api_key(p_token text) TO drumbeat_authenticator;

-- Identity and error helpers everything uses, the definer's look-ups included.
GRANT EXECUTE ON FUNCTION drumbeat.calling_role(), drumbeat.clock_now(), drumbeat.current_user_id(),
    drumbeat.invalid(p_field text, p_message text), drumbeat.is_trusted_caller(), drumbeat.raise_error(p_code
    text, p_message text, p_field text) TO drumbeat_contract, drumbeat_definer, drumbeat_worker, service_role;

-- Engine functions the dispatcher and trusted server-side callers use.
GRANT EXECUTE ON FUNCTION drumbeat.delivery_status(p_provider_message_id text, p_status text, p_error_code
    text), drumbeat.inbound_sms(p_to text, p_from text, p_body text, p_message_sid text),
    drumbeat.inbound_email(p_workspace_id uuid, p_email jsonb), drumbeat.inbound_email_contact(p_workspace_id
    uuid, p_addresses text[]), drumbeat.hold_until_back(p_enrollment_ids uuid[], p_back date),
    drumbeat.inbound_secret_matches(p_workspace_id uuid, p_secret text), drumbeat.api_key_workspace(p_key_id uuid),
    drumbeat.watched_mailboxes(), drumbeat.mailbox_checked(p_sender_id uuid, p_uidvalidity bigint, p_last_uid
    bigint, p_error text),
    drumbeat.record_delivery_engagement(p_delivery_id uuid, p_kind text, p_payload jsonb),
    drumbeat.sms_keyword(p_body text) TO drumbeat_worker, service_role;

-- The contract: every drumbeat_api function, run as drumbeat_contract (SECURITY DEFINER), which is handed
-- each new or re-created one here. Executable by tenants (they check the caller's role themselves) and by
-- the trusted server side.
DO $contract_owner$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = 'drumbeat_api'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO drumbeat_contract', v_function);
    END LOOP;
END
$contract_owner$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA drumbeat_api TO authenticated, service_role, drumbeat_contract;

-- Publishing events: every writer of events fires the NOTIFY trigger; the feed's helpers are the contract's.
GRANT EXECUTE ON FUNCTION drumbeat.notify_events() TO drumbeat_contract, drumbeat_worker, service_role;
GRANT SELECT ON TABLE drumbeat.event_types TO authenticated, drumbeat_contract, drumbeat_worker;
GRANT SELECT ON TABLE drumbeat.phone_number_plans, drumbeat.phone_timezones TO authenticated, drumbeat_contract;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.phone_number_plans, drumbeat.phone_timezones TO service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.event_types TO service_role;
GRANT EXECUTE ON FUNCTION drumbeat.feed_position(p_after text, OUT tx xid8, OUT id bigint) TO drumbeat_contract,
    service_role;

-- Outgoing webhooks: admins manage endpoints through the contract (tenants get no direct grant: an
-- endpoint's URL can hold the receiver's token, its secret signs); the worker fans out, sends and logs.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.webhook_endpoints TO drumbeat_contract, service_role;
GRANT SELECT, INSERT, UPDATE ON TABLE drumbeat.webhook_messages TO drumbeat_contract;
GRANT SELECT ON TABLE drumbeat.webhook_attempts TO drumbeat_contract;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.webhook_messages, drumbeat.webhook_attempts TO service_role;
GRANT SELECT, UPDATE (feed_tx, feed_id, failing_since, enabled, disabled_at, disabled_reason, updated_at)
    ON TABLE drumbeat.webhook_endpoints TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE drumbeat.webhook_messages TO drumbeat_worker;
GRANT SELECT, INSERT, DELETE ON TABLE drumbeat.webhook_attempts TO drumbeat_worker;
GRANT USAGE ON SEQUENCE drumbeat.webhook_messages_id_seq TO drumbeat_contract, drumbeat_worker, service_role;
GRANT USAGE ON SEQUENCE drumbeat.webhook_attempts_id_seq TO drumbeat_worker, service_role;
GRANT EXECUTE ON FUNCTION drumbeat.webhook_url_problem(p_url text), drumbeat.check_event_types(p_types jsonb,
    p_field text), drumbeat.webhook_endpoint_json(p_endpoint drumbeat.webhook_endpoints),
    drumbeat.new_webhook_secret(), drumbeat.check_webhook_endpoint(p_endpoint jsonb, p_allowed text[]),
    drumbeat.administered_endpoint(p_endpoint_id uuid), drumbeat.webhook_message_json(p_message
    drumbeat.webhook_messages) TO drumbeat_contract, service_role;
GRANT EXECUTE ON FUNCTION drumbeat.webhook_timestamp(p_at timestamp with time zone),
    drumbeat.webhook_payload(p_event drumbeat.events, p_endpoint drumbeat.webhook_endpoints),
    drumbeat.event_bodies(p_event drumbeat.events), drumbeat.event_data(p_event drumbeat.events)
    TO drumbeat_contract, drumbeat_worker, service_role;
GRANT EXECUTE ON FUNCTION drumbeat.fan_out_webhooks(p_limit integer), drumbeat.claim_webhook_messages(p_limit
    integer, p_per_endpoint integer, p_lease_seconds integer), drumbeat.record_webhook_attempts(p_attempts jsonb),
    drumbeat.webhook_attempt_batch(p_attempts jsonb, p_ids bigint[]), drumbeat.disable_webhook_endpoint(p_endpoint_id uuid,
    p_reason text, p_detail text), drumbeat.prune_webhook_messages(p_older_than interval, p_limit integer),
    drumbeat.prune_idempotency_keys(p_limit integer) TO drumbeat_worker,
    service_role;

-- What only the contract calls.
GRANT EXECUTE ON FUNCTION drumbeat.issue_api_key(p_workspace_id uuid, p_name text, p_role text, p_created_by
    uuid), drumbeat.check_member_role(p_role text, p_field text), drumbeat.require_owner_for_owner_role(
    p_workspace_id uuid, p_from text, p_to text), drumbeat.locked_member(p_workspace_id uuid, p_user_id uuid),
    drumbeat.require_another_owner(p_workspace_id uuid, p_user_id uuid, p_message text),
    drumbeat.log_member_event(p_workspace_id uuid, p_kind text, p_payload jsonb),
    drumbeat.revoke_keys_above(p_workspace_id uuid, p_user_id uuid, p_role text), drumbeat.replied_to(p_enrollment_id uuid, p_replied_at timestamp with time zone),
    drumbeat.delay_json(p_delay interval), drumbeat.step_definitions(p_sequence_id uuid),
    drumbeat.renumber_step_references(p_steps jsonb, p_old_positions jsonb), drumbeat.lock_steps(p_sequence_id
    uuid), drumbeat.save_step_edit(p_sequence_id uuid, p_before jsonb, p_steps jsonb),
    drumbeat.step_index(p_steps jsonb, p_step_id uuid), drumbeat.lock_sequence_edits(p_sequence_id uuid),
    drumbeat.check_assignee(p_workspace_id uuid, p_user_id uuid, p_field text), drumbeat.move_tasks(p_task_ids uuid[],
    p_user_id uuid), drumbeat.identity_digest(p_workspace_id uuid, p_kind text, p_address text),
    drumbeat.is_erased_identity(p_workspace_id uuid, p_kind text, p_address text),
    drumbeat.scrubbed_payload(p_kind text, p_payload jsonb), drumbeat.idempotency_caller(p_key text, p_fingerprint
    text), drumbeat.check_sender_owner(p_workspace_id uuid, p_user_id jsonb, p_field text),
    drumbeat.administered_sender(p_sender_id uuid), drumbeat.check_page(p_limit integer, p_offset integer) TO
    drumbeat_contract, service_role;

-- What tenants call outside the contract: the look-up in their read policies, the read-only helpers the
-- API's queries use (sql/queries/api_*.sql) and the lock its read-modify-write edits take. Nothing here writes.
GRANT EXECUTE ON FUNCTION drumbeat.member_workspace_ids(), drumbeat.current_user_id(), drumbeat.clock_now(),
    drumbeat.delay_json(p_delay interval), drumbeat.step_definitions(p_sequence_id uuid),
    drumbeat.lock_sequence_edits(p_sequence_id uuid), drumbeat.raise_error(p_code text, p_message text, p_field text)
    TO authenticated;

-- Trusted server side only.
GRANT EXECUTE ON FUNCTION drumbeat.load_holidays(p_workspace_id uuid, p_calendar text, p_holidays jsonb),
    drumbeat.share_sender(p_workspace_id uuid, p_address text) TO service_role;
