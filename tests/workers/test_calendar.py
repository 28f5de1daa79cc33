"""The calendar, end to end: a real `drumbeat worker` (outbox transport) and the SQL clock. Windows
(business hours, quiet hours in the contact's zone) and daily caps (the sequence's max_per_day, the sender's
daily_cap) hold steps back; moving the clock past the hold lets them go. Every assertion is on what the
outbox received.

The clock: `ALTER DATABASE ... SET drumbeat.clock` reaches new connections only, so each phase sets it and
then runs a fresh worker until it has settled (one full tick seen, no dispatch job waiting or running, no
delivery in flight), then stops it with SIGTERM. Nothing sleeps for hours: the clock moves instead."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from tests.sql.factories import Tenant, new_tenant
from tests.sql.worker_calls import at
from tests.support import call_one
from tests.support.processes import DRUMBEAT, worker_environment

EMAIL_STEP = {"kind": "email", "subject": "Hi", "body": "Hello {{ contact.first_name }}"}
SMS_STEP = {"kind": "sms", "body": "Hi {{ contact.first_name }}"}


def set_clock(db_url: str, instant: str) -> None:
    """The SQL clock of every new connection to this database (the worker's included)."""
    name = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET drumbeat.clock = {}").format(
                sql.Identifier(name), sql.Literal(instant)
            )
        )


def _count(conn: psycopg.Connection, query: str) -> int:
    return conn.execute(query).fetchone()[0]


def _ticks_done(conn: psycopg.Connection) -> int:
    return _count(
        conn,
        """SELECT count(*) FROM procrastinate.procrastinate_jobs
           WHERE task_name LIKE '%drumbeat.tick' AND status = 'succeeded'""",
    )


def _settled(conn: psycopg.Connection, ticks_before: int) -> bool:
    """A tick of this worker ran to its end (it polled the backlog about ten times), the jobs it deferred
    are done, and no delivery is in flight: whatever the clock lets go has gone."""
    ticks = _ticks_done(conn)
    busy = _count(
        conn,
        """SELECT count(*) FROM procrastinate.procrastinate_jobs
           WHERE task_name LIKE '%drumbeat.dispatch' AND status IN ('todo', 'doing')""",
    )
    sending = _count(conn, "SELECT count(*) FROM drumbeat.deliveries WHERE status = 'sending'")
    return ticks > ticks_before and busy == 0 and sending == 0


