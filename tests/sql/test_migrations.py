"""The migrator (`app.core.migrate` and `drumbeat migrate`), each test on its own empty database: it brings
an empty database to the current schema, is idempotent, has a dry run that changes nothing, is safe to
run concurrently, refuses an edited applied file, re-applies a changed function file, upgrades a database
of the last release (0030, kept as a dump) to exactly the schema a fresh install has, and prints with
`--sql` the very script that psql applies to the same result; and pins the search_path of every function
procrastinate installs, whenever procrastinate is installed or upgraded and on a database installed
before that pin existed."""

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
from app.core.migrate import (
    ADVISORY_LOCK_KEY,
    PROCRASTINATE_SCHEMA,
    PROCRASTINATE_SEARCH_PATH,
    Migration,
    MigrationError,
    describe_applied,
    migrate,
)

REPOSITORY = Path(__file__).resolve().parents[2]
MIGRATION_FILES = sorted((REPOSITORY / "sql" / "migrations").glob("*.sql"))
FUNCTION_FILES = sorted(
    (REPOSITORY / "sql" / "functions").glob("*.sql"), key=lambda p: (p.name == "grants.sql", p.name)
)
DRUMBEAT_NAMES = [f"migrations/{path.name}" for path in MIGRATION_FILES]
FUNCTION_NAMES = [f"functions/{path.name}" for path in FUNCTION_FILES]
PROCRASTINATE_NAME = f"procrastinate/{procrastinate.__version__}"
PIN_NAME = "procrastinate/search_path"
ALL_NAMES = [*DRUMBEAT_NAMES, PROCRASTINATE_NAME, PIN_NAME, *FUNCTION_NAMES]
EDITED = "migrations/0030_baseline.sql"

_database_numbers = itertools.count()


# Every function of ours: pg_catalog first, and the session's temporary schema last, named so that it is
# never searched first (an unqualified type or relation would otherwise resolve to a tenant's pg_temp one).
PINNED = "search_path=pg_catalog, pg_temp"


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
    """Rows (grantor, grantee, privilege, grantable) of an ACL column, with role names, sorted (the order
    of an ACL's items is only the order of the grants); NULL (the built-in defaults) is spelled out with
    acldefault so that it compares like an explicit ACL."""
    return f"""
        SELECT coalesce(array_agg(g.item ORDER BY g.item), '{{}}')
        FROM aclexplode(coalesce({column}, acldefault('{kind}', {owner}))) AS a,
             LATERAL format('%%s->%%s:%%s%%s', a.grantor::regrole, CASE a.grantee WHEN 0 THEN 'PUBLIC'
                            ELSE a.grantee::regrole::text END, a.privilege_type,
                            CASE WHEN a.is_grantable THEN '*' ELSE '' END) AS g(item)"""


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
    for path in [*MIGRATION_FILES, *FUNCTION_FILES]:
        name = f"{path.parent.name}/{path.name}"
        assert checksums[name] == hashlib.sha256(path.read_bytes()).hexdigest(), name
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
            """SELECT p.oid::regprocedure::text, p.prosecdef, pg_get_userbyid(p.proowner), p.proconfig,
                      has_function_privilege('authenticated', p.oid, 'EXECUTE'),
                      has_function_privilege('service_role', p.oid, 'EXECUTE')
               FROM pg_proc p WHERE p.pronamespace = 'drumbeat_api'::regnamespace""",
        )
        assert functions, "drumbeat_api defines no functions"
        for name, definer, owner, config, authenticated, service_role in functions:
            assert (definer, owner) == (True, "drumbeat_contract"), (
                f"{name} does not run as drumbeat_contract"
            )
            assert PINNED in (config or []), f"{name} does not pin search_path: {config}"
            assert authenticated, f"{name} is not executable by authenticated"
            assert service_role, f"{name} is not executable by service_role"

        definers = rows(
            conn,
            """SELECT p.oid::regprocedure::text FROM pg_proc p
               WHERE p.prosecdef
                 AND p.pronamespace = 'public'::regnamespace""",
        )
        assert definers == []

        every_function = rows(
            conn,
            """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
               WHERE p.pronamespace IN ('drumbeat'::regnamespace, 'drumbeat_api'::regnamespace)""",
        )
        unpinned = [name for name, config in every_function if PINNED not in (config or [])]
        assert unpinned == [], f"functions without {PINNED}"

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


