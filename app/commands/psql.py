"""`drumbeat psql [psql arguments]`: psql on Drumbeat's database (DATABASE_URL, else the embedded one,
started when needed), to look at the tables (`drumbeat.outbox`, `drumbeat.deliveries`, ...) without
finding out where and how the embedded server listens. Uses the psql on PATH, else the one the embedded
Postgres ships. The connection goes to psql in its PG* environment variables, not its arguments, so a
password never shows in the process list."""

from __future__ import annotations

import argparse

from app.commands import database_url, fail

HELP = "open psql on Drumbeat's database (the embedded one without DATABASE_URL)"

# conninfo keywords and the libpq environment variables that carry them.
ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslcrl": "PGSSLCRL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "channel_binding": "PGCHANNELBINDING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "client_encoding": "PGCLIENTENCODING",
}


PASSES_ON_ARGUMENTS = True  # every argument goes to psql (`drumbeat psql -At -c 'SELECT 1'`)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Every argument goes to psql: drumbeat psql -At -c 'SELECT 1' (and psql's own --help)."


def run(args: argparse.Namespace) -> int:
    import os
    import subprocess

    program = psql_program()
    if program is None:
        return fail(
            "psql", "no psql found: install the PostgreSQL client (apt-get install postgresql-client)"
        )
    if {"--help", "-?", "--version", "-V"} & set(args.extra):  # psql's own answer: no database needed
        return subprocess.run([program, *args.extra], check=False).returncode
    try:
        environment = os.environ | connection_environment(database_url("psql"))
        return subprocess.run([program, *args.extra], env=environment, check=False).returncode
    except (ValueError, OSError) as error:
        return fail("psql", str(error))


def connection_environment(url: str) -> dict[str, str]:
    """The libpq environment variables that say what `url` says; ValueError for a keyword psql could not
    be given this way."""
    from psycopg.conninfo import conninfo_to_dict

    environment = {}
    for keyword, value in conninfo_to_dict(url).items():
        if value is None:
            continue
        if keyword not in ENVIRONMENT:
            raise ValueError(f"DATABASE_URL's {keyword} cannot be passed to psql")
        environment[ENVIRONMENT[keyword]] = str(value)
    return environment


def psql_program() -> str | None:
    """psql on PATH, else the embedded Postgres's own."""
    import shutil
    from pathlib import Path

    if found := shutil.which("psql"):
        return found
    try:
        import pgserver
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.is_file() else None
