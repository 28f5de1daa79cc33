"""The layout of sql/: every function, trigger, view and policy has its current text in exactly one file
of sql/functions/, numbered migrations define none of them (they hold only what must happen in order),
and what the database holds after `drumbeat migrate` is exactly what those files define."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

SQL = Path(__file__).resolve().parents[2] / "sql"
DEFINITION = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW|MATERIALIZED\s+VIEW|TRIGGER|POLICY)\s+([\w.]+)",
    re.IGNORECASE,
)
OBJECT_GRANT = re.compile(r"\b(GRANT|REVOKE)\b[^;]*\bON\b", re.IGNORECASE)
COMMENT = re.compile(r"--[^\n]*")


def code(path: Path) -> str:
    """A file's SQL without its comments (a comment may well mention CREATE FUNCTION)."""
    return COMMENT.sub("", path.read_text())


def definitions(paths: list[Path], root: Path = SQL) -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> every place it is defined ("file" once per definition). Names built at run time
    (`CREATE POLICY %I` in a DO block) are left out: test_policies_match_the_database covers them."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        for kind, name in DEFINITION.findall(code(path)):
            if "%" not in name:
                found[(" ".join(kind.upper().split()), name.lower())].append(
                    path.relative_to(root).as_posix()
                )
    return found


def all_sql_files() -> list[Path]:
    return sorted(SQL.rglob("*.sql"))


def test_every_definition_lives_in_exactly_one_file():
    found = definitions(all_sql_files())
    assert len([key for key in found if key[0] == "FUNCTION"]) > 100, "the scan found too few functions"
    repeated = {f"{kind} {name}": places for (kind, name), places in found.items() if len(places) > 1}
    assert repeated == {}, "defined more than once"


def test_definitions_live_in_sql_functions_only():
    outside = {
        f"{kind} {name}": places
        for (kind, name), places in definitions(all_sql_files()).items()
        if not all(place.startswith("functions/") for place in places)
    }
    assert outside == {}, "numbered migrations and query files define no function, view, trigger or policy"


def test_numbered_migrations_grant_nothing_on_objects():
    """Privileges live in sql/functions/grants.sql; a migration may only make roles members of roles."""
    granting = [p.name for p in (SQL / "migrations").glob("*.sql") if OBJECT_GRANT.search(code(p))]
    assert granting == []


def test_the_layout_test_can_fail(tmp_path):
    """The scan itself: a second definition, in any case and spacing, with a comment in the way, is seen."""
    first, second = tmp_path / "a.sql", tmp_path / "b.sql"
    first.write_text("CREATE FUNCTION drumbeat.x() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n")
    second.write_text(
        "-- CREATE FUNCTION drumbeat.y()\ncreate or replace\n  function DRUMBEAT.X() RETURNS int ...;\n"
    )
    found = definitions([first, second], root=tmp_path)
    assert found == {("FUNCTION", "drumbeat.x"): ["a.sql", "b.sql"]}


@pytest.fixture
def catalog(conn):
    """What the migrated database holds in Drumbeat's schemas: functions, triggers, views, policies."""
    conn.execute("SET search_path = ''")

    def names(query: str) -> set[str]:
        return {row[0] for row in conn.execute(query).fetchall()}

    return {
        "FUNCTION": names(
            """SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname IN ('drumbeat', 'drumbeat_api')"""
        ),
        "TRIGGER": names(
            """SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               WHERE c.relnamespace = 'drumbeat'::regnamespace AND NOT t.tgisinternal"""
        ),
        "VIEW": names(
            """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname IN ('drumbeat', 'drumbeat_api') AND c.relkind IN ('v', 'm')"""
        ),
        "POLICY": names("SELECT policyname FROM pg_policies WHERE schemaname = 'drumbeat'"),
    }


@pytest.mark.parametrize("kind", ["FUNCTION", "TRIGGER", "VIEW"])
def test_the_database_holds_exactly_what_sql_functions_defines(catalog, kind):
    defined = {name for (k, name) in definitions(sorted((SQL / "functions").glob("*.sql"))) if k == kind}
    assert catalog[kind] == defined


def test_policies_match_the_database(catalog):
    """Policies named in the files all exist; the others are the per-table ones the DO blocks of
    security.sql create (<table>_service_role, _worker, _member_read, _contract)."""
    static = {name for (kind, name) in definitions([SQL / "functions" / "security.sql"]) if kind == "POLICY"}
    assert static <= catalog["POLICY"]
    generated = catalog["POLICY"] - static
    assert generated and all(
        name.endswith(("_service_role", "_worker", "_member_read", "_contract")) for name in generated
    )
