"""What was sent: GET /api/v1/messages lists a workspace's messages (deliveries) newest first, with the
text as rendered and sent, the sender and the provider's id, filtered by contact, sequence, enrollment,
status, channel and time; GET /api/v1/messages/{id} adds the message's history (sent, delivered, failed,
bounced, opened, clicked, ...). Read as the caller, under RLS, like every other read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_response, provide_workspace_id
from app.api.paging import Page, PageNumber, PageSize, page_of, paged
from app.core.db import fetch_all, fetch_one, require_row
from app.core.queries import queries

Q = queries("api_messages")

FILTERS = ("workspace_id", "id", "contact_id", "sequence_id", "enrollment_id", "status", "channel")
FILTERS += ("created_after", "created_before")

MessageStatus = Literal[
    "reserved", "sending", "sent", "delivered", "failed", "undelivered", "bounced", "unknown"
]


class Message(msgspec.Struct):
    id: UUID
    channel: str
    status: str
    contact_id: UUID
    enrollment_id: UUID
    sequence_id: UUID
    sequence_name: str
    step_id: UUID
    step_position: int
    step_name: str | None
    variant: str | None
    attempt: int
    sender_id: UUID | None
    from_address: str | None
    to_address: str | None
    subject: str | None
    body: str | None
    html_body: str | None  # kept only by the outbox transport (development): providers get it, we do not
    segments: int | None
    provider_message_id: str | None
    error_code: str | None
    error_message: str | None
    scheduled_for: dt.datetime
    sent_at: dt.datetime | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime
    in_outbox: bool  # recorded by the outbox transport instead of sent


class HistoryEntry(msgspec.Struct):
    kind: str
    occurred_at: dt.datetime
    payload: dict[str, Any]


class MessageDetail(Message, kw_only=True):
    history: list[HistoryEntry]


MessagePage = page_of(Message)


class MessageController(Controller):
    path = "/messages"
    tags = ["messages"]

    @example_response(ex.page(ex.MESSAGE))
    @get(
        "/",
        summary="What was sent, newest first: the text as sent, sender, provider id and status",
        dependencies={"workspace": Provide(provide_workspace_id)},
    )
    async def index(
        self,
        db: Db,
        workspace: WorkspaceId,
        contact_id: Annotated[UUID | None, QueryParameter(description="Only this contact's")] = None,
        sequence_id: Annotated[UUID | None, QueryParameter(description="Only this sequence's")] = None,
        enrollment_id: Annotated[UUID | None, QueryParameter(description="Only this enrollment's")] = None,
        status: Annotated[MessageStatus | None, QueryParameter(description="Only this status")] = None,
        channel: Annotated[
            Literal["sms", "email"] | None, QueryParameter(description="Only this channel")
        ] = None,
        created_after: Annotated[
            dt.datetime | None,
            QueryParameter(description="Only those claimed at or after this time (ISO 8601)"),
        ] = None,
        created_before: Annotated[
            dt.datetime | None, QueryParameter(description="Only those claimed before this time (ISO 8601)")
        ] = None,
        page: PageNumber = 1,
        page_size: PageSize = 50,
    ) -> MessagePage:
        params = list_params(
            page_size,
            (page - 1) * page_size,
            workspace_id=workspace,
            contact_id=contact_id,
            sequence_id=sequence_id,
            enrollment_id=enrollment_id,
            status=status,
            channel=channel,
            created_after=created_after,
            created_before=created_before,
        )
        rows, total = await paged(db, Q["list_messages"], Q["count_messages"], params)
        return Page(msgspec.convert(rows, list[Message]), total, page, page_size)

    @example_response(ex.MESSAGE_DETAIL)
    @get("/{message_id:uuid}", summary="One message, with its history (sent, delivered, opened, ...)")
    async def detail(self, db: Db, message_id: FromPath[UUID]) -> MessageDetail:
        one = list_params(1, 0, id=message_id)  # (RLS keeps another tenant's out: a 404)
        row = require_row(await fetch_one(db, Q["list_messages"], one), "message", "message_id")
        history = await fetch_all(
            db, Q["message_history"], {"id": message_id, "enrollment_id": row["enrollment_id"]}
        )
        return msgspec.convert(row | {"history": history}, MessageDetail)


def list_params(limit: int, offset: int, **filters: Any) -> dict[str, Any]:
    """list_messages' parameters: the filters given, every other one off."""
    return dict.fromkeys(FILTERS) | filters | {"limit": limit, "offset": offset}


route_handlers = [MessageController]
