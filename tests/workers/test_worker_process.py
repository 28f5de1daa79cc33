"""`drumbeat worker` as a real process: it sends due steps through the outbox within seconds and stops
cleanly on SIGTERM; in production it refuses to start without the credentials active sequences need."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.sql.factories import new_tenant, sms_sequence

DRUMBEAT = [str(Path(sys.executable).parent / "drumbeat")]


def _enroll_email_contacts(db_url: str, count: int) -> None:
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [{"kind": "email", "subject": "Hi {{ contact.first_name }}", "body": "Hello"}]
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=steps))
        contacts = tenant.contacts(
            *[{"email": f"c{i}@example.com", "first_name": f"C{i}"} for i in range(count)]
        )
        tenant.enroll(sequence, contacts)
        conn.commit()


def _outbox_count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM drumbeat.outbox").fetchone()[0]


def _environment(db_url: str, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMTP_", "DRUMBEAT_"))}
    return clean | {"DATABASE_URL": db_url} | extra


def test_worker_sends_due_steps_and_stops_on_sigterm(db_url):
    _enroll_email_contacts(db_url, 5)
    worker = subprocess.Popen(
        [*DRUMBEAT, "worker", "--concurrency", "2"],
        env=_environment(db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while _outbox_count(db_url) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _outbox_count(db_url) == 5
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "email messages go to the OUTBOX" in stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1").fetchall() == [
            ("sent", 5)
        ]


def test_production_worker_refuses_to_start_without_credentials(db_url):
    _enroll_email_contacts(db_url, 1)
    result = subprocess.run(
        [*DRUMBEAT, "worker"],
        env=_environment(db_url, DRUMBEAT_ENV="production", DRUMBEAT_SECRET_KEY="k" * 40),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to start in production" in result.stderr and "SMTP_HOST" in result.stderr
    assert _outbox_count(db_url) == 0


def test_bad_configuration_is_named(db_url):
    result = subprocess.run(
        [*DRUMBEAT, "worker"],
        env=_environment(db_url, SMTP_PORT="smtp"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "SMTP_PORT must be a TCP port number" in result.stderr
