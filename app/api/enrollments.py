"""Enrollments (enroll one contact or many, list, read with deliveries and timeline, pause, resume, cancel,
skip), tasks (the manual steps' to-do list, complete) and engagement events reported by integrations.
Every state change goes through a drumbeat_api function (enroll_contacts, pause/resume/cancel_enrollment,
skip_to_step, complete_task, record_event); reads are SELECTs that RLS limits to the caller's workspaces."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_body, example_response, provide_workspace_id
from app.api.errors import contract_fields
from app.api.paging import Page, PageNumber, PageSize, page_of, paged
from app.core.db import fetch_all, fetch_one, fetch_value, require_row
from app.core.errors import DrumbeatError, NotFound
from app.core.event_log import message_for
from app.core.queries import queries
from app.core.templates import render_text

Q = queries("api_enrollments")
log = logging.getLogger("drumbeat.enrollments")

MAX_BULK = 10_000
MAX_TIMELINE = 1000

Outcome = Literal["enrolled", "already_enrolled", "opted_out", "unreachable", "not_found"]
EnrollmentStatus = Literal[
    "scheduled", "active", "paused", "completed", "replied", "bounced", "unsubscribed", "cancelled", "failed"
]
TaskStatus = Literal["pending", "completed", "cancelled"]
EventKind = Literal["replied", "opened", "clicked", "bounced", "unsubscribed", "meeting_booked"]
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True, description="ISO 8601 with a UTC offset")]
Metadata = Annotated[
    dict[str, Any], msgspec.Meta(description="Free-form JSON object stored on each enrollment")
]
StartAtStep = Annotated[
    int, msgspec.Meta(ge=1, description="Start at this step position instead of the first step")
]


# ---------------------------------------------------------------------------------------------- structs


class EnrollmentCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    sequence_id: UUID
    contact_id: UUID
    start_at: AwareDatetime | None = None
    start_at_step: StartAtStep = 1
    assigned_to: Annotated[
        UUID | None, msgspec.Meta(description="A workspace member who owns this enrollment's tasks")
    ] = None
    metadata: Metadata = msgspec.field(default_factory=dict)


EnrollmentCreateBody = Annotated[
    EnrollmentCreate,
    msgspec.Meta(
        examples=[
            {
                "sequence_id": ex.SEQUENCE_ID,
                "contact_id": ex.CONTACT_ID,
                "start_at": ex.ENROLL_AT,
                "metadata": {"source": "crm"},
            }
        ]
    ),
]


class BulkEnrollmentCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    sequence_id: UUID
    contact_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=MAX_BULK)]
    start_at: AwareDatetime | None = None
    start_at_step: StartAtStep = 1
    assigned_to: UUID | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


BulkEnrollmentCreateBody = Annotated[
    BulkEnrollmentCreate,
    msgspec.Meta(
        examples=[{"sequence_id": ex.SEQUENCE_ID, "contact_ids": [ex.CONTACT_ID, ex.OTHER_CONTACT_ID]}]
    ),
]


class EnrollmentOutcome(msgspec.Struct):
    contact_id: UUID
    outcome: Outcome
    enrollment_id: Annotated[
        UUID | None,
        msgspec.Meta(description="The new enrollment (enrolled) or the live one (already_enrolled)"),
    ]


class OutcomeSummary(msgspec.Struct):
    enrolled: int = 0
    already_enrolled: int = 0
    opted_out: int = 0
    unreachable: int = 0
    not_found: int = 0


class BulkEnrollmentResult(msgspec.Struct):
    summary: OutcomeSummary
    results: Annotated[
        list[EnrollmentOutcome], msgspec.Meta(description="One per distinct contact id, in order")
    ]


class Enrollment(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    sequence_id: UUID
    sequence_name: str
    contact_id: UUID
    status: EnrollmentStatus
    current_step_id: UUID
    current_step_position: int
    step_attempt: int
    next_action_at: dt.datetime | None
    assigned_to: UUID | None
    metadata: dict[str, Any]
    enrolled_at: dt.datetime
    started_at: dt.datetime | None
    paused_at: dt.datetime | None
    completed_at: dt.datetime | None
    exit_reason: str | None
    updated_at: dt.datetime


EnrollmentPage = page_of(Enrollment)  # the response of the list endpoint: Page[Enrollment]


class Delivery(msgspec.Struct):
    id: UUID
    step_id: UUID
    step_position: int
    channel: str
    status: str
    to_address: str | None
    sender_id: UUID | None
    variant: str | None
    attempt: int
    scheduled_for: dt.datetime
    sent_at: dt.datetime | None
    delivered_at: dt.datetime | None
    provider_message_id: str | None
    error_code: str | None
    error_message: str | None
    segments: int | None
    created_at: dt.datetime


class TimelineEvent(msgspec.Struct):
    id: int
    kind: str
    occurred_at: dt.datetime
    step_id: UUID | None
    delivery_id: UUID | None
    actor_id: UUID | None
    payload: dict[str, Any]


class EnrollmentDetail(Enrollment, kw_only=True):
    deliveries: list[Delivery]
    events: Annotated[list[TimelineEvent], msgspec.Meta(description="Oldest first (at most 1000)")]


class EnrollmentCancel(msgspec.Struct, forbid_unknown_fields=True):
    reason: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1, max_length=200, description="Stored as exit_reason (default: cancelled)"
            ),
        ]
        | None
    ) = None


EnrollmentCancelBody = Annotated[
    EnrollmentCancel | None, msgspec.Meta(examples=[{"reason": ex.CANCEL_REASON}])
]


class EnrollmentSkip(msgspec.Struct, forbid_unknown_fields=True):
    position: Annotated[
        int, msgspec.Meta(ge=1, description="A later active step's position; it runs as soon as allowed")
    ]


EnrollmentSkipBody = Annotated[EnrollmentSkip, msgspec.Meta(examples=[{"position": 3}])]


class Reassignment(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[
        UUID | None, msgspec.Meta(description="A member of the workspace; null leaves it unassigned")
    ]


ReassignmentBody = Annotated[
    Reassignment, msgspec.Meta(examples=[{"user_id": ex.USER_ID}, {"user_id": None}])
]


class TaskContact(msgspec.Struct):
    """Who the task is about, as a rep needs it to call or write."""

    first_name: str | None
    last_name: str | None
    phone: str | None
    email: str | None
    company: str | None
    title: str | None
    timezone: str | None


class Task(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    enrollment_id: UUID
    sequence_id: UUID
    sequence_name: str
    step_id: UUID
    step_name: str | None
    contact_id: UUID
    contact: TaskContact
    kind: str
    title: str
    description: Annotated[
        str | None,
        msgspec.Meta(
            description="The step's task text rendered for this contact (as written if it cannot be)"
        ),
    ]
    description_template: str | None
    assigned_to: UUID | None
    status: TaskStatus
    due_at: dt.datetime
    completed_at: dt.datetime | None
    completed_by: UUID | None
    outcome: str | None
    notes: str | None
    created_at: dt.datetime


TaskPage = page_of(Task)  # the response of the list endpoint: Page[Task]


class TaskComplete(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Annotated[str, msgspec.Meta(max_length=200, examples=["connected"])] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None


TaskCompleteBody = Annotated[TaskComplete | None, msgspec.Meta(examples=[ex.CALL_OUTCOME])]


class EventCreate(msgspec.Struct, forbid_unknown_fields=True):
    contact_id: UUID
    kind: EventKind
    payload: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="Free-form; optional keys: delivery_id or enrollment_id (the event concerns that one "
            "only, otherwise every live enrollment of the contact), channel (sms | email | all: which "
            "channel an unsubscribe or bounce applies to)"
        ),
    ] = msgspec.field(default_factory=dict)


EventCreateBody = Annotated[
    EventCreate,
    msgspec.Meta(
        examples=[
            {
                "contact_id": ex.CONTACT_ID,
                "kind": "replied",
                "payload": {"channel": "email", "source": "gmail"},
            }
        ]
    ),
]


class EventTarget(msgspec.Struct):
    event_id: int
    enrollment_id: UUID | None
    sequence_id: UUID | None
    enrollment_status: Annotated[str | None, msgspec.Meta(description="After the event (an exit shows here)")]
    exit_reason: str | None


class EventRecorded(msgspec.Struct):
    contact_id: UUID
    kind: EventKind
    occurred_at: dt.datetime
    logged: Annotated[
        list[EventTarget],
        msgspec.Meta(description="One event row per enrollment it concerned (or one without)"),
    ]


# ---------------------------------------------------------------------------------------------- helpers


def as_utc(instant: dt.datetime | None) -> dt.datetime | None:
    """A query-string instant without a UTC offset is read as UTC (not in the database session's zone)."""
    return instant.replace(tzinfo=dt.UTC) if instant and instant.tzinfo is None else instant


async def visible_enrollment(db: Db, enrollment_id: UUID) -> dict[str, Any]:
    row = await fetch_one(db, Q["get_enrollment"], {"id": enrollment_id})
    return require_row(row, "enrollment", "enrollment_id")


async def enroll(
    db: Db, data: EnrollmentCreate | BulkEnrollmentCreate, contact_ids: list[UUID]
) -> list[dict]:
    params = {
        "sequence_id": data.sequence_id,
        "contact_ids": contact_ids,
        "start_at": data.start_at,
        "start_at_step": data.start_at_step,
        "assigned_to": data.assigned_to,
        "metadata": Jsonb(data.metadata),
    }
    return await fetch_all(db, Q["enroll_contacts"], params)


NOT_ENROLLED = {
    "already_enrolled": (409, "the contact already has a live enrollment in this sequence"),
    "opted_out": (422, "the contact opted out of (or bounced on) this sequence's channel"),
    "unreachable": (422, "the contact has no address on this sequence's channel"),
    "not_found": (404, "contact not found"),
}


async def log_bulk_enrollment(db: Db, sequence_id: UUID, counts: dict[str, int]) -> None:
    """One line for a bulk enrollment (up to 10,000 contacts), with the count of each outcome."""
    if log.isEnabledFor(logging.INFO):
        workspace_id = await fetch_value(db, Q["sequence_workspace"], {"sequence_id": sequence_id})
        extra = {"workspace_id": workspace_id, "sequence_id": sequence_id, "contacts": sum(counts.values())}
        log.info("enrolled_bulk", extra=extra | counts)


async def transition(db: Db, query: str, params: dict[str, Any]) -> Enrollment:
    """Run one enrollment transition (404 for an id RLS hides, 409 when the status forbids it) and return
    the enrollment as it is now."""
    await fetch_one(db, Q[query], params)
    return msgspec.convert(await visible_enrollment(db, params["id"]), Enrollment)


# ---------------------------------------------------------------------------------------------- controllers


class EnrollmentController(Controller):
    path = "/enrollments"
    tags = ["enrollments"]

    @example_response(ex.NEW_ENROLLMENT)
    @post(
        "/",
        summary="Enroll one contact in a sequence",
        description="201 with the enrollment when the contact is enrolled. Otherwise nothing is written and "
        "the error code says why: `already_enrolled` (409: the contact has a live enrollment in this "
        "sequence, whose id the message gives), `opted_out` (422: opted out of, or bounced on, the sequence's "
        "channel), `unreachable` (422: no phone/email for the channel), `not_found` (404). A sequence that "
        "is not active or paused is a 409 `conflict` on sequence_id. A `start_at` in the future makes the "
        "enrollment `scheduled`.",
        status_code=201,
    )
    async def create(self, db: Db, data: example_body(EnrollmentCreateBody)) -> Enrollment:
        [result] = await enroll(db, data, [data.contact_id])
        outcome = result["outcome"]
        if outcome != "enrolled":
            status, message = NOT_ENROLLED[outcome]
            if outcome == "already_enrolled":
                message = f"{message}: {result['enrollment_id']}"
            raise DrumbeatError(message, "contact_id", status, outcome)
        enrollment = msgspec.convert(await visible_enrollment(db, result["enrollment_id"]), Enrollment)
        log.info(
            "enrolled",
            extra={
                "workspace_id": enrollment.workspace_id,
                "sequence_id": enrollment.sequence_id,
                "enrollment_id": enrollment.id,
                "contact_id": enrollment.contact_id,
                "status": enrollment.status,
            },
        )
        return enrollment

    @example_response(ex.BULK_ENROLLMENT)
    @post(
        "/bulk",
        summary="Enroll many contacts in a sequence (up to 10,000)",
        description="One outcome per distinct contact id, in the order sent: `enrolled`, `already_enrolled` "
        "(a live enrollment exists; its id is given), `opted_out`, `unreachable` or `not_found` (includes "
        "another workspace's contacts), and a count per outcome. Always 200 when the request is valid, "
        "even when nobody was enrolled.",
        status_code=200,
    )
    async def bulk(self, db: Db, data: example_body(BulkEnrollmentCreateBody)) -> BulkEnrollmentResult:
        rows = await enroll(db, data, data.contact_ids)
        results = msgspec.convert(rows, list[EnrollmentOutcome])
        counts: dict[str, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        await log_bulk_enrollment(db, data.sequence_id, counts)
        return BulkEnrollmentResult(OutcomeSummary(**counts), results)

    @example_response(ex.page(ex.ENROLLMENT))
    @get(
        "/",
        summary="List enrollments, newest first",
        dependencies={"workspace": Provide(provide_workspace_id)},
    )
    async def index(
        self,
        db: Db,
        workspace: WorkspaceId,
        status: Annotated[EnrollmentStatus | None, QueryParameter(description="Only this status")] = None,
        assigned_to: Annotated[
            UUID | None, QueryParameter(description="Only those assigned to this user")
        ] = None,
        sequence_id: Annotated[UUID | None, QueryParameter(description="Only this sequence's")] = None,
        contact_id: Annotated[UUID | None, QueryParameter(description="Only this contact's")] = None,
        page: PageNumber = 1,
        page_size: PageSize = 50,
    ) -> EnrollmentPage:
        name = (
            "enrollments_of_contact"
            if contact_id
            else "enrollments_of_sequence"
            if sequence_id
            else "enrollments"
        )
        params = {
            "workspace_id": workspace,
            "status": status,
            "assigned_to": assigned_to,
            "sequence_id": sequence_id,
            "contact_id": contact_id,
            "limit": page_size,
            "offset": (page - 1) * page_size,
        }
        rows, total = await paged(db, Q[f"list_{name}"], Q[f"count_{name}"], params)
        return Page(msgspec.convert(rows, list[Enrollment]), total, page, page_size)

    @example_response(ex.ENROLLMENT_DETAIL)
    @get("/{enrollment_id:uuid}", summary="One enrollment, with its deliveries and its timeline of events")
    async def detail(self, db: Db, enrollment_id: FromPath[UUID]) -> EnrollmentDetail:
        row = await visible_enrollment(db, enrollment_id)
        deliveries = await fetch_all(db, Q["enrollment_deliveries"], {"id": enrollment_id})
        events = await fetch_all(db, Q["enrollment_events"], {"id": enrollment_id, "limit": MAX_TIMELINE})
        return msgspec.convert(row | {"deliveries": deliveries, "events": events}, EnrollmentDetail)

    @example_response(ex.PAUSED_ENROLLMENT)
    @post(
        "/{enrollment_id:uuid}/pause",
        summary="Pause an enrollment (scheduled or active): nothing moves until it is resumed",
        description="409 when the enrollment is paused already or has ended.",
        status_code=200,
    )
    async def pause(self, db: Db, enrollment_id: FromPath[UUID]) -> Enrollment:
        return await transition(db, "pause_enrollment", {"id": enrollment_id})

    @example_response(ex.ENROLLMENT)
    @post(
        "/{enrollment_id:uuid}/resume",
        summary="Resume a paused enrollment",
        description="The waiting step is re-planned from when the previous one was done, never into the past "
        "(a step that fell due while paused runs at the next allowed instant). 409 unless paused.",
        status_code=200,
    )
    async def resume(self, db: Db, enrollment_id: FromPath[UUID]) -> Enrollment:
        return await transition(db, "resume_enrollment", {"id": enrollment_id})

    @example_response(ex.CANCELLED_ENROLLMENT)
    @post(
        "/{enrollment_id:uuid}/cancel",
        summary="Cancel a live enrollment (optional reason)",
        description="The enrollment ends as `cancelled` with `exit_reason` = the reason (default "
        "`cancelled`); its pending task is cancelled. The body is optional. 409 when it has ended already.",
        status_code=200,
    )
    async def cancel(
        self, db: Db, enrollment_id: FromPath[UUID], data: example_body(EnrollmentCancelBody) = None
    ) -> Enrollment:
        reason = data.reason.strip() if data and data.reason else None
        return await transition(db, "cancel_enrollment", {"id": enrollment_id, "reason": reason})

    @example_response(ex.SKIPPED_ENROLLMENT)
    @post(
        "/{enrollment_id:uuid}/skip",
        summary="Skip forward to a later step",
        description="The step at `position` runs as soon as its window allows (its delay is skipped); a "
        "pending task of the current step is cancelled. Forward only: 422 on position for the current or an "
        "earlier step; 409 when the enrollment has ended.",
        status_code=200,
    )
    async def skip(
        self, db: Db, enrollment_id: FromPath[UUID], data: example_body(EnrollmentSkipBody)
    ) -> Enrollment:
        return await transition(db, "skip_to_step", {"id": enrollment_id, "position": data.position})

    @example_response(ex.REASSIGNED_ENROLLMENT)
    @post(
        "/{enrollment_id:uuid}/reassign",
        summary="Give the enrollment to another member (its pending task goes along)",
        description="Live or ended. Messages still to come go out from the new member's own sender where they "
        "have one. Logged (`sequence.enrollment.reassigned`, and `task.reassigned` for a moved task); "
        "reassigning to the current assignee changes nothing. 422 on user_id for a non-member.",
        status_code=200,
    )
    async def reassign(
        self, db: Db, enrollment_id: FromPath[UUID], data: example_body(ReassignmentBody)
    ) -> Enrollment:
        params = {"id": enrollment_id, "user_id": data.user_id}
        async with contract_fields():
            return await transition(db, "reassign_enrollment", params)


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]

    @example_response(ex.page(ex.TASK))
    @get(
        "/",
        summary="List tasks (manual steps: calls, LinkedIn, manual emails), soonest due first",
        dependencies={"workspace": Provide(provide_workspace_id)},
    )
    async def index(
        self,
        db: Db,
        workspace: WorkspaceId,
        assigned_to: Annotated[UUID | None, QueryParameter(description="Only this user's tasks")] = None,
        status: Annotated[TaskStatus | None, QueryParameter(description="Only this status")] = None,
        due_before: Annotated[
            dt.datetime | None,
            QueryParameter(description="Only tasks due strictly before this instant (no offset: UTC)"),
        ] = None,
        due_after: Annotated[
            dt.datetime | None,
            QueryParameter(description="Only tasks due at or after this instant (no offset: UTC)"),
        ] = None,
        page: PageNumber = 1,
        page_size: PageSize = 50,
    ) -> TaskPage:
        params = {
            "workspace_id": workspace,
            "assigned_to": assigned_to,
            "status": status,
            "due_before": as_utc(due_before),
            "due_after": as_utc(due_after),
            "limit": page_size,
            "offset": (page - 1) * page_size,
        }
        rows, total = await paged(db, Q["list_tasks"], Q["count_tasks"], params | {"id": None})
        # (Rendering is user templates: off the event loop, so a costly one holds one thread, not the API.)
        tasks = await anyio.to_thread.run_sync(lambda: [task_of(row) for row in rows])
        return Page(tasks, total, page, page_size)

    @example_response(ex.TASK)
    @get("/{task_id:uuid}", summary="One task")
    async def detail(self, db: Db, task_id: FromPath[UUID]) -> Task:
        return await visible_task(db, task_id)

    @example_response(ex.COMPLETED_TASK)
    @post(
        "/{task_id:uuid}/complete",
        summary="Complete a task: its enrollment moves on to the next step",
        description="409 when the task is not pending any more, or when its enrollment is paused (resume it "
        "first).",
        status_code=200,
    )
    async def complete(
        self, db: Db, task_id: FromPath[UUID], data: example_body(TaskCompleteBody) = None
    ) -> Task:
        data = data or TaskComplete()
        await fetch_one(db, Q["complete_task"], {"id": task_id, "outcome": data.outcome, "notes": data.notes})
        return await visible_task(db, task_id)

    @example_response(ex.REASSIGNED_TASK)
    @post(
        "/{task_id:uuid}/reassign",
        summary="Give a pending task to another member (the enrollment stays with its assignee)",
        description="Logged (`task.reassigned`). 409 when the task is not pending; 422 on user_id for a non-member.",
        status_code=200,
    )
    async def reassign(self, db: Db, task_id: FromPath[UUID], data: example_body(ReassignmentBody)) -> Task:
        async with contract_fields():
            await fetch_one(db, Q["reassign_task"], {"id": task_id, "user_id": data.user_id})
        return await visible_task(db, task_id)


TASK_FILTERS = ("workspace_id", "assigned_to", "status", "due_before", "due_after")


async def visible_task(db: Db, task_id: UUID) -> Task:
    """One task (list_tasks by id, every filter off); 404 when RLS hides it."""
    params = dict.fromkeys(TASK_FILTERS) | {"id": task_id, "limit": 1, "offset": 0}
    row = require_row(await fetch_one(db, Q["list_tasks"], params), "task", "task_id")
    return await anyio.to_thread.run_sync(task_of, row)


def task_of(row: dict[str, Any]) -> Task:
    """A task row with its description rendered for its contact (the template kept beside it)."""
    context = row.pop("template_context")
    template = row.pop("description")
    rendered = {"description": render_text(template, context), "description_template": template}
    return msgspec.convert(row | rendered, Task)


class FeedEvent(msgspec.Struct):
    cursor: Annotated[str, msgspec.Meta(description="Pass it as `after` to read on from this event")]
    id: int
    type: str
    occurred_at: dt.datetime
    data: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="Every id the event concerns and the status it left; never a message's text"
        ),
    ]


