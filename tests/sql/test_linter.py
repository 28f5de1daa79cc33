"""Drumbeat's database linter (sql/queries/lints.sql, app/core/lints.py), our own equivalents of Supabase's
splinter: a freshly migrated database has no ERROR or WARN finding; anon can execute no SECURITY DEFINER
function and authenticated exactly the intended ones (the contract and the RLS look-up); and every lint
finds what it is meant to find, and leaves alone what is fine, on objects a test creates in a transaction
that is rolled back."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from app.core.lints import LINT_SCHEMAS, LintFinding, lint, problems
from app.core.queries import queries

# Not probed: a foreign table needs a foreign-data wrapper the test server may not have.
UNPROBED = {"foreign_table_in_api"}
# The SECURITY DEFINER functions authenticated may call on purpose (besides every function of the
# contract, drumbeat_api): the RLS look-up the policies use.
INTENDED_DEFINERS = {"drumbeat.member_workspace_ids()"}


def listing(findings: list[LintFinding]) -> str:
    return "\n".join(f"  {finding}" for finding in findings)


def definers_executable_by(conn: psycopg.Connection, role: str) -> set[str]:
    """SECURITY DEFINER functions of Drumbeat's schemas that `role` may execute, as schema.name(types)."""
    conn.execute("SET search_path = ''")  # regprocedure renders every name schema-qualified
    return {
        name
        for (name,) in conn.execute(
            """SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               WHERE p.prosecdef AND n.nspname = ANY(%s)
                 AND pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')""",
            (list(LINT_SCHEMAS), role),
        )
    }


def contract_functions(conn: psycopg.Connection) -> set[str]:
    conn.execute("SET search_path = ''")
    return {
        name
        for (name,) in conn.execute(
            """SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
               WHERE p.pronamespace = 'drumbeat_api'::regnamespace"""
        )
    }


# 1. a migrated database


def test_a_migrated_database_has_no_error_or_warning(conn):
    findings = problems(lint(conn))
    assert not findings, f"{len(findings)} database linter findings:\n{listing(findings)}"


def test_anon_can_execute_no_security_definer_function(conn):
    assert definers_executable_by(conn, "anon") == set()


def test_authenticated_can_execute_exactly_the_intended_security_definer_functions(conn):
    """The contract runs as its owner (a role that row level security applies to) on purpose, and so does
    the RLS look-up; any other SECURITY DEFINER function authenticated may call is a hole."""
    intended = contract_functions(conn) | INTENDED_DEFINERS
    executable = definers_executable_by(conn, "authenticated")
    assert len(intended) > len(INTENDED_DEFINERS), "drumbeat_api defines no functions"
    unexpected, missing = sorted(executable - intended), sorted(intended - executable)
    assert not unexpected and not missing, (
        f"SECURITY DEFINER and executable by authenticated, but not meant to be: {unexpected}; "
        f"meant to be, but not (or not SECURITY DEFINER): {missing}"
    )


# 2. the lints themselves


@dataclass(frozen=True)
class Probe:
    lint: str
    level: str
    setup: str  # SQL creating what the lint must report
    names: str  # what the finding's detail must name
    extension: str | None = None  # an extension the setup needs (skipped when the server lacks it)

    def __str__(self) -> str:
        return self.lint


RLS_TABLE = """CREATE TABLE drumbeat.lint_probe (id int, owner_id uuid);
               ALTER TABLE drumbeat.lint_probe ENABLE ROW LEVEL SECURITY;"""
DEFINER = """CREATE FUNCTION drumbeat.lint_probe() RETURNS int LANGUAGE sql SECURITY DEFINER
             SET search_path = '' AS $$ SELECT 1 $$;"""
AUTH_UID = """CREATE SCHEMA auth;
              CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE SET search_path = ''
                  AS $$ SELECT NULL::uuid $$;"""

