"""The API's database gateway. One pool; each authenticated request is one transaction that acts as
its caller exactly as PostgREST does for Supabase callers: `SET LOCAL ROLE authenticated` and
`request.jwt.claims` set for the transaction only, so RLS (not Python) decides what the caller sees.
The transaction commits when the handler returns and rolls back when it raises."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from app.core.errors import Invalid, NotFound, domain_error
from app.core.queries import queries


def make_pool(database_url: str, *, min_size: int = 2, max_size: int = 20) -> AsyncConnectionPool:
    """Opened by the app's lifespan; connections are checked before reuse (a restarted server is survived)."""
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"row_factory": dict_row},
    )


async def act_as(conn: psycopg.AsyncConnection, claims: Mapping[str, Any]) -> None:
    """Within the current transaction, become `authenticated` with these JWT claims (both reset at its end)."""
    await conn.execute(queries("api_auth")["act_as"], (json.dumps(claims),))


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
