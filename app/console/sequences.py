"""The sequences pages: the list, and the builder of one sequence (its day-numbered steps, their edits,
the sequence's lifecycle, its stats as a funnel, a template preview for a chosen contact and the timeline
it would follow). Every change is a contract function, called as the signed-in user (the API's named
statements), so the console can do exactly what that user could do over the API."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from psycopg.types.json import Jsonb

from app.api.paging import paged
from app.api.sequences import base_definition, checked_step, locked_sequence, save, visible_sequence
from app.console.context import ConsoleDep
from app.console.forms import (
    PAGE_SIZE,
    FormErrors,
    page_number,
    paging,
    sequence_settings_changes,
    step_from_form,
    text,
    uuid_or_none,
)
from app.console.render import html
from app.core.db import fetch_all, fetch_one, fetch_value
from app.core.errors import DrumbeatError, Invalid
from app.core.queries import queries
from app.core.templates import PREVIEW_UNSUBSCRIBE_URL, RenderError, render_message, sms_segments

Q = queries("console")
API = queries("api_sequences")
ENROLL = queries("api_enrollments")
STATUSES = ("draft", "active", "paused", "archived")
SAMPLE_CONTEXT = {
    "contact": {
        "first_name": "Sam",
        "last_name": "Sample",
        "company": "Example Co",
        "title": "Head of Sales",
        "phone": "+12025550123",
        "email": "sam@example.com",
        "timezone": "UTC",
        "fields": {},
        "tags": [],
    },
    "sequence": {"name": "Sample"},
    "sender": {"name": "Sample Sender", "address": "+12025550199"},
    "enrollment": {"id": None, "metadata": {}, "enrolled_at": None, "assigned_to": None},
}
MINUTES_PER_UNIT = {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080}
# action: (the contract's statement, what the page says once done)
LIFECYCLE = {
    "activate": ("activate_sequence", "Sequence+activated"),
    "pause": ("pause_sequence", "Sequence+paused"),
    "resume": ("resume_sequence", "Sequence+resumed"),
    "archive": ("archive_sequence", "Sequence+archived"),
}


def with_days(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step with the day it falls on when every step before it runs on time (Day 1 is the start),
    as sales teams read a cadence: Day 1 · SMS, Day 3 · Call."""
    elapsed = 0
    for step in steps:
        delay = step.get("delay") or {}
        elapsed += int(delay.get("value") or 0) * MINUTES_PER_UNIT.get(delay.get("unit"), 0)
        step["day"] = 1 + elapsed // 1440
    return steps


@get("/sequences", name="console:sequences")
async def sequences_page(
    console: ConsoleDep, status: FromQuery[str | None] = None, page: FromQuery[str | None] = None
) -> Response:
    return await sequences_listing(console, status if status in STATUSES else None, page_number(page))


