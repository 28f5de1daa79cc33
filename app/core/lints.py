"""Drumbeat's database linter: our own equivalents of the security and performance checks of Supabase's
database linter (splinter), as named statements in sql/queries/lints.sql, run over the schemas Drumbeat
installs. `drumbeat doctor` warns with what they find; tests/sql/test_linter.py keeps a migrated
database free of ERROR and WARN findings."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from app.core.queries import queries

# Everything `drumbeat migrate` installs: the tables, the contract, its bookkeeping, procrastinate's job
# queue, and public (where Supabase serves tables from and extensions tend to land).
LINT_SCHEMAS = ("drumbeat", "drumbeat_api", "drumbeat_meta", "procrastinate", "public")
PROBLEM_LEVELS = ("ERROR", "WARN")  # most severe first; INFO findings are reported, never a problem


@dataclass(frozen=True)
class LintFinding:
    name: str  # the lint, as splinter names it (or Drumbeat's own)
    level: str  # ERROR | WARN | INFO
    detail: str  # the object and the fix

    @property
    def is_problem(self) -> bool:
        return self.level in PROBLEM_LEVELS

    def __str__(self) -> str:
        return f"{self.level} {self.name}: {self.detail}"


def lint(conn: psycopg.Connection) -> list[LintFinding]:
    """Every finding of every lint on the database `conn` is connected to, in the file's order. Reads the
    catalogs only, which every login may read."""
    params = {"schemas": list(LINT_SCHEMAS)}
    return [
        LintFinding(*row)
        for statement in queries("lints").values()
        for row in conn.execute(statement, params)
    ]


def problems(findings: list[LintFinding]) -> list[LintFinding]:
    """The ERROR and WARN findings, ERRORs first (a report that shows only the first few shows those)."""
    found = [finding for finding in findings if finding.is_problem]
    return sorted(found, key=lambda finding: PROBLEM_LEVELS.index(finding.level))
