"""`drumbeat worker` as a real process: it sends due steps through the outbox within seconds, picks up a
step that comes due mid-second well within that second, and stops cleanly on SIGTERM; in production it
refuses to start without the credentials active sequences need."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time

import psycopg

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.processes import (
    DRUMBEAT,
    enroll_email_contacts,
    outbox_count,
    run_worker_until_sent,
    worker_environment,
)


def test_worker_sends_due_steps_and_stops_on_sigterm(db_url):
    enroll_email_contacts(db_url, 5)
    stderr = run_worker_until_sent(db_url, 5)
    assert "email messages go to the OUTBOX" in stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1").fetchall() == [
            ("sent", 5)
        ]


def _wait_for_a_tick(db_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            ran = conn.execute(
                """SELECT count(*) FROM procrastinate.procrastinate_jobs
                   WHERE task_name LIKE '%drumbeat.tick' AND status = 'succeeded'"""
            ).fetchone()[0]
            if ran:
                return
            time.sleep(0.1)
    raise AssertionError("the worker ran no tick")


# Per job: when it was deferred, started and finished (procrastinate's events, on the database's clock).
JOB_TIMES = """
    SELECT j.task_name,
           min(e.at) FILTER (WHERE e.type = 'deferred') AS deferred_at,
           min(e.at) FILTER (WHERE e.type = 'started') AS started_at,
           max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed')) AS finished_at
    FROM procrastinate.procrastinate_jobs j JOIN procrastinate.procrastinate_events e ON e.job_id = j.id
    GROUP BY j.id, j.task_name"""
# A tick's last poll runs just before it finishes: a step that became visible this close to a tick's end
# (or between two ticks) is, by design, found by the next tick's first poll, and is not judged.
LAST_POLL_MARGIN = dt.timedelta(seconds=0.25)


def test_steps_due_mid_second_are_picked_up_within_that_second(db_url):
    """A step is picked up by the next backlog poll (every 0.1 s) of the tick already running when it came
    due, not by the next whole-second tick. Judged on the database's clock, not by lateness in seconds
    (which a loaded machine stretches): the dispatch job that claimed each step was deferred before the
    tick that was running when the step became visible had finished. With one poll per tick (at its start)
    every such job would be deferred by a later tick. Steps come due 0.37 s apart, at spread offsets
    within the second."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [{"kind": "email", "subject": "Hi", "body": "Hello"}]
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=steps))
        contacts = tenant.contacts(*[{"email": f"c{i}@example.com"} for i in range(8)])
        conn.commit()
        worker = subprocess.Popen(
            [DRUMBEAT, "worker", "--concurrency", "2"],
            env=worker_environment(db_url, DRUMBEAT_TRANSPORT="outbox"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_a_tick(db_url)
            due, visible = {}, {}
            for contact in contacts:
                # enroll_contacts makes the first step due at the SQL clock, now() of this transaction.
                tenant.enroll(sequence, [contact])
                due[contact] = conn.execute("SELECT now()").fetchone()[0]
                conn.commit()
                # Committed: from this instant on (at the latest) every poll can see the step.
                visible[contact] = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                conn.commit()
                time.sleep(0.37)
            deadline = time.monotonic() + 30
            while outbox_count(db_url) < len(contacts) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr
        conn.execute("RESET ROLE")
        sent, claimed = {}, {}
        for contact, created_at, claimed_at in conn.execute(
            """SELECT d.contact_id, o.created_at, d.claimed_at FROM drumbeat.outbox o
               JOIN drumbeat.deliveries d ON d.id = o.delivery_id"""
        ):
            sent[contact], claimed[contact] = created_at, claimed_at
        jobs = conn.execute(JOB_TIMES).fetchall()
    assert set(sent) == set(contacts)
    lateness = sorted(round((sent[c] - due[c]).total_seconds(), 3) for c in contacts)
    assert lateness[-1] < 10, lateness  # a generous bound: the point is made below, not in seconds
    ticks = [(started, finished) for task, _, started, finished in jobs if task.endswith("drumbeat.tick")]
    dispatches = [j for j in jobs if j[0].endswith("drumbeat.dispatch") and j[2] and j[3]]
    judged, waited = 0, []
    for contact in contacts:
        running = [
            finished
            for started, finished in ticks
            if started and finished and started <= visible[contact] <= finished - LAST_POLL_MARGIN
        ]
        if not running:
            continue  # it became visible after a tick's last poll, or between ticks
        judged += 1
        claiming = [
            deferred
            for _, deferred, started, finished in dispatches
            if started <= claimed[contact] <= finished
        ]
        assert claiming, f"no dispatch job was running when {contact} was claimed"
        if max(claiming) > max(running):
            waited.append((visible[contact], max(claiming)))
    # Ticks that poll until just before the next one see most steps become visible; ticks that end
    # after one poll see none.
    assert judged >= 2, f"only {judged} of {len(contacts)} steps became visible while a tick was polling"
    assert not waited, (
        f"steps left for a later tick (visible at, job deferred at): {waited}; lateness {lateness}"
    )


def test_production_worker_refuses_to_start_without_credentials(db_url):
    enroll_email_contacts(db_url, 1)
    result = subprocess.run(
        [DRUMBEAT, "worker"],
        env=worker_environment(db_url, DRUMBEAT_ENV="production", DRUMBEAT_SECRET_KEY="k" * 40),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to start in production" in result.stderr and "SMTP_HOST" in result.stderr
    assert outbox_count(db_url) == 0


def test_bad_configuration_is_named(db_url):
    result = subprocess.run(
        [DRUMBEAT, "worker"],
        env=worker_environment(db_url, SMTP_PORT="smtp"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "SMTP_PORT must be a TCP port number" in result.stderr


def test_worker_runs_as_a_login_with_only_the_worker_role(db_url):
    """README, "Database roles": a login IN ROLE drumbeat_worker is all a worker needs, job queue included
    (the migrator grants procrastinate's tables to drumbeat_worker)."""
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    login = f"drumbeat_worker_login_{os.getpid()}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE drumbeat_worker").format(sql.Identifier(login)))
    try:
        enroll_email_contacts(db_url, 3)
        run_worker_until_sent(db_url, 3, login=make_conninfo(db_url, user=login))
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))
