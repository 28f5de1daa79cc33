"""The migrator: brings a database to the schema this code ships, under an advisory lock, recording what
it applied (name + checksum + time) in ``drumbeat_meta.schema_migrations``.

Three kinds of SQL, applied in this order:

1. **Numbered migrations** (``sql/migrations/NNNN_name.sql``): what must happen in order (tables,
   columns, indexes, data moves, drops, renames). Each runs once, in its own transaction, and is never
   edited afterwards: an applied file whose checksum changed is refused. A file may declare that it
   replaces earlier ones (``-- replaces: a.sql b.sql``, the squashed baseline): a database that applied
   all of those takes it as applied, one that applied only some of them is refused.
2. **procrastinate's schema**, in its own schema ``procrastinate``, so nothing of it is exposed through
   the ``public`` schema that Supabase serves over REST; Drumbeat's SQL never depends on it. Then, recorded
   as ``procrastinate/search_path``, every function of that schema gets a pinned ``search_path``
   (procrastinate's SQL sets none): after each install or upgrade of procrastinate, since ``CREATE OR
   REPLACE FUNCTION`` drops the setting, and once on a database whose procrastinate was installed before
   this step existed (or whenever its text changes).
3. **Function files** (``sql/functions/<area>.sql``): the current text of every function, trigger,
   policy and grant, written to be re-run (CREATE OR REPLACE, policies dropped and re-created, grants
   revoked and re-granted). A file is re-applied whenever its content differs from the recorded
   checksum; ``grants.sql`` (always last) and ``security.sql`` are re-applied whenever anything else
   is, since a new function starts executable by PUBLIC and a re-created table loses its policies. All
   of them run in one transaction with ``check_function_bodies`` off, as pg_dump restores do, so a
   function may call one defined in a later file.

``plan`` decides; ``migrate`` executes the plan and ``script`` prints the very same plan as a psql
script (``drumbeat migrate --sql``), so what a DBA reviews is exactly what the migrator would run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from app.core.sqlfiles import function_files, migration_files

# A fixed 64-bit key shared by every `drumbeat migrate` (in pg_locks: classid 1704416214, objid 4215867177).
ADVISORY_LOCK_KEY = 7_320_411_902_118_004_521
PROCRASTINATE_SCHEMA = "procrastinate"
# The worker's role uses the job queue; procrastinate's own SQL grants nothing.
PROCRASTINATE_GRANTS = """
GRANT USAGE ON SCHEMA procrastinate TO drumbeat_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA procrastinate TO drumbeat_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA procrastinate TO drumbeat_worker;
"""
# Why pinned: a function without a search_path resolves names through its caller's, which Supabase's
# linter flags (function_search_path_mutable) and a caller could point at look-alike objects. procrastinate
# names its own tables, types and functions unqualified, so its schema must be on the path; pg_catalog
# comes first so that nothing in that schema can shadow a built-in (now(), pg_notify, unnest...), and
# pg_temp last so that no temporary table can stand in for a queue table. Built from pg_proc so that it
# covers every function of whatever procrastinate version is installed. Extension members are left alone.
PROCRASTINATE_SEARCH_PATH = f"pg_catalog, {PROCRASTINATE_SCHEMA}, pg_temp"
PROCRASTINATE_PIN = "procrastinate/search_path"  # the name the pin is recorded under
PIN_PROCRASTINATE_SEARCH_PATH = f"""
DO $pin$
DECLARE
    routine regprocedure;
BEGIN
    FOR routine IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = '{PROCRASTINATE_SCHEMA}'::regnamespace AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_catalog.pg_proc'::regclass
                            AND d.objid = p.oid AND d.deptype = 'e')
        ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = {PROCRASTINATE_SEARCH_PATH}', routine);
    END LOOP;
