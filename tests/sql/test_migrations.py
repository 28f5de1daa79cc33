"""The migrator (`app.core.migrate` and `drumbeat migrate`), each test on its own empty database: it brings
an empty database to the current schema, is idempotent, has a dry run that changes nothing, is safe to
run concurrently, refuses an edited applied file, and builds exactly the schema that applying the files
with psql builds."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import procrastinate
import psycopg
import pytest
from psycopg import sql

import app.core.migrate
from app.core.migrate import ADVISORY_LOCK_KEY, Migration, MigrationError, migrate

REPOSITORY = Path(__file__).resolve().parents[2]
MIGRATION_FILES = sorted((REPOSITORY / "sql" / "migrations").glob("*.sql"))
DRUMBEAT_NAMES = [f"migrations/{path.name}" for path in MIGRATION_FILES]
PROCRASTINATE_NAME = f"procrastinate/{procrastinate.__version__}"
ALL_NAMES = [*DRUMBEAT_NAMES, PROCRASTINATE_NAME]
EDITED = "migrations/0002_tables.sql"

_database_numbers = itertools.count()


@pytest.fixture
def empty_db(cluster) -> Iterator[Callable[[], str]]:
    """A factory of empty databases (dropped at the end of the test); returns each one's URL."""
    janitors = []

    def create() -> str:
        name = f"drumbeat_migrations_{os.getpid()}_{next(_database_numbers)}"
        janitor = cluster.janitor(name)
        janitor.init()
        janitors.append(janitor)
        return cluster.url(name)

    yield create
    for janitor in janitors:
        janitor.drop()


def rows(conn: psycopg.Connection, query: str, params: tuple = ()) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def schema_exists(url: str, schema: str) -> bool:
    with psycopg.connect(url) as conn:
        return rows(conn, "SELECT to_regnamespace(%s) IS NOT NULL", (schema,))[0][0]


def acl(column: str, kind: str, owner: str) -> str:
    """Rows (grantor, grantee, privilege, grantable) of an ACL column, with role names; NULL (the
    built-in defaults) is spelled out with acldefault so that it compares like an explicit ACL."""
    return f"""
        SELECT coalesce(array_agg(
                   format('%%s->%%s:%%s%%s', a.grantor::regrole, CASE a.grantee WHEN 0 THEN 'PUBLIC'
                          ELSE a.grantee::regrole::text END, a.privilege_type,
                          CASE WHEN a.is_grantable THEN '*' ELSE '' END)
                   ORDER BY 1), '{{}}')
        FROM aclexplode(coalesce({column}, acldefault('{kind}', {owner}))) AS a"""


