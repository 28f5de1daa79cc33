"""The scheduling calculus of docs/ARCHITECTURE.md (sql/functions/calculus.sql): table-driven cases for
every rule, then property-based tests against an independent zoneinfo reference implementation."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.support import raises_sqlstate

ODD_SESSION_ZONE = "Pacific/Kiritimati"  # UTC+14: any reliance on the session TimeZone shows up

NEXT_SQL = """
SELECT pg_catalog.to_char(r AT TIME ZONE %(tz)s, 'YYYY-MM-DD HH24:MI'),
       pg_catalog.to_char(r AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
FROM drumbeat.next_action_at(
    %(done)s::timestamptz, %(delay)s::interval, %(send_at)s::time, %(kind)s, %(tz)s,
    %(settings)s::jsonb, %(ws)s::uuid, %(not_before)s::timestamptz) AS r
"""

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NINE_TO_FIVE = {day: {"start": "09:00", "end": "17:00"} for day in WEEKDAYS[:5]}
SEVEN_TO_ELEVEN = {day: {"start": "07:00", "end": "23:00"} for day in WEEKDAYS}

WORKSPACE_HOLIDAY = date(2026, 3, 3)  # Tuesday, in the test workspace's own list
CALENDAR_HOLIDAY = date(2026, 3, 4)  # Wednesday, in the shared calendar 'test-cal'
OTHER_WORKSPACE_HOLIDAY = date(2026, 3, 5)  # Thursday, another tenant's: never applies


def seed_holidays(conn: psycopg.Connection) -> uuid.UUID:
    """A workspace with one holiday, a shared calendar with one, and another workspace with one."""
    ws, other = (
        conn.execute("INSERT INTO drumbeat.workspaces (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
        for name in ("calc", "other")
    )
    conn.execute(
        "INSERT INTO drumbeat.holidays (workspace_id, calendar, day) VALUES"
        " (%s, NULL, %s), (NULL, 'test-cal', %s), (%s, NULL, %s)",
        (ws, WORKSPACE_HOLIDAY, CALENDAR_HOLIDAY, other, OTHER_WORKSPACE_HOLIDAY),
    )
    return ws


def local_instant(text: str, tz: str) -> datetime:
    """'YYYY-MM-DD HH:MM' read on the wall clock of tz (PostgreSQL's reading for gaps and overlaps)."""
    return from_local(datetime.fromisoformat(text), ZoneInfo(tz))


def next_at(
    conn: psycopg.Connection,
    tz: str,
    done: str | datetime,
    delay: str = "0",
    send_at: str | None = None,
    kind: str = "email",
    settings: dict | None = None,
    ws: uuid.UUID | None = None,
    not_before: str | None = None,
) -> tuple[str, str]:
    """next_action_at, answered as (local wall clock in tz, UTC), both 'YYYY-MM-DD HH:MM'."""
    params = {
        "tz": tz,
        "done": local_instant(done, tz) if isinstance(done, str) else done,
        "delay": delay,
        "send_at": send_at,
        "kind": kind,
        "settings": Jsonb(settings or {}),
        "ws": ws,
        "not_before": None if not_before is None else local_instant(not_before, tz),
    }
    return conn.execute(NEXT_SQL, params).fetchone()


@dataclass(frozen=True)
class Case:
    id: str
    tz: str
    done: str
    delay: str
    expected: str  # local wall clock of the result
    send_at: str | None = None
    kind: str = "email"
    settings: dict = field(default_factory=dict)
    not_before: str | None = None
    utc: str | None = None  # the instant, when the wall clock alone is ambiguous


NY, SYD, LHI = "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"

CASES = [
    # 1. Delay: minutes/hours are elapsed time, days/weeks keep the wall clock.
    Case("hour-across-ny-spring", NY, "2026-03-08 01:30", "1 hour", "2026-03-08 03:30", kind="action"),
    Case(
        "90min-across-ny-fall",
        NY,
        "2026-11-01 00:45",
        "90 minutes",
        "2026-11-01 01:15",
        kind="action",
        utc="2026-11-01 06:15",
    ),
    Case("24h-across-ny-spring", NY, "2026-03-07 15:00", "24 hours", "2026-03-08 16:00", kind="action"),
    Case("24h-across-ny-fall", NY, "2026-10-31 15:00", "24 hours", "2026-11-01 14:00", kind="action"),
    Case("day-across-ny-spring", NY, "2026-03-07 15:00", "1 day", "2026-03-08 15:00", kind="action"),
    Case("day-across-ny-fall", NY, "2026-10-31 15:00", "1 day", "2026-11-01 15:00", kind="action"),
    Case("2-weeks-across-ny-spring", NY, "2026-02-28 09:00", "14 days", "2026-03-14 09:00", kind="action"),
    Case("day-across-syd-fall", SYD, "2026-04-04 15:00", "1 day", "2026-04-05 15:00", kind="action"),
    Case("24h-across-syd-fall", SYD, "2026-04-04 15:00", "24 hours", "2026-04-05 14:00", kind="action"),
    Case("day-across-syd-spring", SYD, "2026-10-03 15:00", "1 day", "2026-10-04 15:00", kind="action"),
    Case("24h-across-syd-spring", SYD, "2026-10-03 15:00", "24 hours", "2026-10-04 16:00", kind="action"),
    Case("day-across-lhi-fall", LHI, "2026-04-04 15:00", "1 day", "2026-04-05 15:00", kind="action"),
    Case("24h-across-lhi-fall", LHI, "2026-04-04 15:00", "24 hours", "2026-04-05 14:30", kind="action"),
    Case("week-across-lhi-spring", LHI, "2026-09-30 15:00", "7 days", "2026-10-07 15:00", kind="action"),
    Case("24h-across-lhi-spring", LHI, "2026-10-03 15:00", "24 hours", "2026-10-04 15:30", kind="action"),
    Case("day-into-ny-gap", NY, "2026-03-07 02:30", "1 day", "2026-03-08 03:30", kind="action"),
    Case(
        "day-into-ny-overlap",
        NY,
        "2026-10-31 01:30",
        "1 day",
        "2026-11-01 01:30",
        kind="action",
        utc="2026-11-01 06:30",
    ),
    # 2. send_at (2026-03-02 is a Monday).
    Case("2-days-send-at", NY, "2026-03-02 15:00", "2 days", "2026-03-04 10:00", send_at="10:00"),
    Case("0-days-send-at-passed", NY, "2026-03-02 15:00", "0", "2026-03-03 10:00", send_at="10:00"),
    Case("0-days-send-at-ahead", NY, "2026-03-02 08:00", "0", "2026-03-02 10:00", send_at="10:00"),
    Case("0-days-send-at-exact", NY, "2026-03-02 10:00", "0", "2026-03-02 10:00", send_at="10:00"),
    Case("1-day-send-at-earlier", NY, "2026-03-02 15:00", "1 day", "2026-03-03 08:00", send_at="08:00"),
    Case("3-hours-send-at", NY, "2026-03-02 09:00", "3 hours", "2026-03-03 10:00", send_at="10:00"),
    Case("2-hours-send-at-same-day", NY, "2026-03-02 07:00", "2 hours", "2026-03-02 10:00", send_at="10:00"),
    Case(
        "send-at-in-ny-gap",
        NY,
        "2026-03-07 15:00",
        "1 day",
        "2026-03-08 03:30",
        send_at="02:30",
        kind="action",
    ),
    Case(
        "send-at-in-lhi-gap",
        LHI,
        "2026-10-03 15:00",
        "1 day",
        "2026-10-04 02:45",
        send_at="02:15",
        kind="action",
    ),
    Case(
        "send-at-in-ny-overlap",
        NY,
        "2026-10-31 15:00",
        "1 day",
        "2026-11-01 01:30",
        send_at="01:30",
        kind="action",
        utc="2026-11-01 06:30",
    ),
    # 3. Windows: business hours, weekends, holidays.
    Case(
        "bh-before",
        NY,
        "2026-03-02 07:00",
        "0",
        "2026-03-02 09:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "bh-inside",
        NY,
        "2026-03-02 12:34",
        "0",
        "2026-03-02 12:34",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "bh-after", NY, "2026-03-02 18:00", "0", "2026-03-03 09:00", settings={"business_hours": NINE_TO_FIVE}
    ),
    Case(
        "bh-end-exclusive",
        NY,
        "2026-03-02 17:00",
        "0",
        "2026-03-03 09:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "bh-absent-weekend",
        NY,
        "2026-03-06 18:00",
        "0",
        "2026-03-09 09:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "bh-absent-weekday",
        NY,
        "2026-03-02 18:00",
        "0",
        "2026-03-04 09:00",
        settings={"business_hours": {"monday": NINE_TO_FIVE["monday"], "wednesday": NINE_TO_FIVE["monday"]}},
    ),
    Case(
        "bh-for-manual-kinds",
        NY,
        "2026-03-02 18:00",
        "0",
        "2026-03-03 09:00",
        kind="call",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "exclude-weekends-email",
        NY,
        "2026-03-07 10:00",
        "0",
        "2026-03-09 00:00",
        settings={"exclude_weekends": True},
    ),
    Case(
        "exclude-weekends-sms",
        NY,
        "2026-03-07 10:00",
        "0",
        "2026-03-09 08:00",
        kind="sms",
        settings={"exclude_weekends": True},
    ),
    Case(
        "exclude-weekends-off",
        NY,
        "2026-03-07 10:00",
        "0",
        "2026-03-07 10:00",
        settings={"exclude_weekends": False},
    ),
    Case(
        "holiday-workspace",
        NY,
        "2026-03-02 18:00",
        "0",
        "2026-03-04 09:00",
        settings={"business_hours": NINE_TO_FIVE, "exclude_holidays": True},
    ),
    Case(
        "holiday-not-excluded",
        NY,
        "2026-03-02 18:00",
        "0",
        "2026-03-03 09:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "holiday-calendar-and-workspace",
        NY,
        "2026-03-02 18:00",
        "0",
        "2026-03-05 09:00",
        settings={"business_hours": NINE_TO_FIVE, "exclude_holidays": True, "holiday_calendar": "test-cal"},
    ),
    Case(
        "holiday-other-workspace-ignored",
        NY,
        "2026-03-04 18:00",
        "0",
        "2026-03-05 09:00",
        settings={"business_hours": NINE_TO_FIVE, "exclude_holidays": True},
    ),
    # sms quiet hours: 08:00-21:00 by default, email untouched; intersected with business hours.
    Case("sms-quiet-late", NY, "2026-03-02 22:00", "0", "2026-03-03 08:00", kind="sms"),
    Case("sms-quiet-early", NY, "2026-03-02 06:00", "0", "2026-03-02 08:00", kind="sms"),
    Case("sms-quiet-inside", NY, "2026-03-02 20:59", "0", "2026-03-02 20:59", kind="sms"),
    Case("sms-quiet-end-exclusive", NY, "2026-03-02 21:00", "0", "2026-03-03 08:00", kind="sms"),
    Case("email-no-quiet", NY, "2026-03-02 22:00", "0", "2026-03-02 22:00"),
    Case(
        "sms-custom-quiet",
        NY,
        "2026-03-02 09:00",
        "0",
        "2026-03-02 10:00",
        kind="sms",
        settings={"quiet_hours": {"start": "10:00", "end": "18:00"}},
    ),
    Case(
        "sms-quiet-cuts-bh-start",
        NY,
        "2026-03-02 07:30",
        "0",
        "2026-03-02 08:00",
        kind="sms",
        settings={"business_hours": SEVEN_TO_ELEVEN},
    ),
    Case(
        "sms-quiet-cuts-bh-end",
        NY,
        "2026-03-02 21:30",
        "0",
        "2026-03-03 08:00",
        kind="sms",
        settings={"business_hours": SEVEN_TO_ELEVEN},
    ),
    Case(
        "email-bh-only",
        NY,
        "2026-03-02 07:30",
        "0",
        "2026-03-02 07:30",
        settings={"business_hours": SEVEN_TO_ELEVEN},
    ),
    Case(
        "end-24-inside",
        NY,
        "2026-03-02 23:59",
        "0",
        "2026-03-02 23:59",
        settings={"business_hours": {"monday": {"start": "20:00", "end": "24:00"}}},
    ),
    Case(
        "end-24-before",
        NY,
        "2026-03-02 19:00",
        "0",
        "2026-03-02 20:00",
        settings={"business_hours": {"monday": {"start": "20:00", "end": "24:00"}}},
    ),
    Case(
        "end-24-next-week",
        NY,
        "2026-03-03 00:00",
        "0",
        "2026-03-09 20:00",
        settings={"business_hours": {"monday": {"start": "20:00", "end": "24:00"}}},
    ),
    Case(
        "window-start-in-gap",
        NY,
        "2026-03-07 12:00",
        "0",
        "2026-03-08 03:00",
        settings={"business_hours": {"sunday": {"start": "02:00", "end": "02:30"}}},
    ),
    Case(
        "window-empty-as-instants",
        NY,
        "2026-03-07 12:00",
        "0",
        "2026-03-15 02:30",
        settings={"business_hours": {"sunday": {"start": "02:30", "end": "03:15"}}},
    ),
    Case(
        "window-start-in-overlap",
        NY,
        "2026-10-31 12:00",
        "0",
        "2026-11-01 01:30",
        utc="2026-11-01 06:30",
        settings={"business_hours": {"sunday": {"start": "01:30", "end": "05:00"}}},
    ),
    # Windows in 30- and 45-minute offset zones (UTC checks the offset is applied).
    Case(
        "kolkata",
        "Asia/Kolkata",
        "2026-03-02 08:00",
        "0",
        "2026-03-02 09:00",
        settings={"business_hours": NINE_TO_FIVE},
        utc="2026-03-02 03:30",
    ),
    Case(
        "kathmandu",
        "Asia/Kathmandu",
        "2026-03-02 17:30",
        "0",
        "2026-03-03 09:00",
        settings={"business_hours": NINE_TO_FIVE},
        utc="2026-03-03 03:15",
    ),
    Case(
        "st-johns",
        "America/St_Johns",
        "2026-03-02 06:00",
        "0",
        "2026-03-02 08:00",
        kind="sms",
        utc="2026-03-02 11:30",
    ),
    Case(
        "chatham",
        "Pacific/Chatham",
        "2026-03-06 18:00",
        "0",
        "2026-03-09 09:00",
        settings={"business_hours": NINE_TO_FIVE},
        utc="2026-03-08 19:15",
    ),
    # Floor: resume/edit never schedules in the past.
    Case(
        "floor-inside-window",
        NY,
        "2026-03-02 08:00",
        "0",
        "2026-03-02 12:00",
        settings={"business_hours": NINE_TO_FIVE},
        not_before="2026-03-02 12:00",
    ),
    Case(
        "floor-after-window",
        NY,
        "2026-03-02 08:00",
        "0",
        "2026-03-03 09:00",
        settings={"business_hours": NINE_TO_FIVE},
        not_before="2026-03-02 18:00",
    ),
    Case(
        "floor-in-the-past",
        NY,
        "2026-03-02 08:00",
        "1 day",
        "2026-03-03 09:00",
        settings={"business_hours": NINE_TO_FIVE},
        not_before="2026-03-01 18:00",
    ),
    Case(
        "floor-beats-send-at",
        NY,
        "2026-03-02 08:00",
        "0",
        "2026-03-02 11:00",
        send_at="10:00",
        kind="action",
        not_before="2026-03-02 11:00",
    ),
    # send_at survives a move to a later day (issue 21, item 8): at send_at there when the window allows.
    Case(
        "send-at-past-weekend",  # and past New York's spring-forward: 10:00 EDT
        NY,
        "2026-03-05 15:00",
        "2 days",
        "2026-03-09 10:00",
        send_at="10:00",
        settings={"business_hours": NINE_TO_FIVE},
        utc="2026-03-09 14:00",
    ),
    Case(
        "send-at-past-excluded-weekend",
        NY,
        "2026-03-05 15:00",
        "2 days",
        "2026-03-09 10:00",
        send_at="10:00",
        settings={"exclude_weekends": True},
    ),
    Case(
        "send-at-past-holidays",
        NY,
        "2026-03-02 15:00",
        "1 day",
        "2026-03-05 10:00",
        send_at="10:00",
        settings={"business_hours": NINE_TO_FIVE, "exclude_holidays": True, "holiday_calendar": "test-cal"},
    ),
    Case(
        "send-at-past-weekend-sms",
        NY,
        "2026-03-05 15:00",
        "2 days",
        "2026-03-09 20:30",
        send_at="20:30",
        kind="sms",
        settings={"exclude_weekends": True},
    ),
    Case(
        "send-at-floor-past-weekend",
        NY,
        "2026-03-05 15:00",
        "1 day",
        "2026-03-09 10:00",
        send_at="10:00",
        settings={"business_hours": NINE_TO_FIVE},
        not_before="2026-03-06 18:00",
    ),
    Case(
        "send-at-before-moved-day-window",
        NY,
        "2026-03-05 15:00",
        "2 days",
        "2026-03-09 09:00",
        send_at="08:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    Case(
        "send-at-after-moved-day-window",
        NY,
        "2026-03-05 15:00",
        "2 days",
        "2026-03-09 11:00",
        send_at="18:00",
        settings={"business_hours": NINE_TO_FIVE | {"monday": {"start": "11:00", "end": "17:00"}}},
    ),
    Case(
        "send-at-same-day-before-window",
        NY,
        "2026-03-05 15:00",
        "1 day",
        "2026-03-06 09:00",
        send_at="08:00",
        settings={"business_hours": NINE_TO_FIVE},
    ),
    # condition/action steps run at base, whatever the windows.
    Case(
        "condition-ignores-windows",
        NY,
        "2026-03-07 23:00",
        "0",
        "2026-03-07 23:00",
        kind="condition",
        settings={"business_hours": NINE_TO_FIVE, "exclude_weekends": True},
    ),
    Case(
        "action-ignores-windows",
        NY,
        "2026-03-02 22:00",
        "0",
        "2026-03-02 22:00",
        kind="action",
        settings={"business_hours": {}},
    ),
]


@pytest.fixture
def shared_conn(pdb):
    """The module's database (session TimeZone Pacific/Kiritimati), in a transaction rolled back after
    the test: a fresh clone per table case would cost more than the whole calculus."""
    with pdb.conn.transaction(force_rollback=True):
        yield pdb.conn


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_next_action_at(shared_conn, case: Case):
    conn = shared_conn
    assert conn.execute("SHOW TimeZone").fetchone()[0] == ODD_SESSION_ZONE
    ws = seed_holidays(conn)
    local, utc = next_at(
        conn, case.tz, case.done, case.delay, case.send_at, case.kind, case.settings, ws, case.not_before
    )
    assert local == case.expected
    if case.utc is not None:
        assert utc == case.utc


def test_overlap_done_instant_is_kept(conn):
    """Inside a window the instant stays exactly as it is, even on a repeated wall-clock hour."""
    first_0130 = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, before the fall-back
    assert next_at(
        conn, NY, first_0130, kind="sms", settings={"quiet_hours": {"start": "00:00", "end": "24:00"}}
    ) == (
        "2026-11-01 01:30",
        "2026-11-01 05:30",
    )


def test_nothing_depends_on_session_timezone(conn):
    answers = set()
    for zone in ("UTC", ODD_SESSION_ZONE, "America/St_Johns", "Asia/Kathmandu"):
        conn.execute(f"SET TIME ZONE '{zone}'")
        answers.add(tuple(next_at(conn, c.tz, c.done, c.delay, c.send_at, c.kind, c.settings) for c in CASES))
    assert len(answers) == 1


def test_no_window_for_366_days_is_pt422(conn):
    with (
        raises_sqlstate("PT422", field="settings", match="no allowed send time within 366 days"),
        conn.transaction(),
    ):
        next_at(conn, NY, "2026-03-02 10:00", settings={"business_hours": {}})


def test_holidays_everywhere_is_pt422(conn):
    ws = seed_holidays(conn)
    conn.execute(
        "INSERT INTO drumbeat.holidays (workspace_id, day) SELECT %s, d::date"
        " FROM generate_series('2026-03-09'::date, '2027-04-01'::date, '7 days') AS d",
        (ws,),
    )
    only_mondays = {"business_hours": {"monday": NINE_TO_FIVE["monday"]}, "exclude_holidays": True}
    assert next_at(conn, NY, "2026-03-02 10:00", settings=only_mondays, ws=ws)[0] == "2026-03-02 10:00"
    with raises_sqlstate("PT422", field="settings", match="366 days"), conn.transaction():
        next_at(conn, NY, "2026-03-03 10:00", settings=only_mondays, ws=ws)
    # without exclude_holidays the same settings are fine
    assert (
        next_at(conn, NY, "2026-03-03 10:00", settings=only_mondays | {"exclude_holidays": False}, ws=ws)[0]
        == "2026-03-09 09:00"
    )


def test_null_done_gives_null(conn):
    row = conn.execute(
        "SELECT drumbeat.next_action_at(NULL, '1 day', NULL, 'sms', 'UTC', '{}', NULL)"
    ).fetchone()
    assert row == (None,)


@pytest.mark.parametrize(
    ("contact", "sequence", "workspace", "expected"),
    [
        ("Asia/Kolkata", {"timezone": "Europe/London"}, "America/New_York", "Asia/Kolkata"),
        (None, {"timezone": "Europe/London"}, "America/New_York", "Europe/London"),
        ("", {"timezone": "Europe/London"}, "America/New_York", "Europe/London"),
        (None, {}, "America/New_York", "America/New_York"),
        (None, {"timezone": ""}, "America/New_York", "America/New_York"),
        (None, None, None, "UTC"),
        ("", {"timezone": ""}, "", "UTC"),
    ],
)
def test_recipient_timezone(shared_conn, contact, sequence, workspace, expected):
    row = shared_conn.execute(
        "SELECT drumbeat.recipient_timezone(%s, %s::jsonb, %s)",
        (contact, None if sequence is None else Jsonb(sequence), workspace),
    ).fetchone()
    assert row[0] == expected


@pytest.mark.parametrize(
    ("settings", "kind", "expected"),
    [
        ({}, "sms", True),
        ({"business_hours": {d: {"start": "22:00", "end": "23:00"} for d in WEEKDAYS}}, "sms", False),
        ({"business_hours": {d: {"start": "22:00", "end": "23:00"} for d in WEEKDAYS}}, "email", True),
        ({"business_hours": {d: {"start": "22:00", "end": "23:00"} for d in WEEKDAYS}}, "call", True),
        ({"business_hours": {}}, "email", False),
        ({"business_hours": {}}, "condition", True),
        (
            {"business_hours": {"saturday": {"start": "09:00", "end": "17:00"}}, "exclude_weekends": True},
            "task",
            False,
        ),
        ({"business_hours": {"saturday": {"start": "09:00", "end": "17:00"}}}, "task", True),
        ({"quiet_hours": {"start": "21:00", "end": "08:00"}}, "sms", False),
        ({"quiet_hours": {"start": "21:00", "end": "08:00"}}, "email", True),
        ({"business_hours": {"monday": {"start": "10:00", "end": "10:00"}}}, "linkedin", False),
    ],
)
def test_has_allowed_window(conn, settings, kind, expected):
    assert (
        conn.execute("SELECT drumbeat.has_allowed_window(%s, %s)", (Jsonb(settings), kind)).fetchone()[0]
        is expected
    )


def test_day_window(conn):
    ws = seed_holidays(conn)
    sql = "SELECT window_start::text, window_end::text FROM drumbeat.day_window(%s, %s, %s, %s)"

    def window(settings, kind, day):
        return conn.execute(sql, (Jsonb(settings), kind, day, ws)).fetchall()

    bh = {
        "business_hours": NINE_TO_FIVE | {"friday": {"start": "07:00", "end": "24:00"}},
        "exclude_holidays": True,
    }
    assert window(bh, "email", date(2026, 3, 2)) == [("09:00:00", "17:00:00")]
    assert window(bh, "sms", date(2026, 3, 6)) == [("08:00:00", "21:00:00")]
    assert window(bh, "email", date(2026, 3, 6)) == [("07:00:00", "24:00:00")]
    assert window(bh, "email", date(2026, 3, 7)) == []  # saturday absent
    assert window(bh, "email", WORKSPACE_HOLIDAY) == []
    assert window(bh, "email", CALENDAR_HOLIDAY) == [("09:00:00", "17:00:00")]  # calendar not named
    assert window(bh | {"holiday_calendar": "test-cal"}, "email", CALENDAR_HOLIDAY) == []
    assert window(bh, "action", WORKSPACE_HOLIDAY) == [("00:00:00", "24:00:00")]
    assert window({}, "sms", date(2026, 3, 7)) == [("08:00:00", "21:00:00")]


# ---------------------------------------------------------------------------------------------------------
# Property-based tests against an independent reference implementation (zoneinfo).


def from_local(naive: datetime, zone: ZoneInfo) -> datetime:
    """PostgreSQL's `timestamp AT TIME ZONE zone`: in a gap the pre-transition offset applies (the time
    moves forward by the gap), in an overlap the post-transition one (the later instant). Both are the
    later of zoneinfo's two readings fold=0 / fold=1."""
    return max(naive.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))


def to_local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def hhmm(text: str) -> timedelta:
    hours, minutes = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


def ref_weekday_window(settings: dict, kind: str, isodow: int) -> tuple[timedelta, timedelta] | None:
    start, end = timedelta(0), timedelta(hours=24)
    if kind not in ("condition", "action"):
        if isodow >= 6 and settings.get("exclude_weekends"):
            return None
        if isinstance(settings.get("business_hours"), dict):
            hours = settings["business_hours"].get(WEEKDAYS[isodow - 1])
            if hours is None:
                return None
            start, end = hhmm(hours.get("start", "00:00")), hhmm(hours.get("end", "24:00"))
    if kind == "sms":
        quiet = settings.get("quiet_hours") or {}
        start = max(start, hhmm(quiet.get("start", "08:00")))
        end = min(end, hhmm(quiet.get("end", "21:00")))
    return (start, end) if start < end else None


class NoWindow(Exception):
    pass


def reference(done, days, elapsed, send_at, kind, tz, settings, holidays, not_before=None) -> datetime:
    """docs/ARCHITECTURE.md's rule, written from the prose: what next_action_at must return. A step with
    a send_at that the windows move to a later day goes at send_at there when that day's window allows."""
    zone = ZoneInfo(tz)
    base = from_local(to_local(done, zone) + timedelta(days=days), zone) if days else done
    base += elapsed
    if send_at is not None:
        if days or not elapsed:
            midnight = datetime.combine(to_local(base, zone).date(), time())
            base = max(done, from_local(midnight, zone))
        day = datetime.combine(to_local(base, zone).date(), time())
        base = next(
            at for at in (from_local(day + timedelta(days=i) + send_at, zone) for i in range(3)) if at >= base
        )
    if not_before is not None:
        base = max(base, not_before)
    if kind in ("condition", "action"):
        return base
    first = to_local(base, zone).date()
    for i in range(367):
        day = first + timedelta(days=i)
        window = ref_weekday_window(settings, kind, day.isoweekday())
        if window is None or (settings.get("exclude_holidays") and day in holidays):
            continue
        midnight = datetime.combine(day, time())
        start, end = (from_local(midnight + w, zone) for w in window)
        if base < end and start < end:
            at = None if send_at is None or day == first else from_local(midnight + send_at, zone)
            return at if at is not None and start < at < end else max(base, start)
    raise NoWindow


@pytest.mark.parametrize(
    ("tz", "local", "utc"),
    [
        (NY, "2026-03-08 02:30", "2026-03-08 07:30"),  # gap: 03:30 EDT
        (NY, "2026-11-01 01:30", "2026-11-01 06:30"),  # overlap: EST
        (LHI, "2026-10-04 02:15", "2026-10-03 15:45"),  # 30-minute gap: 02:45 +11
        (LHI, "2026-04-05 01:45", "2026-04-04 15:15"),  # 30-minute overlap: +10:30
        ("Europe/London", "2026-03-29 01:30", "2026-03-29 01:30"),
        ("Pacific/Chatham", "2026-09-27 02:50", "2026-09-26 14:05"),
    ],
)
def test_reference_reads_local_times_like_postgres(shared_conn, tz, local, utc):
    pg = shared_conn.execute(
        "SELECT to_char((%s::timestamp AT TIME ZONE %s) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')",
        (local, tz),
    ).fetchone()[0]
    assert pg == utc
    assert from_local(datetime.fromisoformat(local), ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") == utc


PROPERTY_ZONES = [
    NY,
    SYD,
    LHI,
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
    "Europe/London",
]


def transitions(tz: str) -> list[datetime]:
    """The instants (to the minute) where tz changes offset in 2026-2027."""
    zone, found = ZoneInfo(tz), []
    t, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    while t < end:
        nxt = t + timedelta(hours=1)
        if t.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo = t
            while lo.astimezone(zone).utcoffset() == t.astimezone(zone).utcoffset():
                lo += timedelta(minutes=1)
            found.append(lo)
        t = nxt
    return found


TRANSITIONS = {tz: transitions(tz) or [datetime(2026, 6, 1, tzinfo=UTC)] for tz in PROPERTY_ZONES}
HOLIDAYS = {date(2026, 3, 9), date(2026, 4, 6), date(2026, 10, 5), date(2026, 11, 2), date(2027, 3, 15)}
CALENDAR = {date(2026, 3, 10), date(2026, 4, 3), date(2026, 10, 2), date(2027, 11, 8)}
OTHER = {date(2026, 3, 11), date(2026, 10, 6)}


@dataclass(frozen=True)
class PropertyDb:
    conn: psycopg.Connection
    workspace_id: uuid.UUID


@pytest.fixture(scope="module")
def pdb(cluster, template_db):
    """One database for the whole property run (cloning one per example would dominate the runtime)."""
    name = f"drumbeat_calc_{os.getpid()}"
    janitor = cluster.janitor(name, template=template_db)
    janitor.init()
    try:
        with psycopg.connect(cluster.url(name)) as connection:
            connection.execute(f"SET TIME ZONE '{ODD_SESSION_ZONE}'")
            ws, other = (
                connection.execute(
                    "INSERT INTO drumbeat.workspaces (name) VALUES ('p') RETURNING id"
                ).fetchone()[0]
                for _ in range(2)
            )
            rows = [(ws, None, d) for d in HOLIDAYS] + [(None, "prop-cal", d) for d in CALENDAR]
            rows += [(other, None, d) for d in OTHER]
            with connection.cursor() as cur:
                cur.executemany(
                    "INSERT INTO drumbeat.holidays (workspace_id, calendar, day) VALUES (%s, %s, %s)", rows
                )
            connection.commit()
            yield PropertyDb(connection, ws)
    finally:
        janitor.drop()


quarter_hours = st.one_of(
    st.integers(0, 96).map(lambda q: f"{q // 4:02d}:{q % 4 * 15:02d}"),
    st.sampled_from(
        ["01:00", "01:30", "01:45", "02:00", "02:15", "02:30", "02:45", "03:00", "03:15", "03:45"]
    ),
)
minute_times = st.one_of(
    st.sampled_from(["01:30", "02:00", "02:15", "02:30", "02:45", "03:00", "10:00"]),
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
)


@st.composite
def windows(draw) -> dict:
    start, end = sorted(draw(st.lists(quarter_hours, min_size=2, max_size=2)))
    return {"start": start, "end": end}


@st.composite
def sequence_settings(draw) -> dict:
    result: dict[str, Any] = {}
    if draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
        result["business_hours"] = {day: draw(windows()) for day in days}
    if draw(st.booleans()):
        result["exclude_weekends"] = draw(st.booleans())
    if draw(st.booleans()):
        result["exclude_holidays"] = draw(st.booleans())
    if draw(st.booleans()):
        result["quiet_hours"] = draw(windows())
    if draw(st.booleans()):
        result["holiday_calendar"] = draw(st.sampled_from(["prop-cal", "no-such-cal"]))
    return result


@st.composite
def delays(draw) -> tuple[str, int, timedelta]:
    unit = draw(st.sampled_from(["zero", "zero", "minutes", "hours", "days", "weeks"]))
    if unit == "zero":
        return "0", 0, timedelta(0)
    value = draw(st.integers(1, {"minutes": 600, "hours": 72, "days": 30, "weeks": 6}[unit]))
    if unit in ("days", "weeks"):
        days = value * (7 if unit == "weeks" else 1)
        return f"{days} days", days, timedelta(0)
    return f"{value} {unit}", 0, timedelta(**{unit: value})


@st.composite
def done_instants(draw) -> tuple[str, datetime]:
    """Instants near the real 2026/2027 transitions: days around, and minutes around (the repeated hour
    before a fall-back, the gap after a spring-forward)."""
    tz = draw(st.sampled_from(PROPERTY_ZONES))
    around = draw(st.sampled_from(TRANSITIONS[tz]))
    offset = draw(
        st.one_of(
            st.integers(-3 * 1440, 3 * 1440),
            st.integers(-90, 90),
            st.sampled_from([-60, -59, -45, -31, -30, -29, -15, -1, 0, 1, 29, 30, 59, 60]),
        )
    )
    return tz, around + timedelta(minutes=offset, seconds=draw(st.sampled_from([0, 0, 0, 17])))


KINDS = ["sms", "email", "manual_email", "call", "linkedin", "task", "condition", "action"]
PROPERTY_SQL = """
SELECT r, drumbeat.next_action_at(r, '0', NULL, %(kind)s, %(tz)s, %(settings)s, %(ws)s)
FROM drumbeat.next_action_at(%(done)s, %(delay)s::interval, %(send_at)s::time, %(kind)s, %(tz)s,
                             %(settings)s, %(ws)s, %(not_before)s) AS r
"""


def check_against_reference(pdb, tz, done, delay, send_at, kind, prefs, not_before) -> None:
    """next_action_at equals the reference, or both find no window; and the result is an allowed
    instant at or after the floor, which is its own next allowed instant."""
    text, days, elapsed = delay
    zone = ZoneInfo(tz)
    holidays = HOLIDAYS | (CALENDAR if prefs.get("holiday_calendar") == "prop-cal" else set())
    params = {
        "done": done,
        "delay": text,
        "send_at": send_at,
        "kind": kind,
        "tz": tz,
        "settings": Jsonb(prefs),
        "ws": pdb.workspace_id,
        "not_before": not_before,
    }
    send_at_delta = None if send_at is None else hhmm(send_at)
    try:
        expected = reference(done, days, elapsed, send_at_delta, kind, tz, prefs, holidays, not_before)
    except NoWindow:
        event("no window within 366 days")
        with raises_sqlstate("PT422", field="settings"), pdb.conn.transaction():
            pdb.conn.execute(PROPERTY_SQL, params)
        return
    with pdb.conn.transaction(force_rollback=True):
        result, again = pdb.conn.execute(PROPERTY_SQL, params).fetchone()
    assert result == expected
    base = reference(done, days, elapsed, send_at_delta, "action", tz, {}, set(), not_before)
    event("moved by a window" if result > base else "at base")
    if from_local(to_local(base, zone), zone) != base:
        event("base in the first pass of a repeated hour")
    assert again == result  # idempotent: an allowed instant is its own next allowed instant
    assert result >= base >= done
    assert not_before is None or result >= not_before
    if kind not in ("condition", "action"):  # inside the window of its own local day
        day = to_local(result, zone).date()
        window = ref_weekday_window(prefs, kind, day.isoweekday())
        assert window is not None
        assert not (prefs.get("exclude_holidays") and day in holidays)
        midnight = datetime.combine(day, time())
        assert from_local(midnight + window[0], zone) <= result < from_local(midnight + window[1], zone)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=done_instants(),
    delay=delays(),
    send_at=st.one_of(st.none(), minute_times),
    kind=st.sampled_from(KINDS),
    prefs=sequence_settings(),
    floor=st.one_of(st.none(), st.integers(-2 * 1440, 3 * 1440)),
)
def test_matches_reference(pdb, where, delay, send_at, kind, prefs, floor):
    tz, done = where
    not_before = None if floor is None else done + timedelta(minutes=floor)
    check_against_reference(pdb, tz, done, delay, send_at, kind, prefs, not_before)


ZERO = ("0", 0, timedelta(0))
REAL_TRANSITIONS = [
    (tz, t) for tz in PROPERTY_ZONES for t in TRANSITIONS[tz] if tz not in ("Asia/Kolkata", "Asia/Kathmandu")
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(REAL_TRANSITIONS),
    minutes=st.integers(-150, 150) | st.integers(-60, 59),
    delay=st.sampled_from(
        [("0", 0, timedelta(0))] * 3 + [("1 day", 1, timedelta(0)), ("7 days", 7, timedelta(0))]
    )
    | st.integers(1, 120).map(lambda m: (f"{m} minutes", 0, timedelta(minutes=m))),
    send_at=st.one_of(st.none(), st.none(), minute_times),
    kind=st.sampled_from(["sms", "email", "call", "action"]),
    prefs=sequence_settings(),
)
@example(  # the first pass of the repeated hour, inside the window: kept as it is
    where=(NY, datetime(2026, 11, 1, 6, tzinfo=UTC)),
    minutes=-20,
    delay=ZERO,
    send_at=None,
    kind="email",
    prefs={},
)
@example(  # a window starting in the repeated hour starts at its later instant
    where=(NY, datetime(2026, 11, 1, 6, tzinfo=UTC)),
    minutes=-90,
    delay=ZERO,
    send_at=None,
    kind="email",
    prefs={"business_hours": {"sunday": {"start": "01:30", "end": "05:00"}}},
)
@example(  # a window wholly inside the gap is the gap's length later
    where=(LHI, datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
    minutes=-60,
    delay=ZERO,
    send_at=None,
    kind="call",
    prefs={"business_hours": {"sunday": {"start": "02:00", "end": "02:15"}}},
)
@example(  # a window that is empty once read as instants (02:30 -> 03:30, 03:15 stays) is skipped
    where=(NY, datetime(2026, 3, 8, 7, tzinfo=UTC)),
    minutes=-150,
    delay=ZERO,
    send_at=None,
    kind="email",
    prefs={"business_hours": {"sunday": {"start": "02:30", "end": "03:15"}}},
)
def test_matches_reference_within_hours_of_a_transition(pdb, where, minutes, delay, send_at, kind, prefs):
    """Concentrated on the repeated hour and the gap themselves, where instants and wall clocks part."""
    tz, transition = where
    check_against_reference(
        pdb, tz, transition + timedelta(minutes=minutes), delay, send_at, kind, prefs, None
    )
