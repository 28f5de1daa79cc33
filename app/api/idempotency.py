"""Idempotency keys for the API's POSTs, the way Stripe does them: a client that sends `Idempotency-Key:
<a unique string>` and retries (a timeout, a dropped connection) gets the first response again, byte for
byte with `Idempotent-Replayed: true`, instead of a second contact or enrollment.

- The key's row is taken in the request's own transaction (drumbeat_api.begin_idempotent_request, sql/functions/idempotency.sql) and the response is
  stored in it just before the commit, so the two commit together: a request that failed (any error rolls
  its transaction back) left no key, and its retry simply runs.
- A retry arriving while the first request is still running waits for it and gets its answer.
- The same key with another request (method, path, query or body) is a 422 naming `Idempotency-Key`.
- Keys are the caller's own (an API key, or a JWT user) and are forgotten after 24 hours.
- A response that shows a secret once (a new API key's token, a webhook signing secret: handlers with
  opt={"shows_secret": True}) is not kept: its retry is a 409 saying that the first request succeeded,
  rather than a second key or the secret stored in clear.

Where the pieces run: `begin` inside provide_db (after the caller is known), `finish` as the /api/v1 router's
after_request hook, which Litestar runs before the dependency's cleanup commits. The two meet through a
holder that the router's before_request hook puts in a context variable: dependencies may be resolved in
child tasks, which see the holder (not a later `set`)."""

from __future__ import annotations

import base64
import hashlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
from litestar import Controller, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Example, OpenAPIType, Operation, Parameter, Schema
from litestar.response.base import ASGIResponse

from app.api.errors import error_response
from app.core.db import fetch_value
from app.core.queries import queries

HEADER = "idempotency-key"
SHOWS_SECRET = {"shows_secret": True}  # a handler's opt: its response is never kept (see above)
TAKES_NO_KEY = {"takes_no_key": True}  # a handler's opt: safe to repeat as it is, its key ignored
REPLAYED_HEADER = "Idempotent-Replayed"
Q = queries("idempotency")


@dataclass
class Pending:
    """One POST's key, from before_request to after_request; `conn` is set once the key is taken."""

    key: str
    withhold_body: bool  # the response shows a secret once: keep its status, never its body
    default_status: int  # the handler's, for a Response that sets none
    default_media_type: str  # likewise
    fingerprint: str = ""
    conn: psycopg.AsyncConnection | None = field(default=None, repr=False)


_pending: ContextVar[Pending | None] = ContextVar("drumbeat_idempotency", default=None)


class Replay(Exception):
    """The stored response of an earlier request with the same key."""

    def __init__(self, stored: dict[str, Any]):
        super().__init__("replayed")
        self.stored = stored


async def before_request(request: Request) -> None:
    """Every /api/v1 request: a holder for a POST's key (or none), in this request's context."""
    _pending.set(None)
    handler = request.route_handler
    key = request.headers.get(HEADER) if request.method == "POST" else None
    if key is None or handler.opt.get("takes_no_key"):
        return
    # A MediaType or a str; empty for a handler that returns a Response of its own (ours are JSON).
    media_type = getattr(handler.media_type, "value", handler.media_type) or "application/json"
    _pending.set(Pending(key, bool(handler.opt.get("shows_secret")), handler.status_code, media_type))


async def begin(conn: psycopg.AsyncConnection, request: Request) -> None:
    """Take the request's key in `conn`'s transaction (as the caller), or raise Replay with the answer a
    request with the same key got. Nothing to do without a key."""
    pending = _pending.get()
    if pending is None:
        return
    pending.fingerprint = await fingerprint(request)
    stored = await fetch_value(conn, Q["begin"], {"key": pending.key, "fingerprint": pending.fingerprint})
    if stored is not None:
        raise Replay(stored)
    pending.conn = conn


async def fingerprint(request: Request) -> str:
    """SHA-256 of what makes a request this request: method, path, query string and body."""
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.scope["raw_path"], request.scope["query_string"]):
        digest.update(part + b"\n")
    digest.update(await request.body())
    return digest.hexdigest()


async def after_request(response: Response[Any] | ASGIResponse) -> Response[Any] | ASGIResponse:
    """Store the response of the request that took a key, in its transaction (not yet committed)."""
    pending = _pending.get()
    if pending is None or pending.conn is None:
        return response
    if not isinstance(response, Response):  # (none of ours): fail, rather than commit a key with no answer
        raise TypeError(f"{type(response).__name__} cannot be kept for an Idempotency-Key")
    media_type = getattr(response.media_type, "value", response.media_type) or pending.default_media_type
    body = response.render(response.content, media_type)
    location = next((v for k, v in response.headers.items() if k.lower() == "location"), None)
    params = {
        "key": pending.key,
        "fingerprint": pending.fingerprint,
        "status": response.status_code or pending.default_status,
        "content_type": media_type,
        "location": location,
        "body": None if pending.withhold_body else body,
    }
    await pending.conn.execute(Q["finish"], params)
    return response


def on_replay(_: Request, replay: Replay) -> Response[Any]:
    stored = replay.stored
    headers = {REPLAYED_HEADER: "true"}
    if stored["body"] is None:
        message = (
            f"a request with this Idempotency-Key already succeeded (HTTP {stored['status']}); its answer showed "
            "a secret once, which is not kept: list what it created to find it, or send a new key to make another"
        )
        return error_response(409, "conflict", message, "Idempotency-Key", headers)
    if stored.get("location"):
        headers["Location"] = stored["location"]
    return Response(
        base64.b64decode(stored["body"]),
        status_code=stored["status"],
        media_type=stored["content_type"],
        headers=headers,
    )


@dataclass
class KeyedOperation(Operation):
    """A POST's OpenAPI operation, which documents the Idempotency-Key header it takes."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), KEY_PARAMETER]


KEY_PARAMETER = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description="Retry this POST safely: a second request with the same key (and the same body) within 24 "
    "hours gets the first one's response again, with `Idempotent-Replayed: true`, and changes nothing. The "
    "same key with another request is a 422. A UUID per request is a good key.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    examples={
        "uuid": Example(summary="a UUID made for this request", value="5f0e3c1a-8b2d-4e6f-9a7c-1d3b5e7f9a2c")
    },
)


def document_keys(route_handlers: list[Any]) -> list[Any]:
    """The handlers (functions or controllers), each POST one documenting the Idempotency-Key header (a
    handler's own KeyedOperation subclass, which documents more, is kept)."""
    for item in route_handlers:
        members = vars(item).values() if isinstance(item, type) and issubclass(item, Controller) else [item]
        for handler in members:
            if (
                isinstance(handler, HTTPRouteHandler)
                and "POST" in handler.http_methods
                and not issubclass(handler.operation_class, KeyedOperation)
            ):
                handler.operation_class = KeyedOperation
    return route_handlers