END
$pin$;
"""
# Function files re-applied whenever any other file is: see the module docstring.
ALWAYS_WITH_OTHERS = ("functions/security.sql", "functions/grants.sql")

BOOKKEEPING_DDL = """
CREATE SCHEMA IF NOT EXISTS drumbeat_meta;
REVOKE ALL ON SCHEMA drumbeat_meta FROM PUBLIC;
CREATE TABLE IF NOT EXISTS drumbeat_meta.schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

_REPLACES = re.compile(r"^-- replaces:(.*)$", re.MULTILINE)


class MigrationError(RuntimeError):
    """The database cannot be migrated safely; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    """One SQL file (or procrastinate's schema) and the name it is recorded under."""

    name: str
    text: str
    schema: str | None = None  # search_path to run under; None means the file qualifies its names

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def replaces(self) -> tuple[str, ...]:
        """The numbered migrations this one squashes (its ``-- replaces:`` lines)."""
        return tuple(f"migrations/{name}" for line in _REPLACES.findall(self.text) for name in line.split())


@dataclass(frozen=True)
class Step:
    """One transaction of a migration run: the SQL it runs (none when a squashed baseline is only
    recorded) and the files it records as applied."""

    records: tuple[Migration, ...]
    body: str = ""
    schema: str | None = None
    check_function_bodies: bool = True
    note: str = ""  # why a step runs nothing, for the printed script

    def transaction_sql(self) -> str:
        """Everything that runs inside the step's transaction, bookkeeping included."""
        parts = []
        if self.schema:
            parts.append(
                f"CREATE SCHEMA IF NOT EXISTS {self.schema};\nSET LOCAL search_path TO {self.schema};"
            )
        if not self.check_function_bodies:
            parts.append("SET LOCAL check_function_bodies = off;")
        if self.body:
            parts.append(self.body.strip())
        parts.extend(_record_sql(migration) for migration in self.records)
        return "\n".join(parts) + "\n"


@dataclass
class Plan:
    """What a migration run does, step by step; ``names`` is what `drumbeat migrate` reports."""

    steps: list[Step] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [migration.name for step in self.steps for migration in step.records]


def _record_sql(migration: Migration) -> str:
    return (
        "INSERT INTO drumbeat_meta.schema_migrations (name, checksum) "
        f"VALUES ({_literal(migration.name)}, {_literal(migration.checksum)})\n"
        "    ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now();"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def drumbeat_migrations() -> list[Migration]:
    return [Migration(f"migrations/{path.name}", path.read_text()) for path in migration_files()]


def drumbeat_functions() -> list[Migration]:
    return [Migration(f"functions/{path.name}", path.read_text()) for path in function_files()]


def shipped_checksums() -> dict[str, str]:
    """name -> checksum of every Drumbeat file this code ships (numbered migrations and function files):
    what a current database has recorded (/readyz compares)."""
    return {m.name: m.checksum for m in [*drumbeat_migrations(), *drumbeat_functions()]}


def not_current(applied: dict[str, str], shipped: dict[str, str]) -> list[str]:
    """The shipped files a database with these records still lacks: numbered migrations not applied (an
    edited one is the migrator's to refuse) and function files whose recorded checksum differs."""
    return sorted(
        name
        for name, checksum in shipped.items()
        if name not in applied or (name.startswith("functions/") and applied[name] != checksum)
    )


def procrastinate_search_path() -> Migration:
    """The pin of the search_path of procrastinate's functions, recorded under its own name with its
    checksum (so that a change to it runs it again)."""
    return Migration(PROCRASTINATE_PIN, PIN_PROCRASTINATE_SEARCH_PATH)


def procrastinate_migrations(applied: dict[str, str]) -> list[Migration]:
    """procrastinate's full schema on a fresh database; on one where an older procrastinate was
    installed, its own migration files newer than that version."""
    import procrastinate

    sql_dir = Path(procrastinate.__file__).parent / "sql"
    installed_version = _version_tuple(procrastinate.__version__)
    recorded = [name for name in applied if name.startswith("procrastinate/") and name != PROCRASTINATE_PIN]
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


def check_not_edited(applied: dict[str, str], migrations: Iterable[Migration]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"sql/{migration.name} was edited after it was applied (recorded checksum {recorded[:12]}, "
                f"file now {migration.checksum[:12]}). Applied migrations are never edited: "
                "restore the file and put the change in a new migration (functions, policies and grants "
                "belong in sql/functions/, which may change)."
            )


def check_not_hand_applied(conn: psycopg.Connection, applied: dict[str, str]) -> None:
    """A schema built with psql from the files themselves has no bookkeeping; re-running every file on it
    would fail midway. (`drumbeat migrate --sql` scripts record what they apply.)"""
    has_schema = conn.execute("SELECT to_regnamespace('drumbeat') IS NOT NULL").fetchone()[0]
    if has_schema and not any(name.startswith("migrations/") for name in applied):
        raise MigrationError(
            "schema drumbeat exists but drumbeat_meta.schema_migrations records none of its migrations "
            "(its files were applied with psql?). Apply changes with the script `drumbeat migrate --sql` "
            "prints, which records them, or record the applied files by hand: INSERT INTO "
            "drumbeat_meta.schema_migrations (name, checksum) VALUES ('migrations/<file>', '<sha256 of the "
            "file>'), ... (see README, 'Applying migrations')."
        )


def _numbered_steps(applied: dict[str, str], migrations: list[Migration]) -> list[Step]:
    check_not_edited(applied, migrations)
    steps = []
    for migration in migrations:
        if migration.name in applied:
            continue
        replaced = migration.replaces
        done = [name for name in replaced if name in applied]
        if replaced and len(done) == len(replaced):
            note = f"sql/{migration.name} replaces {len(replaced)} migrations this database already applied"
            steps.append(Step(records=(migration,), note=note))
        elif done:
            missing = [name.removeprefix("migrations/") for name in replaced if name not in applied]
            raise MigrationError(
                f"this database applied only some of the migrations sql/{migration.name} replaces "
                f"(missing: {', '.join(missing)}): bring it to {replaced[-1].removeprefix('migrations/')} "
                "with an earlier Drumbeat release first, then run this one"
            )
        else:
            steps.append(Step(records=(migration,), body=migration.text))
    return steps


def _function_step(applied: dict[str, str], functions: list[Migration], anything_else: bool) -> list[Step]:
    changed = {f.name for f in functions if applied.get(f.name) != f.checksum}
    if changed or anything_else:
        changed.update(name for name in ALWAYS_WITH_OTHERS if any(f.name == name for f in functions))
    chosen = tuple(f for f in functions if f.name in changed)
    if not chosen:
        return []
    body = "\n".join(f"-- sql/{f.name}\n{f.text.strip()}\n" for f in chosen)
    return [Step(records=chosen, body=body, check_function_bodies=False)]


def plan(applied: dict[str, str]) -> Plan:
    """The steps that bring a database with these applied files to the current schema."""
    steps = _numbered_steps(applied, drumbeat_migrations())
    steps += _procrastinate_steps(applied)
    steps += _function_step(applied, ordered_functions(), anything_else=bool(steps))
    return Plan(steps)


def _procrastinate_steps(applied: dict[str, str]) -> list[Step]:
    """procrastinate's pending SQL, each file with the worker's grants, then the search_path pin: after
    any of them (they may re-create functions), or alone when this database has not recorded it (its
    procrastinate predates the pin) or recorded another version of it."""
    steps = [
        Step(records=(migration,), body=migration.text + PROCRASTINATE_GRANTS, schema=migration.schema)
        for migration in procrastinate_migrations(applied)
    ]
    pin = procrastinate_search_path()
    if steps or applied.get(pin.name) != pin.checksum:
        steps.append(Step(records=(pin,), body=pin.text))
    return steps


def ordered_functions() -> list[Migration]:
    """sql/functions/ in name order, grants.sql last (it grants on what the others define)."""
    return sorted(drumbeat_functions(), key=lambda f: (f.name == "functions/grants.sql", f.name))


def pending_migrations(conn: psycopg.Connection) -> list[Migration]:
    """What a run would record, without taking the lock (doctor, /readyz-like checks)."""
    applied = applied_migrations(conn)
    check_not_hand_applied(conn, applied)
    return [migration for step in plan(applied).steps for migration in step.records]


def describe_applied(names: list[str]) -> str:
    """What a run applied, counted by kind: "1 migration, procrastinate's schema, 17 function files"."""
    numbered = sum(name.startswith("migrations/") for name in names)
    functions = sum(name.startswith("functions/") for name in names)
    parts = [f"{numbered} migration{'s' * (numbered != 1)}"] if numbered else []
    if any(name.startswith("procrastinate/") and name != PROCRASTINATE_PIN for name in names):
        parts.append("procrastinate's schema")
    elif PROCRASTINATE_PIN in names:  # only the pin: a database whose procrastinate predates it
        parts.append("procrastinate's search_path")
    if functions:
        parts.append(f"{functions} function file{'s' * (functions != 1)}")
    return ", ".join(parts)


def apply_step(conn: psycopg.Connection, step: Step) -> None:
    with conn.transaction():
        conn.execute(step.transaction_sql().encode())


def migrate(database_url: str, *, dry_run: bool = False) -> list[str]:
    """Apply (or with dry_run, list) pending migrations; returns their names. Safe to run concurrently:
    a second run waits for the lock, then finds nothing pending."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            if not dry_run:
                conn.execute(BOOKKEEPING_DDL)
            applied = applied_migrations(conn)
            check_not_hand_applied(conn, applied)
            todo = plan(applied)
            if not dry_run:
                for step in todo.steps:
                    apply_step(conn, step)
            return todo.names
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def pending_plan(database_url: str) -> Plan:
    """The plan for a database as it is now (read-only: the bookkeeping table may not exist yet)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        applied = applied_migrations(conn)
        check_not_hand_applied(conn, applied)
        return plan(applied)


def script(todo: Plan) -> str:
    """The plan as one psql script: the same lock, bookkeeping and transactions `migrate` uses."""
    out = [
        "-- Drumbeat migration script, printed by `drumbeat migrate --sql`. Apply it with",
        '--   psql -X -v ON_ERROR_STOP=1 -f <this file> "$DATABASE_URL"',
        "-- as the role that owns the schema (the one `drumbeat migrate` would use). Each step is a",
        "-- transaction that also records what it applied in drumbeat_meta.schema_migrations.",
        "\\set ON_ERROR_STOP on",
        f"DO $lock$ BEGIN PERFORM pg_catalog.pg_advisory_lock({ADVISORY_LOCK_KEY}); END $lock$;",
        BOOKKEEPING_DDL.strip(),
    ]
    if not todo.steps:
        out.append("-- Nothing to apply: the schema is current.")
    for step in todo.steps:
        out.append("")
        out.append(
            f"-- {step.note}: recorded, nothing to run" if step.note else "-- Apply, in one transaction:"
        )
        out.extend(f"--   {_source(migration.name)}" for migration in step.records)
        out.append("BEGIN;\n" + step.transaction_sql() + "COMMIT;")
    out.append(f"DO $unlock$ BEGIN PERFORM pg_catalog.pg_advisory_unlock({ADVISORY_LOCK_KEY}); END $unlock$;")
    return "\n".join(out) + "\n"


def _source(name: str) -> str:
    """Where a recorded name comes from: a file of sql/, procrastinate's own SQL, or the migrator."""
    if name == PROCRASTINATE_PIN:
        return f"{name}: pins the search_path of procrastinate's functions (app/core/migrate.py)"
    return name if name.startswith("procrastinate/") else f"sql/{name}"
