-- 0026: an enrollment due on a step it already has a delivery for no longer wedges the queue. The
-- claim makes a delivery per (enrollment, step, attempt), unique, and skipped the enrollments whose key
-- already existed: they stayed due, at the head of the due index, and were locked and skipped by every
-- claim after (a full batch of them stops dispatch for every tenant). It happens when the send's result
-- is recorded while nothing waits for it, and the enrollment comes back to the same step and attempt:
--   * paused while the message was in flight, then resumed (settle_enrollment ignores a paused one);
--   * a step already sent moved after the enrollment's current step (update_sequence, reorder).
-- Such an enrollment is now settled by the delivery it already has, as the record would have settled it:
-- sent, delivered or unknown (maybe sent) moves on, since a step is never sent twice; a failure is
-- retried (transient, attempts left) or ends the enrollment; a delivery still in flight is waited for.

-- Why: the result record_deliveries would have been given for a delivery it has recorded: the outcome
-- from the delivery's status, and the transient flag from the failure's audit event.
CREATE FUNCTION drumbeat.recorded_result(p_delivery drumbeat.deliveries)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'outcome', CASE WHEN p_delivery.status IN ('sent', 'delivered', 'unknown') THEN 'sent' ELSE 'failed' END,
        'error_code', p_delivery.error_code,
        'error_message', p_delivery.error_message,
        'transient', COALESCE((SELECT (ev.payload ->> 'transient')::boolean FROM drumbeat.events ev
                               WHERE ev.enrollment_id = p_delivery.enrollment_id AND ev.delivery_id = p_delivery.id
                                 AND ev.kind = 'failed'
                               ORDER BY ev.occurred_at DESC LIMIT 1), false))
$$;

-- Why: after claim_messages, the message steps of the batch that are still due are exactly the ones whose
-- delivery already existed (the others were claimed, held to a later time, or ended before). Each waits for
-- its delivery's record, or is settled by it now. Only these few rows pay the look-ups.
CREATE FUNCTION drumbeat.settle_already_claimed(p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_delivery drumbeat.deliveries;
BEGIN
    FOR v_delivery IN
        SELECT d.* FROM drumbeat.enrollments e
        JOIN drumbeat.deliveries d ON d.idempotency_key = e.id || ':' || e.current_step_id || ':' || e.step_attempt
        WHERE e.id = ANY (p_ids) AND e.status = 'active' AND e.next_action_at <= p_now
        ORDER BY e.id
    LOOP
        -- Waiting (next_action_at NULL) is what settle_enrollment expects of the enrollment it settles.
        UPDATE drumbeat.enrollments e SET next_action_at = NULL, updated_at = pg_catalog.now()
        WHERE e.id = v_delivery.enrollment_id;
        IF v_delivery.status <> 'sending' THEN
            PERFORM drumbeat.settle_enrollment(v_delivery, drumbeat.recorded_result(v_delivery), p_now);
        END IF;
    END LOOP;
END
$$;

-- Why: as in 0015, then the batch's message steps whose delivery already existed are settled by it.
CREATE OR REPLACE FUNCTION drumbeat.claim_due(p_limit integer DEFAULT 500)
RETURNS TABLE(delivery_id uuid, idempotency_key text, enrollment_id uuid, workspace_id uuid, channel text, attempt integer,
              to_address text, from_address text, subject text, body text, html_body text, variant text, context jsonb)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_now timestamptz := drumbeat.clock_now();
    v_ids uuid[] := drumbeat.lock_due(p_limit, v_now);
    v_batch record;
BEGIN
    FOR v_round IN 1 .. 10 LOOP  -- bounded: jumps are forward-only, so chains are short
        v_batch := drumbeat.classify_due(v_ids, v_now);
        EXIT WHEN v_batch.flow IS NULL;
        PERFORM drumbeat.run_flow_step(f, v_now) FROM pg_catalog.unnest(v_batch.flow) AS f;
    END LOOP;
    -- After a tenth flow round the classes above predate it; those flow steps wait for the next claim.
    IF v_batch.manual IS NOT NULL THEN
        PERFORM drumbeat.start_tasks(v_batch.manual, v_now);
    END IF;
    IF v_batch.unreachable IS NOT NULL THEN
        PERFORM drumbeat.skip_unreachable(v_batch.unreachable, v_now);
    END IF;
    IF v_batch.no_sender IS NOT NULL THEN
        PERFORM drumbeat.exit_enrollments(v_batch.no_sender, 'failed', 'no_sender');
    END IF;
    IF v_batch.messages IS NOT NULL THEN
        PERFORM drumbeat.lock_daily_caps(v_batch.messages);
        PERFORM drumbeat.hold_capped(v_batch.messages, v_now);
        RETURN QUERY SELECT * FROM drumbeat.claim_messages(v_batch.messages, v_now);
        PERFORM drumbeat.settle_already_claimed(v_batch.messages, v_now);
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION drumbeat.recorded_result(drumbeat.deliveries) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION drumbeat.settle_already_claimed(uuid[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drumbeat.recorded_result(drumbeat.deliveries) TO drumbeat_worker;
GRANT EXECUTE ON FUNCTION drumbeat.settle_already_claimed(uuid[], timestamptz) TO drumbeat_worker;
