"""drumbeat.load_holidays: the operator replaces a workspace's holiday list or a shared calendar,
names kept; nobody else may. A sequence's settings.holiday_calendar names a loaded calendar, in any case."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.support import act_as_owner, call, call_one, sql_error

NEW_YORK = ZoneInfo("America/New_York")
CHRISTMAS = [{"date": "2027-12-24", "name": "Christmas Eve"}, {"date": "2027-12-25", "name": "Christmas Day"}]


def load(conn, workspace_id, calendar, holidays) -> int:
    return conn.execute(
        "SELECT drumbeat.load_holidays(%s, %s, %s)", (workspace_id, calendar, Jsonb(holidays))
    ).fetchone()[0]


def stored(conn, calendar: str) -> list[tuple]:
    return conn.execute(
        "SELECT day, name FROM drumbeat.holidays WHERE calendar = %s ORDER BY day", (calendar,)
    ).fetchall()


def test_a_shared_calendar_is_replaced_whole_with_its_names(conn: psycopg.Connection) -> None:
    assert load(conn, None, "US", [{"date": "2026-07-03", "name": "Independence Day (observed)"}]) == 1
    assert load(conn, None, "US", CHRISTMAS) == 2
    assert stored(conn, "US") == [
        (dt.date(2027, 12, 24), "Christmas Eve"),
        (dt.date(2027, 12, 25), "Christmas Day"),
    ]


def test_a_workspace_list_leaves_shared_calendars_alone(conn: psycopg.Connection) -> None:
    tenant = new_tenant(conn)
    act_as_owner(conn)
    load(conn, None, "US", CHRISTMAS)
    assert load(conn, tenant.workspace_id, None, CHRISTMAS[:1]) == 1
    assert len(stored(conn, "US")) == 2


def test_only_a_trusted_caller_loads_calendars(conn: psycopg.Connection) -> None:
    tenant = new_tenant(conn)
    tenant.as_owner()  # a workspace owner, through PostgREST: not the operator
    with sql_error(conn, "42501"):
        load(conn, None, "US", CHRISTMAS)


def test_exactly_one_well_formed_owner(conn: psycopg.Connection) -> None:
    tenant = new_tenant(conn)
    act_as_owner(conn)
    with sql_error(conn, "PT422", field="p_calendar"):
        load(conn, tenant.workspace_id, "US", CHRISTMAS)
    with sql_error(conn, "PT422", field="p_calendar"):
        load(conn, None, None, CHRISTMAS)
    with sql_error(conn, "PT422", field="p_calendar"):
        load(conn, None, "no spaces", CHRISTMAS)
    with sql_error(conn, "PT422", field="p_holidays"):
        load(conn, None, "US", {"date": "2027-12-25"})


def excluding(calendar: object) -> dict:
    return sms_sequence(settings={"exclude_holidays": True, "holiday_calendar": calendar})


def test_a_calendar_name_is_case_insensitive(conn: psycopg.Connection) -> None:
    assert load(conn, None, "us", CHRISTMAS[:1]) == 1
    assert load(conn, None, "Us", CHRISTMAS) == 2  # the same calendar, replaced whole
    assert stored(conn, "US") == [
        (dt.date(2027, 12, 24), "Christmas Eve"),
        (dt.date(2027, 12, 25), "Christmas Day"),
    ]
    assert stored(conn, "us") == []
    holiday = "SELECT drumbeat.is_holiday(NULL, %s, '2027-12-25')"
    assert [conn.execute(holiday, (name,)).fetchone()[0] for name in ("us", "US", "uS")] == [True] * 3


def test_holidays_of_a_calendar_named_in_another_case_apply(conn: psycopg.Connection) -> None:
    load(conn, None, "US", CHRISTMAS)
    tenant = new_tenant(conn)
    sequence_id = call_one(conn, "create_sequence", tenant.workspace_id, Jsonb(excluding("us")))
    contact_id = tenant.contact(timezone="America/New_York")
    christmas_eve = dt.datetime(2027, 12, 24, 15, tzinfo=dt.UTC)  # 10:00 in New York
    planned = call(conn, "preview_schedule", sequence_id, contact_id, christmas_eve)
    assert planned[0][3].astimezone(NEW_YORK).isoformat() == "2027-12-26T08:00:00-05:00"  # 24th, 25th skipped


def test_an_unknown_calendar_is_rejected_at_save(conn: psycopg.Connection) -> None:
    load(conn, None, "US", CHRISTMAS)
    tenant = new_tenant(conn)
    for name in ("GB", "U S", "US-CA"):
        with sql_error(conn, "PT422", field="settings.holiday_calendar", match="unknown holiday calendar"):
            call(conn, "create_sequence", tenant.workspace_id, Jsonb(excluding(name)))
    sequence_id = call_one(conn, "create_sequence", tenant.workspace_id, Jsonb(excluding("us")))
    with sql_error(conn, "PT422", field="settings.holiday_calendar"):
        call(conn, "update_sequence", sequence_id, Jsonb(excluding("gb")))
    with sql_error(conn, "PT422", field="settings.holiday_calendar", match="must be a string"):
        call(conn, "update_sequence", sequence_id, Jsonb(excluding(7)))


def test_a_workspace_list_is_no_calendar(conn: psycopg.Connection) -> None:
    tenant = new_tenant(conn)
    act_as_owner(conn)
    load(conn, tenant.workspace_id, None, CHRISTMAS)
    tenant.as_owner()
    with sql_error(conn, "PT422", field="settings.holiday_calendar"):
        call(conn, "create_sequence", tenant.workspace_id, Jsonb(excluding(str(tenant.workspace_id))))
