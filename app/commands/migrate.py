"""`drumbeat migrate [--dry-run | --sql [--from-scratch]]`: bring the database to the schema this code
ships (numbered migrations, procrastinate's schema, then the changed files of sql/functions/), or print
the same steps as a psql script for a DBA to review and apply."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, EXIT_USAGE, database_url, fail

HELP = "apply pending SQL migrations and changed function files, or print them as a psql script (--sql)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list pending migrations, apply nothing")
    mode.add_argument(
        "--sql",
        action="store_true",
        help="print the exact script `migrate` would run on this database, for psql (applies nothing)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="with --sql: the whole install, for an empty database (needs no database)",
    )


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.migrate import MigrationError, migrate

    if args.from_scratch and not args.sql:
        return fail("migrate", "--from-scratch goes with --sql", EXIT_USAGE)
    try:
        if args.sql:
            return print_script(from_scratch=args.from_scratch)
        names = migrate(database_url("migrate"), dry_run=args.dry_run)
    except MigrationError as error:
        return fail("migrate", str(error))
    except psycopg.OperationalError as error:
        return fail("migrate", f"cannot reach the database: {error}")
    except psycopg.Error as error:
        # A failing step rolled back as a whole; the message says which statement failed.
        return fail("migrate", f"a migration failed and was rolled back: {error}")
    verb = "pending" if args.dry_run else "applied"
    if not names:
        print("Schema is current: nothing to apply.")
    for name in names:
        print(f"{verb}: {name}")
    return EXIT_OK


def print_script(*, from_scratch: bool) -> int:
    from app.core.migrate import pending_plan, plan, script

    todo = plan({}) if from_scratch else pending_plan(database_url("migrate"))
    print(script(todo), end="")
    return EXIT_OK
