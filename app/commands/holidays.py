"""`drumbeat holidays load|list`: holidays (days sequences skip when they set exclude_holidays), loaded from
the `holidays` package's public holidays of a country, or of one of its states or provinces, into either a
workspace's own list (--workspace) or a shared calendar any workspace's sequences may opt into
(--calendar US, then sequence settings {"holiday_calendar": "US", "exclude_holidays": true}). Loading
replaces that list (drumbeat.load_holidays), names included. Observed days count: when July 4 is a
Saturday, the observed Friday is a holiday too."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from dataclasses import dataclass

from app.commands import EXIT_OK, EXIT_USAGE, CommandError, database_url, fail, workspace_id, workspace_name

HELP = "load a country's public holidays into a workspace or a shared calendar, or list them"

# The list is replaced and the scheduler looks at most a year ahead: a longer range is a typo (2026-2206).
MAX_YEARS = 25


@dataclass(frozen=True)
class Years:
    first: int
    last: int

    def __iter__(self):
        return iter(range(self.first, self.last + 1))

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def year_range(text: str) -> Years:
    """argparse type of --years: YEAR or FIRST-LAST."""
    match = re.fullmatch(r"(\d{4})(?:-(\d{4}))?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not YEAR or FIRST-LAST (e.g. 2027 or 2026-2028)")
    first, last = match.groups()
    years = Years(int(first), int(last or first))
    if years.last < years.first:
        raise argparse.ArgumentTypeError(f"{text!r} ends before it starts: write FIRST-LAST, e.g. 2026-2028")
    if years.last - years.first >= MAX_YEARS:
        raise argparse.ArgumentTypeError(f"{text!r} spans more than {MAX_YEARS} years")
    return years


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{load,list}")
    load = actions.add_parser(
        "load",
        help="replace a workspace's holidays, or a shared calendar, with a country's public holidays",
        description="Replace a workspace's holiday list, or a shared calendar, with the public holidays of "
        "a country (and of one of its states or provinces, with --subdiv) for the given years.",
    )
    _owner_arguments(load)
    load.add_argument("--country", required=True, help="ISO 3166 country code, e.g. US, GB, DE, FR")
    load.add_argument(
        "--subdiv", help="a state or province code, e.g. CA or NY for the US; adds its holidays"
    )
    load.add_argument("--years", required=True, type=year_range, help="YEAR or FIRST-LAST, e.g. 2026-2028")
    load.add_argument("--dry-run", action="store_true", help="print every date and name; change nothing")
    listing = actions.add_parser("list", help="a workspace's holidays or a shared calendar, in date order")
    _owner_arguments(listing)


def _owner_arguments(parser: argparse.ArgumentParser) -> None:
    owner = parser.add_mutually_exclusive_group(required=True)
    owner.add_argument("--workspace", type=workspace_id, help="a workspace id: its own holiday list")
    owner.add_argument(
        "--calendar",
        type=calendar_name,
        help="a shared calendar's name (e.g. US or US-CA), which sequences opt into with settings "
        "holiday_calendar",
    )


def calendar_name(text: str) -> str:
    """argparse type of --calendar: the names drumbeat.holidays accepts."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a calendar name (1 to 40 letters, digits, _ or -)")
    return text


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.errors import domain_error

    command = f"holidays {args.action}"
    try:
        if args.action == "load":
            load(args)
        else:
            show(args)
    except CommandError as error:
        return fail(command, str(error), error.code)
    except psycopg.OperationalError as error:
        return fail(command, f"cannot reach the database: {error}")
    except psycopg.Error as error:
        return fail(command, str(domain_error(error) or error))
    return EXIT_OK


def load(args: argparse.Namespace) -> None:
    import psycopg

    from app.core.queries import queries

    calendar = public_holidays(args.country, args.subdiv, args.years)
    place = calendar.country + (f"-{calendar.subdiv}" if calendar.subdiv else "")
    if args.dry_run:
        for day in sorted(calendar):
            print(_holiday_line(day, calendar[day]))
        print(f"{len(calendar)} holidays for {place} {args.years} (dry run: nothing stored)")
        return
    statements = queries("operator")
    holidays_json = [{"date": day.isoformat(), "name": calendar[day]} for day in sorted(calendar)]
    with psycopg.connect(database_url("holidays")) as conn:
        owner = _owner(conn, args)
        replaced = conn.execute(statements["holiday_count"], _params(args)).fetchone()[0]
        conn.execute(statements["load_holidays"], _params(args) | {"holidays": json.dumps(holidays_json)})
    print(f"Loaded {len(calendar)} holidays for {place} {args.years} into {owner},")
    print(f"replacing its {replaced} earlier dates.")
    if args.calendar:
        print(
            f'Sequences use it with settings {{"holiday_calendar": "{args.calendar}", "exclude_holidays": true}}.'
        )
    if calendar:
        first, last = min(calendar), max(calendar)
        print(f"  first  {_holiday_line(first, calendar[first])}")
        print(f"  last   {_holiday_line(last, calendar[last])}")


def _params(args: argparse.Namespace) -> dict:
    return {"workspace_id": args.workspace, "calendar": args.calendar}


def _owner(conn, args: argparse.Namespace) -> str:
    """The list's owner, for people; CommandError when the workspace does not exist."""
    if args.calendar:
        return f"the shared calendar {args.calendar}"
    return f"{workspace_name(conn, args.workspace)} ({args.workspace})"


def public_holidays(country: str, subdiv: str | None, years: Years):
    """The `holidays` package's calendar (a dict: date -> name); CommandError(EXIT_USAGE) naming a country
    or subdivision it does not know, with the codes it does know."""
    import holidays

    supported = holidays.list_supported_countries()
    code = country.upper()
    if code not in supported:
        raise CommandError(
            f"unknown country {country!r}: give an ISO 3166 code such as US, GB, DE or FR "
            f"({len(supported)} codes are known to the holidays package {holidays.__version__})",
            EXIT_USAGE,
        )
    subdivisions = supported[code]
    if subdiv and subdiv.upper() not in subdivisions:
        known = ", ".join(subdivisions) if subdivisions else "none"
        raise CommandError(f"{code} has no subdivision {subdiv!r}; its subdivisions: {known}", EXIT_USAGE)
    return holidays.country_holidays(code, subdiv=subdiv.upper() if subdiv else None, years=list(years))


def show(args: argparse.Namespace) -> None:
    import psycopg

    from app.core.queries import queries

    with psycopg.connect(database_url("holidays")) as conn:
        owner = _owner(conn, args)
        rows = conn.execute(queries("operator")["holidays"], _params(args)).fetchall()
    if not rows:
        print(f"{owner} has no holidays: load some with `drumbeat holidays load`")
        return
    print(f"{owner}: {len(rows)} holidays, {rows[0][0]} to {rows[-1][0]}")
    for day, holiday_name in rows:
        print(_holiday_line(day, holiday_name))


def _holiday_line(day: dt.date, name: str | None) -> str:
    return f"{day:%Y-%m-%d %a}  {name or ''}".rstrip()
