"""Holidays added after enrollment (issue 21, item 6a): whatever writes a holiday (set_holidays, the
operator's load_holidays, a plain INSERT), the live enrollments of sequences that exclude holidays whose
next step is planned on that day are re-planned by the calculus, at the step's send_at on the next allowed
day. Nothing else moves."""

from __future__ import annotations

import uuid
from datetime import date
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from tests.sql.factories import Tenant, new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, set_clock
from tests.support import act_as_owner, call

NY = ZoneInfo("America/New_York")
WEDNESDAY = date(2026, 11, 25)  # the clock is Monday 2026-11-23 09:00 in New York
THANKSGIVING = date(2026, 11, 26)


def nudge_sequence(**settings) -> dict:
    """One sms step, 2 days after enrollment at 10:00 New York time."""
    return sms_sequence(
        settings={"timezone": "America/New_York"} | settings,
        steps=[
            {
                "kind": "sms",
                "name": "Nudge",
                "delay": {"value": 2, "unit": "days"},
                "send_at": "10:00",
                "body": "Still there?",
            }
        ],
    )


def enrolled(tenant: Tenant, definition: dict) -> uuid.UUID:
    sequence_id = tenant.sequence(definition)
    contact_id = tenant.contact(timezone="America/New_York")
    return tenant.enroll(sequence_id, [contact_id])[0][1]


def planned(conn: psycopg.Connection, enrollment_id: uuid.UUID) -> str:
    """The enrollment's next_action_at on New York's wall clock."""
    act_as_owner(conn)
    at = conn.execute("SELECT next_action_at FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,))
    return at.fetchone()[0].astimezone(NY).strftime("%a %Y-%m-%d %H:%M")


def load(conn: psycopg.Connection, calendar: str, *days: date) -> None:
    act_as_owner(conn)  # the operator: a trusted caller
    holidays = [{"date": day.isoformat(), "name": "Holiday"} for day in days]
    conn.execute("SELECT drumbeat.load_holidays(NULL, %s, %s)", (calendar, Jsonb(holidays)))


def test_a_workspace_holiday_moves_the_steps_planned_on_it_keeping_send_at(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant = new_tenant(conn)
    excluding = enrolled(tenant, nudge_sequence(exclude_holidays=True))
    ignoring = enrolled(tenant, nudge_sequence())
    assert planned(conn, excluding) == "Wed 2026-11-25 10:00"

    tenant.as_owner()
    call(conn, "set_holidays", tenant.workspace_id, [WEDNESDAY, THANKSGIVING])

    assert planned(conn, excluding) == "Fri 2026-11-27 10:00"
    assert planned(conn, ignoring) == "Wed 2026-11-25 10:00"  # its sequence does not exclude holidays


def test_a_shared_calendar_moves_every_workspace_that_names_it_in_any_case(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    load(conn, "US", date(2026, 12, 25))
    first, second = new_tenant(conn, "First"), new_tenant(conn, "Second")
    named = enrolled(first, nudge_sequence(exclude_holidays=True, holiday_calendar="us"))
    also_named = enrolled(second, nudge_sequence(exclude_holidays=True, holiday_calendar="US"))
    other_calendar = enrolled(second, nudge_sequence(exclude_holidays=True))

    load(conn, "us", WEDNESDAY, date(2026, 12, 25))

    assert planned(conn, named) == "Thu 2026-11-26 10:00"
    assert planned(conn, also_named) == "Thu 2026-11-26 10:00"
    assert planned(conn, other_calendar) == "Wed 2026-11-25 10:00"


def test_a_holiday_written_directly_and_another_workspace_s_list(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant, other = new_tenant(conn, "Acme"), new_tenant(conn, "Other")
    mine = enrolled(tenant, nudge_sequence(exclude_holidays=True))
    theirs = enrolled(other, nudge_sequence(exclude_holidays=True))

    act_as_owner(conn)
    conn.execute(
        "INSERT INTO drumbeat.holidays (workspace_id, day) VALUES (%s, %s)", (tenant.workspace_id, WEDNESDAY)
    )

    assert planned(conn, mine) == "Thu 2026-11-26 10:00"
    assert planned(conn, theirs) == "Wed 2026-11-25 10:00"


def test_a_later_planned_instant_is_kept_as_the_floor(conn):
    """A step planned later than its delay says (a retry's backoff, a hold) moves on from there: it is
    not pulled back to the day its delay gives."""
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant = new_tenant(conn)
    enrollment_id = enrolled(tenant, nudge_sequence(exclude_holidays=True))
    act_as_owner(conn)
    conn.execute(
        "UPDATE drumbeat.enrollments SET next_action_at = '2026-11-26 16:30 America/New_York' WHERE id = %s",
        (enrollment_id,),
    )

    tenant.as_owner()
    call(conn, "set_holidays", tenant.workspace_id, [THANKSGIVING])

    assert planned(conn, enrollment_id) == "Fri 2026-11-27 10:00"
