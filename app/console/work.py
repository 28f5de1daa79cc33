"""The pages a team works from day to day: enrollments (filters, pause / resume / cancel / skip, one or
many at once), the task queue (due, upcoming, completed; complete with an outcome) and what was sent.
The contacts' pages are in contacts.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus
from uuid import UUID

import anyio.to_thread
from litestar import Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from app.api.paging import paged
from app.console.context import ConsoleDep
from app.console.forms import PAGE_SIZE, FormErrors, page_number, paging, text, uuid_or_none, whole_number
from app.console.render import html
from app.core.db import fetch_all, fetch_one
from app.core.errors import Invalid
from app.core.queries import queries
from app.core.templates import render_text

Q = queries("console")
ENROLLMENTS = queries("api_enrollments")
ENROLLMENT_STATUSES = (
    "scheduled",
    "active",
    "paused",
    "completed",
    "replied",
    "bounced",
    "unsubscribed",
    "cancelled",
    "failed",
)
TASK_TABS = ("due", "upcoming", "completed")
TASK_OUTCOMES = (
    "completed",
    "connected",
    "left_voicemail",
    "no_answer",
    "wrong_number",
    "meeting_booked",
    "not_interested",
    "skipped",
)
ENROLLMENT_ACTIONS = {
    "pause": "pause_enrollment",
    "resume": "resume_enrollment",
    "cancel": "cancel_enrollment",
}


@get("/enrollments", name="console:enrollments")
async def enrollments_page(
    console: ConsoleDep,
    status: FromQuery[str | None] = None,
    sequence: FromQuery[str | None] = None,
    assignee: FromQuery[str | None] = None,
    page: FromQuery[str | None] = None,
    notice: FromQuery[str | None] = None,
) -> Response:
    filters = {
        "status": status if status in ENROLLMENT_STATUSES else None,
        "sequence_id": uuid_or_none(sequence),
        "assigned_to": uuid_or_none(assignee),
    }
    params = paging(console, page, **filters)
    rows, total = await paged(console.db, Q["enrollments_page"], Q["count_enrollments_page"], params)
    sequences = await fetch_all(console.db, Q["sequence_names"], {"workspace_id": console.workspace_id})
    shown = {
        "status": filters["status"],
        "sequence": sequence if filters["sequence_id"] else None,
        "assignee": assignee if filters["assigned_to"] else None,
    }
    return html(
        "enrollments.html",
        console=console,
        nav="enrollments",
        rows=rows,
        total=total,
        filters=shown,
        page=page_number(page),
        page_size=PAGE_SIZE,
        statuses=ENROLLMENT_STATUSES,
        sequences=sequences,
        notice=notice,
    )


@post("/enrollments/actions", name="console:enrollment-actions")
async def enrollment_actions(console: ConsoleDep) -> Response:
    """One action on the enrollments ticked (or the one whose button was pressed), each in its own
    savepoint: one that cannot change (already finished) is reported and the others still are."""
    form = await console.form()
    action = text(form, "action") or ""
    ids = [uuid_or_none(value) for value in await console.form_list("enrollment_id")]
    ids = [enrollment_id for enrollment_id in ids if enrollment_id is not None]
    if action not in (*ENROLLMENT_ACTIONS, "skip") or not ids:
        return Redirect(f"{back(form)}notice=Choose+enrollments+and+an+action", status_code=303)
    failures = []
    for enrollment_id in ids:
        error = await console.attempt(lambda e=enrollment_id: enrollment_action(console, action, e, form))
        if error is not None:
            failures.append(error.message)
    done = len(ids) - len(failures)
    notice = f"{action.title()}: {done} of {len(ids)} done" + (f" ({failures[0]})" if failures else "")
    return Redirect(f"{back(form)}notice={quote_plus(notice)}", status_code=303)


def back(form: dict[str, Any]) -> str:
    """Where an action form returns to: a console page it names, else the enrollments list; ends in ? or &."""
    target = text(form, "back") or "/console/enrollments"
    if not target.startswith("/console/") or "//" in target or "\\" in target:
        target = "/console/enrollments"
    return target + ("&" if "?" in target else "?")


async def enrollment_action(
    console: ConsoleDep, action: str, enrollment_id: UUID, form: dict[str, Any]
) -> None:
    if action == "skip":
        position = whole_number(form, "position", "position")
        if position is None:
            raise Invalid("skip to which step? give its number", "position")
        await fetch_one(console.db, ENROLLMENTS["skip_to_step"], {"id": enrollment_id, "position": position})
        return
    params = {"id": enrollment_id} | ({"reason": "cancelled"} if action == "cancel" else {})
    await fetch_one(console.db, ENROLLMENTS[ENROLLMENT_ACTIONS[action]], params)


@get("/tasks", name="console:tasks")
async def tasks_page(
    console: ConsoleDep,
    tab: FromQuery[str] = "due",
    mine: FromQuery[str | None] = None,
    page: FromQuery[str | None] = None,
    notice: FromQuery[str | None] = None,
) -> Response:
    """The queue, everyone's or (mine=1) the signed-in rep's own."""
    tab = tab if tab in TASK_TABS else "due"
    mine = "1" if mine == "1" else None
    params = paging(
        console, page, tab=tab, assigned_to=uuid_or_none(console.caller.user_id) if mine else None
    )
    tasks, total = await paged(console.db, Q["tasks_page"], Q["count_tasks_page"], params)
    rows = await anyio.to_thread.run_sync(
        lambda: [task | {"description_rendered": task_description(task)} for task in tasks]
    )
    return html(
        "tasks.html",
        console=console,
        nav="tasks",
        rows=rows,
        total=total,
        tab=tab,
        tabs=TASK_TABS,
        page=page_number(page),
        page_size=PAGE_SIZE,
        outcomes=TASK_OUTCOMES,
        filters={"tab": tab, "mine": mine},
        notice=notice,
        errors=FormErrors(),
    )


def task_description(task: dict[str, Any]) -> str | None:
    """The step's task text rendered for the task's contact, as its messages are (the same sandbox);
    shown as written when it does not render."""
    if not task["description"]:
        return None
    contact = {
        "id": task["contact_id"],
        "first_name": task["first_name"],
        "last_name": task["last_name"],
        "email": task["email"],
        "phone": task["phone"],
        "company": task["company"],
        "title": task["contact_title"],
        "fields": task["contact_fields"],
        "tags": task["contact_tags"],
    }
    context = {
        "contact": contact,
        "sequence": {"name": task["sequence_name"]},
        "workspace": {"name": task["workspace_name"]},
    }
    return render_text(task["description"], context)


@post("/tasks/{task_id:uuid}/complete", name="console:complete-task")
async def complete_task(console: ConsoleDep, task_id: FromPath[UUID]) -> Response:
    form = await console.form()
    params = {"id": task_id, "outcome": text(form, "outcome"), "notes": text(form, "notes")}
    error = await console.attempt(lambda: fetch_one(console.db, ENROLLMENTS["complete_task"], params))
    if error is None:
        return Redirect("/console/tasks?notice=Task+completed", status_code=303)
    return Redirect(f"/console/tasks?notice={quote_plus(error.message)}", status_code=303)


@get("/messages", name="console:messages")
async def messages_page(console: ConsoleDep, page: FromQuery[str | None] = None) -> Response:
    params = paging(console, page)
    rows, total = await paged(console.db, Q["messages_page"], Q["count_messages_page"], params)
    return html(
        "messages.html",
        console=console,
        nav="messages",
        rows=rows,
        total=total,
        filters={},
        page=page_number(page),
        page_size=PAGE_SIZE,
    )


route_handlers = [enrollments_page, enrollment_actions, tasks_page, complete_task, messages_page]
