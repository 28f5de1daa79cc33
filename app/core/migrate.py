"""The migrator: applies pending SQL migrations in order, each in its own transaction, under an
advisory lock, recording name + checksum + time; refuses to run when an applied file was edited.

Drumbeat's files (``sql/migrations``) and procrastinate's schema are tracked in the same table.
procrastinate lives in its own schema, ``procrastinate``, so nothing of it is exposed through the
``public`` schema that Supabase serves over REST, and Drumbeat's migrations never depend on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from app.core.sqlfiles import migration_files

# A fixed 64-bit key shared by every `drumbeat migrate` (in pg_locks: classid 1704416214, objid 4215867177).
ADVISORY_LOCK_KEY = 7_320_411_902_118_004_521
PROCRASTINATE_SCHEMA = "procrastinate"
# The worker's role uses the job queue; procrastinate's own SQL grants nothing (0021 did it once for
# databases installed before).
PROCRASTINATE_GRANTS = """
GRANT USAGE ON SCHEMA procrastinate TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA procrastinate TO drumbeat_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA procrastinate TO drumbeat_worker;
"""

BOOKKEEPING_DDL = """
CREATE SCHEMA IF NOT EXISTS drumbeat_meta;
REVOKE ALL ON SCHEMA drumbeat_meta FROM PUBLIC;
CREATE TABLE IF NOT EXISTS drumbeat_meta.schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """A migration cannot be applied safely; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    """One unit the migrator applies in a single transaction."""

    name: str
    text: str
    schema: str | None = None  # search_path to run under; None means the file qualifies its names

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def drumbeat_migrations() -> list[Migration]:
    return [Migration(f"migrations/{path.name}", path.read_text()) for path in migration_files()]


def procrastinate_migrations(applied: dict[str, str]) -> list[Migration]:
    """procrastinate's full schema on a fresh database; on one where an older procrastinate was
    installed, its own migration files newer than that version."""
    import procrastinate

    sql_dir = Path(procrastinate.__file__).parent / "sql"
    installed_version = _version_tuple(procrastinate.__version__)
    recorded = [name for name in applied if name.startswith("procrastinate/")]
    if not recorded:
        text = (sql_dir / "schema.sql").read_text()
        return [Migration(f"procrastinate/{procrastinate.__version__}", text, PROCRASTINATE_SCHEMA)]
    current = max(_version_tuple(name.split("/", 1)[1].split("_", 1)[0]) for name in recorded)
    pending = []
    for path in sorted((sql_dir / "migrations").glob("*.sql")):
        file_version = _version_tuple(path.name.split("_", 1)[0])
        if current < file_version <= installed_version:
            pending.append(Migration(f"procrastinate/{path.name}", path.read_text(), PROCRASTINATE_SCHEMA))
    return pending


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def applied_migrations(conn: psycopg.Connection) -> dict[str, str]:
    """name -> checksum of everything already applied (empty before the first run)."""
    exists = conn.execute("SELECT to_regclass('drumbeat_meta.schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    return dict(conn.execute("SELECT name, checksum FROM drumbeat_meta.schema_migrations").fetchall())


def check_not_edited(applied: dict[str, str], migrations: list[Migration]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"sql/{migration.name} was edited after it was applied (recorded checksum {recorded[:12]}, "
                f"file now {migration.checksum[:12]}). Applied migrations are never edited: "
                "restore the file and put the change in a new migration."
            )


def check_not_hand_applied(conn: psycopg.Connection, applied: dict[str, str]) -> None:
    """A schema built with psql has no bookkeeping; re-running every file on it would fail midway."""
    has_schema = conn.execute("SELECT to_regnamespace('drumbeat') IS NOT NULL").fetchone()[0]
    if has_schema and not any(name.startswith("migrations/") for name in applied):
        raise MigrationError(
            "schema drumbeat exists but drumbeat_meta.schema_migrations records none of its migrations "
            "(it was applied with psql?). Keep applying new files with psql, or record the applied ones: "
            "INSERT INTO drumbeat_meta.schema_migrations (name, checksum) VALUES ('migrations/0001_foundation.sql', "
            "'<sha256 of the file>'), ... (see README, 'Applying migrations')."
        )


def pending_migrations(conn: psycopg.Connection) -> list[Migration]:
    applied = applied_migrations(conn)
    check_not_hand_applied(conn, applied)
    own = drumbeat_migrations()
    check_not_edited(applied, own)
    return [m for m in own if m.name not in applied] + procrastinate_migrations(applied)


def apply_one(conn: psycopg.Connection, migration: Migration) -> None:
    with conn.transaction():
        if migration.schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(migration.schema)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(migration.schema)))
        conn.execute(migration.text.encode())
        if migration.schema == PROCRASTINATE_SCHEMA:
            conn.execute(PROCRASTINATE_GRANTS)
        conn.execute(
            "INSERT INTO drumbeat_meta.schema_migrations (name, checksum) VALUES (%s, %s)",
            (migration.name, migration.checksum),
        )


def migrate(database_url: str, *, dry_run: bool = False) -> list[str]:
    """Apply (or with dry_run, list) pending migrations; returns their names. Safe to run concurrently:
    a second run waits for the lock, then finds nothing pending."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            if not dry_run:
                conn.execute(BOOKKEEPING_DDL)
            pending = pending_migrations(conn)
            if not dry_run:
                for migration in pending:
                    apply_one(conn, migration)
            return [m.name for m in pending]
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
