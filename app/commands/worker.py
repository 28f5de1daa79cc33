"""`drumbeat worker`: the dispatcher (a procrastinate worker) until SIGTERM / Ctrl-C."""

from __future__ import annotations

import argparse
import logging

from app.commands import EXIT_OK, fail, settings_for

HELP = "run the dispatcher (procrastinate worker) until SIGTERM / Ctrl-C"
log = logging.getLogger("drumbeat.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency", type=int, default=4, help="batches in flight at once in this process (default 4)"
    )


def missing_credentials(settings) -> str | None:
    """In production, a channel that active sequences use must have its provider configured."""
    import psycopg

    from app.core.queries import queries

    with psycopg.connect(settings.database_url) as conn:
        channels = [row[0] for row in conn.execute(queries("dispatch")["active_channels"])]
    missing = [c for c in channels if not settings.has_credentials(c)]
    variables = {
        "sms": "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        "email": "SMTP_HOST (and SMTP_* as needed)",
    }
    if missing:
        return "; ".join(f"active sequences send {c} but {variables[c]} are not set" for c in missing)
    return None


def announce_outbox(settings) -> None:
    """Say loudly, at start, which channels go to the outbox instead of recipients."""
    for channel in ("sms", "email"):
        if settings.transport == "outbox" or not settings.has_credentials(channel):
            log.warning("%s messages go to the OUTBOX (drumbeat.outbox), NOT to recipients", channel)


def refuse_in_production(settings) -> str | None:
    if settings.production and settings.transport != "outbox":
        return missing_credentials(settings)
    return None


def run(args: argparse.Namespace) -> int:
    from workers.app import run_until_signalled

    settings = settings_for("worker")
    if problem := refuse_in_production(settings):
        return fail("worker", f"refusing to start in production: {problem}")
    announce_outbox(settings)
    run_until_signalled(settings, args.concurrency)
    return EXIT_OK
