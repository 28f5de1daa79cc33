"""Sending the workspaces' webhooks (README, "Events out"): a `Webhooks` thread in every worker process,
beside the dispatcher (workers/app.run_beside), with three helpers, each on a database connection of its own
so that none waits for another:

1. FanOut turns the event feed into messages (drumbeat.fan_out_webhooks: one per event and endpoint, from
   each endpoint's position in the feed, in the transaction that moves the position: none skipped, none
   twice);
2. the Webhooks loop claims as many due messages as it has free senders (drumbeat.claim_webhook_messages:
   at most DRUMBEAT_WEBHOOK_CONCURRENCY in flight per endpoint across every worker, so a slow or dead
   endpoint holds that many sends and never delays the others), each leased for LEASE_SECONDS;
3. a thread pool sends them (workers/webhook_sender.py: signed, pinned to checked addresses, 10 s);
4. the Recorder records what came back, in batches (drumbeat.record_webhook_attempts): delivered, a retry
   at the time retry_delay says, given up after the last one, or the endpoint switched off (410, a URL
   refused at send time, five days of failures).

Delivery is at least once. A worker killed mid-send (SIGKILL, a lost machine) leaves its messages
'sending'; their leases lapse and another worker (or this one, restarted) sends them again, with the
same webhook-id, which receivers de-duplicate on. A record that cannot reach Postgres is kept and retried
on a new connection; if that takes longer than the lease, the message is sent once more (never lost)."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core.queries import queries
from app.core.settings import Settings
from workers import reconnect
from workers.webhook_sender import Attempt, WebhookSender, retry_delay

log = logging.getLogger("drumbeat.webhooks")

POLL_SECONDS = 0.2  # how often an idle worker looks for new events and due retries
# A send is bounded by the sender's 10 s deadline, and its record follows at once: 30 s is ample, and is
# how long a dead worker's messages wait before another worker sends them again.
LEASE_SECONDS = 30
SENDERS = 32  # threads sending at once in one process (each endpoint is capped lower: Settings)
# Why 2 ms: each slot's cycle (send, record, claim again) includes it, so it bounds what one endpoint can
# take (bench/webhooks.py: 10 ms gave 388 events/s to three endpoints, 2 ms 534); yet against a receiver
# answering in a millisecond or two, the sends in flight still finish within it and are recorded together.
GATHER_SECONDS = 0.002
# How often the loop claims while some sends are in flight and threads are free. The recorder claims for
# the slots it frees at once; the loop's claims are for messages that became due meanwhile (new events, a
# retry's time come), and at this pace they cost Postgres little even when a slow endpoint keeps some
# sends in flight for seconds.
CLAIM_PACE_SECONDS = 0.02
FAN_OUT_LIMIT = 500  # events per endpoint per fan-out call
CONNECT_BUDGET_SECONDS = 10.0
KEEP_MESSAGES = dt.timedelta(days=30)  # the delivery log's window
PRUNE_EVERY_SECONDS = 300.0
PRUNE_LIMIT = 10_000

Q = queries("webhooks")


@dataclass(frozen=True)
class Claimed:
    id: int
    msg_id: str
    endpoint_id: Any
    url: str
    secrets: list[str]
    body: str
    attempt: int
    lease: Any  # the claim's token: the record moves the message on only under it


class Webhooks(threading.Thread):
    """The fan-out and claim loop of one worker process, with its sender threads and its recorder."""

    def __init__(
        self,
        database_url: str,
        sender: WebhookSender,
        *,
        per_endpoint: int = Settings.webhook_concurrency,
        senders: int = SENDERS,
        poll_seconds: float = POLL_SECONDS,
        lease_seconds: int = LEASE_SECONDS,
        retry: Callable[[int], dt.timedelta | None] = retry_delay,
    ):
        super().__init__(name="webhooks", daemon=True)
        self.retry = retry
        self.database_url = database_url
        self.sender = sender
        self.per_endpoint = per_endpoint
        self.senders = senders
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.stopping = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=senders, thread_name_prefix="webhook")
        # One thread at a time waits out an outage; the others queue behind it rather than each retrying
        # (and logging) on its own backoff.
        connecting = threading.Lock()
        self._recorder = Recorder(
            poll_seconds,
            WorkerConnection(database_url, connecting, self.stopping),
            refill=Refill(senders, self._claim_params, self._submit),
        )
        self._fan_out = FanOut(
            poll_seconds, self.stopping, WorkerConnection(database_url, connecting, self.stopping)
        )
        self._db = WorkerConnection(database_url, connecting, self.stopping)
        self._next_prune = time.monotonic()

    @classmethod
    def for_settings(cls, settings: Settings) -> Webhooks:
        sender = WebhookSender(
            allow_private=settings.webhook_allow_private, require_https=settings.production
        )
        return cls(settings.database_url, sender, per_endpoint=settings.webhook_concurrency)

    def stop(self) -> None:
        """Claim nothing more; what is in flight finishes and is recorded (within the sender's deadline)."""
        self.stopping.set()

    def run(self) -> None:
        self._recorder.start()
        self._fan_out.start()
        while not self.stopping.is_set():
            try:
                conn = self._db.get()
                self._prune_if_due(conn)
                self._claim(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                log.warning("webhooks_database_lost", extra={"error": first_line(error)})
                self._db.drop()
            except psycopg.Error as error:  # a statement refused (a bug, not an outage): try again later
                log.error("webhooks_statement_failed", extra={"error": first_line(error)})
                self._db.drop()
            self._recorder.wait_for_free_slot(self.senders, self.poll_seconds)
        self._recorder.stop_when_drained()
        self._recorder.join()
        self._fan_out.join()
        self._pool.shutdown(wait=False)
        self._db.drop()

    def _prune_if_due(self, conn: psycopg.Connection) -> None:
        """Every PRUNE_EVERY_SECONDS, drop finished messages older than KEEP_MESSAGES (with their attempts),
        and, this being the worker's one periodic clean-up on a connection of its own, the HTTP API's
        idempotency keys past their 24 hours (app/api/idempotency.py)."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        params = {"older_than": KEEP_MESSAGES, "limit": PRUNE_LIMIT}
        if pruned := conn.execute(Q["prune"], params).fetchone()["prune_webhook_messages"]:
            log.info("webhook_messages_pruned", extra={"count": pruned})
        keys = conn.execute(Q["prune_idempotency_keys"], {"limit": PRUNE_LIMIT}).fetchone()
        if keys["prune_idempotency_keys"]:
            log.info("idempotency_keys_pruned", extra={"count": keys["prune_idempotency_keys"]})

    def _claim(self, conn: psycopg.Connection) -> None:
        free = self.senders - self._recorder.in_flight
        if free <= 0:
            return
        rows = conn.execute(Q["claim"], self._claim_params(free)).fetchall()
        self._recorder.taken(len(rows))
        for row in rows:
            self._submit(row)

    def _claim_params(self, limit: int) -> dict[str, Any]:
        return {"limit": limit, "per_endpoint": self.per_endpoint, "lease_seconds": self.lease_seconds}

    def _submit(self, row: dict[str, Any]) -> None:
        """A claimed message to a sender thread (one is free: in_flight counts it already)."""
        self._pool.submit(self._send, Claimed(**row))

    def _send(self, message: Claimed) -> None:
        """One attempt, on a sender thread; its result goes to the recorder, whatever happens."""
        attempted_at = dt.datetime.now(dt.UTC)
        try:
            result = self.sender.send(
                message.url,
                message.secrets,
                message.msg_id,
                int(attempted_at.timestamp()),
                message.body.encode(),
            )
        except Exception as error:  # a bug, not the receiver: still recorded, and retried
            log.exception("webhook_send_crashed", extra={"message_id": message.msg_id})
            result = Attempt(None, 0.0, f"internal error: {type(error).__name__}", "retry")
        self._recorder.finished(attempt_record(message, attempted_at, result, self.retry))


class FanOut(threading.Thread):
    """Turns new events into messages, on a connection of its own: a big backlog (a bulk enrollment's
    100,000 events) is fanned out while the claims and records go on. One bounded call at a time
    (FAN_OUT_LIMIT events per endpoint); again at once while calls come back full, else every poll_seconds."""

    def __init__(self, poll_seconds: float, stopping: threading.Event, db: WorkerConnection):
        super().__init__(name="webhook-fan-out", daemon=True)
        self.poll_seconds = poll_seconds
        self.stopping = stopping
        self._db = db

    def run(self) -> None:
        while not self.stopping.is_set():
            more_waiting = False
            try:
                queued = (
                    self._db.get()
                    .execute(Q["fan_out"], {"limit": FAN_OUT_LIMIT})
                    .fetchone()["fan_out_webhooks"]
                )
                more_waiting = queued >= FAN_OUT_LIMIT
            except psycopg.Error as error:
                log.warning("webhooks_fan_out_failed", extra={"error": first_line(error)})
                self._db.drop()
            if not more_waiting:
                self.stopping.wait(self.poll_seconds)
        self._db.drop()


@dataclass(frozen=True)
class Refill:
    """What the recorder needs to claim for the slots a record frees: the sender threads' number, the
    claim's parameters for a limit, and where a claimed message goes (a sender thread)."""

    senders: int
    claim_params: Callable[[int], dict[str, Any]]
    submit: Callable[[dict[str, Any]], None]


class Recorder(threading.Thread):
    """Records finished attempts on a connection of its own, in batches (one call per GATHER_SECONDS at
    most while results keep coming), while the loop claims on its own: the two never wait for each other.
    A message stays counted in flight until its attempt is recorded, as the claim's per-endpoint count in
    the database sees it. Postgres away: the batch is kept and recorded once it is back (within the lease,
    else the messages are sent once more); a statement refused is dropped (the leases bring them back).

    Why the recorder also claims: a record is what frees an endpoint's slots (its per-endpoint count in the
    database), so claiming right after it, on the same connection, puts the next messages in flight without
    waiting for the loop to wake and claim: against a fast endpoint, that wait was most of each slot's
    cycle. The slots are reserved before the claim (in_flight counts them), so the loop never claims the
    same threads, and a claimed message always finds a sender thread free (its lease never ticks in a
    queue)."""

    def __init__(self, poll_seconds: float, db: WorkerConnection, refill: Refill):
        super().__init__(name="webhook-recorder", daemon=True)
        self.poll_seconds = poll_seconds
        self.refill = refill
        self._results: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Condition()
        self._in_flight = 0
        self._draining = False
        self._db = db

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def taken(self, count: int) -> None:
        with self._lock:
            self._in_flight += count

    def finished(self, attempt: dict[str, Any]) -> None:
        self._results.put(attempt)

    def wait_for_free_slot(self, senders: int, timeout: float) -> None:
        """Until a sender thread is free (or `timeout`), then the loop's pace: CLAIM_PACE_SECONDS while
        sends are in flight (the recorder claims for the slots it frees itself), `timeout` when idle. Not
        woken by each record, so the loop's claims never double the recorder's."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight < senders, timeout)
            idle = self._in_flight == 0
        time.sleep(timeout if idle else CLAIM_PACE_SECONDS)

    def stop_when_drained(self) -> None:
        with self._lock:
            self._draining = True

    def run(self) -> None:
        batch: list[dict[str, Any]] = []
        while True:
            with self._lock:
                if self._draining and self._in_flight == 0:
                    break
            batch += self._gather()
            if not batch:
                continue
            try:
                record(self._db.get(), batch)
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                log.warning("webhooks_database_lost", extra={"error": first_line(error), "purpose": "record"})
                self._db.drop()
                time.sleep(self.poll_seconds)
                continue
            except psycopg.Error as error:
                log.error(
                    "webhooks_statement_failed", extra={"error": first_line(error), "dropped": len(batch)}
                )
                self._db.drop()
            with self._lock:
                self._in_flight -= len(batch)
                self._lock.notify_all()
            batch = []
            self._claim_freed_slots()
        self._db.drop()

    def _claim_freed_slots(self) -> None:
        """Claim for every free sender thread, on this connection, right after a record (not once stopping)."""
        with self._lock:
            wanted = 0 if self._draining else self.refill.senders - self._in_flight
            if wanted <= 0:
                return
            self._in_flight += wanted  # reserved: the loop's claims see these threads taken
        rows: list[dict[str, Any]] = []
        try:
            rows = self._db.get().execute(Q["claim"], self.refill.claim_params(wanted)).fetchall()
        except psycopg.Error as error:  # the loop claims again on its own; an outage shows at the next record
            log.warning("webhooks_claim_failed", extra={"error": first_line(error), "purpose": "record"})
            self._db.drop()
        finally:
            with self._lock:
                self._in_flight -= wanted - len(rows)
                self._lock.notify_all()
        for row in rows:
            self.refill.submit(row)

    def _gather(self) -> list[dict[str, Any]]:
        """The results that came in: waits up to poll_seconds for one, then GATHER_SECONDS for the rest."""
        results = []
        try:
            results.append(self._results.get(timeout=self.poll_seconds))
            gather_until = time.monotonic() + GATHER_SECONDS
            while (left := gather_until - time.monotonic()) > 0:
                results.append(self._results.get(timeout=left))
        except queue.Empty:
            pass
        return results


class WorkerConnection:
    """One thread's connection as the worker, made when first needed and again after a drop. Threads that
    share `connecting` connect one at a time, so during an outage one of them retries (with backoff, logging
    each attempt) while the rest wait for it instead of adding their own attempts; once `stopping` is set,
    each makes one attempt at most."""

    def __init__(self, database_url: str, connecting: threading.Lock, stopping: threading.Event):
        self.database_url = database_url
        self._connecting = connecting
        self._stopping = stopping
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            with self._connecting:
                self._conn = worker_connection(self.database_url, self._stopping)
        return self._conn

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def worker_connection(database_url: str, stopping: threading.Event) -> psycopg.Connection:
    conn = reconnect.connect(
        database_url,
        budget=CONNECT_BUDGET_SECONDS,
        stopping=stopping,
        prepare=lambda conn: conn.execute(queries("dispatch")["become_worker"]),
        purpose="webhooks",
    )
    conn.row_factory = dict_row
    return conn


def record(conn: psycopg.Connection, attempts: list[dict[str, Any]]) -> None:
    conn.execute(Q["record"], {"attempts": Jsonb(attempts)})
    for attempt in attempts:
        if attempt["outcome"] != "delivered":
            log.info(
                "webhook_attempt_failed",
                extra={
                    key: attempt[key] for key in ("message_id", "attempt", "outcome", "status_code", "error")
                },
            )


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def attempt_record(
    message: Claimed, attempted_at: dt.datetime, result: Attempt, retry: Callable[[int], dt.timedelta | None]
) -> dict[str, Any]:
    """One attempt as drumbeat.record_webhook_attempts reads it; for a retry, when the next one is due
    (`retry` of the attempt's number; None: that was the last)."""
    next_attempt_at = None
    if result.outcome == "retry" and (delay := retry(message.attempt)) is not None:
        next_attempt_at = (attempted_at + delay).isoformat()
    return {
        "id": message.id,
        "lease": str(message.lease),
        "message_id": message.msg_id,
        "attempt": message.attempt,
        "attempted_at": attempted_at.isoformat(),
        "status_code": result.status_code,
        "latency_ms": round(result.latency_ms),
        "outcome": result.outcome,
        "error": result.error,
        "next_attempt_at": next_attempt_at,
    }


def start_webhooks(settings: Settings) -> Webhooks:
    webhooks = Webhooks.for_settings(settings)
    webhooks.start()
    return webhooks


def stop_webhooks(webhooks: Webhooks, timeout: float) -> None:
    """Stop claiming and wait up to `timeout` for what is in flight to be recorded."""
    webhooks.stop()
    deadline = time.monotonic() + timeout
    webhooks.join(max(deadline - time.monotonic(), 0))