PROBES = [
    Probe(
        "auth_rls_initplan",
        "WARN",
        f"""{AUTH_UID} {RLS_TABLE}
            CREATE POLICY per_row ON drumbeat.lint_probe TO authenticated USING (owner_id = auth.uid());""",
        "drumbeat.lint_probe has policy per_row",
    ),
    Probe(
        "multiple_permissive_policies",
        "WARN",
        f"""{RLS_TABLE}
            CREATE POLICY reader ON drumbeat.lint_probe FOR SELECT TO authenticated USING (id > 0);
            CREATE POLICY writer ON drumbeat.lint_probe TO authenticated
                USING (id < 10) WITH CHECK (id < 10);""",
        "drumbeat.lint_probe has 2 permissive policies for role authenticated on SELECT: reader, writer",
    ),
    Probe(
        "policy_exists_rls_disabled",
        "INFO",
        """CREATE TABLE drumbeat.lint_probe (id int);
           CREATE POLICY idle ON drumbeat.lint_probe TO authenticated USING (id > 0);""",
        "drumbeat.lint_probe has policies (idle)",
    ),
    Probe("rls_enabled_no_policy", "INFO", RLS_TABLE, "drumbeat.lint_probe"),
    Probe(
        "security_definer_view",
        "ERROR",
        """CREATE VIEW drumbeat.lint_probe AS SELECT w.id FROM drumbeat.workspaces w;
           GRANT SELECT ON drumbeat.lint_probe TO authenticated;""",
        "View drumbeat.lint_probe",
    ),
    Probe(
        "definer_search_path_temp_first", "WARN", DEFINER, "SECURITY DEFINER function drumbeat.lint_probe()"
    ),
    Probe(
        "function_search_path_mutable",
        "WARN",
        "CREATE FUNCTION public.lint_probe(a int) RETURNS int LANGUAGE sql AS $$ SELECT a $$;",
        "Function public.lint_probe(a integer)",
    ),
    Probe("rls_disabled_in_public", "ERROR", "CREATE TABLE public.lint_probe (id int);", "public.lint_probe"),
    Probe(
        "rls_disabled_granted",
        "ERROR",
        """CREATE TABLE drumbeat.lint_probe (id int);
           GRANT UPDATE (id) ON drumbeat.lint_probe TO authenticated;""",
        "drumbeat.lint_probe has no row level security but authenticated",
    ),
    Probe(
        "rls_policy_always_true",
        "WARN",
        f"{RLS_TABLE} CREATE POLICY wide ON drumbeat.lint_probe FOR DELETE TO authenticated USING (1 = 1);",
        "drumbeat.lint_probe has policy wide for DELETE whose USING is always true",
    ),
    Probe(
        "anon_security_definer_function_executable",
        "WARN",
        f"{DEFINER} GRANT EXECUTE ON FUNCTION drumbeat.lint_probe() TO anon;",
        "drumbeat.lint_probe()",
    ),
    Probe(
        "authenticated_security_definer_function_executable",
        "WARN",
        f"{DEFINER} GRANT EXECUTE ON FUNCTION drumbeat.lint_probe() TO authenticated;",
        "drumbeat.lint_probe()",
    ),
    # An intended one is intended only while its owner cannot bypass row level security.
    Probe(
        "authenticated_security_definer_function_executable",
        "WARN",
        "ALTER FUNCTION drumbeat.member_workspace_ids() OWNER TO CURRENT_USER;",
        "drumbeat.member_workspace_ids()",
    ),
    Probe(
        "duplicate_index",
        "WARN",
        """CREATE TABLE drumbeat.lint_probe (id int, at timestamptz);
           CREATE INDEX lint_probe_a ON drumbeat.lint_probe (id, at DESC) WHERE id > 0;
           CREATE INDEX lint_probe_b ON drumbeat.lint_probe (id, at DESC) WHERE id > 0;
           CREATE INDEX lint_probe_c ON drumbeat.lint_probe (id, at) WHERE id > 0;""",
        "drumbeat.lint_probe has identical indexes lint_probe_a, lint_probe_b:",
    ),
    Probe(
        "invalid_index",
        "WARN",
        """CREATE TABLE drumbeat.lint_probe (id int);
           CREATE INDEX lint_probe_id ON drumbeat.lint_probe (id);
           -- What a failed CREATE INDEX CONCURRENTLY leaves (that cannot run in a transaction).
           UPDATE pg_catalog.pg_index SET indisvalid = false
           WHERE indexrelid = 'drumbeat.lint_probe_id'::regclass;""",
        "drumbeat.lint_probe_id on drumbeat.lint_probe",
    ),
    Probe(
        "extension_in_public",
        "WARN",
        "CREATE EXTENSION citext SCHEMA public;",
        "Extension citext",
        extension="citext",
    ),
    Probe(
        "rls_references_user_metadata",
        "ERROR",
        f"""{RLS_TABLE}
            CREATE POLICY by_metadata ON drumbeat.lint_probe TO authenticated
                USING ((current_setting('request.jwt.claims', true)::jsonb
                        -> 'user_metadata' ->> 'role') = 'admin');""",
        "drumbeat.lint_probe has policy by_metadata",
    ),
    Probe(
        "materialized_view_in_api",
        "WARN",
        """CREATE MATERIALIZED VIEW drumbeat.lint_probe AS SELECT 1 AS one;
           GRANT SELECT ON drumbeat.lint_probe TO anon;""",
        "drumbeat.lint_probe",
    ),
    Probe(
        "unsupported_reg_types",
        "WARN",
        "CREATE TABLE drumbeat.lint_probe (handler regprocedure);",
        "handler of drumbeat.lint_probe has type regprocedure",
    ),
]

