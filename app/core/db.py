"""The asynchronous database gateway of the API and the CSV import: statements run through it, and the
errors a contract function raises (named SQLSTATEs) come out as domain errors (app.core.errors), with
fields named as the caller named them; a row RLS hides is a 404, never a 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from app.core.errors import Invalid, NotFound, domain_error


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Database errors with a Drumbeat SQLSTATE become domain errors (then HTTP 4xx); others propagate.
    The contract functions name their arguments (p_sequence_id, p_payload.channel): fields are reported
    with the request's names (sequence_id, payload.channel)."""
    try:
        yield
    except psycopg.Error as error:
        if isinstance(error, psycopg.DataError) and error.sqlstate is None:
            # refused by psycopg before sending, e.g. text with a NUL character (Postgres text cannot hold one)
            raise Invalid(f"unusable input: {error}") from error
        domain = domain_error(error)
        if domain is None:
            raise
        if domain.field and domain.field.startswith("p_"):
            domain.field = domain.field[2:]
        raise domain from error


async def fetch_all(conn: psycopg.AsyncConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    async with translated_errors():
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall()


async def fetch_one(conn: psycopg.AsyncConnection, sql: str, params: Any = None) -> dict[str, Any] | None:
    async with translated_errors():
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone()


async def fetch_value(conn: psycopg.AsyncConnection, sql: str, params: Any = None) -> Any:
    row = await fetch_one(conn, sql, params)
    return None if row is None else next(iter(row.values()))


def require_row(row: dict[str, Any] | None, what: str, field: str | None = None) -> dict[str, Any]:
    """A row RLS let us see, or 404: another tenant's id and a missing id look the same (never 403)."""
    if row is None:
        raise NotFound(f"{what} not found", field)
    return row
