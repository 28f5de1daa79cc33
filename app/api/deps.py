"""Request dependencies shared by the controllers: the caller's transaction (`db`) and the workspace a
request is about (`workspace_id`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

import psycopg
from litestar import Request
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from app.api.db import act_as, fetch_one, fetch_value, require_row
from app.errors import Invalid

# Explicit markers (Litestar 2.25 deprecates inferring them).
Db = NamedDependency[psycopg.AsyncConnection]
WorkspaceId = NamedDependency[UUID]


async def provide_db(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction per request acting as the caller; commits when the handler returns, rolls back
    when it raises (Litestar throws the handler's exception into this generator)."""
    state = request.app.state
    async with state.pool.connection() as conn, conn.transaction():
        caller = await state.authenticator.caller(conn, request.headers.get("authorization"))
        await act_as(conn, caller.claims)
        request.state.caller = caller
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
