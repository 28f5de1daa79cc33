"""A migrated scratch database for a benchmark run: on DATABASE_URL's server, the local one, or an
embedded Postgres; dropped afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.core.embedded import server_url
from app.core.migrate import migrate


@contextmanager
def scratch_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="drumbeat-bench-") as data_dir:
        maintenance_url, server = server_url(embedded_dir=Path(data_dir))
        database = f"drumbeat_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(maintenance_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        try:
            url = make_conninfo(**{**conninfo_to_dict(maintenance_url), "dbname": database})
            migrate(url)
            yield url
        finally:
            with psycopg.connect(maintenance_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            if server is not None:
                server.cleanup()
