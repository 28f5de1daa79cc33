"""drumbeat.clock_now(): real time by default, frozen at drumbeat.clock, or running from it at
drumbeat.clock_rate times real time (what `drumbeat demo` uses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from tests.sql.factories import new_tenant
from tests.support import act_as_owner


def clock(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT drumbeat.clock_now()").fetchone()[0]


def test_real_time_when_unset(conn: psycopg.Connection) -> None:
    now = conn.execute("SELECT now()").fetchone()[0]
    assert clock(conn) == now


def test_frozen_at_the_set_instant(conn: psycopg.Connection) -> None:
    conn.execute("SET drumbeat.clock = '2026-03-08 01:00Z'")
    assert clock(conn) == datetime(2026, 3, 8, 1, 0, tzinfo=UTC)


def test_runs_at_the_rate_from_the_instant_it_was_set(conn: psycopg.Connection) -> None:
    """Ten real seconds after clock_since, at 3600 clock seconds a second, the clock is ten hours on."""
    now = conn.execute("SELECT now()").fetchone()[0]
    since = now - timedelta(seconds=10)
    conn.execute("SELECT set_config('drumbeat.clock', '2027-03-11 09:00Z', false)")
    conn.execute("SELECT set_config('drumbeat.clock_since', %s, false)", (since.isoformat(),))
    conn.execute("SET drumbeat.clock_rate = '3600'")
    assert clock(conn) == datetime(2027, 3, 11, 19, 0, tzinfo=UTC)


def test_one_reading_per_transaction(conn: psycopg.Connection) -> None:
    """Within a transaction the running clock reads the same, as now() does."""
    conn.execute("SET drumbeat.clock = '2027-03-11 09:00Z'")
    conn.execute("SELECT set_config('drumbeat.clock_since', now()::text, false)")
    conn.execute("SET drumbeat.clock_rate = '3600'")
    first = clock(conn)
    conn.execute("SELECT pg_sleep(0.05)")
    assert clock(conn) == first


def test_events_default_to_the_clock(conn: psycopg.Connection) -> None:
    """Replies, task completions and transitions are stamped on the same clock as sends."""
    workspace_id = new_tenant(conn).workspace_id
    conn.execute("SET drumbeat.clock = '2027-03-11 09:00Z'")
    act_as_owner(conn)  # events are written by the engine alone
    (occurred_at,) = conn.execute(
        "INSERT INTO drumbeat.events (workspace_id, kind) VALUES (%s, 'opted_out') RETURNING occurred_at",
        (workspace_id,),
    ).fetchone()
    assert occurred_at == datetime(2027, 3, 11, 9, 0, tzinfo=UTC)


def test_the_api_finds_the_event_it_just_recorded_on_a_set_clock(conn: psycopg.Connection) -> None:
    """POST /events reads back record_event's rows by the transaction's clock reading (sql/queries)."""
    from app.core.queries import queries

    contact_id = new_tenant(conn).contact(first_name="Ada")
    conn.execute("SET drumbeat.clock = '2027-03-11 09:00Z'")
    statements = queries("api_enrollments")
    params = {"contact_id": contact_id, "kind": "replied", "payload": "{}"}
    conn.execute(statements["record_event"], params)
    rows = conn.execute(statements["recorded_events"], params).fetchall()
    assert [row[1] for row in rows] == [datetime(2027, 3, 11, 9, 0, tzinfo=UTC)]
