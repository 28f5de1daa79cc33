"""Outgoing webhook endpoints (README, "Events out"): where a workspace's events are POSTed, signed the
Standard Webhooks way, retried for about three days, each attempt logged. Admins only. Every route
calls the drumbeat_api function of the same name (sql/functions/webhooks.sql), which Supabase projects
call over RPC. A URL is checked here in full before it is saved (well formed, https in production, every
address its name resolves to public: app/core/webhook_urls.py); the worker checks again at every send."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_body, example_response, provide_workspace_id
from app.api.errors import contract_fields
from app.api.idempotency import SHOWS_SECRET
from app.core.db import fetch_all, fetch_value
from app.core.errors import Invalid
from app.core.queries import queries
from app.core.settings import Settings
from app.core.webhook_urls import WebhookUrlError, check_url

Q = queries("api_webhook_endpoints")
EventTypes = Annotated[
    list[str],
    msgspec.Meta(
        min_length=1,
        max_length=100,
        description='["*"] for every type, or a list of types (README, "Events out"), e.g. "message.sent"',
    ),
]
Url = Annotated[
    str, msgspec.Meta(min_length=1, max_length=2000, examples=["https://crm.example.com/drumbeat"])
]
Description = Annotated[str, msgspec.Meta(max_length=500)]


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    event_types: EventTypes = msgspec.field(default_factory=lambda: ["*"])
    description: Description = ""
    include_bodies: bool = False  # message.* events carry the text sent, replies the text received


EndpointCreateBody = Annotated[
    EndpointCreate,
    msgspec.Meta(
        examples=[{key: ex.ENDPOINT[key] for key in ("url", "event_types", "description", "include_bodies")}]
    ),
]


class EndpointUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    include_bodies: bool | None = None
    enabled: bool | None = None


EndpointUpdateBody = Annotated[
    EndpointUpdate, msgspec.Meta(examples=[{"include_bodies": True}, {"enabled": True}])
]


class Endpoint(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    url: str
    description: str
    event_types: list[str]
    include_bodies: bool
    enabled: bool
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    failing_since: dt.datetime | None
    previous_secret_expires_at: dt.datetime | None  # while set, the old secret signs beside the new one
    created_at: dt.datetime
    updated_at: dt.datetime


class EndpointWithSecret(Endpoint):
    secret: str  # whsec_…: shown once; verify deliveries with it (any Standard Webhooks library)


class Message(msgspec.Struct):
    message_id: str  # the webhook-id header: the same on every attempt
    endpoint_id: UUID
    type: str
    event_id: int | None
    status: str  # pending | sending | delivered | failed
    attempts: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class Delivery(msgspec.Struct):
    id: int
    message_id: str
    type: str
    event_id: int | None
    attempt: int
    attempted_at: dt.datetime
    status_code: int | None
    latency_ms: int
    outcome: str  # delivered | retry | disable (410) | refused (URL not allowed at send time)
    error: str | None
    next_retry_at: dt.datetime | None
    message_status: str


class ResendSince(msgspec.Struct, forbid_unknown_fields=True):
    since: dt.datetime
    after_event_id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None  # from `next`, to carry on


ResendSinceBody = Annotated[
    ResendSince,
    msgspec.Meta(
        examples=[
            {"since": "2026-03-01T00:00:00Z"},
            {"since": "2026-03-01T00:00:00Z", "after_event_id": 10412},
        ]
    ),
]


class ResendPosition(msgspec.Struct):
    since: dt.datetime
    after_event_id: int


class Resent(msgspec.Struct):
    queued: int
    next: ResendPosition | None  # more than 10,000 events: send this back to carry on


class WebhookEndpointController(Controller):
    path = "/webhook-endpoints"
    tags = ["webhook endpoints"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.ENDPOINT_WITH_SECRET)
    @post(
        "/",
        summary="Register a webhook endpoint (admins); its signing secret is shown once",
        description="Receives the events written from now on, as Standard Webhooks POSTs (headers webhook-id, "
        "webhook-timestamp, webhook-signature; body {type, timestamp, data}). A 2xx is delivered; 410 switches the "
        "endpoint off; anything else is retried (30 s, 2 min, 10 min, ... for about three days). The URL must "
        "resolve to public addresses only, and be https in production.",
        status_code=201,
        opt=SHOWS_SECRET,
    )
    async def create(
        self, request: Request, db: Db, workspace: WorkspaceId, data: example_body(EndpointCreateBody)
    ) -> EndpointWithSecret:
        endpoint = msgspec.to_builtins(data) | {"url": await checked_url(request, db, data.url)}
        params = {"workspace_id": workspace, "endpoint": Jsonb(endpoint)}
        return await contract_call(db, "create_webhook_endpoint", params, EndpointWithSecret)

    @example_response(ex.listed(ex.ENDPOINT))
    @get("/", summary="The workspace's webhook endpoints (admins; never their secrets)")
    async def index(self, db: Db, workspace: WorkspaceId) -> list[Endpoint]:
        async with contract_fields():
            rows = await fetch_all(db, Q["list_webhook_endpoints"], {"workspace_id": workspace})
        return msgspec.convert([row["endpoint"] for row in rows], list[Endpoint])

    @example_response(ex.ENDPOINT)
    @get("/{endpoint_id:uuid}", summary="One webhook endpoint")
    async def detail(self, db: Db, endpoint_id: FromPath[UUID]) -> Endpoint:
        return await contract_call(db, "get_webhook_endpoint", {"endpoint_id": endpoint_id}, Endpoint)

    @example_response(ex.EDITED_ENDPOINT)
    @patch(
        "/{endpoint_id:uuid}",
        summary="Change a webhook endpoint: url, event_types, description, include_bodies, enabled",
        description="Switching an endpoint back on clears why it was off; its waiting messages go out, and it "
        "follows the events from now on (POST /{id}/resend sends what happened while it was off).",
    )
    async def update(
        self, request: Request, db: Db, endpoint_id: FromPath[UUID], data: example_body(EndpointUpdateBody)
    ) -> Endpoint:
        changes = msgspec.to_builtins(data)
        if data.url is not None:
            changes["url"] = await checked_url(request, db, data.url)
        params = {"endpoint_id": endpoint_id, "changes": Jsonb(changes)}
        return await contract_call(db, "update_webhook_endpoint", params, Endpoint)

    @delete("/{endpoint_id:uuid}", summary="Delete a webhook endpoint, its messages and its delivery log")
    async def remove(self, db: Db, endpoint_id: FromPath[UUID]) -> None:
        async with contract_fields():
            await fetch_value(db, Q["delete_webhook_endpoint"], {"endpoint_id": endpoint_id})

    @example_response(ex.ROTATED_ENDPOINT)
    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        summary="A new signing secret; the old one keeps signing beside it for 24 hours",
        status_code=200,
        opt=SHOWS_SECRET,
    )
    async def rotate_secret(self, db: Db, endpoint_id: FromPath[UUID]) -> EndpointWithSecret:
        return await contract_call(
            db, "rotate_webhook_secret", {"endpoint_id": endpoint_id}, EndpointWithSecret
        )

    @example_response(ex.WEBHOOK_MESSAGE)
    @post(
        "/{endpoint_id:uuid}/test",
        summary="Send a `ping` event to the endpoint (see its deliveries for the answer)",
        status_code=202,
    )
    async def test(self, db: Db, endpoint_id: FromPath[UUID]) -> Message:
        return await contract_call(db, "test_webhook_endpoint", {"endpoint_id": endpoint_id}, Message)

    @example_response(ex.listed(ex.WEBHOOK_DELIVERY))
    @get(
        "/{endpoint_id:uuid}/deliveries",
        summary="The endpoint's delivery log, newest first: every attempt",
        description="Each attempt's time, status code, latency, error and next retry, with its message's "
        "webhook-id (message_id) and state. Page with `before` (the last id seen).",
    )
    async def deliveries(
        self,
        db: Db,
        endpoint_id: FromPath[UUID],
        before: Annotated[
            int | None, QueryParameter(ge=1, le=2**63 - 1, description="Attempts older than this id")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> list[Delivery]:
        params = {"endpoint_id": endpoint_id, "before": before, "limit": limit}
        async with contract_fields():
            rows = await fetch_all(db, Q["list_webhook_deliveries"], params)
        return msgspec.convert([row["delivery"] for row in rows], list[Delivery])

    @example_response(ex.RESENT_MESSAGE)
    @post(
        "/{endpoint_id:uuid}/messages/{message_id:str}/resend",
        summary="Send one message again now (same webhook-id), with a fresh run of retries",
        status_code=202,
    )
    async def resend_one(self, db: Db, endpoint_id: FromPath[UUID], message_id: FromPath[str]) -> Message:
        params = {"endpoint_id": endpoint_id, "message_id": message_id}
        return await contract_call(db, "resend_webhook_message", params, Message)

    @example_response(ex.RESENT)
    @post(
        "/{endpoint_id:uuid}/resend",
        summary="Send again every event the endpoint takes since a time",
        description="Delivered, failed, or never sent (the endpoint was off, or did not exist yet): each event "
        "since `since` that the endpoint's types take, oldest first, at most 10,000 per call (`next` then says "
        "where to go on: post it back as the body).",
        status_code=202,
    )
    async def resend_since(
        self, db: Db, endpoint_id: FromPath[UUID], data: example_body(ResendSinceBody)
    ) -> Resent:
        params = {"endpoint_id": endpoint_id, "since": data.since, "after_event_id": data.after_event_id}
        return await contract_call(db, "resend_webhook_messages", params, Resent)


async def contract_call(db: Db, name: str, params: dict[str, Any], shape: type) -> Any:
    """One contract function returning one JSON object, converted to `shape`."""
    async with contract_fields():
        value = await fetch_value(db, Q[name], params)
    return msgspec.convert(value, shape)


async def checked_url(request: Request, db: Db, url: str) -> str:
    """The URL as it will be stored, once every address its host resolves to is allowed (a 422 naming
    `url` otherwise). With DRUMBEAT_WEBHOOK_ALLOW_PRIVATE, the contract function is told so too."""
    settings: Settings = request.app.state.settings
    try:
        normalized = await anyio.to_thread.run_sync(
            lambda: check_url(
                url, allow_private=settings.webhook_allow_private, require_https=settings.production
            )
        )
    except WebhookUrlError as error:
        raise Invalid(str(error), "url") from error
    if settings.webhook_allow_private:
        await fetch_value(db, Q["allow_private_targets"])
    return normalized


route_handlers = [WebhookEndpointController]