async def sequences_listing(
    console: ConsoleDep,
    status: str | None,
    page: int,
    *,
    errors: FormErrors | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    params = paging(console, page, status=status)
    rows, total = await paged(console.db, Q["sequences_page"], Q["count_sequences_page"], params)
    started = await fetch_one(console.db, Q["getting_started"], {"workspace_id": console.workspace_id})
    return html(
        "sequences.html",
        status=422 if errors else 200,
        console=console,
        nav="sequences",
        rows=rows,
        total=total,
        filters={"status": status},
        page=page,
        page_size=PAGE_SIZE,
        statuses=STATUSES,
        errors=errors or FormErrors(),
        form=form or {},
        started=started,
    )


@post("/sequences", name="console:create-sequence")
async def create_sequence(console: ConsoleDep) -> Response:
    """A new sequence starts with its first message (a sequence has at least one step); the builder adds
    the rest."""
    form = await console.form()
    channel = text(form, "channel") or "sms"
    first = {
        "kind": "email" if channel == "email" else "sms",
        "name": "Intro",
        "delay": {"value": 0, "unit": "minutes"},
        "body": text(form, "body"),
    }
    if channel == "email":
        first["subject"] = text(form, "subject")
    definition = {"name": text(form, "name") or "", "channel": channel, "steps": [first]}
    created: dict[str, Any] = {}

    async def create() -> None:
        if not definition["name"]:
            raise Invalid("a sequence needs a name", "name")
        checked_step(first, 0)
        created["id"] = await fetch_value(
            console.db,
            API["create_sequence"],
            {"workspace_id": console.workspace_id, "definition": Jsonb(definition)},
        )

    error = await console.attempt(create)
    if error is None:
        return Redirect(f"/console/sequences/{created['id']}?notice=Sequence+created", status_code=303)
    return await sequences_listing(console, None, 1, errors=FormErrors.of(error), form=form)


async def builder(
    console: ConsoleDep,
    sequence_id: UUID,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
    form: dict[str, Any] | None = None,
    editing: str | None = None,
    enrolled: list[dict] | None = None,
    timeline_contact: UUID | None = None,
) -> Response:
    sequence = await visible_sequence(console.db, sequence_id)
    steps = with_days(await fetch_all(console.db, API["list_steps"], {"sequence_id": sequence_id}))
    stats = await fetch_value(console.db, API["sequence_stats"], {"id": sequence_id})
    contacts = await fetch_all(
        console.db, Q["preview_contacts"], {"workspace_id": console.workspace_id, "sequence_id": sequence_id}
    )
    timeline = await planned_timeline(console, sequence_id, timeline_contact) if timeline_contact else None
    return html(
        "builder.html",
        status=status,
        console=console,
        nav="sequences",
        sequence=sequence,
        steps=steps,
        stats=stats,
        contacts=contacts,
        errors=errors or FormErrors(),
        form=form or {},
        editing=editing,
        enrolled=enrolled,
        timeline=timeline,
        timeline_contact=timeline_contact,
        notice=console.request.query_params.get("notice"),
    )


async def planned_timeline(console: ConsoleDep, sequence_id: UUID, contact_id: UUID) -> dict[str, Any]:
    """preview_schedule for the contact, each instant shown in the contact's zone and the workspace's."""
    contact = await fetch_one(console.db, Q["contact"], {"id": contact_id})
    if contact is None:
        return {"contact": None, "rows": [], "error": "contact not found"}
    try:
        async with console.db.transaction():
            rows = await fetch_all(
                console.db,
                API["preview_schedule"],
                {"id": sequence_id, "contact_id": contact_id, "start_at": None},
            )
    except DrumbeatError as error:
        return {"contact": contact, "rows": [], "error": error.message}
    return {"contact": contact, "rows": rows, "error": None}


@get("/sequences/{sequence_id:uuid}", name="console:sequence")
async def sequence_page(
    console: ConsoleDep, sequence_id: FromPath[UUID], timeline: FromQuery[str | None] = None
) -> Response:
    return await builder(console, sequence_id, timeline_contact=uuid_or_none(timeline))


@post("/sequences/{sequence_id:uuid}/steps", name="console:add-step")
async def add_step(console: ConsoleDep, sequence_id: FromPath[UUID]) -> Response:
    form = await console.form()
    sequence = await visible_sequence(console.db, sequence_id)

    async def add() -> None:
        step = step_from_form(form)
        checked_step(step, sequence["step_count"])
        await fetch_one(
            console.db, API["add_step"], {"id": sequence_id, "step": Jsonb(step), "position": None}
        )

    return await after_edit(console, sequence_id, await console.attempt(add), form, "new", "Step+added")


@post("/sequences/{sequence_id:uuid}/steps/{step_id:uuid}", name="console:edit-step")
async def edit_step(console: ConsoleDep, sequence_id: FromPath[UUID], step_id: FromPath[UUID]) -> Response:
    form = await console.form()
    action = form.get("action") or "save"

    async def edit() -> None:
        steps = await fetch_all(console.db, API["list_steps"], {"sequence_id": sequence_id})
        index = next((i for i, s in enumerate(steps) if s["id"] == step_id), None)
        if index is None:
            raise Invalid("that step is no longer in this sequence", "step_id")
        if action == "remove":
            await fetch_one(console.db, API["remove_step"], {"id": sequence_id, "step_id": step_id})
        elif action in ("up", "down"):
            await move(console, sequence_id, [s["id"] for s in steps], index, -1 if action == "up" else 1)
        elif action == "toggle":
            changes = {"is_active": not steps[index]["is_active"]}
            await fetch_one(
                console.db,
                API["update_step"],
                {"id": sequence_id, "step_id": step_id, "changes": Jsonb(changes)},
            )
        else:
            changes = checked_step(step_from_form(form, partial=True), index)
            await fetch_one(
                console.db,
                API["update_step"],
                {"id": sequence_id, "step_id": step_id, "changes": Jsonb(changes)},
            )

    notice = {"remove": "Step+removed", "up": "Step+moved", "down": "Step+moved", "toggle": "Step+switched"}
    return await after_edit(
        console,
        sequence_id,
        await console.attempt(edit),
        form,
        str(step_id),
        notice.get(action, "Step+saved"),
    )


async def move(console: ConsoleDep, sequence_id: UUID, order: list[UUID], index: int, by: int) -> None:
    target = index + by
    if not 0 <= target < len(order):
        return
    order[index], order[target] = order[target], order[index]
    await fetch_one(console.db, API["reorder_steps"], {"id": sequence_id, "step_ids": order})


async def after_edit(
    console: ConsoleDep,
    sequence_id: UUID,
    error: DrumbeatError | None,
    form: dict[str, Any],
    editing: str,
    notice: str,
) -> Response:
    if error is None:
        return Redirect(f"/console/sequences/{sequence_id}?notice={notice}", status_code=303)
    return await builder(
        console,
        sequence_id,
        status=error.http_status,
        errors=FormErrors.of(error),
        form=form,
        editing=editing,
    )


@post("/sequences/{sequence_id:uuid}/settings", name="console:sequence-settings")
async def change_settings(console: ConsoleDep, sequence_id: FromPath[UUID]) -> Response:
    form = await console.form()

    async def change() -> None:
        definition = base_definition(await locked_sequence(console.db, sequence_id))
        definition |= sequence_settings_changes(form, definition.get("settings") or {})
        definition["steps"] = (await fetch_one(console.db, API["step_definitions"], {"id": sequence_id}))[
            "steps"
        ]
        await save(console.db, sequence_id, definition)

    return await after_edit(
        console, sequence_id, await console.attempt(change), form, "settings", "Settings+saved"
    )


@post("/sequences/{sequence_id:uuid}/lifecycle", name="console:sequence-lifecycle")
async def lifecycle(console: ConsoleDep, sequence_id: FromPath[UUID]) -> Response:
    form = await console.form()
    action = form.get("action")
    copy: dict[str, Any] = {}

    async def change() -> None:
        if action == "duplicate":
            copy["id"] = await fetch_value(
                console.db, API["duplicate_sequence"], {"id": sequence_id, "name": None}
            )
        elif action in LIFECYCLE:
            start = local_instant(text(form, "start_at"), console.workspace["timezone"], "start_at")
            params = {"id": sequence_id} | ({"start_at": start} if action == "activate" else {})
            await fetch_one(console.db, API[LIFECYCLE[action][0]], params)
        else:
            raise Invalid("unknown action", "action")

    error = await console.attempt(change)
    if error is None and copy:
        return Redirect(f"/console/sequences/{copy['id']}?notice=Duplicated", status_code=303)
    done = LIFECYCLE.get(action, ("", "Done"))[1]
    return await after_edit(console, sequence_id, error, form, "lifecycle", done)


def local_instant(value: str | None, zone: str, field: str) -> dt.datetime | None:
    """A datetime-local form value ("2026-12-08T09:30"), read in the workspace's time zone."""
    if value is None:
        return None
    try:
        naive = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a date and time", field) from None
    return naive.replace(tzinfo=zoneinfo.ZoneInfo(zone)) if naive.tzinfo is None else naive


@post("/sequences/{sequence_id:uuid}/enroll", name="console:enroll")
async def enroll(console: ConsoleDep, sequence_id: FromPath[UUID]) -> Response:
    """Enroll contacts named by email or phone, one per line; the outcome of each is shown."""
    form = await console.form()
    names = [line.strip() for line in (form.get("contacts") or "").splitlines() if line.strip()]
    results: list[dict[str, Any]] = []

    async def enroll_named() -> None:
        if not names:
            raise Invalid("name at least one contact (an email or a phone number per line)", "contacts")
        found = {}
        for who in names[:500]:
            found[who] = await fetch_value(
                console.db, Q["find_contact"], {"workspace_id": console.workspace_id, "who": who}
            )
        ids = [contact_id for contact_id in found.values() if contact_id is not None]
        outcomes = {}
        if ids:
            params = {
                "sequence_id": sequence_id,
                "contact_ids": ids,
                "start_at": None,
                "start_at_step": 1,
                "assigned_to": None,
                "metadata": Jsonb({"source": "console"}),
            }
            outcomes = {
                row["contact_id"]: row["outcome"]
                for row in await fetch_all(console.db, ENROLL["enroll_contacts"], params)
            }
        results.extend({"who": who, "outcome": outcomes.get(cid, "not_found")} for who, cid in found.items())

    error = await console.attempt(enroll_named)
    if error is not None:
        return await builder(
            console,
            sequence_id,
            status=error.http_status,
            errors=FormErrors.of(error),
            form=form,
            editing="enroll",
        )
    return await builder(console, sequence_id, enrolled=results)


@post("/sequences/{sequence_id:uuid}/preview", name="console:preview")
async def preview(console: ConsoleDep, sequence_id: FromPath[UUID]) -> Response:
    """A step's template rendered for a chosen contact, with the SMS segment count: the builder's live
    preview (an HTML fragment its script puts beside the form)."""
    form = await console.form()
    contact_id = uuid_or_none(form.get("contact_id"))
    row = None
    if contact_id:
        params = {"sequence_id": sequence_id, "contact_id": contact_id, "channel": form.get("kind")}
        row = await fetch_one(console.db, API["preview_context"], params)
    # No contact chosen (or none yet): sample values, said so under the preview.
    context = row["context"] if row else SAMPLE_CONTEXT | {"workspace": {"name": console.workspace["name"]}}
    context = context | {"unsubscribe_url": PREVIEW_UNSUBSCRIBE_URL}
    kind = form.get("kind")
    try:
        rendered = await anyio.to_thread.run_sync(  # user templates: off the event loop
            render_message, text(form, "subject"), text(form, "body") or "", None, context
        )
    except RenderError as error:
        return html("_preview.html", rendered=None, error=str(error), segments=None, sample=row is None)
    segments = sms_segments(rendered.text) if kind == "sms" else None
    return html("_preview.html", rendered=rendered, error=None, segments=segments, sample=row is None)


route_handlers = [
    sequences_page,
    create_sequence,
    sequence_page,
    add_step,
    edit_step,
    change_settings,
    lifecycle,
    enroll,
    preview,
]