def _outbox(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT to_address FROM drumbeat.outbox ORDER BY id")]


def run_worker_at(db_url: str, instant: str) -> list[str]:
    """Set the clock, run a worker until it has settled, stop it; the addresses the outbox received
    meanwhile, in order."""
    set_clock(db_url, instant)
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = _outbox(conn)
        ticks_before = _ticks_done(conn)
        worker = subprocess.Popen(
            [DRUMBEAT, "worker", "--concurrency", "2"],
            env=worker_environment(db_url, DRUMBEAT_TRANSPORT="outbox"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _settled(conn, ticks_before) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _settled(conn, ticks_before), "the worker did not settle within 30 s"
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr
        after = _outbox(conn)
    assert after[: len(before)] == before
    return after[len(before) :]


def _sequence(tenant: Tenant, channel: str, settings: dict, step: dict) -> uuid.UUID:
    return tenant.sequence(
        {"name": f"Calendar {channel}", "channel": channel, "settings": settings, "steps": [step]}
    )


def _enroll_one_by_one(
    conn: psycopg.Connection, tenant: Tenant, sequence, contacts: list, first_due: str
) -> None:
    """Enroll each contact a minute after the previous one (on the SQL clock), so that their first steps
    are due in this order and a cap lets the earliest go first."""
    for minute, contact in enumerate(contacts):
        instant = at(first_due) + timedelta(minutes=minute)
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (instant.isoformat(),))
        tenant.enroll(sequence, [contact])
    conn.commit()


def _next_action_at(db_url: str, email: str) -> datetime | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            """SELECT e.next_action_at FROM drumbeat.enrollments e
               JOIN drumbeat.contacts c ON c.id = e.contact_id WHERE c.email = %s""",
            (email,),
        ).fetchone()[0]


def test_business_hours_hold_a_step_until_the_window_opens(db_url):
    set_clock(db_url, "2026-03-02 08:59Z")  # Monday, a minute before the window opens (UTC)
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        office = _sequence(
            tenant,
            "email",
            {"timezone": "UTC", "business_hours": {"monday": {"start": "09:00", "end": "17:00"}}},
            EMAIL_STEP,
        )
        anytime = _sequence(tenant, "email", {"timezone": "UTC"}, EMAIL_STEP)
        held, control = tenant.contacts({"email": "held@example.com"}, {"email": "control@example.com"})
        tenant.enroll(office, [held])
        tenant.enroll(anytime, [control])
        conn.commit()

    # The control (no business hours) shows the worker ran with the clock at 08:59; the other waits.
    assert run_worker_at(db_url, "2026-03-02 08:59:30Z") == ["control@example.com"]
    assert _next_action_at(db_url, "held@example.com") == at("2026-03-02 09:00Z")
    assert run_worker_at(db_url, "2026-03-02 09:00:30Z") == ["held@example.com"]
    assert run_worker_at(db_url, "2026-03-02 09:30Z") == []  # sent once, never again


def test_quiet_hours_follow_the_contact_time_zone(db_url):
    # 12:30 UTC: 12:30 in London, 07:30 in New York (EST), before the default SMS quiet-hours window
    # (08:00-21:00 local, which applies even though the sequence sets no quiet_hours).
    set_clock(db_url, "2026-03-02 12:30Z")
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        sequence = _sequence(tenant, "sms", {"timezone": "UTC"}, SMS_STEP)
        contacts = tenant.contacts(
            {"phone": "+447700900001", "first_name": "Lon", "timezone": "Europe/London"},
            {"phone": "+12125550001", "first_name": "Nyc", "timezone": "America/New_York"},
        )
        tenant.enroll(sequence, contacts)
        conn.commit()

    assert run_worker_at(db_url, "2026-03-02 12:30Z") == ["+447700900001"]
    # 08:00 in New York is 13:00 UTC: a minute before, still held; just after, sent.
    assert run_worker_at(db_url, "2026-03-02 12:59Z") == []
    assert run_worker_at(db_url, "2026-03-02 13:00:30Z") == ["+12125550001"]


def test_max_per_day_sends_the_rest_on_the_next_local_days(db_url):
    set_clock(db_url, "2026-03-02 15:00Z")  # Monday 10:00 in New York
    emails = [f"c{i}@example.com" for i in range(5)]
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        sequence = _sequence(tenant, "email", {"timezone": "America/New_York", "max_per_day": 2}, EMAIL_STEP)
        contacts = tenant.contacts(*[{"email": e} for e in emails])
        _enroll_one_by_one(conn, tenant, sequence, contacts, "2026-03-02 14:50Z")

    assert sorted(run_worker_at(db_url, "2026-03-02 15:00Z")) == emails[:2]  # the two due first
    # Tuesday in UTC but still Monday in New York: the sequence's day has not turned.
    assert run_worker_at(db_url, "2026-03-03 04:30Z") == []
    # Tuesday 00:00:30 in New York: two more. The three held ones are all due at the day's start, so which
    # two go is up to the claim's tie-break; the third goes on Wednesday.
    tuesday = run_worker_at(db_url, "2026-03-03 05:00:30Z")
    assert len(tuesday) == 2 and set(tuesday) < set(emails[2:])
    assert run_worker_at(db_url, "2026-03-04 05:00:30Z") == sorted(set(emails[2:]) - set(tuesday))
    with psycopg.connect(db_url) as conn:
        assert sorted(_outbox(conn)) == emails  # each exactly once


def test_sender_daily_cap_sends_the_rest_on_the_next_local_day(db_url):
    set_clock(db_url, "2026-03-02 01:00Z")  # Monday 10:00 in Tokyo, the workspace's zone
    emails = [f"c{i}@example.com" for i in range(5)]
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn, timezone="Asia/Tokyo", with_sender=False)
        tenant.as_owner()
        settings = Jsonb({"rate_per_second": 1000, "daily_cap": 3})
        call_one(conn, "create_sender", tenant.workspace_id, "email", "sales@example.com", settings)
        sequence = _sequence(tenant, "email", {}, EMAIL_STEP)
        contacts = tenant.contacts(*[{"email": e} for e in emails])
        _enroll_one_by_one(conn, tenant, sequence, contacts, "2026-03-02 00:50Z")

    assert sorted(run_worker_at(db_url, "2026-03-02 01:00Z")) == emails[:3]  # the three due first
    assert run_worker_at(db_url, "2026-03-02 14:59Z") == []  # Monday 23:59 in Tokyo
    # Tuesday 00:00:30 in Tokyo, while UTC is still Monday: the cap counts the workspace's local day.
    assert sorted(run_worker_at(db_url, "2026-03-02 15:00:30Z")) == emails[3:]
    with psycopg.connect(db_url) as conn:
        assert sorted(_outbox(conn)) == emails
