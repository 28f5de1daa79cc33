"""Finding a Postgres server: DATABASE_URL, else an embedded one (the `pgserver` package bundles PostgreSQL
binaries, and runs as root by starting the server as an unprivileged user), so a fresh laptop needs nothing.

The commands use the embedded server kept in the data directory (DRUMBEAT_DATA_DIR, default the user's data
directory) and reused on every run; the tests also try the conventional local server first."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_NAME = "drumbeat"

# The embedded servers this process started or joined, kept referenced for the life of the process:
# pgserver stops a server when the last process using it exits (cleanup_mode "stop").
_servers: dict[Path, object] = {}


def answers(url: str) -> bool:
    """Does a server accept connections at this URL?"""
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def data_dir() -> Path:
    """Where the embedded server keeps its data: DRUMBEAT_DATA_DIR, else the user's data directory
    (~/.local/share/drumbeat on Linux)."""
    if configured := os.environ.get("DRUMBEAT_DATA_DIR"):
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("drumbeat", appauthor=False))


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = "stop"):
    """Start (or reuse) an embedded PostgreSQL keeping its data in data_dir; returns the pgserver handle,
    whose get_uri() is a socket URL to its `postgres` database."""
    import warnings

    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir (on import, and again on start); without
        # XDG_RUNTIME_DIR (root shells, containers) platformdirs warns and uses /tmp/runtime-<uid>: fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

        return pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)


def server_url(*, embedded_dir: Path, allow_local: bool = True) -> tuple[str, object | None]:
    """A maintenance-database URL and, when an embedded server had to be started, its handle (call
    .cleanup() on it when done)."""
    if url := os.environ.get("DATABASE_URL"):
        return url, None
    if allow_local and answers(LOCAL_SERVER_URL):
        return LOCAL_SERVER_URL, None
    server = start_embedded(embedded_dir)
    return server.get_uri(), server


def embedded_database_url(database: str = DATABASE_NAME) -> str:
    """The URL of `database` on the embedded server in data_dir(), starting the server and creating the
    database when needed. The server lives as long as this process (or longer, if another uses it)."""
    pgdata = data_dir() / "pgdata"
    server = _servers.get(pgdata)
    if server is None:
        server = _servers[pgdata] = start_embedded(pgdata)
    maintenance = server.get_uri()
    ensure_database(maintenance, database)
    return make_conninfo(maintenance, dbname=database)


def ensure_database(maintenance_url: str, database: str) -> None:
    """Create `database` on the server of maintenance_url unless it exists."""
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def database_url() -> tuple[str, bool]:
    """DATABASE_URL when set, else the embedded database; and whether it is the embedded one."""
    if url := os.environ.get("DATABASE_URL"):
        return url, False
    return embedded_database_url(), True


def describe(url: str, database: str | None = None) -> str:
    """Where a database lives, for people (never the password): "drumbeat on the embedded Postgres in DIR"
    or "drumbeat on user@host:5432"; `database` names another database on the same server."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    name = database or params.get("dbname") or "postgres"
    if host.startswith("/"):  # a socket directory: pgserver keeps its socket in the data directory
        return f"{name} on the embedded Postgres in {host}"
    return f"{name} on {params.get('user') or ''}@{host}:{params.get('port') or 5432}".replace(" @", " ")