class EventFeed(msgspec.Struct):
    items: list[FeedEvent]
    next_cursor: Annotated[
        str | None,
        msgspec.Meta(
            description="The `after` of the next page (the last item's cursor; the one "
            "given when there was nothing new)"
        ),
    ]


class EventController(Controller):
    path = "/events"
    tags = ["events"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.EVENT_FEED)
    @get(
        "/",
        summary="The workspace's events after a cursor, oldest first: a feed that never skips one",
        description="Page with `after` (the last cursor you handled) until `items` is empty, then poll, or "
        "LISTEN to drumbeat_events. An event shows once every transaction that began before it has ended "
        "(usually milliseconds), so an event committed late never lands behind a cursor already given out. "
        "`types` filters (repeat it, or separate with commas): sequence.enrollment.created, .completed, "
        ".replied, .exited, .paused, .resumed, .reassigned, sequence.step.executed, "
        "sequence.step.pending_manual, task.reassigned, "
        "task.completed, message.sent, .delivered, .failed, .bounced, .unknown, .opened, .clicked, "
        "contact.opted_out, contact.opted_in, contact.bounced, contact.erased, sequence.step.webhook, "
        "webhook_endpoint.disabled.",
    )
    async def feed(
        self,
        db: Db,
        workspace: WorkspaceId,
        after: Annotated[str | None, QueryParameter(description="The last cursor you handled")] = None,
        types: Annotated[list[str] | None, QueryParameter(description="Only these types")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> EventFeed:
        wanted = [t.strip() for value in types or [] for t in value.split(",") if t.strip()] or None
        params = {"workspace_id": workspace, "after": after, "types": wanted, "limit": limit}
        async with contract_fields():
            rows = await fetch_all(db, Q["list_events"], params)
        items = msgspec.convert(rows, list[FeedEvent])
        return EventFeed(items, items[-1].cursor if items else after)

    @example_response(ex.EVENT_RECORDED)
    @post(
        "/",
        summary="Report engagement from an integration (reply, open, click, bounce, unsubscribe, meeting)",
        description="Logged against the enrollment named by payload.delivery_id or payload.enrollment_id, "
        "else against every live enrollment of the contact. Enrollments exit per their sequence's exit "
        "conditions (replied -> `replied` when on_reply, meeting_booked -> `completed`, ...); unsubscribed "
        "and bounced also update the contact's opt-outs (payload.channel: sms | email | all). The response "
        "lists what was logged, with each enrollment's status after the event.",
        status_code=201,
    )
    async def create(self, db: Db, data: example_body(EventCreateBody)) -> Response[EventRecorded]:
        params = {"contact_id": data.contact_id, "kind": data.kind, "payload": Jsonb(data.payload)}
        await fetch_one(db, Q["record_event"], params)
        rows = await fetch_all(db, Q["recorded_events"], params)
        if not rows:  # pragma: no cover - record_event always logs at least one row
            raise NotFound("contact not found", "contact_id")
        log_engagement(data, rows)
        logged = [
            EventTarget(
                r["id"], r["enrollment_id"], r["sequence_id"], r["enrollment_status"], r["exit_reason"]
            )
            for r in rows
        ]
        return Response(
            EventRecorded(data.contact_id, data.kind, rows[0]["occurred_at"], logged), status_code=201
        )


def log_engagement(data: EventCreate, rows: list[dict[str, Any]]) -> None:
    """A line per event row record_event wrote ("replied", "opted_out", ...), with the enrollment's
    status after it (an exit shows there). Never the payload: integrations put anything in it."""
    for row in rows:
        log.info(
            message_for(data.kind),
            extra={
                "workspace_id": row["workspace_id"],
                "sequence_id": row["sequence_id"],
                "contact_id": data.contact_id,
                "enrollment_id": row["enrollment_id"],
                "step_id": row["step_id"],
                "delivery_id": row["delivery_id"],
                "enrollment_status": row["enrollment_status"],
                "exit_reason": row["exit_reason"],
                "source": "api",
            },
        )


route_handlers = [EnrollmentController, TaskController, EventController]
