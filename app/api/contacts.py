"""Contacts: create (an upsert matched on phone, then email), list and search, read, partial update, soft
delete (their live enrollments end), a contact's enrollments, and the streamed CSV import. Input is
checked and normalised at the edge (app/core/validation.py); writes go through drumbeat_api.upsert_contacts,
update_contact and delete_contact, reads are SELECTs that RLS limits to the caller's workspaces."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import FromPath, QueryParameter
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_body, example_response, provide_workspace_id
from app.api.errors import contract_fields
from app.api.idempotency import TAKES_NO_KEY, KeyedOperation
from app.api.paging import Page, PageNumber, PageSize, page_of, paged
from app.core.csv_import import (
    ImportSummary,
    content_boundary,
    import_contacts,
    multipart_file,
)
from app.core.db import fetch_all, fetch_one, fetch_value, require_row
from app.core.queries import queries
from app.core.validation import clean_contact, require_reachable

Q = queries("api_contacts")
MAX_IMPORT_BYTES = 1 << 30  # 1 GiB: far above 100k rows, still a bound
CSV_TYPES = (
    "text/csv",
    "application/csv",
    "text/plain",
    "application/vnd.ms-excel",
    "application/octet-stream",
)

Text = Annotated[str, msgspec.Meta(max_length=1000)]
Tags = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]], msgspec.Meta(max_length=100)
]
Fields = Annotated[
    dict[str, Any], msgspec.Meta(description="Custom fields (any JSON values), used in templates")
]
PHONE_DOC = "A phone number: E.164 (+12125550100) or national in the server's default region ((212) 555-0100)"
TIMEZONE_DOC = "An IANA time zone; when absent, inferred from the phone number if it has exactly one"


class ContactCreate(
    msgspec.Struct,
    forbid_unknown_fields=True,
    kw_only=True,
):
    phone: Annotated[str | None, msgspec.Meta(description=PHONE_DOC)] = None
    email: Text | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    company: Text | None = None
    title: Text | None = None
    timezone: Annotated[str | None, msgspec.Meta(description=TIMEZONE_DOC)] = None
    fields: Fields | None = None
    tags: Tags | None = None


ContactCreateBody = Annotated[
    ContactCreate,
    msgspec.Meta(
        examples=[
            {
                "phone": "(212) 555-0100",
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "company": "Analytical Engines",
                "fields": {"plan": "pro"},
                "tags": ["vip"],
            }
        ]
    ),
]


class ContactUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the keys sent change; null clears a value. `fields` merges key by key (a null value removes
    that key, `"fields": null` removes them all); `tags` replaces the list."""

    phone: str | msgspec.UnsetType | None = msgspec.UNSET
    email: Text | msgspec.UnsetType | None = msgspec.UNSET
    first_name: Text | msgspec.UnsetType | None = msgspec.UNSET
    last_name: Text | msgspec.UnsetType | None = msgspec.UNSET
    company: Text | msgspec.UnsetType | None = msgspec.UNSET
    title: Text | msgspec.UnsetType | None = msgspec.UNSET
    timezone: str | msgspec.UnsetType | None = msgspec.UNSET
    fields: Fields | msgspec.UnsetType | None = msgspec.UNSET
    tags: Tags | msgspec.UnsetType | None = msgspec.UNSET


ContactUpdateBody = Annotated[
    ContactUpdate,
    msgspec.Meta(examples=[{"company": "Acme", "fields": {"plan": "enterprise", "trial": None}}]),
]


