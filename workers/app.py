"""The worker process: a procrastinate app whose tick fans due work out as batch jobs, several times a second.

Once a second (a periodic task with a seconds column; procrastinate makes sure one tick per second is
deferred cluster-wide) a tick starts; it then polls the due backlog every POLL_SECONDS until just before
the next tick, and each time work is due it defers `dispatch` jobs, one per batch. A step that comes due
mid-second is therefore picked up within ~POLL_SECONDS, not at the next whole second (docs/ARCHITECTURE.md:
p99 from due time to the transport call < 1 s). A dispatch job claims one batch (SKIP LOCKED), sends it and records
it; when its batch was full it defers a follow-up, so a large backlog keeps every worker's slots busy. One
job carries a batch, never one message. Waiting dispatch jobs are bounded: each holds one of MAX_FAN_OUT
queueing locks ("slots"), so polling ten times a second never piles up jobs that would find nothing.
Each tick also returns lapsed reservations to the queue (a worker died before starting them). Every five
seconds a `reconcile` job asks Twilio about the deliveries whose answer was lost (workers/reconcile.py).
SIGTERM (app/commands/worker.py): `stop_dispatching()` first, so batches start nothing new and release their
unstarted reservations at once; procrastinate stops taking jobs and lets running ones finish.
Every line a job logs carries "job-<procrastinate job id>" as its correlation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import threading
import time

import procrastinate
import psycopg
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Status
from procrastinate.manager import JobManager

from app.core.links import LinkSigner
from app.core.logs import correlation
from app.core.queries import queries
from app.core.settings import Settings
from workers import reconnect
from workers.dispatcher import Dispatcher
from workers.mailboxes import Mailboxes
from workers.transports import OutboxTransport, SmtpTransport, Transport, TwilioTransport
from workers.webhooks import start_webhooks, stop_webhooks

log = logging.getLogger("drumbeat.worker")
tasks = procrastinate.Blueprint()
BATCH_SIZE = 500
MAX_FAN_OUT = 32
RECOVER_EVERY_SECONDS = 30
# Why 0.1 s: at 1k due steps/s a poll finds ~100 steps, one cheap job; the pickup delay it adds (~50 ms on
# average, 100 ms at worst) leaves most of the 1 s lateness budget to claiming and sending.
POLL_SECONDS = 0.1
# Why 0.95 s: a tick polls until just before the next one starts, so polling never stops for long and two
# ticks seldom overlap (when one starts late they do overlap briefly; the slot locks make that harmless).
TICK_SECONDS = 0.95
FETCH_POLL_SECONDS = 0.5
# After SIGTERM: procrastinate waits this long for the jobs it holds (a batch finishes its in-flight sends,
# each bounded by its transport's timeout, 10 s for Twilio) ...
GRACE_SECONDS = 20.0
# ... and the process is gone by this deadline whatever a send is doing (orchestrators kill at 30 s).
HARD_EXIT_SECONDS = 28.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Postgres faults (README, "Running the dispatcher"). A job waits this long for a new connection of its own
# before it fails (the next tick tries again) ...
CONNECT_RETRY_SECONDS = 10.0
# ... and a batch whose record call lost its connection this long, so that what it sent is recorded
# instead of left 'sending' until its lease (then unknown): the outage it survives, within the lease.
RECORD_RETRY_SECONDS = 60.0
# procrastinate's pool lends a connection within this or fails the call: a worker that cannot reach Postgres
# notices (and is restarted, below) within seconds instead of after psycopg_pool's 30 s default.
POOL_TIMEOUT_SECONDS = 5.0

_settings: Settings | None = None
_local = threading.local()
# Shared by every dispatcher of the process: set once the worker is asked to stop.
_stopping = threading.Event()


def stop_dispatching() -> None:
    """Start nothing new: running batches release their unstarted reservations and finish what is in flight."""
    _stopping.set()


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def transports_for(settings: Settings) -> dict[str, Transport]:
    """The transport of each channel: the provider when its credentials are set, else the outbox."""
    outbox = OutboxTransport(settings.database_url)
    chosen: dict[str, Transport] = {"sms": outbox, "email": outbox}
    if settings.transport == "outbox":
        return chosen
    if settings.has_credentials("sms"):
        # Not to the development default (this machine's API): Twilio cannot reach it, and would only log a
        # failed callback for every message.
        reachable = settings.public_url and not settings.public_url_defaulted
        callback = f"{settings.public_url}/webhooks/twilio/status" if reachable else None
        chosen["sms"] = TwilioTransport(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_base_url,
            status_callback=callback,
        )
    if settings.has_credentials("email"):
        chosen["email"] = SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_starttls,
        )
    return chosen


def links_for(settings: Settings) -> LinkSigner | None:
    """The link signer, when both the public URL and the secret are configured."""
    if settings.public_url and settings.secret_key:
        return LinkSigner(settings.public_url, settings.secret_key)
    _warn_no_links()
    return None


@functools.cache  # once per process, not once per worker thread
def _warn_no_links() -> None:
    log.warning(
        "DRUMBEAT_PUBLIC_URL or DRUMBEAT_SECRET_KEY is not set: messages using {{ unsubscribe_url }} will fail"
    )


def _dispatcher() -> Dispatcher:
    """One dispatcher (connection + transports) per worker thread: psycopg connections are not shared. A
    connection Postgres dropped (restart, terminated backend) is replaced, retried with backoff while
    Postgres refuses connections (workers/reconnect.py)."""
    dispatcher = getattr(_local, "dispatcher", None)
    if dispatcher is None:
        dispatcher = Dispatcher(
            _connect(),
            transports_for(_settings),
            batch_size=BATCH_SIZE,
            links=links_for(_settings),
            send_concurrency=_settings.send_concurrency,
            stopping=_stopping,
            reconnect=functools.partial(_connect, RECORD_RETRY_SECONDS),
        )
        _local.dispatcher = dispatcher
    elif not _answers(dispatcher.conn):
        log.warning("database_connection_lost", extra={"purpose": "dispatcher"})
        dispatcher.conn.close()
        dispatcher.conn = _connect()
    return dispatcher


def _answers(conn: psycopg.Connection) -> bool:
    """Is this connection still good? Why ask (one empty round trip per job, as psycopg_pool's check does):
    after a restart or a terminated backend, a connection looks open until used, and the job would fail on
    it."""
    if conn.closed:
        return False
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return True


def _connect(budget: float = CONNECT_RETRY_SECONDS) -> psycopg.Connection:
    """A dispatcher's connection, acting as drumbeat_worker; retried for up to `budget` seconds."""
    return reconnect.connect(
        _settings.database_url,
        budget=budget,
        prepare=lambda conn: conn.execute(queries("dispatch")["become_worker"]),
        stopping=_stopping,
    )


@tasks.periodic(cron="* * * * * *", periodic_id="tick")
@tasks.task(name="drumbeat.tick", queue="drumbeat", queueing_lock="drumbeat.tick", pass_context=True)
def tick(context: procrastinate.JobContext, timestamp: int) -> int:
    """Poll the due backlog every POLL_SECONDS for TICK_SECONDS, fanning it out as batch jobs; every
    RECOVER_EVERY_SECONDS, recover expired leases first. Returns how many jobs it deferred."""
    with correlation(job_correlation_id(context)):
        return _run_tick(_dispatcher(), timestamp)


def job_correlation_id(context: procrastinate.JobContext) -> str:
    return f"job-{context.job.id}"


def _run_tick(dispatcher: Dispatcher, timestamp: int) -> int:
    if _stopping.is_set():
        return 0
    _recover_if_due(dispatcher, timestamp)
    if released := dispatcher.release_lapsed():
        log.warning("reservations_lapsed", extra={"count": released})
    # Why poll inside the tick rather than tick faster: procrastinate's periodic tasks have one-second
    # resolution, and one poller at a time (the tick's queueing lock) keeps the backlog query cheap however
    # many workers run. The tick holds one worker slot for most of each second; run --concurrency >= 2.
    started = time.monotonic()
    deferred, polls = 0, 0
    while True:
        deferred += fan_out(dispatcher)
        polls += 1
        next_poll = started + polls * POLL_SECONDS  # drift-free: a slow poll does not push the next ones
        if next_poll > started + TICK_SECONDS or _stopping.is_set():
            return deferred
        time.sleep(max(0.0, next_poll - time.monotonic()))


def _recover_if_due(dispatcher: Dispatcher, timestamp: int) -> None:
    every = min(RECOVER_EVERY_SECONDS, _settings.delivery_lease_seconds)
    if timestamp % every == 0 and (
        recovered := dispatcher.recover(f"{_settings.delivery_lease_seconds} seconds")
    ):
        # Each one also has its delivery_unknown line (app/core/event_log.py); this is the incident's summary.
        log.warning("deliveries_recovered", extra={"count": recovered})


def fan_out(dispatcher: Dispatcher) -> int:
    """Defer one dispatch job per batch of due steps (claimed steps are no longer due, so this counts only
    work nobody has taken); returns how many it deferred."""
    backlog = dispatcher.conn.execute(
        queries("dispatch")["due_backlog"], {"cap": BATCH_SIZE * MAX_FAN_OUT}
    ).fetchone()[0]
    return sum(_defer_dispatch(slot) for slot in range(math.ceil(backlog / BATCH_SIZE)))


def _defer_dispatch(slot: int) -> bool:
    """Defer a dispatch job in `slot` unless one already waits there (it will claim the same work: a job
    claims whatever is due when it starts). Why slots: the backlog still counts steps whose job has been
    deferred but not yet started, so without them every poll would add jobs for the same steps."""
    try:
        dispatch.configure(queueing_lock=f"drumbeat.dispatch.{slot}").defer(slot=slot)
    except AlreadyEnqueued:
        return False
    return True


@tasks.task(name="drumbeat.dispatch", queue="drumbeat", pass_context=True)
def dispatch(context: procrastinate.JobContext, slot: int = 0) -> int:
    """Claim, send and record one batch; a full batch means more is waiting: defer a follow-up (in the
    same slot; if a job already waits there, it carries on instead)."""
    with correlation(job_correlation_id(context)):
        handled = _dispatcher().run_once()
    if handled >= BATCH_SIZE:
        _defer_dispatch(slot)
    return handled


@tasks.periodic(cron="* * * * * */5", periodic_id="reconcile")  # croniter: seconds are the sixth field
@tasks.task(
    name="drumbeat.reconcile", queue="drumbeat", queueing_lock="drumbeat.reconcile", pass_context=True
)
def reconcile(context: procrastinate.JobContext, timestamp: int) -> int:
    """Settle unknown deliveries the provider can tell us about (workers/reconcile.py). Its own job, not part
    of the tick: its provider round trips must never delay the tick's polling of due steps."""
    if _stopping.is_set():
        return 0
    with correlation(job_correlation_id(context)):
        settled = _dispatcher().reconcile()
    if settled:
        log.info("deliveries_reconciled", extra={"count": settled})
    return settled


@tasks.periodic(cron="*/15 * * * *", periodic_id="prune")
@tasks.task(
    name="drumbeat.prune_jobs", queue="drumbeat", queueing_lock="drumbeat.prune_jobs", pass_context=True
)
async def prune_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
    """procrastinate keeps every finished job, and the tick alone finishes one a second (86k rows a day):
    see prune."""
    await prune(context.app.job_manager)


async def prune(manager: JobManager) -> int:
    """Delete our queue's succeeded jobs (and the stalled ones aborted before) older than an hour; first,
    abort the jobs a dead worker left 'doing' (SIGKILL, a lost machine: its heartbeat stopped), which
    procrastinate would otherwise keep forever. Nothing is lost with them: what such a job had claimed comes
    back through its reservations and delivery leases (drumbeat.release_reservations, recover_deliveries).
    Returns how many it aborted."""
    stalled = await manager.get_stalled_jobs(queue="drumbeat")
    for job in stalled:
        with contextlib.suppress(ConnectorException):  # finished meanwhile
            await manager.finish_job_by_id_async(job.id, Status.ABORTED, delete_job=False)
    if stalled:
        log.warning("stalled_jobs_aborted", extra={"count": len(stalled)})
    await manager.delete_old_jobs(nb_hours=1, queue="drumbeat", include_aborted=True)
    return len(stalled)


def build_app(settings: Settings) -> procrastinate.App:
    """The procrastinate app on DATABASE_URL; its tables live in schema `procrastinate` (drumbeat migrate)."""
    configure(settings)
    connector = procrastinate.PsycopgConnector(
        conninfo=settings.database_url,
        kwargs={"options": "-c search_path=procrastinate"},
        timeout=POOL_TIMEOUT_SECONDS,
    )
    # Why a short fetch polling interval: workers hear of new jobs through LISTEN/NOTIFY, but a notification
    # sent while the listener is not connected (at start, or while it reconnects) is lost, and procrastinate
    # would find the job only at its next poll, 5 s later by default: far past the 1 s lateness target.
    # One cheap indexed query per half second per worker process bounds that.
    app = procrastinate.App(
        connector=connector, worker_defaults={"fetch_job_polling_interval": FETCH_POLL_SECONDS}
    )
    app.add_tasks_from(tasks, namespace="drumbeat")
    return app


async def run_beside(settings: Settings, concurrency: int = 4) -> None:
    """A worker in the running event loop beside other work (`drumbeat up`, `drumbeat demo`, and
    `drumbeat worker` through run_until_signalled): it installs no signal handlers (the caller owns them).
    Cancel its task once to stop it: batches start nothing new and release their unstarted reservations at
    once, and procrastinate waits (up to GRACE_SECONDS) for the jobs it holds to record what is in flight;
    a second cancel abandons them mid-send.

    Postgres faults: procrastinate's worker stops by itself when it loses the database (its LISTEN
    connection, heartbeat or periodic deferrer fails: "side task failed, stopping worker"), or fails
    (fetching a job raised). Left alone, `drumbeat worker` would then exit 0 while Postgres restarts. So it
    is started again, on a new connection pool, as soon as Postgres answers (probed with backoff:
    workers/reconnect.py), for as long as nobody asked it to stop."""
    _stopping.clear()  # a process may run several workers one after another (tests, `drumbeat demo`)
    mailboxes = Mailboxes.for_settings(settings)  # IMAP inboxes, in threads of their own
    mailboxes.start()
    webhooks = start_webhooks(settings)  # outgoing webhooks, likewise
    # One app for every restart: its connector makes a new pool each time it is opened, and building the app
    # again would prefix the blueprint's task names once more (add_tasks_from renames them in place).
    app = build_app(settings)
    restarts = reconnect.delays()
    try:
        while not _stopping.is_set():
            await _until_database_answers(settings)
            started = time.monotonic()
            try:
                await _run_worker(app, concurrency)
                reason = "worker stopped by itself"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # whatever stopped it (a database fault), the worker keeps working
                reason = f"{type(error).__name__}: {str(error).strip()}"
            if _stopping.is_set():
                return
            if time.monotonic() - started > 60:
                restarts = reconnect.delays()  # it had recovered: the next fault starts the backoff afresh
            delay = next(restarts)
            log.warning("worker_restarting", extra={"reason": reason, "retry_in_s": delay})
            await asyncio.sleep(delay)
    except asyncio.CancelledError:
        stop_dispatching()  # asked to stop while no procrastinate worker was running: nothing to wait for
    finally:
        mailboxes.stop()
        # Its sends in flight finish (10 s at most) and are recorded, off the event loop.
        await asyncio.to_thread(stop_webhooks, webhooks, GRACE_SECONDS)


async def _until_database_answers(settings: Settings) -> None:
    """Return once a connection to DATABASE_URL succeeds, trying with backoff (one line per failed try)."""
    for attempt, delay in enumerate(reconnect.delays(), start=1):
        try:
            conn = await psycopg.AsyncConnection.connect(
                settings.database_url, connect_timeout=reconnect.CONNECT_TIMEOUT_SECONDS
            )
        except psycopg.OperationalError as error:
            reconnect.log_unavailable("job queue", attempt, delay, error)
            await asyncio.sleep(delay)
            continue
        await conn.close()
        if attempt > 1:
            log.warning("database_reconnected", extra={"purpose": "job queue", "attempts": attempt})
        return


async def _run_worker(app: procrastinate.App, concurrency: int) -> None:
    """procrastinate's worker until it stops by itself (returns, or raises), or this is cancelled (then
    it is stopped gracefully, see run_beside, and CancelledError propagates)."""
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["drumbeat"],
                concurrency=concurrency,
                install_signal_handlers=False,
                shutdown_graceful_timeout=GRACE_SECONDS,
            ),
            name="procrastinate worker",
        )
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            # Why not simply let procrastinate stop: it would let each batch run to its end, sending
            # hundreds of messages after the stop was asked for; the batches must hear of it first.
            stop_dispatching()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            raise


