"""A real Postgres for every test: DATABASE_URL, else the server on 127.0.0.1:5432 when it answers,
else an embedded one (pgserver). The schema is migrated once into a template database, which each
test clones (pytest-postgresql's DatabaseJanitor)."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

from app.core.embedded import server_url
from app.core.migrate import migrate


@dataclass(frozen=True)
class Cluster:
    """Connection parameters of the server the tests use; `url(db)` names one of its databases."""

    host: str
    port: int
    user: str
    password: str | None

    def url(self, dbname: str) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )

    def janitor(self, dbname: str, template: str | None = None) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            template_dbname=template,
        )


def _cluster_from(url: str) -> Cluster:
    params = conninfo_to_dict(url)
    return Cluster(
        host=params.get("host", "127.0.0.1"),
        port=int(params.get("port", 5432)),
        user=params.get("user", "postgres"),
        password=params.get("password"),
    )


@pytest.fixture(scope="session", autouse=True)
def private_data_home(tmp_path_factory) -> Iterator[Path]:
    """The user's data directory (XDG_DATA_HOME), for this process and every `drumbeat` it starts, is the
    run's own: development keeps its secret key there (and the embedded Postgres, for a command with
    neither DATABASE_URL nor DRUMBEAT_DATA_DIR), never in the ~/.local/share of whoever runs the tests."""
    home = tmp_path_factory.mktemp("xdg-data-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """DATABASE_URL, else 127.0.0.1:5432, else an embedded server (DRUMBEAT_TEST_EMBEDDED=1 forces it)."""
    with tempfile.TemporaryDirectory(prefix="drumbeat-pg-") as data_dir:
        url, server = server_url(
            embedded_dir=Path(data_dir), allow_local=os.environ.get("DRUMBEAT_TEST_EMBEDDED") != "1"
        )
        try:
            yield _cluster_from(url)
        finally:
            if server is not None:
                server.cleanup()


@pytest.fixture(scope="session")
def template_db(cluster: Cluster) -> Iterator[str]:
    """A database migrated once with `drumbeat migrate`'s code, cloned by every test."""
    name = f"drumbeat_template_{os.getpid()}"
    janitor = cluster.janitor(name)
    janitor.init()
    try:
        migrate(cluster.url(name))
        yield name
    finally:
        janitor.drop()


_clone_numbers = itertools.count()


@pytest.fixture
def db_url(cluster: Cluster, template_db: str) -> Iterator[str]:
    """A private database for one test, cloned from the migrated template."""
    name = f"drumbeat_test_{os.getpid()}_{next(_clone_numbers)}"
    janitor = cluster.janitor(name, template=template_db)
    janitor.init()
    try:
        yield cluster.url(name)
    finally:
        janitor.drop()


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """A connection to the test's database, in a transaction that is never committed."""
    with psycopg.connect(db_url) as connection:
        yield connection
        connection.rollback()
