-- 0033: a claimed delivery is first 'reserved' and becomes 'sending' only right before its own provider
-- call (docs/ARCHITECTURE.md, "Dispatch protocol"), so a worker that dies mid-batch costs at most the
-- messages it had in flight: the rest of its reservations lapse within seconds (reserved_until, extended by
-- the worker while it works through the batch) and are claimed again. An 'unknown' delivery whose provider
-- can be asked (Twilio's message list) waits for that answer (reconcile_after) before its enrollment moves.
ALTER TABLE drumbeat.deliveries DROP CONSTRAINT deliveries_status_known;
ALTER TABLE drumbeat.deliveries ADD CONSTRAINT deliveries_status_known
    CHECK (status IN ('reserved', 'sending', 'sent', 'delivered', 'failed', 'undelivered', 'bounced', 'unknown'));
ALTER TABLE drumbeat.deliveries ADD COLUMN reserved_until timestamptz;
ALTER TABLE drumbeat.deliveries ADD COLUMN started_at timestamptz;
ALTER TABLE drumbeat.deliveries ADD COLUMN reconcile_after timestamptz;
COMMENT ON COLUMN drumbeat.deliveries.reserved_until IS 'A reserved (claimed, not yet started) delivery returns to the queue after this instant unless its worker extends it.';
COMMENT ON COLUMN drumbeat.deliveries.started_at IS 'When the delivery became sending (its provider call began): the delivery lease counts from here.';
COMMENT ON COLUMN drumbeat.deliveries.reconcile_after IS 'An unknown delivery whose provider can be asked whether it has the message: when to ask next (NULL: nothing to ask).';

CREATE INDEX deliveries_reserved_idx ON drumbeat.deliveries (reserved_until) WHERE status = 'reserved';
COMMENT ON INDEX drumbeat.deliveries_reserved_idx IS 'Serves the release of reservations whose worker stopped extending them.';

CREATE INDEX deliveries_reconcile_idx ON drumbeat.deliveries (reconcile_after) WHERE reconcile_after IS NOT NULL;
COMMENT ON INDEX drumbeat.deliveries_reconcile_idx IS 'Serves reconciliation: unknown deliveries due for a look-up at the provider.';

-- recover_deliveries gained p_reconcile (sql/functions/dispatch.sql re-creates it): the old signature goes,
-- or it would stay behind as an overload.
DROP FUNCTION IF EXISTS drumbeat.recover_deliveries(interval);