FINGERPRINT_QUERIES = {
    "schemas": f"""
        SELECT n.nspname, n.nspowner::regrole::text, obj_description(n.oid, 'pg_namespace'),
               ({acl("n.nspacl", "n", "n.nspowner")})
        FROM pg_namespace n WHERE n.nspname = ANY(%(schemas)s)""",
    "default_privileges": """
        SELECT d.defaclrole::regrole::text, n.nspname, d.defaclobjtype, d.defaclacl::text
        FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
        WHERE n.nspname = ANY(%(schemas)s)""",
    "relations": f"""
        SELECT c.oid::regclass::text, c.relkind, c.relowner::regrole::text, c.relrowsecurity,
               c.relforcerowsecurity, obj_description(c.oid, 'pg_class'),
               ({acl("c.relacl", "r", "c.relowner")})
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind NOT IN ('i', 'I')""",
    "columns": f"""
        SELECT a.attrelid::regclass::text, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               col_description(a.attrelid, a.attnum), ({acl("a.attacl", "c", "c.relowner")})
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')""",
    "constraints": """
        SELECT coalesce(c.conrelid::regclass::text, c.contypid::regtype::text), c.conname, c.contype,
               pg_get_constraintdef(c.oid), c.condeferrable, c.condeferred, c.convalidated,
               obj_description(c.oid, 'pg_constraint')
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = ANY(%(schemas)s)""",
    "indexes": """
        SELECT i.indrelid::regclass::text, c.relname, pg_get_indexdef(i.indexrelid),
               obj_description(i.indexrelid, 'pg_class')
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s)""",
    "sequences": """
        SELECT schemaname, sequencename, data_type::text, start_value, min_value, max_value,
               increment_by, cycle, cache_size
        FROM pg_sequences WHERE schemaname = ANY(%(schemas)s)""",
    "types": """
        SELECT t.oid::regtype::text, t.typtype, format_type(t.typbasetype, t.typtypmod), t.typnotnull,
               t.typdefault, obj_description(t.oid, 'pg_type'),
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY(%(schemas)s)
          AND (t.typtype IN ('e', 'd', 'r', 'm')
               OR t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')""",
    "views": """
        SELECT c.oid::regclass::text, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('v', 'm')""",
    "functions": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
               p.proowner::regrole::text, p.prosecdef, p.proconfig,
               CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
               obj_description(p.oid, 'pg_proc'), ({acl("p.proacl", "f", "p.proowner")})
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s)""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid),
               obj_description(t.oid, 'pg_trigger')
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND NOT t.tgisinternal""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual, with_check
        FROM pg_policies WHERE schemaname = ANY(%(schemas)s)""",
}


def schema_fingerprint(url: str, schemas: tuple[str, ...] = ("drumbeat", "drumbeat_api")) -> dict[str, list]:
    """Everything a migration defines in `schemas`, as sorted rows per kind of object, plus the row
    count of every table (seed data). Names are rendered under an empty search_path, so always
    schema-qualified, and roles by name: two databases of the same cluster compare equal."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path = ''")
        fingerprint = {
            kind: sorted(rows(conn, query, {"schemas": list(schemas)}), key=repr)
            for kind, query in FINGERPRINT_QUERIES.items()
        }
        tables = rows(
            conn,
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') ORDER BY 1, 2""",
            (list(schemas),),
        )
        fingerprint["row_counts"] = [
            (
                schema,
                table,
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                ).fetchone()[0],
            )
            for schema, table in tables
        ]
    return fingerprint


def assert_same_fingerprint(actual: dict[str, list], expected: dict[str, list]) -> None:
    assert actual.keys() == expected.keys()
    for kind in expected:
        assert actual[kind] == expected[kind], f"{kind} differ"


