"""Request dependencies shared by the controllers: the caller's transaction (`db`) and the workspace a
request is about (`workspace_id`); and how they show examples in the OpenAPI document (`example_body` for
a request body, `example_response` for the success response; the values are in app/api/examples.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from enum import Enum
from http import HTTPStatus
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from uuid import UUID

import psycopg
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
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
    return Annotated[annotated, Body(examples=numbered(examples))]


def example_response(*examples: Any, shape: Any = None) -> Callable[[HTTPRouteHandler], HTTPRouteHandler]:
    """A decorator (above the route decorator) that shows `examples` for the handler's success response in
    the OpenAPI document. Litestar takes response examples from a ResponseSpec of that status, which
    replaces the response it would describe: so this one describes the same, the type the handler returns
    (the T of a Response[T]), or `shape` for a handler that returns a bare Response."""

    def attach(handler: HTTPRouteHandler) -> HTTPRouteHandler:
        status = handler.status_code
        described = ResponseSpec(
            data_container=shape or returned_type(handler.fn),
            description=handler.response_description or HTTPStatus(status).description,
            generate_examples=False,
            examples=numbered(examples),
        )
        handler.responses = {**(handler.responses or {}), status: described}
        return handler

    return attach


def returned_type(fn: Callable[..., Any]) -> Any:
    returned = get_type_hints(fn, include_extras=True)["return"]
    return get_args(returned)[0] if get_origin(returned) is Response else returned


def numbered(examples: list[Any] | tuple[Any, ...]) -> list[Example]:
    return [Example(summary=f"example {n}", value=with_nulls(value)) for n, value in enumerate(examples, 1)]


class Null(Enum):
    """null in an OpenAPI example. Litestar leaves out every None as it writes the document
    (BaseSchemaObject.to_schema), the members of an example's objects included, so `"user_id": null` would
    vanish from it; an Enum member is kept, and written as its value."""

    NULL = None


def with_nulls(value: Any) -> Any:
    """An example's value with each None replaced by Null.NULL, so that the document shows it."""
    if value is None:
        return Null.NULL
    if isinstance(value, dict):
        return {key: with_nulls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_nulls(item) for item in value]
    return value
