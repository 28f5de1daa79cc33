"""Where Drumbeat's SQL lives, whether installed editable (the repository's ``sql/``) or as a wheel
(``app/sql``, force-included at build time)."""

from __future__ import annotations

from pathlib import Path


def sql_root() -> Path:
    """The directory holding ``migrations/``, ``functions/`` and ``queries/``."""
    package = Path(__file__).resolve().parents[1]  # app/
    packaged = package / "sql"
    if packaged.is_dir():
        return packaged
    in_repository = package.parent / "sql"
    if in_repository.is_dir():
        return in_repository
    raise FileNotFoundError(f"Drumbeat's SQL files are missing: looked in {packaged} and {in_repository}")


def migration_files() -> list[Path]:
    """Drumbeat's own migrations, in the order they must be applied (NNNN_name.sql)."""
    return sorted((sql_root() / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))


def function_files() -> list[Path]:
    """The current definitions of functions, triggers, policies and grants, one file per area."""
    return sorted((sql_root() / "functions").glob("*.sql"))