def run_until_signalled(settings: Settings, concurrency: int) -> None:
    """`drumbeat worker`: run until SIGTERM or SIGINT, then stop gracefully within HARD_EXIT_SECONDS. A
    second signal exits at once: only the sends in flight are lost (they become unknown, never resent)."""
    asyncio.run(_until_signalled(settings, concurrency))


async def _until_signalled(settings: Settings, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    worker = asyncio.create_task(run_beside(settings, concurrency), name="worker")

    def stop(signum: int) -> None:
        log.warning("worker_stopping", extra={"signal": signal.Signals(signum).name})
        worker.cancel()
        deadline = threading.Timer(HARD_EXIT_SECONDS, _exit_now, ("grace_expired",))
        deadline.daemon = True
        deadline.start()
        for again in STOP_SIGNALS:
            loop.add_signal_handler(again, _exit_now, "second_signal")

    for stop_signal in STOP_SIGNALS:
        loop.add_signal_handler(stop_signal, stop, stop_signal)
    await worker
    log.info("worker_stopped")


def _exit_now(reason: str) -> None:
    """Leave without waiting for the sends in flight (each stays 'sending' until its lease, then unknown)."""
    log.warning("worker_exiting_now", extra={"reason": reason})
    logging.shutdown()
    os._exit(1)
