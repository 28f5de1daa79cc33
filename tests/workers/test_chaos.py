"""Chaos: several real `drumbeat worker` processes share thousands of due steps while some are killed with
SIGKILL mid-run and restarted, and a database connection is terminated. Nothing may be sent twice, every
delivery must end sent, failed (then retried) or unknown, and every enrollment must agree with its deliveries."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import psycopg

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.processes import DRUMBEAT, worker_environment

CONTACTS = 2000
LEASE_SECONDS = 3


def _enroll(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [
            {"kind": "email", "subject": "One", "body": "First"},
            {"kind": "email", "subject": "Two", "body": "Second"},
        ]
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=steps))
        contacts = tenant.contacts(*[{"email": f"c{i}@example.com"} for i in range(CONTACTS)])
        tenant.enroll(sequence, contacts)
        conn.commit()


def _start(db_url: str) -> subprocess.Popen:
    environment = worker_environment(db_url, DRUMBEAT_DELIVERY_LEASE=str(LEASE_SECONDS))
    return subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "3"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _settled(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        live = conn.execute("SELECT count(*) FROM drumbeat.enrollments WHERE status = 'active'").fetchone()[0]
        sending = conn.execute(
            "SELECT count(*) FROM drumbeat.deliveries WHERE status = 'sending'"
        ).fetchone()[0]
    return live == 0 and sending == 0


def _terminate_a_worker_connection(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid()
                          AND backend_type = 'client backend' LIMIT 1""")


def test_killed_workers_never_send_twice_and_lose_nothing(db_url):
    _enroll(db_url)
    chance = random.Random(7)
    workers = [_start(db_url) for _ in range(3)]
    try:
        for round_ in range(6):
            time.sleep(chance.uniform(0.3, 1.0))
            victim = chance.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = _start(db_url)
            if round_ == 2:
                _terminate_a_worker_connection(db_url)
        deadline = time.monotonic() + 150  # a transient failure retries after a minute
        while not _settled(db_url) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)

    with psycopg.connect(db_url) as conn:

        def one(query: str):
            return conn.execute(query).fetchall()

        assert one("SELECT status, count(*) FROM drumbeat.enrollments GROUP BY 1") == [
            ("completed", CONTACTS)
        ]
        statuses = dict(one("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1"))
        print("delivery statuses after the chaos:", statuses)
        # failed: an attempt that met the terminated connection (transient), retried after its backoff.
        assert set(statuses) <= {"sent", "failed", "unknown"}, statuses
        # Never twice: at most one delivery per enrollment and step left the building (sent or unknown),
        # and the outbox never holds two messages for one enrollment and step.
        assert one("""SELECT count(*) FROM (SELECT 1 FROM drumbeat.deliveries WHERE status IN ('sent', 'unknown')
                      GROUP BY enrollment_id, step_id HAVING count(*) > 1) AS twice""") == [(0,)]
        assert one("""SELECT count(*) FROM (SELECT 1 FROM drumbeat.outbox o JOIN drumbeat.deliveries d ON d.id = o.delivery_id
                      GROUP BY d.enrollment_id, d.step_id HAVING count(*) > 1) AS twice""") == [(0,)]
        # Nothing lost: every enrollment has exactly one settled delivery per step.
        assert one("SELECT count(*) FROM drumbeat.deliveries WHERE status IN ('sent', 'unknown')") == [
            (2 * CONTACTS,)
        ]
        # Every message counted as sent is in the outbox, and nothing is in the outbox that was not claimed.
        assert one("""SELECT count(*) FROM drumbeat.deliveries d WHERE d.status = 'sent'
                      AND NOT EXISTS (SELECT 1 FROM drumbeat.outbox o WHERE o.delivery_id = d.id)""") == [
            (0,)
        ]
