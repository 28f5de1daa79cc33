"""Reconnecting to Postgres with backoff: the worker's own connections (each dispatcher's, the outbox's) and
the wait before procrastinate's worker is started again after a database fault (workers/app.py).

Why a capped backoff, and why a low cap: a worker that retries at once, in a loop, floods the logs and a
recovering server; one whose delay keeps doubling (psycopg_pool's reconnect attempts grow to minutes) is
still waiting long after Postgres is back. Attempts start RETRY_FIRST_SECONDS apart, double, and stay at
most RETRY_MAX_SECONDS apart: a worker resumes within about that long of Postgres answering again, and makes
at most one attempt per RETRY_MAX_SECONDS (per waiting thread) during an outage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import psycopg

log = logging.getLogger("drumbeat.worker")
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5


def delays() -> Iterator[float]:
    """The waits between attempts: 0.25, 0.5, 1, 2, 2, ... seconds."""
    delay = RETRY_FIRST_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, RETRY_MAX_SECONDS)


def connect(
    conninfo: str,
    *,
    budget: float,
    prepare: Callable[[psycopg.Connection], object] | None = None,
    stopping: threading.Event | None = None,
    purpose: str = "dispatcher",
) -> psycopg.Connection:
    """An autocommit connection (`prepare`d, e.g. SET ROLE), retried with backoff while Postgres refuses it,
    for up to `budget` seconds or until `stopping` is set; then the last error is raised. Each failed
    attempt logs `database_unavailable`."""
    deadline = time.monotonic() + budget
    for attempt, delay in enumerate(delays(), start=1):
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
            try:
                if prepare is not None:
                    prepare(conn)
            except BaseException:
                conn.close()
                raise
            if attempt > 1:
                log.warning("database_reconnected", extra={"purpose": purpose, "attempts": attempt})
            return conn
        except psycopg.OperationalError as error:
            give_up = time.monotonic() + delay > deadline or (stopping is not None and stopping.is_set())
            log_unavailable(purpose, attempt, None if give_up else delay, error)
            if give_up:
                raise
            if stopping is not None:
                if stopping.wait(delay):
                    raise
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


def log_unavailable(purpose: str, attempt: int, retry_in: float | None, error: Exception) -> None:
    """One `database_unavailable` line per failed attempt: its first line of error text names the cause
    (refused, timeout, authentication) and never holds the password (libpq does not echo it)."""
    log.warning(
        "database_unavailable",
        extra={
            "purpose": purpose,
            "attempt": attempt,
            "retry_in_s": retry_in,
            "error_type": type(error).__name__,
            "error": (str(error).strip().splitlines() or [""])[0],
        },
    )
