"""drumbeat.load_holidays: the operator replaces a workspace's holiday list or a shared calendar,
names kept; nobody else may."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant
from tests.support import act_as_owner, sql_error

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
