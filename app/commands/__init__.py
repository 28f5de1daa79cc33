"""The `drumbeat` subcommands, one module each. A command module has HELP (one line for `drumbeat --help`),
add_arguments(parser) and run(args) -> exit code; heavy imports stay inside run() so `--help` is instant.

Exit codes scripts can rely on: 0 success; 1 the command ran and failed (database unreachable, a migration
failed, a doctor check failed, a bad workspace id); 2 usage or configuration error (a bad argument, a
malformed variable: the message names it)."""

from __future__ import annotations

import argparse
import os
import sys
import uuid

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_listen_arguments(parser) -> None:
    """--host and --port of the API (`drumbeat api`, `drumbeat up`), defaulting to DRUMBEAT_HOST/PORT."""

    parser.add_argument(
        "--host",
        default=os.environ.get("DRUMBEAT_HOST") or "127.0.0.1",
        help="address the API listens on (0.0.0.0 for all; default DRUMBEAT_HOST or 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("DRUMBEAT_PORT") or "8000",
        help="the API's TCP port (default DRUMBEAT_PORT or 8000)",
    )


def workspace_id(text: str) -> uuid.UUID:
    """argparse type of --workspace: a malformed id is a usage error (exit 2) before anything runs."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a workspace id (a UUID)") from None


def workspace_name(conn, workspace: uuid.UUID) -> str:
    """The workspace's name (app.core.operator); CommandError (exit 1) naming the id when this database has
    no such workspace."""
    from app.core.errors import NotFound
    from app.core.operator import workspace_name as lookup

    try:
        return lookup(conn, workspace)
    except NotFound as error:
        raise CommandError(str(error)) from None


def program() -> str:
    """How to run this `drumbeat` again from a shell, for commands we print: `drumbeat` only when that name
    on PATH is this very program; else its absolute path (`scripts/run` starts .venv/bin/drumbeat, which
    no PATH names, and from the repository root, which need not be the shell's directory), or
    `python -m app.cli` when it was started that way."""
    import shlex
    import shutil
    from pathlib import Path

    started = Path(sys.argv[0]).absolute()
    if started.name != "drumbeat":
        return f"{shlex.quote(sys.executable)} -m app.cli"
    on_path = shutil.which("drumbeat")
    if on_path and Path(on_path).resolve() == started.resolve():
        return "drumbeat"
    return shlex.quote(str(started))


def fail(command: str, message: str, code: int = EXIT_FAILED) -> int:
    print(f"drumbeat {command}: {message}".rstrip(), file=sys.stderr)
    return code


def describe_database_error(error: Exception) -> str:
    """A database error as an operator should read it: the contract's message when it is a domain error,
    the fix when the schema is missing, else the server's own words."""
    import psycopg

    from app.core.errors import domain_error

    if isinstance(error, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return "the database is not migrated: run `drumbeat migrate` first"
    if isinstance(error, psycopg.OperationalError):
        return f"cannot reach the database: {error}"
    return str(domain_error(error) or error)


def database_url(command: str) -> str:
    """DATABASE_URL, else the embedded database (started when needed); CommandError when neither works, or
    when DATABASE_URL names a pooler Drumbeat cannot use (a usage error: nothing was tried)."""
    from app.core.embedded import database_url as resolve
    from app.core.settings import transaction_pooler_problem

    if problem := transaction_pooler_problem(os.environ.get("DATABASE_URL")):
        raise CommandError(problem, EXIT_USAGE)
    try:
        return resolve()[0]
    except ImportError as error:
        raise CommandError(
            "DATABASE_URL is not set, and the embedded Postgres (the pgserver package) is not available on "
            "this platform: set DATABASE_URL to a PostgreSQL 15+ database"
        ) from error
    except Exception as error:  # pgserver raises plain exceptions (missing binaries, a bad data dir)
        raise CommandError(
            f"DATABASE_URL is not set and the embedded Postgres could not start: {error}"
        ) from error


def settings_for_server(command: str, args: argparse.Namespace):
    """settings_for(command) for a process that serves the API on --host / --port: there, DRUMBEAT_PUBLIC_URL's
    development default is the address this process listens on (links it signs then lead back to it)."""
    import dataclasses

    from app.core.settings import local_server_url

    settings = settings_for(command)
    if not settings.public_url_defaulted:
        return settings
    return dataclasses.replace(settings, public_url=local_server_url(args.host, args.port))


def settings_for(command: str):
    """Validated settings (with the embedded database standing in for an unset DATABASE_URL);
    CommandError(EXIT_USAGE) naming the variable when the configuration is wrong."""

    from app.core.settings import ConfigError, load_settings

    try:
        load_settings("postgresql://unresolved")  # validate everything before starting any server
        url = os.environ.get("DATABASE_URL") or database_url(command)
        return load_settings(url)
    except ConfigError as error:
        raise CommandError(str(error), EXIT_USAGE) from error
