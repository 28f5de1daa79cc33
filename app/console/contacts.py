"""The contacts: the list (searchable), adding one, importing a CSV file with a result for every row, and a
contact's page (their enrollments, with pause / resume / cancel; their timeline of events; every message
sent to them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from app.api.contacts import save_contact
from app.api.paging import paged
from app.console.context import ConsoleDep
from app.console.forms import PAGE_SIZE, FormErrors, page_number, paging, text
from app.console.render import html
from app.core.csv_import import import_contacts
from app.core.db import fetch_all, fetch_one, require_row
from app.core.errors import Invalid
from app.core.queries import queries

Q = queries("console")
ENROLLMENTS = queries("api_enrollments")
CONTACT_FIELDS = ("first_name", "last_name", "phone", "email", "company", "title", "timezone")
MAX_IMPORT_BYTES = 20 * 1024 * 1024
SHOWN_IMPORT_ROWS = 1000


@get("/contacts/{contact_id:uuid}", name="console:contact")
async def contact_page(
    console: ConsoleDep, contact_id: FromPath[UUID], notice: FromQuery[str | None] = None
) -> Response:
    contact = require_row(
        await fetch_one(console.db, Q["contact"], {"id": contact_id}), "contact", "contact_id"
    )
    params = {
        "contact_id": contact_id,
        "workspace_id": console.workspace_id,
        "sequence_id": None,
        "status": None,
        "assigned_to": None,
        "limit": 100,
        "offset": 0,
    }
    enrollments = await fetch_all(console.db, ENROLLMENTS["list_enrollments_of_contact"], params)
    timeline = await fetch_all(console.db, Q["contact_timeline"], {"id": contact_id})
    messages = await fetch_all(console.db, Q["contact_messages"], {"contact_id": contact_id})
    return html(
        "contact.html",
        console=console,
        nav="contacts",
        contact=contact,
        enrollments=enrollments,
        timeline=timeline,
        messages=messages,
        notice=notice,
    )


@get("/contacts", name="console:contacts")
async def contacts_page(
    console: ConsoleDep, q: FromQuery[str | None] = None, page: FromQuery[str | None] = None
) -> Response:
    return await contacts_listing(console, search=(q or "").strip() or None, page=page_number(page))


async def contacts_listing(
    console: ConsoleDep, *, search: str | None = None, page: int = 1, **shown: Any
) -> Response:
    """A page of the list, with a form's errors or an import's results when there are some."""
    params = paging(console, page, q=search)
    rows, total = await paged(console.db, Q["contacts_page"], Q["count_contacts_page"], params)
    defaults = {"errors": FormErrors(), "form": {}, "imported": None, "status": 200}
    return html(
        "contacts.html",
        console=console,
        nav="contacts",
        rows=rows,
        total=total,
        filters={"q": search},
        page=page,
        page_size=PAGE_SIZE,
        **(defaults | shown),
    )


@post("/contacts", name="console:add-contact")
async def add_contact(console: ConsoleDep) -> Response:
    """One contact (matched on phone, then email: an existing one is updated), checked as the API checks it."""
    form = await console.form()
    raw = {name: value for name in CONTACT_FIELDS if (value := text(form, name)) is not None}
    written: dict[str, Any] = {}

    async def save() -> None:
        written.update(
            await save_contact(console.db, console.workspace_id, raw, settings(console).default_region)
        )

    error = await console.attempt(save)
    if error is None:
        return Redirect(f"/console/contacts/{written['contact_id']}?notice=Contact+saved", status_code=303)
    return await contacts_listing(console, errors=FormErrors.of(error), form=form, status=error.http_status)


@post("/contacts/import", name="console:import-contacts", request_max_body_size=MAX_IMPORT_BYTES)
async def import_file(console: ConsoleDep) -> Response:
    """A CSV file (the API's import: a header row naming the columns, upsert on phone then email): every
    row's outcome is listed, the rejected ones with the reason."""
    upload = (await console.form()).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        error = Invalid("choose a CSV file to import", "file")
        return await contacts_listing(console, errors=FormErrors.of(error), status=error.http_status)
    summary: dict[str, Any] = {}

    async def run() -> None:
        result = await import_contacts(
            console.db,
            console.workspace_id,
            chunks_of(upload),
            region=settings(console).default_region,
            listing="all",
        )
        summary["result"] = result

    error = await console.attempt(run)
    if error is not None:
        return await contacts_listing(console, errors=FormErrors.of(error), status=error.http_status)
    result = summary["result"]
    return await contacts_listing(console, imported=result, shown_rows=result.results[:SHOWN_IMPORT_ROWS])


async def chunks_of(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(65536):
        yield chunk


def settings(console: ConsoleDep) -> Any:
    request: Request = console.request
    return request.app.state.settings


route_handlers = [contacts_page, contact_page, add_contact, import_file]
