"""`drumbeat holidays load|list`: a workspace's holidays (days its sequences skip when they set
exclude_holidays), loaded from the `holidays` package's public holidays of a country, or of one of its
states or provinces. Loading replaces the workspace's list (drumbeat_api.set_holidays), which keeps the
dates only: the names are shown here, not stored. Observed days count: when July 4 is a Saturday, the
observed Friday is a holiday too."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from dataclasses import dataclass

from app.commands import EXIT_OK, EXIT_USAGE, CommandError, database_url, fail
from app.operator import workspace_id, workspace_name

HELP = "load a country's public holidays into a workspace, or list a workspace's holidays"

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
        help="replace a workspace's holidays with a country's public holidays",
        description="Replace the workspace's holiday list with the public holidays of a country (and of "
        "one of its states or provinces, with --subdiv) for the given years.",
    )
    load.add_argument("--workspace", required=True, type=workspace_id, help="workspace id")
    load.add_argument("--country", required=True, help="ISO 3166 country code, e.g. US, GB, DE, FR")
    load.add_argument(
        "--subdiv", help="a state or province code, e.g. CA or NY for the US; adds its holidays"
    )
    load.add_argument("--years", required=True, type=year_range, help="YEAR or FIRST-LAST, e.g. 2026-2028")
    load.add_argument("--dry-run", action="store_true", help="print every date and name; change nothing")
    listing = actions.add_parser("list", help="a workspace's holidays, in date order")
    listing.add_argument("--workspace", required=True, type=workspace_id, help="workspace id")


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.errors import domain_error

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

    from app.queries import queries

    calendar = public_holidays(args.country, args.subdiv, args.years)
    place = calendar.country + (f"-{calendar.subdiv}" if calendar.subdiv else "")
    if args.dry_run:
        for day in sorted(calendar):
            print(_holiday_line(day, calendar[day]))
        print(f"{len(calendar)} holidays for {place} {args.years} (dry run: nothing stored)")
        return
    statements = queries("operator")
    params = {"workspace_id": args.workspace}
    with psycopg.connect(database_url("holidays")) as conn:
        name = workspace_name(conn, args.workspace)
        replaced = conn.execute(statements["holiday_count"], params).fetchone()[0]
        conn.execute(statements["set_holidays"], params | {"dates": sorted(calendar)})
    print(f"Loaded {len(calendar)} holidays for {place} {args.years} into {name} ({args.workspace}),")
    print(f"replacing its {replaced} earlier dates. Only dates are stored; the names are shown here:")
    if calendar:
        first, last = min(calendar), max(calendar)
        print(f"  first  {_holiday_line(first, calendar[first])}")
        print(f"  last   {_holiday_line(last, calendar[last])}")


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

    from app.queries import queries

    with psycopg.connect(database_url("holidays")) as conn:
        name = workspace_name(conn, args.workspace)
        rows = conn.execute(
            queries("operator")["workspace_holidays"], {"workspace_id": args.workspace}
        ).fetchall()
    if not rows:
        print(f"{name} ({args.workspace}) has no holidays: load some with `drumbeat holidays load`")
        return
    print(f"{name} ({args.workspace}): {len(rows)} holidays, {rows[0][0]} to {rows[-1][0]}")
    for day, holiday_name in rows:
        print(_holiday_line(day, holiday_name))


def _holiday_line(day: dt.date, name: str | None) -> str:
    return f"{day:%Y-%m-%d %a}  {name or ''}".rstrip()
