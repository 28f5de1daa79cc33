"""The API's database gateway. One pool; each authenticated request is one transaction that acts as
its caller exactly as PostgREST does for Supabase callers: `SET LOCAL ROLE authenticated` and
`request.jwt.claims` set for the transaction only, so RLS (not Python) decides what the caller sees.
The transaction commits when the handler returns and rolls back when it raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

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
