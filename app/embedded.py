"""Finding a Postgres server: DATABASE_URL, else the conventional local server, else an embedded one
(the `pgserver` package bundles PostgreSQL binaries and runs as root), so a fresh laptop needs nothing."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def answers(url: str) -> bool:
    """Does a server accept connections at this URL?"""
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = "stop"):
    """Start (or reuse) an embedded PostgreSQL keeping its data in data_dir; returns the pgserver handle,
    whose get_uri() is a socket URL to its `postgres` database."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
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
