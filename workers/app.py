"""The worker process: a procrastinate app whose one-second tick fans due work out as batch jobs.

Every second (a periodic task with a seconds column; procrastinate makes sure one tick per second is
deferred cluster-wide) the tick counts the due backlog and defers that many `dispatch` jobs, one per
batch. A dispatch job claims one batch (SKIP LOCKED), sends it and records it; when its batch was full
it defers a follow-up, so a large backlog keeps every worker's slots busy. One job carries a batch,
never one message. SIGTERM: procrastinate stops taking jobs and lets running batches finish.
"""

from __future__ import annotations

import logging
import math
import threading

import procrastinate
import psycopg

from app.queries import queries
from app.settings import Settings
from workers.dispatcher import Dispatcher
from workers.links import LinkSigner
from workers.transports import OutboxTransport, SmtpTransport, Transport, TwilioTransport

log = logging.getLogger("drumbeat.worker")
tasks = procrastinate.Blueprint()
BATCH_SIZE = 500
MAX_FAN_OUT = 32
RECOVER_EVERY_SECONDS = 30

_settings: Settings | None = None
_local = threading.local()


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
        callback = f"{settings.public_url}/webhooks/twilio/status" if settings.public_url else None
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
    log.warning(
        "DRUMBEAT_PUBLIC_URL or DRUMBEAT_SECRET_KEY is not set: messages using {{ unsubscribe_url }} will fail"
    )
    return None


def _dispatcher() -> Dispatcher:
    """One dispatcher (connection + transports) per worker thread: psycopg connections are not shared."""
    dispatcher = getattr(_local, "dispatcher", None)
    if dispatcher is None or dispatcher.conn.closed:
        conn = psycopg.connect(_settings.database_url, autocommit=True)
        dispatcher = Dispatcher(
            conn, transports_for(_settings), batch_size=BATCH_SIZE, links=links_for(_settings)
        )
        _local.dispatcher = dispatcher
    return dispatcher


@tasks.periodic(cron="* * * * * *", periodic_id="tick")
@tasks.task(name="drumbeat.tick", queue="drumbeat", queueing_lock="drumbeat.tick", pass_context=True)
def tick(context: procrastinate.JobContext, timestamp: int) -> int:
    """Fan the due backlog out as batch jobs; every RECOVER_EVERY_SECONDS, recover expired leases."""
    dispatcher = _dispatcher()
    every = min(RECOVER_EVERY_SECONDS, _settings.delivery_lease_seconds)
    if timestamp % every == 0 and (
        recovered := dispatcher.recover(f"{_settings.delivery_lease_seconds} seconds")
    ):
        log.warning("recovered %d deliveries left sending past their lease (marked unknown)", recovered)
    backlog = dispatcher.conn.execute(
        queries("dispatch")["due_backlog"], {"cap": BATCH_SIZE * MAX_FAN_OUT}
    ).fetchone()[0]
    jobs = math.ceil(backlog / BATCH_SIZE)
    for _ in range(jobs):
        dispatch.defer()
    return jobs


@tasks.task(name="drumbeat.dispatch", queue="drumbeat")
def dispatch() -> int:
    """Claim, send and record one batch; a full batch means more is waiting: defer a follow-up."""
    handled = _dispatcher().run_once()
    if handled >= BATCH_SIZE:
        dispatch.defer()
    return handled


def build_app(settings: Settings) -> procrastinate.App:
    """The procrastinate app on DATABASE_URL; its tables live in schema `procrastinate` (drumbeat migrate)."""
    configure(settings)
    connector = procrastinate.PsycopgConnector(
        conninfo=settings.database_url, kwargs={"options": "-c search_path=procrastinate"}
    )
    app = procrastinate.App(connector=connector)
    app.add_tasks_from(tasks, namespace="drumbeat")
    return app
