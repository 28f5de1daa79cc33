"""Request dependencies shared by the controllers: the caller's transaction (`db`) and the workspace a
request is about (`workspace_id`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, get_args
from uuid import UUID

import psycopg
from litestar import Request
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import Body, QueryParameter

from app.api import idempotency
from app.api.db import act_as
from app.core.db import fetch_one, fetch_value, require_row
from app.core.errors import Invalid

# Explicit markers (Litestar 2.25 deprecates inferring them).
Db = NamedDependency[psycopg.AsyncConnection]
WorkspaceId = NamedDependency[UUID]


async def provide_db(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction per request acting as the caller; commits when the handler returns, rolls back
    when it raises (Litestar throws the handler's exception into this generator). A caller over its rate
    limit (app/api/ratelimit.py) is refused here, before any work is done as it; a POST's Idempotency-Key
    is taken here, or its earlier answer replayed (app/api/idempotency.py)."""
    state = request.app.state
    async with state.pool.connection() as conn, conn.transaction():
        caller = await state.authenticator.caller(conn, request.headers.get("authorization"))
        state.rate_limiter.admit(caller)
        await act_as(conn, caller.claims)
        request.state.caller = caller
        await idempotency.begin(conn, request)  # a retried POST's answer is replayed from here
        yield conn


async def provide_workspace_id(
    db: Db,
    workspace_id: Annotated[
        UUID | None,
        QueryParameter(
            description="The workspace; optional when the caller belongs to one workspace only (an API key always does)."
        ),
    ] = None,
) -> UUID:
    if workspace_id is not None:  # RLS shows only the caller's workspaces: another tenant's id is a 404
        visible = await fetch_one(
            db, "SELECT w.id FROM drumbeat.workspaces w WHERE w.id = %s", (workspace_id,)
        )
        return require_row(visible, "workspace", "workspace_id")["id"]
    mine = await fetch_value(
        db,
        "SELECT array_agg(m.workspace_id) AS ids FROM drumbeat.workspace_members m WHERE m.user_id = drumbeat.current_user_id()",
    )
    if not mine:
        raise Invalid(
            "you belong to no workspace yet: create one with POST /api/v1/workspaces", "workspace_id"
        )
    if len(mine) > 1:
        raise Invalid("required: you belong to several workspaces", "workspace_id")
    return mine[0]


def example_body(annotated: Any) -> Any:
    """A JSON request body type whose msgspec examples (msgspec.Meta(examples=[...]) on an Annotated
    alias) are also shown in the OpenAPI document: Litestar takes body examples from Body(examples=...)."""
    _, *metadata = get_args(annotated)
    examples = [example for meta in metadata for example in (getattr(meta, "examples", None) or [])]
    return Annotated[
        annotated,
        Body(examples=[Example(summary=f"example {n}", value=v) for n, v in enumerate(examples, 1)]),
    ]
