"""A throwaway PostgreSQL cluster a test owns, to break on purpose: initdb into a temporary directory, a
server on a free port, and the faults an operator meets (backends terminated, a restart, the server down
for a while). It is migrated with `drumbeat migrate`'s code, which also creates the roles (anon,
authenticated, drumbeat_worker, ...) exactly as on the shared test server (tests/conftest.py).

The PostgreSQL binaries are found as PG_BINDIR, else pg_config --bindir, else /usr/lib/postgresql/*/bin
(the newest), else initdb on PATH; `binaries()` returns None when there are none (tests skip). Running as
root (containers), the server runs as the `postgres` system user when it exists, as initdb refuses root.
Tuned to be quick and small: fsync and full-page writes off, a tiny shared_buffers."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from app.core.migrate import migrate
from tests.support.processes import free_port

SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "50",
    "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning",
}


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates = []
    if configured := os.environ.get("PG_BINDIR"):
        candidates.append(Path(configured))
    if pg_config := shutil.which("pg_config"):
        try:
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(found.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True
    )
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


@dataclass
class ThrowawayCluster:
    """One PostgreSQL server in its own data directory, on its own port; superuser `postgres`, trust auth."""

    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="drumbeat-faults-")))
    port: int = field(default_factory=free_port)

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def init(self) -> ThrowawayCluster:
        self.root.chmod(0o755)
        self.pgdata.mkdir()
        self._own(self.root)
        self._own(self.pgdata)
        self._run("initdb", "-D", self.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nunix_socket_directories = '{self.root}'\n")
            conf.writelines(f"{name} = {value}\n" for name, value in SETTINGS.items())
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.pgdata, "-l", self.root / "server.log", "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        # -l again: without it the new server writes to pg_ctl's stdout, a pipe that would never close.
        self._run(
            "pg_ctl",
            "-D",
            self.pgdata,
            "-l",
            self.root / "server.log",
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "restart",
        )

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", self.pgdata, "status", check=False).returncode == 0

    def terminate_backends(self, dbname: str, *, application_name: str | None = None) -> int:
        """pg_terminate_backend every other client backend of `dbname`; how many it terminated."""
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            return conn.execute(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND backend_type = 'client backend'
                     AND (%(app)s::text IS NULL OR application_name = %(app)s)""",
                {"app": application_name},
            ).fetchone()[0]

    def migrated_database(self, dbname: str = "drumbeat") -> str:
        """A new database migrated with `drumbeat migrate`'s code; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
        migrate(self.url(dbname))
        return self.url(dbname)

    def destroy(self) -> None:
        if self.pgdata.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- running the binaries (as the postgres system user when we are root) --------------------------

    def _user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            return pwd.getpwnam("nobody")

    def _own(self, path: Path) -> None:
        if user := self._user():
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, program: str, *args, check: bool = True) -> subprocess.CompletedProcess:
        user = self._user()
        result = subprocess.run(
            [str(self.bindir / program), *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env=os.environ | ({"HOME": str(self.root)} if user else {}),
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}{result.stdout}")
        return result


def wait_until_answers(url: str, timeout: float = 30) -> float:
    """Seconds until a connection to `url` succeeds (raises once `timeout` passed)."""
    started = time.monotonic()
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return time.monotonic() - started
        except psycopg.OperationalError:
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.1)
