"""Running `drumbeat` as a real process, as an operator would, with a controlled environment: none of
Drumbeat's own variables is inherited from the test run, and the working directory is the test's own
(so no stray .env is read). Also `drumbeat worker` run until the outbox holds what it should, and a free
TCP port for a `drumbeat api` or `drumbeat up` of a test's own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.sql.factories import Tenant, new_tenant, sms_sequence

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")
DRUMBEAT_VARIABLES = ("DATABASE_URL", "DRUMBEAT_", "TWILIO_", "SMTP_")


def drumbeat(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`drumbeat ARGS` in `cwd`, with the inherited environment minus Drumbeat's variables, plus `variables`."""
    return subprocess.run(
        [DRUMBEAT, *args],
        cwd=cwd,
        env=drumbeat_environment(**variables),
        capture_output=True,
        text=True,
        timeout=120,
    )


def drumbeat_environment(**variables: str) -> dict[str, str]:
    """The inherited environment minus Drumbeat's variables, plus `variables`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(DRUMBEAT_VARIABLES)} | variables


def committed_tenant(db_url: str, *, active_sequence: bool = False) -> Tenant:
    """A workspace with an sms and an email sender (and an active sms sequence), committed so that a
    `drumbeat` process sees it. The returned tenant's connection is closed."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        if active_sequence:
            tenant.sequence()
        conn.commit()
    return tenant


def midday_timezone() -> str:
    """A timezone where it is around noon right now: SMS steps due in it are inside their default quiet
    hours (08:00-21:00 local) whenever the test runs. Etc/GMT-N is UTC+N (POSIX signs)."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12  # -12 .. +11: the local hour is 12
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_environment(db_url: str, **extra: str) -> dict[str, str]:
    """The inherited environment minus the provider and Drumbeat variables, with DATABASE_URL and `extra`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMTP_", "DRUMBEAT_"))}
    return clean | {"DATABASE_URL": db_url} | extra


def enroll_email_contacts(db_url: str, count: int) -> None:
    """A workspace whose `count` contacts are enrolled (committed) in an email sequence due at once."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [{"kind": "email", "subject": "Hi {{ contact.first_name }}", "body": "Hello"}]
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=steps))
        contacts = tenant.contacts(
            *[{"email": f"c{i}@example.com", "first_name": f"C{i}"} for i in range(count)]
        )
        tenant.enroll(sequence, contacts)
        conn.commit()


def outbox_count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM drumbeat.outbox").fetchone()[0]


def wait_for_outbox(db_url: str, expected: int, worker: subprocess.Popen, timeout: float = 20) -> int:
    """How many messages the outbox holds once it has `expected`, the worker has exited, or time is up."""
    deadline = time.monotonic() + timeout
    while outbox_count(db_url) < expected and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
    return outbox_count(db_url)


def run_worker_until_sent(db_url: str, expected: int, login: str | None = None, **extra: str) -> str:
    """Start `drumbeat worker` (as `login`'s conninfo when given, with `extra` variables), wait until the
    outbox of db_url holds `expected` messages, stop it with SIGTERM; its stderr, once it has exited
    cleanly with 0."""
    worker = subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "2"],
        env=worker_environment(login or db_url, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_outbox(db_url, expected, worker) == expected
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    return stderr


@contextmanager
def api_server(environment: dict[str, str]) -> Iterator[str]:
    """`drumbeat api` on a free port, in the background: its base URL once it serves; stopped after."""
    port = free_port()
    process = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(httpx.Client(base_url=base), process)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def wait_until_serving(http: httpx.Client, server: subprocess.Popen) -> None:
    """Return once `drumbeat api` (or `up`) answers /healthz; fail if it exits or takes over 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            http.get("/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("drumbeat api did not start serving")
