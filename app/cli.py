"""The `drumbeat` command."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: export it (postgresql://user@host:5432/dbname) and retry.")
    return url


def cmd_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from app.migrate import MigrationError, migrate

    try:
        names = migrate(_database_url(), dry_run=args.dry_run)
    except MigrationError as error:
        print(f"drumbeat migrate: {error}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.OperationalError as error:
        print(f"drumbeat migrate: cannot reach the database: {error}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    except psycopg.Error as error:
        # A failing migration rolled back as a whole; the message says which statement failed.
        print(f"drumbeat migrate: a migration failed and was rolled back: {error}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    verb = "pending" if args.dry_run else "applied"
    if not names:
        print("Schema is current: nothing to apply.")
    for name in names:
        print(f"{verb}: {name}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drumbeat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser(
        "migrate", help="apply pending SQL migrations to DATABASE_URL (each in its own transaction)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="list pending migrations, apply nothing")
    migrate.set_defaults(handler=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
