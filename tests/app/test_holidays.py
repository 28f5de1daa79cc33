"""`drumbeat holidays load|list` as a real process: a country's public holidays (from the `holidays`
package) replace a workspace's list in drumbeat.holidays."""

from __future__ import annotations

import datetime as dt

import holidays
import psycopg
import pytest

from tests.support.processes import committed_tenant, drumbeat

MISSING = "00000000-0000-0000-0000-000000000000"


def holidays_cli(tmp_path, db_url: str, *args: str):
    return drumbeat("holidays", *args, cwd=tmp_path, DATABASE_URL=db_url)


def stored_days(db_url: str, workspace_id: str) -> list[dt.date]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT day FROM drumbeat.holidays WHERE workspace_id = %s ORDER BY day", (workspace_id,)
        ).fetchall()
    return [day for (day,) in rows]


def test_load_replaces_the_list_and_list_shows_it(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    loaded = holidays_cli(
        tmp_path, db_url, "load", "--country", "US", "--years", "2026-2028", "--workspace", workspace
    )
    assert loaded.returncode == 0, loaded.stderr
    days = stored_days(db_url, workspace)
    assert set(days) == set(holidays.country_holidays("US", years=[2026, 2027, 2028]))
    assert dt.date(2026, 7, 3) in days  # Independence Day, observed on the Friday
    assert dt.date(2026, 12, 25) in days and dt.date(2027, 12, 24) in days  # Christmas, and observed
    assert days[0] == dt.date(2026, 1, 1) and days[-1] == dt.date(2028, 12, 25)
    assert f"Loaded {len(days)} holidays for US 2026-2028" in loaded.stdout
    assert "first  2026-01-01 Thu  New Year's Day" in loaded.stdout
    assert "last   2028-12-25 Mon  Christmas Day" in loaded.stdout

    california = ("--country", "US", "--subdiv", "CA", "--years", "2027")
    replaced = holidays_cli(tmp_path, db_url, "load", *california, "--workspace", workspace)
    assert replaced.returncode == 0, replaced.stderr
    assert f"replacing its {len(days)} earlier dates" in replaced.stdout
    days = stored_days(db_url, workspace)
    assert {day.year for day in days} == {2027}
    assert dt.date(2027, 3, 31) in days  # Cesar Chavez Day: California's own

    listed = holidays_cli(tmp_path, db_url, "list", "--workspace", workspace)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].endswith(f"{len(days)} holidays, {days[0]} to {days[-1]}")
    california_2027 = holidays.country_holidays("US", subdiv="CA", years=[2027])
    assert lines[1:] == [f"{day:%Y-%m-%d %a}  {california_2027[day]}" for day in days]  # names are kept


def test_a_shared_calendar_is_loaded_for_every_workspace_to_opt_into(db_url, tmp_path):
    loaded = holidays_cli(tmp_path, db_url, "load", "--country", "GB", "--years", "2027", "--calendar", "GB")
    assert loaded.returncode == 0, loaded.stderr
    assert "into the shared calendar GB" in loaded.stdout and '"holiday_calendar": "GB"' in loaded.stdout
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT day, name FROM drumbeat.holidays WHERE calendar = 'GB' AND workspace_id IS NULL ORDER BY day"
        ).fetchall()
        boxing_day = conn.execute("SELECT drumbeat.is_holiday(NULL, 'GB', '2027-12-27')").fetchone()[0]
    assert rows == sorted(holidays.country_holidays("GB", years=[2027]).items())
    assert boxing_day is True  # Boxing Day 2027, observed on the Monday: what the scheduler asks
    listed = holidays_cli(tmp_path, db_url, "list", "--calendar", "GB")
    assert (
        listed.stdout.splitlines()[0]
        == f"the shared calendar GB: {len(rows)} holidays, 2027-01-01 to 2027-12-28"
    )


@pytest.mark.parametrize(
    "owner", [(), ("--calendar", "GB", "--workspace", MISSING), ("--calendar", "no spaces please")]
)
def test_a_list_needs_exactly_one_well_formed_owner(db_url, tmp_path, owner):
    result = holidays_cli(tmp_path, db_url, "load", "--country", "GB", "--years", "2027", *owner)
    assert result.returncode == 2 and ("--calendar" in result.stderr or "--workspace" in result.stderr)


def test_unknown_country_is_a_usage_error_and_changes_nothing(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    result = holidays_cli(
        tmp_path, db_url, "load", "--country", "XX", "--years", "2026", "--workspace", workspace
    )
    assert result.returncode == 2
    assert "unknown country 'XX'" in result.stderr
    assert stored_days(db_url, workspace) == []


@pytest.mark.parametrize(
    ("years", "message"),
    [
        ("2028-2026", "ends before it starts"),
        ("26", "is not YEAR or FIRST-LAST"),
        ("2026-", "is not YEAR or FIRST-LAST"),
        ("2026-2099", "spans more than 25 years"),
    ],
)
def test_bad_years_are_a_usage_error(years, message, tmp_path):
    unreachable = "postgresql://postgres@127.0.0.1:1/x"  # refused before any connection
    result = holidays_cli(
        tmp_path, unreachable, "load", "--country", "US", "--years", years, "--workspace", MISSING
    )
    assert result.returncode == 2
    assert f"argument --years: {years!r} {message}" in result.stderr


def test_a_missing_workspace_is_named(db_url, tmp_path):
    result = holidays_cli(tmp_path, db_url, "list", "--workspace", MISSING)
    assert result.returncode == 1
    assert f"workspace {MISSING} not found" in result.stderr