def test_what_a_run_applied_is_counted_by_kind():
    assert (
        describe_applied(ALL_NAMES)
        == f"{len(DRUMBEAT_NAMES)} migrations, procrastinate's schema, {len(FUNCTION_NAMES)} function files"
    )
    assert describe_applied(["functions/stats.sql"]) == "1 function file"
    assert describe_applied([PIN_NAME]) == "procrastinate's search_path"


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


# 6. psql: the printed script, and files applied by hand


def client_binary(name: str, *probe_args: str) -> str | None:
    """A PostgreSQL client program (psql, pg_dump): the one shipped with pgserver (matching the embedded
    server's version), else the one on PATH; None when neither runs."""
    candidates = []
    try:
        import pgserver

        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name))
    except ImportError:
        pass
    if found := shutil.which(name):
        candidates.append(found)
    for candidate in candidates:
        if (
            Path(candidate).exists()
            and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0
        ):
            return candidate
    return None


def psql_binary() -> str:
    psql = client_binary("psql")
    if psql is None:
        pytest.skip("no psql binary: neither on PATH nor shipped with pgserver")
    return psql


def run_psql(url: str, path: Path, *extra: str, env: dict | None = None) -> None:
    result = subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", *extra, "-f", str(path), "-d", url],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, f"psql failed on {path.name}:\n{result.stderr}"