# What looks like a finding but is not one: each must leave the findings as they were.
FINE = {
    "auth.uid() wrapped in a subquery": f"""{AUTH_UID} {RLS_TABLE}
        CREATE POLICY once ON drumbeat.lint_probe TO authenticated USING (owner_id = (SELECT auth.uid()))""",
    "a permissive and a restrictive policy": f"""{RLS_TABLE}
        CREATE POLICY reader ON drumbeat.lint_probe FOR SELECT TO authenticated USING (id > 0);
        CREATE POLICY fence ON drumbeat.lint_probe AS RESTRICTIVE TO authenticated USING (id < 10);""",
    "two permissive policies for different roles": f"""{RLS_TABLE}
        CREATE POLICY member ON drumbeat.lint_probe TO authenticated USING (id > 0);
        CREATE POLICY worker ON drumbeat.lint_probe TO drumbeat_worker USING (true);""",
    "SELECT USING (true) for reference data": f"""{RLS_TABLE}
        CREATE POLICY everyone ON drumbeat.lint_probe FOR SELECT TO authenticated USING (true);""",
    "a security_invoker view": """CREATE VIEW drumbeat.lint_probe WITH (security_invoker = on)
            AS SELECT w.id FROM drumbeat.workspaces w;
        GRANT SELECT ON drumbeat.lint_probe TO authenticated;""",
    "a SECURITY DEFINER function no API role may call, pg_temp last": """CREATE FUNCTION drumbeat.lint_probe()
            RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT 1 $$;
        REVOKE ALL ON FUNCTION drumbeat.lint_probe() FROM PUBLIC;""",
    "a table without RLS that no API role may use": "CREATE TABLE drumbeat.lint_probe (id int);",
    "indexes that differ in ordering": """CREATE TABLE drumbeat.lint_probe (id int);
        CREATE INDEX lint_probe_a ON drumbeat.lint_probe (id);
        CREATE INDEX lint_probe_b ON drumbeat.lint_probe (id DESC);""",
}


def has_extension(conn: psycopg.Connection, name: str) -> bool:
    query = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = %s)"
    return conn.execute(query, (name,)).fetchone()[0]


@pytest.mark.parametrize("probe", PROBES, ids=str)
def test_each_lint_reports_what_it_is_meant_to_catch(conn, probe):
    if probe.extension and not has_extension(conn, probe.extension):
        pytest.skip(f"the server has no {probe.extension} extension")
    before = lint(conn)
    conn.execute(probe.setup)
    new = [finding for finding in lint(conn) if finding not in before]

    matching = [f for f in new if f.name == probe.lint and probe.names in f.detail]
    assert matching, f"{probe.lint} did not report {probe.names!r}; new findings:\n{listing(new)}"
    assert {f.level for f in matching} == {probe.level}


def test_extension_functions_are_left_to_their_extension(conn):
    """An extension's functions have no search_path of their own, but they are the extension's to fix."""
    if not has_extension(conn, "citext"):
        pytest.skip("the server has no citext extension")
    conn.execute("CREATE EXTENSION citext SCHEMA public")
    assert [f for f in lint(conn) if f.name == "function_search_path_mutable"] == []


@pytest.mark.parametrize("setup", FINE.values(), ids=FINE.keys())
def test_the_lints_leave_alone_what_is_fine(conn, setup):
    before = lint(conn)
    conn.execute(setup)
    new = [finding for finding in lint(conn) if finding not in before]
    assert not new, f"reported:\n{listing(new)}"


def test_every_lint_is_probed():
    probed = {probe.lint for probe in PROBES}
    assert set(queries("lints")) == probed | UNPROBED
