"""`drumbeat migrate [--dry-run]`: apply pending SQL migrations, each in its own transaction."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, database_url, fail

HELP = "apply pending SQL migrations (each in its own transaction)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list pending migrations, apply nothing")


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.migrate import MigrationError, migrate

    try:
        names = migrate(database_url("migrate"), dry_run=args.dry_run)
    except MigrationError as error:
        return fail("migrate", str(error))
    except psycopg.OperationalError as error:
        return fail("migrate", f"cannot reach the database: {error}")
    except psycopg.Error as error:
        # A failing migration rolled back as a whole; the message says which statement failed.
        return fail("migrate", f"a migration failed and was rolled back: {error}")
    verb = "pending" if args.dry_run else "applied"
    if not names:
        print("Schema is current: nothing to apply.")
    for name in names:
        print(f"{verb}: {name}")
    return EXIT_OK