def recorded(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(rows(conn, "SELECT name, checksum FROM drumbeat_meta.schema_migrations"))


# 1. empty -> current


def test_empty_database_to_current(empty_db):
    url = empty_db()

    assert migrate(url) == ALL_NAMES

    checksums = recorded(url)
    assert set(checksums) == set(ALL_NAMES)
    for path in MIGRATION_FILES:
        assert checksums[f"migrations/{path.name}"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with psycopg.connect(url) as conn:
        for schema in ("drumbeat", "drumbeat_api", "procrastinate"):
            assert rows(conn, "SELECT to_regnamespace(%s) IS NOT NULL", (schema,))[0][0], schema
        for table in ("drumbeat.enrollments", "procrastinate.procrastinate_jobs"):
            assert rows(conn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0], table
        assert rows(conn, "SELECT to_regclass('public.procrastinate_jobs')")[0][0] is None

        tables = rows(
            conn,
            """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
               WHERE c.relnamespace = 'drumbeat'::regnamespace AND c.relkind IN ('r', 'p')""",
        )
        assert len(tables) > 5
        assert [t for t in tables if not (t[1] and t[2])] == [], "drumbeat tables without (forced) RLS"

        functions = rows(
            conn,
            """SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig,
                      has_function_privilege('authenticated', p.oid, 'EXECUTE'),
                      has_function_privilege('service_role', p.oid, 'EXECUTE')
               FROM pg_proc p WHERE p.pronamespace = 'drumbeat_api'::regnamespace""",
        )
        assert functions, "drumbeat_api defines no functions"
        for name, definer, config, authenticated, service_role in functions:
            assert not definer, f"{name} is SECURITY DEFINER"
            assert 'search_path=""' in (config or []), f"{name} does not pin search_path: {config}"
            assert authenticated, f"{name} is not executable by authenticated"
            assert service_role, f"{name} is not executable by service_role"

        definers = rows(
            conn,
            """SELECT p.oid::regprocedure::text FROM pg_proc p
               WHERE p.prosecdef
                 AND p.pronamespace IN ('drumbeat_api'::regnamespace, 'public'::regnamespace)""",
        )
        assert definers == []

        every_function = rows(
            conn,
            """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
               WHERE p.pronamespace IN ('drumbeat'::regnamespace, 'drumbeat_api'::regnamespace)""",
        )
        unpinned = [name for name, config in every_function if 'search_path=""' not in (config or [])]
        assert unpinned == [], "functions without search_path = ''"

        uncommented = rows(
            conn,
            """SELECT c.relname FROM pg_class c
               WHERE c.relnamespace = 'drumbeat'::regnamespace AND c.relkind = 'i'
                 AND obj_description(c.oid, 'pg_class') IS NULL""",
        )
        assert uncommented == [], "indexes without a comment naming the query they serve"


def executable_by_public(url: str, schema: str) -> list[str]:
    """Functions of `schema` that PUBLIC may execute (a NULL proacl means the default: PUBLIC may)."""
    with psycopg.connect(url) as conn:
        return [
            name
            for (name,) in rows(
                conn,
                """SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = to_regnamespace(%s)
                     AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                 WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
                   ORDER BY 1""",
                (schema,),
            )
        ]


@pytest.mark.parametrize("schema", ["drumbeat_api", "drumbeat"])
def test_no_function_is_executable_by_public(empty_db, schema):
    url = empty_db()
    migrate(url)
    assert executable_by_public(url, schema) == []


# 2. idempotent


def test_second_run_applies_nothing_and_changes_nothing(empty_db):
    url = empty_db()
    schemas = ("drumbeat", "drumbeat_api", "drumbeat_meta", "procrastinate")
    migrate(url)
    before, checksums = schema_fingerprint(url, schemas), recorded(url)
    assert before["functions"] and before["row_counts"]

    assert migrate(url) == []

    assert_same_fingerprint(schema_fingerprint(url, schemas), before)
    assert recorded(url) == checksums


# 3. dry run


def test_dry_run_lists_pending_and_creates_nothing(empty_db):
    url = empty_db()

    assert migrate(url, dry_run=True) == ALL_NAMES

    for schema in ("drumbeat", "drumbeat_api", "drumbeat_meta", "procrastinate"):
        assert not schema_exists(url, schema), f"dry run created schema {schema}"

    assert migrate(url) == ALL_NAMES
    assert migrate(url, dry_run=True) == []


# 4. concurrent runs


def advisory_lock_waiters(conn: psycopg.Connection) -> int:
    classid, objid = ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFFFFFF
    return rows(
        conn,
        """SELECT count(*) FROM pg_locks
           WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s AND objsubid = 1
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        (classid, objid),
    )[0][0]


def test_concurrent_runs_apply_each_migration_once(empty_db):
    url = empty_db()
    runners = 3
    with psycopg.connect(url, autocommit=True) as holder:
        # Hold the lock until every runner is queued behind it, so the runs really do overlap.
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        with ThreadPoolExecutor(max_workers=runners) as pool:
            futures = [pool.submit(migrate, url) for _ in range(runners)]
            deadline = time.monotonic() + 30
            while advisory_lock_waiters(holder) < runners:
                assert time.monotonic() < deadline, "the runners never queued on the advisory lock"
                assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()]
                time.sleep(0.05)
            holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
            results = [future.result(timeout=120) for future in futures]

    assert Counter(name for names in results for name in names) == Counter(ALL_NAMES)
    assert sorted(map(len, results)) == [0] * (runners - 1) + [len(ALL_NAMES)]
    assert set(recorded(url)) == set(ALL_NAMES)
    assert migrate(url, dry_run=True) == []


def test_concurrent_runs_without_a_head_start(empty_db):
    """The same, released together by a barrier instead of a held lock (first contact with an empty
    database, before drumbeat_meta exists, is the racy part)."""
    url = empty_db()
    runners = 3
    barrier = threading.Barrier(runners)

    def run() -> list[str]:
        barrier.wait(timeout=30)
        return migrate(url)

    with ThreadPoolExecutor(max_workers=runners) as pool:
        results = list(pool.map(lambda _: run(), range(runners)))

    assert Counter(name for names in results for name in names) == Counter(ALL_NAMES)
    assert set(recorded(url)) == set(ALL_NAMES)


# 5. edited-file refusal


def test_edited_applied_file_is_refused(empty_db, monkeypatch):
    url = empty_db()
    migrate(url)
    checksums = recorded(url)

    original = app.core.migrate.drumbeat_migrations()
    edited = [
        replace(m, text=m.text + "\n-- an innocent-looking comment\n") if m.name == EDITED else m
        for m in original
    ]
    assert edited != original
    new = Migration("migrations/9999_new.sql", "CREATE TABLE drumbeat.should_not_exist (id int);")
    monkeypatch.setattr(app.core.migrate, "drumbeat_migrations", lambda: [*edited, new])

    for dry_run in (True, False):
        with pytest.raises(MigrationError, match=f"sql/{EDITED}"):
            migrate(url, dry_run=dry_run)

    assert recorded(url) == checksums
    with psycopg.connect(url) as conn:
        assert rows(conn, "SELECT to_regclass('drumbeat.should_not_exist')")[0][0] is None


# 6. psql equivalence


def psql_binary() -> str | None:
    if found := shutil.which("psql"):
        return found
    try:
        import pgserver
    except ImportError:
        return None
    shipped = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(shipped) if shipped.exists() else None


def test_migrator_builds_the_same_schema_as_psql(empty_db):
    psql = psql_binary()
    if psql is None:
        pytest.skip("no psql binary: neither on PATH nor shipped with pgserver")
    by_psql, by_migrator = empty_db(), empty_db()

    for path in MIGRATION_FILES:
        result = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(path), "-d", by_psql],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"psql failed on {path.name}:\n{result.stderr}"
    assert not schema_exists(by_psql, "procrastinate")
    migrate(by_migrator)

    expected = schema_fingerprint(by_psql)
    assert expected["functions"] and expected["policies"] and expected["indexes"]
    assert_same_fingerprint(schema_fingerprint(by_migrator), expected)

    # The migrator then refuses to run over the psql-built schema instead of failing half-way.
    with pytest.raises(MigrationError, match="applied with psql"):
        migrate(by_psql)


# 7. the CLI


def drumbeat(
    *args: str, database_url: str | None, data_dir: Path | None = None
) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "drumbeat"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DRUMBEAT_DATA_DIR")}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if data_dir is not None:
        env["DRUMBEAT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, cwd=REPOSITORY, timeout=300
    )


def test_cli_dry_run_then_migrate_then_current(empty_db):
    url = empty_db()

    dry = drumbeat("migrate", "--dry-run", database_url=url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [f"pending: {name}" for name in ALL_NAMES]
    assert not schema_exists(url, "drumbeat")

    real = drumbeat("migrate", database_url=url)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines() == [f"applied: {name}" for name in ALL_NAMES]
    assert set(recorded(url)) == set(ALL_NAMES)

    for args in (("migrate",), ("migrate", "--dry-run")):
        again = drumbeat(*args, database_url=url)
        assert again.returncode == 0, again.stderr
        assert "Schema is current" in again.stdout


def test_cli_without_database_url_migrates_the_embedded_database(tmp_path):
    """No DATABASE_URL: the embedded Postgres in DRUMBEAT_DATA_DIR is started, and its data kept there."""
    first = drumbeat("migrate", database_url=None, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied: {name}" for name in ALL_NAMES]
    assert (tmp_path / "pgdata" / "PG_VERSION").is_file()
    again = drumbeat("migrate", database_url=None, data_dir=tmp_path)
    assert again.returncode == 0 and "Schema is current" in again.stdout, again.stderr


def test_cli_reports_an_unreachable_database_in_one_line():
    result = drumbeat("migrate", database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("drumbeat migrate: cannot reach the database")
    assert "Traceback" not in result.stderr


def test_cli_refuses_edited_file(empty_db):
    url = empty_db()
    migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE drumbeat_meta.schema_migrations SET checksum = 'x' WHERE name = %s", (EDITED,))

    for args in (("migrate",), ("migrate", "--dry-run")):
        result = drumbeat(*args, database_url=url)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"sql/{EDITED}" in result.stderr
        assert "Traceback" not in result.stderr
    assert recorded(url)[EDITED] == "x"