class Contact(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    phone: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    company: str | None
    title: str | None
    timezone: str | None
    fields: dict[str, Any]
    tags: list[str]
    sms_opted_out_at: dt.datetime | None
    email_opted_out_at: dt.datetime | None
    bounced_at: Annotated[dt.datetime | None, msgspec.Meta(description="The email address bounced")]
    phone_bounced_at: Annotated[
        dt.datetime | None, msgspec.Meta(description="The number was refused for good (invalid, landline)")
    ]
    created_at: dt.datetime
    updated_at: dt.datetime


ContactPage = page_of(Contact)  # the response of the list endpoint: Page[Contact]


class Erasure(msgspec.Struct):
    contact_id: UUID
    erased_at: dt.datetime
    already_erased: Annotated[bool, msgspec.Meta(description="Erased before: nothing was done this time")]
    addresses_suppressed: int | None = None
    messages_wiped: int | None = None
    outbox_rows_deleted: int | None = None
    events_wiped: int | None = None
    webhook_messages_wiped: int | None = None
    tasks_wiped: int | None = None
    enrollments_wiped: int | None = None


class ContactEnrollment(msgspec.Struct):
    id: UUID
    sequence_id: UUID
    sequence_name: str
    status: str
    current_step_position: int
    next_action_at: dt.datetime | None
    enrolled_at: dt.datetime
    started_at: dt.datetime | None
    paused_at: dt.datetime | None
    completed_at: dt.datetime | None
    exit_reason: str | None


async def visible_contact(db: Db, contact_id: UUID) -> dict[str, Any]:
    """The live contact, or 404 (another tenant's id, a deleted or a missing contact look the same)."""
    return require_row(await fetch_one(db, Q["get_contact"], {"id": contact_id}), "contact", "contact_id")


class Resubscribe(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["sms", "email", "all"]
    reason: Annotated[
        str, msgspec.Meta(min_length=1, max_length=500, description="Why they may be messaged again")
    ]


ResubscribeBody = Annotated[
    Resubscribe,
    msgspec.Meta(examples=[{"channel": "sms", "reason": "Asked by email to get our texts again"}]),
]


@dataclass
class CsvUploadOperation(KeyedOperation):
    """The import reads its body as a stream (no `data` parameter), so the document says what it takes
    (and, a POST, the Idempotency-Key header)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        csv_file = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            required=True,
            description="A UTF-8 CSV file with a header row, as the body or as the `file` part of a form",
            content={
                "text/csv": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING),
                    example=ex.CONTACTS_CSV,
                ),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.OBJECT, properties={"file": csv_file}, required=["file"])
                ),
            },
        )


def like_pattern(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


class ContactController(Controller):
    path = "/contacts"
    tags = ["contacts"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.CONTACT)
    @post(
        "/",
        summary="Create a contact (or update the one with the same phone, then email)",
        description="201 when a contact was created, 200 when the phone (or else the email) matched an existing "
        "one, which is then updated with the keys sent. A phone in national format is read in the server's "
        "default region and stored as E.164; without a timezone, the phone's time zone is used when it is "
        "unambiguous.",
        status_code=201,
    )
    async def create(
        self, request: Request, db: Db, workspace: WorkspaceId, data: example_body(ContactCreateBody)
    ) -> Response[Contact]:
        raw = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        written = await save_contact(db, workspace, raw, request.app.state.settings.default_region)
        row = await fetch_one(db, Q["get_contact"], {"id": written["contact_id"]})
        return Response(msgspec.convert(row, Contact), status_code=201 if written["created"] else 200)

    @example_response(ex.page(ex.CONTACT))
    @get("/", summary="List contacts, oldest first; search and filter")
    async def index(
        self,
        db: Db,
        workspace: WorkspaceId,
        q: Annotated[
            str | None,
            QueryParameter(description="Case-insensitive search in name, email and phone", max_length=200),
        ] = None,
        tag: Annotated[str | None, QueryParameter(description="Only contacts with this tag")] = None,
        opted_out: Annotated[
            bool | None, QueryParameter(description="true: opted out of SMS or email; false: of neither")
        ] = None,
        page: PageNumber = 1,
        page_size: PageSize = 50,
    ) -> ContactPage:
        search = (q or "").strip()
        params = {
            "workspace_id": workspace,
            "q": like_pattern(search) if search else None,
            "tag": tag,
            "opted_out": opted_out,
            "limit": page_size,
            "offset": (page - 1) * page_size,
        }
        rows, total = await paged(db, Q["list_contacts"], Q["count_contacts"], params)
        return Page(msgspec.convert(rows, list[Contact]), total, page, page_size)

    @example_response(ex.CONTACT)
    @get("/{contact_id:uuid}", summary="One contact")
    async def detail(self, db: Db, contact_id: FromPath[UUID]) -> Contact:
        return msgspec.convert(await visible_contact(db, contact_id), Contact)

    @example_response(ex.EDITED_CONTACT)
    @patch(
        "/{contact_id:uuid}",
        summary="Change some of a contact's values (null clears one)",
        description="Only the keys sent change. `fields` merges key by key (a null value removes that key); "
        "`tags` replaces the list. A phone or email that belongs to another contact is a 409.",
    )
    async def update(
        self, request: Request, db: Db, contact_id: FromPath[UUID], data: example_body(ContactUpdateBody)
    ) -> Contact:
        await visible_contact(db, contact_id)  # 404 unless the caller sees it
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        changes = clean_contact(changes, request.app.state.settings.default_region)
        async with contract_fields():
            await fetch_one(db, Q["update_contact"], {"id": contact_id, "changes": Jsonb(changes)})
        return msgspec.convert(await visible_contact(db, contact_id), Contact)

    @delete(
        "/{contact_id:uuid}",
        summary="Delete a contact (soft: its opt-outs are kept; its live enrollments end)",
        description="Live enrollments end as cancelled with exit_reason contact_deleted. Re-importing the "
        "contact brings it back, with its opt-outs.",
    )
    async def remove(self, db: Db, contact_id: FromPath[UUID]) -> None:
        await visible_contact(db, contact_id)
        await fetch_one(db, Q["delete_contact"], {"id": contact_id})

    @example_response(ex.CONTACT)
    @post(
        "/{contact_id:uuid}/resubscribe",
        summary="Clear an opt-out (admins and owners), with the reason on the record",
        description="Only for a contact who asked to hear from you again by other means: an opt-out is "
        "otherwise cleared only by the contact (START). The reason and who gave it are kept as a "
        "`resubscribed` event. 409 when the contact is not opted out of that channel.",
        status_code=200,
    )
    async def resubscribe(
        self, db: Db, contact_id: FromPath[UUID], data: example_body(ResubscribeBody)
    ) -> Contact:
        await visible_contact(db, contact_id)
        async with contract_fields():
            await fetch_one(
                db,
                Q["resubscribe_contact"],
                {"id": contact_id, "channel": data.channel, "reason": data.reason},
            )
        return msgspec.convert(await visible_contact(db, contact_id), Contact)

    @example_response(ex.ERASURE)
    @post(
        "/{contact_id:uuid}/erase",
        summary="Erase a person's data on request (GDPR; admins and owners): irreversible",
        description="Live enrollments end (cancelled, contact_erased); the name, addresses, fields and tags, "
        "every message's text and address, what the person wrote back, task notes and enrollment metadata "
        "are wiped everywhere, while anonymous counts stay. The phone and email are kept only as digests, so "
        "a later import or edit that adds them again is refused (422). Works on deleted contacts too; "
        "erasing twice changes nothing (`already_erased`). Published as `contact.erased`.",
        status_code=200,
    )
    async def erase(self, db: Db, contact_id: FromPath[UUID]) -> Erasure:
        async with contract_fields():
            result = await fetch_value(db, Q["erase_contact"], {"id": contact_id})
        return msgspec.convert(result, Erasure)

    @example_response(ex.CONTACT_EXPORT)
    @get(
        "/{contact_id:uuid}/export",
        summary="Everything held about a contact (GDPR access request; admins and owners)",
        description="The contact, its enrollments, every message sent to it with its text, its tasks and its "
        "events (what it wrote back included), as one JSON document. Logged as `contact_exported`.",
    )
    async def export(self, db: Db, contact_id: FromPath[UUID]) -> dict[str, Any]:
        async with contract_fields():
            return await fetch_value(db, Q["export_contact"], {"id": contact_id})

    @example_response(ex.listed(ex.CONTACT_ENROLLMENT))
    @get("/{contact_id:uuid}/enrollments", summary="A contact's enrollments, newest first")
    async def enrollments(self, db: Db, contact_id: FromPath[UUID]) -> list[ContactEnrollment]:
        await visible_contact(db, contact_id)
        rows = await fetch_all(db, Q["contact_enrollments"], {"contact_id": contact_id})
        return msgspec.convert(rows, list[ContactEnrollment])

    @example_response(ex.IMPORT_SUMMARY)
    @post(
        "/import",
        summary="Import contacts from a CSV file (streamed; upsert on phone, then email)",
        description="Send the CSV as the body (Content-Type: text/csv) or as a multipart/form-data file. "
        "The header row names the columns: phone, email, first_name, last_name, company, title, timezone, "
        "tags (separated by ; or ,); any other column becomes a custom field. Empty cells leave stored values "
        "alone. Each row is created, updated or rejected (with the reason); `results` chooses which rows are "
        "listed (default: rejected only). Uploading the same file again creates nothing. Row 1 is the first "
        "row after the header.",
        status_code=200,
        request_max_body_size=MAX_IMPORT_BYTES,
        operation_class=CsvUploadOperation,
        opt=TAKES_NO_KEY,  # a stream of upserts, safe to send again; a key would mean buffering up to 1 GiB
    )
    async def import_csv(
        self,
        request: Request,
        db: Db,
        workspace: WorkspaceId,
        results: Annotated[
            Literal["rejected", "all"],
            QueryParameter(description="Which rows the response lists: rejected (default) or all"),
        ] = "rejected",
    ) -> ImportSummary:
        content_type = request.headers.get("content-type", "text/csv")
        media_type = content_type.split(";")[0].strip().lower()
        chunks = request.stream()
        if media_type == "multipart/form-data":
            boundary = content_boundary(content_type)
            if not boundary:
                raise HTTPException(status_code=400, detail="multipart/form-data without a boundary")
            chunks = multipart_file(chunks, boundary)
        elif media_type and media_type not in CSV_TYPES:
            raise HTTPException(
                status_code=415, detail=f"send text/csv or multipart/form-data, not {media_type}"
            )
        return await import_contacts(
            db, workspace, chunks, region=request.app.state.settings.default_region, listing=results
        )


async def save_contact(db: Db, workspace: UUID, raw: dict[str, Any], region: str) -> dict[str, Any]:
    """One contact checked at the edge (phone, email, time zone), then upserted, matched on phone, then
    email (without a time zone, the database infers one from the phone): {contact_id, created}."""
    contact = clean_contact(raw, region)
    require_reachable(contact)
    async with contract_fields():
        return await fetch_one(
            db, Q["upsert_contacts"], {"workspace_id": workspace, "contacts": Jsonb([contact])}
        )


route_handlers = [ContactController]