def printed_script(tmp_path: Path, *args: str, database_url: str | None) -> Path:
    result = drumbeat("migrate", "--sql", *args, database_url=database_url, data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"script{len(list(tmp_path.glob('script*.sql')))}.sql"
    path.write_text(result.stdout)
    return path


SCHEMAS = ("drumbeat", "drumbeat_api", "drumbeat_meta", "procrastinate")


def test_printed_script_applied_with_psql_equals_migrate(empty_db, tmp_path):
    by_psql, by_migrator = empty_db(), empty_db()

    script = printed_script(tmp_path, "--from-scratch", database_url=None)
    assert not (tmp_path / "data").exists(), "--from-scratch started the embedded database"
    run_psql(by_psql, script)
    assert migrate(by_migrator) == ALL_NAMES

    expected = schema_fingerprint(by_migrator, SCHEMAS)
    assert expected["functions"] and expected["policies"] and expected["indexes"]
    assert_same_fingerprint(schema_fingerprint(by_psql, SCHEMAS), expected)
    assert recorded(by_psql) == recorded(by_migrator)
    # The script recorded what it applied: the migrator and a second script find nothing to do.
    assert migrate(by_psql) == []
    assert "Nothing to apply" in printed_script(tmp_path, database_url=by_psql).read_text()


def test_files_applied_by_hand_are_refused_instead_of_run_twice(empty_db):
    """A schema built by running the files themselves with psql has no bookkeeping: the migrator refuses
    to run everything over it again (and says how to go on) instead of failing half-way."""
    url = empty_db()
    env = {**os.environ, "PGOPTIONS": "-c check_function_bodies=off"}
    for path in [*MIGRATION_FILES, *FUNCTION_FILES]:
        run_psql(url, path, "-1", env=env)

    with pytest.raises(MigrationError, match="applied with psql"):
        migrate(url)


# 7. upgrading the last release

RELEASE_0030 = Path(__file__).parent / "fixtures" / "release_0030.sql"


def restore_release_0030(url: str) -> None:
    """A database as Drumbeat's release with migrations 0001-0030 left it (pg_dump --inserts --no-owner of
    a freshly migrated database: schema, seed rows and the migrator's bookkeeping)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RELEASE_0030.read_text().encode())


def pg_dump(url: str, *args: str) -> str:
    """pg_dump of Drumbeat's schemas, without what differs from one database to the next whatever their
    schema: the per-run \\restrict key lines, and the pg_attver column options some servers' builds stamp
    on every column (seen on this workplace's PostgreSQL 15)."""
    binary = client_binary("pg_dump")
    if binary is None:
        pytest.skip("no pg_dump binary: neither on PATH nor shipped with pgserver")
    result = subprocess.run(
        [binary, *args, "-n", "drumbeat", "-n", "drumbeat_api", "-n", "drumbeat_meta", "-d", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict")) and "SET (pg_attver=" not in line
    )


def round_trip(url: str, into: str, tmp_path: Path) -> str:
    """`url`'s Drumbeat schemas and rows, dumped and restored into the empty database `into`.

    Why: the 0030 fixture is a dump, and a dump is not a perfect copy of how Postgres stored an expression:
    `length(kind) BETWEEN 2 AND 40 AND ...` is dumped as nested ANDs, which the restore flattens, so a
    CHECK constraint of the restored database deparses with other parentheses. One more round trip on both
    sides compares the schemas as a restore sees them (the same meaning, the same text)."""
    path = tmp_path / f"round_trip_{len(list(tmp_path.glob('round_trip_*')))}.sql"
    path.write_text(pg_dump(url))
    run_psql(into, path)
    return into


def test_release_0030_upgrades_to_exactly_a_fresh_install(empty_db, template_db, tmp_path):
    """template_db: the roles the dump grants to exist in the cluster (a migration created them)."""
    fresh, by_migrator, by_psql = empty_db(), empty_db(), empty_db()
    restore_release_0030(by_migrator)
    restore_release_0030(by_psql)
    assert "migrations/0030_future_starts_hold.sql" in recorded(by_migrator)

    # The baseline is recorded, not run (its tables are there); the migrations after it, the search_path
    # pin of the procrastinate that release installed, and every function file are applied.
    script = printed_script(tmp_path, database_url=by_psql)
    assert (
        "sql/migrations/0030_baseline.sql replaces 30 migrations this database already applied"
        in script.read_text()
    )
    assert f"--   {PIN_NAME}: pins the search_path" in script.read_text()
    run_psql(by_psql, script)
    assert migrate(by_migrator) == [EDITED, *DRUMBEAT_NAMES[1:], PIN_NAME, *FUNCTION_NAMES]
    assert migrate(by_migrator) == [] and migrate(by_psql) == []
    assert unpinned_procrastinate_functions(by_migrator) == unpinned_procrastinate_functions(by_psql) == {}
    migrate(fresh)

    schemas = ("drumbeat", "drumbeat_api")
    expected_db = round_trip(fresh, empty_db(), tmp_path)
    expected, expected_dump = schema_fingerprint(expected_db, schemas), pg_dump(expected_db, "--schema-only")
    assert "CREATE FUNCTION drumbeat.claim_due" in expected_dump and expected["policies"]
    for upgraded in (by_migrator, by_psql):
        restored = round_trip(upgraded, empty_db(), tmp_path)
        assert_same_fingerprint(schema_fingerprint(restored, schemas), expected)
        assert pg_dump(restored, "--schema-only") == expected_dump


def test_a_database_part_way_to_0030_is_refused(empty_db, template_db):
    url = empty_db()
    restore_release_0030(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "DELETE FROM drumbeat_meta.schema_migrations WHERE name = 'migrations/0030_future_starts_hold.sql'"
        )
    before = recorded(url)

    for dry_run in (True, False):
        with pytest.raises(
            MigrationError, match=r"only some of the migrations .* 0030_future_starts_hold\.sql"
        ):
            migrate(url, dry_run=dry_run)
    assert recorded(url) == before


# 8. function files


def with_edited_function_file(monkeypatch, name: str, text: str) -> Migration:
    """Make the migrator see `name` in sql/functions/ with `text` appended; returns the edited file."""
    original = app.core.migrate.drumbeat_functions()
    edited = [replace(f, text=f.text + text) if f.name == name else f for f in original]
    assert edited != original
    monkeypatch.setattr(app.core.migrate, "drumbeat_functions", lambda: edited)
    return next(f for f in edited if f.name == name)


def test_a_changed_function_file_is_applied_again_with_security_and_grants(empty_db, monkeypatch):
    url = empty_db()
    migrate(url)
    stats = with_edited_function_file(
        monkeypatch,
        "functions/stats.sql",
        "\nCREATE OR REPLACE FUNCTION drumbeat.added_by_a_test() RETURNS integer LANGUAGE sql\n"
        "SET search_path = '' AS $$ SELECT 1 $$;\n",
    )

    assert migrate(url, dry_run=True) == [
        "functions/security.sql",
        "functions/stats.sql",
        "functions/grants.sql",
    ]
    assert migrate(url) == ["functions/security.sql", "functions/stats.sql", "functions/grants.sql"]

    assert recorded(url)["functions/stats.sql"] == stats.checksum
    # grants.sql ran after it: the new function is not left executable by PUBLIC.
    assert executable_by_public(url, "drumbeat") == []
    assert migrate(url) == []


def test_a_broken_function_file_changes_nothing(empty_db, monkeypatch):
    url = empty_db()
    migrate(url)
    before = schema_fingerprint(url)
    checksums = recorded(url)
    with_edited_function_file(monkeypatch, "functions/stats.sql", "\nCREATE OR REPLACE FUNCTION oops(;\n")

    with pytest.raises(psycopg.errors.SyntaxError):
        migrate(url)

    assert recorded(url) == checksums
    assert_same_fingerprint(schema_fingerprint(url), before)


# 9. procrastinate's search_path


def procrastinate_functions(url: str) -> dict[str, list[str] | None]:
    """signature -> proconfig of every function in procrastinate's schema."""
    with psycopg.connect(url) as conn:
        return dict(
            rows(
                conn,
                """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
                   WHERE p.pronamespace = to_regnamespace(%s)""",
                (PROCRASTINATE_SCHEMA,),
            )
        )


def unpinned_procrastinate_functions(url: str) -> dict[str, list[str] | None]:
    """The functions of procrastinate's schema without exactly the search_path the migrator pins."""
    pinned = [f"search_path={PROCRASTINATE_SEARCH_PATH}"]
    return {name: config for name, config in procrastinate_functions(url).items() if config != pinned}


def test_every_procrastinate_function_has_its_search_path_pinned(empty_db):
    url = empty_db()
    migrate(url)
    assert len(procrastinate_functions(url)) >= 18  # procrastinate 3.10 installs 18
    assert unpinned_procrastinate_functions(url) == {}


def test_procrastinate_functions_find_their_tables_whatever_the_caller_s_search_path(empty_db):
    """procrastinate names its tables unqualified: the pinned path must hold its schema (the worker sets
    search_path=procrastinate; this caller does not)."""
    url = empty_db()
    migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path = public")
        (worker_id,) = conn.execute("SELECT procrastinate.procrastinate_register_worker_v1()").fetchone()
        job = conn.execute(
            """SELECT procrastinate.procrastinate_defer_jobs_v1(ARRAY[ROW('q', 't', 0, NULL, NULL, '{}',
                   NULL)::procrastinate.procrastinate_job_to_defer_v1])"""
        ).fetchone()[0][0]
        fetched = conn.execute("SELECT (procrastinate.procrastinate_fetch_job_v2(NULL, %s)).id", (worker_id,))
        assert fetched.fetchone()[0] == job
        conn.execute("SELECT procrastinate.procrastinate_finish_job_v1(%s, 'succeeded', false)", (job,))
        events = rows(
            conn, "SELECT type::text FROM procrastinate.procrastinate_events WHERE job_id = %s", (job,)
        )
        assert sorted(e for (e,) in events) == ["deferred", "started", "succeeded"]  # the triggers ran


def test_an_upgrade_of_procrastinate_pins_the_functions_it_re_creates(empty_db, monkeypatch):
    """CREATE OR REPLACE FUNCTION (how procrastinate's migrations change a function) drops its
    search_path: the pin runs again after every procrastinate step."""
    url = empty_db()
    migrate(url)
    upgrade = Migration(
        "procrastinate/99.0.0_01_added_by_a_test.sql",
        """CREATE OR REPLACE FUNCTION procrastinate_update_heartbeat_v1(worker_id bigint)
               RETURNS void LANGUAGE plpgsql AS $$
           BEGIN
               UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = worker_id;
           END
           $$;
           CREATE FUNCTION procrastinate_added_by_a_test() RETURNS bigint LANGUAGE sql
               AS $$ SELECT count(*) FROM procrastinate_jobs $$;""",
        PROCRASTINATE_SCHEMA,
    )
    monkeypatch.setattr(
        app.core.migrate,
        "procrastinate_migrations",
        lambda applied: [] if upgrade.name in applied else [upgrade],
    )

    assert migrate(url) == [upgrade.name, PIN_NAME, "functions/security.sql", "functions/grants.sql"]

    assert "procrastinate.procrastinate_added_by_a_test()" in procrastinate_functions(url)
    assert unpinned_procrastinate_functions(url) == {}
    assert migrate(url) == []


def test_a_database_installed_before_the_pin_gets_it_once(empty_db):
    """A database whose procrastinate an earlier Drumbeat installed (nothing pinned, nothing recorded):
    the next run pins it (security.sql and grants.sql come along, as with any other change), and the one
    after that has nothing to do."""
    url = empty_db()
    migrate(url)
    with psycopg.connect(url) as conn:
        for name in procrastinate_functions(url):
            conn.execute(f"ALTER FUNCTION {name} RESET search_path")
        conn.execute("DELETE FROM drumbeat_meta.schema_migrations WHERE name = %s", (PIN_NAME,))
    assert len(unpinned_procrastinate_functions(url)) == len(procrastinate_functions(url))

    expected = [PIN_NAME, "functions/security.sql", "functions/grants.sql"]
    assert migrate(url, dry_run=True) == expected
    assert migrate(url) == expected

    assert unpinned_procrastinate_functions(url) == {}
    assert migrate(url) == []


# 10. the CLI


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
