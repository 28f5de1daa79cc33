"""Sequences: create from a definition (docs/ARCHITECTURE.md), list, read with steps, replace (PUT) or change
(PATCH), archive (DELETE), activate, pause, resume, duplicate; steps one at a time (add, edit, delete,
reorder); stats and a dry-run schedule for one contact. Every change goes through a drumbeat_api function
(create_sequence, update_sequence, activate/pause/resume/archive/duplicate_sequence); reads are SELECTs
that RLS limits to the caller's workspaces.

The steps endpoints are edits of the whole definition: the sequence row is locked (SELECT ... FOR UPDATE),
its definition read, the steps list changed and drumbeat_api.update_sequence called, all in the request's
one transaction. update_sequence identifies steps by their "id" (a step sent without one is new, a live
step left out is removed), so live enrollments keep their place across every edit, reorders included.

Message templates are compiled in the sandbox the worker renders them with (app.core.templates), so a broken
template is a 422 at save naming it (steps[2].body), never a failed delivery later. The SQL contract
checks the same templates too (closed tags, known variables) with errors of the same shape."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from msgspec import UNSET, UnsetType
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_body, example_response, provide_workspace_id
from app.api.paging import Page, PageNumber, PageSize, page_of, paged
from app.core import templates  # the worker's own sandbox and cache: templates compile here as they will run
from app.core.db import fetch_all, fetch_one, fetch_value, require_row
from app.core.errors import Conflict, Invalid, NotFound
from app.core.queries import queries

Q = queries("api_sequences")

MAX_STEPS = 100

SequenceStatus = Literal["draft", "active", "paused", "archived"]
Channel = Literal["sms", "email", "multi"]
StepKind = Literal["sms", "email", "manual_email", "call", "linkedin", "task", "condition", "action"]
Unit = Literal["minutes", "hours", "days", "weeks"]
ConditionIf = Literal["replied", "opened", "clicked", "not_replied", "not_opened", "not_clicked"]
ActionType = Literal["tag", "untag", "set_field", "enroll", "webhook"]
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True, description="ISO 8601 with a UTC offset")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TimeOfDay = Annotated[
    str, msgspec.Meta(description='"HH:MM" (a window\'s end may be "24:00")', examples=["09:00"])
]
Subject = Annotated[str, msgspec.Meta(max_length=998, description="Email subject (a template)")]
Body = Annotated[
    str, msgspec.Meta(max_length=100_000, description="Text body (a template); SMS: 1600 at most")
]
HtmlBody = Annotated[str, msgspec.Meta(max_length=500_000, description="Email HTML body (a template)")]


# ---------------------------------------------------------------------------------------------- definition


class Delay(msgspec.Struct, forbid_unknown_fields=True):
    """0 (at once) or at least one minute. Days and weeks are calendar days in the recipient's zone;
    minutes and hours are clock time."""

    value: Annotated[int, msgspec.Meta(ge=0, le=525_600)]
    unit: Unit


class TimeWindow(msgspec.Struct, forbid_unknown_fields=True):
    start: TimeOfDay
    end: TimeOfDay


class BusinessHours(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    monday: TimeWindow | None = None
    tuesday: TimeWindow | None = None
    wednesday: TimeWindow | None = None
    thursday: TimeWindow | None = None
    friday: TimeWindow | None = None
    saturday: TimeWindow | None = None
    sunday: TimeWindow | None = None


class SequenceSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    timezone: Annotated[str, msgspec.Meta(description="IANA name; a contact's own zone wins")] | None = None
    business_hours: BusinessHours | None = None
    exclude_weekends: bool | None = None
    exclude_holidays: bool | None = None
    holiday_calendar: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    quiet_hours: (
        Annotated[TimeWindow, msgspec.Meta(description="SMS only; 08:00-21:00 unless set")] | None
    ) = None
    max_per_day: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    sms_sender_id: UUID | None = None
    email_sender_id: UUID | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None


class ExitConditions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    on_reply: bool | None = None
    on_bounce: bool | None = None
    on_unsubscribe: bool | None = None
    on_meeting_booked: bool | None = None


class Variant(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    weight: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    subject: Subject | None = None
    body: Body | None = None
    html_body: HtmlBody | None = None


class Condition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    if_: ConditionIf = msgspec.field(name="if")
    step: Annotated[int, msgspec.Meta(ge=1, description="Position of an earlier sms/email step")]
    within: Delay | None = None
    link: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=2000,
                description="clicked / not_clicked only: a link of that message; a click on it or on a URL "
                "that goes on from it past /, ? or # counts (https://acme.example/pricing matches its "
                "?utm_source=... variants and /pricing/eu, not /pricing-old)",
            ),
        ]
        | None
    ) = None
    link_name: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=64,
                description="clicked / not_clicked only, instead of link: the name the email's HTML gives a link, "
                '<a href="..." data-link-name="pricing">; letters, digits, spaces, _ - and ., matched in any case',
            ),
        ]
        | None
    ) = None


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    contact_id: UUID
    variant: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | None = None


PreviewRequestBody = Annotated[PreviewRequest, msgspec.Meta(examples=[{"contact_id": ex.CONTACT_ID}])]


class SmsCost(msgspec.Struct):
    encoding: Literal["GSM-7", "UCS-2"]
    segments: int
    characters: int


class MessagePreview(msgspec.Struct):
    variant: str | None
    subject: str | None
    body: str
    html_body: str | None
    sms: SmsCost | None  # an SMS step's encoding and segment count (what Twilio bills)


class Goto(msgspec.Struct, forbid_unknown_fields=True):
    goto: Annotated[int, msgspec.Meta(ge=2, description="A later step's position (forward only)")]


Branch = Literal["continue", "exit"] | Goto


class Action(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    type: ActionType
    tag: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    field: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    value: Any = UNSET
    sequence_id: UUID | None = None
    event: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class StepFields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """One step of a definition; which fields apply depends on `kind` (docs/ARCHITECTURE.md)."""

    kind: StepKind
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    delay: Delay | None = None
    send_at: TimeOfDay | None = None
    subject: Subject | None = None
    body: Body | None = None
    html_body: HtmlBody | None = None
    variants: list[Variant] = msgspec.field(default_factory=list)
    condition: Condition | None = None
    then: Branch | None = None
    else_: Branch | None = msgspec.field(default=None, name="else")
    action: Action | None = None
    task_description: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None
    is_active: bool = True


class StepDefinition(StepFields, kw_only=True):
    id: Annotated[
        UUID | None,
        msgspec.Meta(
            description="An existing step's id: the step is kept (and edited); without one it is new"
        ),
    ] = None


class SequenceDefinition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    name: Name
    description: Annotated[str, msgspec.Meta(max_length=5000)] | None = None
    channel: Channel
    settings: SequenceSettings | None = None
    exit_conditions: ExitConditions | None = None
    steps: Annotated[list[StepDefinition], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]


EXAMPLE_DEFINITION = {
    "name": "Cold outreach",
    "channel": "sms",
    "settings": {"timezone": "America/New_York", "exclude_weekends": True},
    "steps": [
        {"kind": "sms", "name": "Intro", "body": "Hi {{ contact.first_name }}"},
        {
            "kind": "sms",
            "name": "Nudge",
            "delay": {"value": 2, "unit": "days"},
            "send_at": "10:00",
            "body": "Still there?",
        },
        {
            "kind": "call",
            "name": "Call",
            "delay": {"value": 1, "unit": "days"},
            "task_description": ex.CALL_TEMPLATE,
        },
    ],
}
SequenceDefinitionBody = Annotated[SequenceDefinition, msgspec.Meta(examples=[EXAMPLE_DEFINITION])]


class StepReplacement(StepDefinition, kw_only=True):
    """A step as PUT takes it: a definition, or the step as GET returned it. `position` and the times are
    ignored (the order of `steps` sets the position, so a GET's steps may be reordered as they are)."""

    position: int | UnsetType = UNSET
    created_at: dt.datetime | UnsetType = UNSET
    updated_at: dt.datetime | UnsetType = UNSET


class SequenceReplacement(SequenceDefinition, kw_only=True):
    """What PUT takes: a definition, or the sequence as GET returned it, edited. Its read-only fields are
    ignored when they are what the sequence has; `version` is the one read (409 when it moved on since: an
    edit made meanwhile would be lost)."""

    steps: Annotated[list[StepReplacement], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]
    id: UUID | UnsetType = UNSET
    workspace_id: UUID | UnsetType = UNSET
    status: SequenceStatus | UnsetType = UNSET
    version: int | UnsetType = UNSET
    scheduled_start_at: dt.datetime | UnsetType | None = UNSET
    created_by: UUID | UnsetType | None = UNSET
    created_at: dt.datetime | UnsetType = UNSET
    updated_at: dt.datetime | UnsetType = UNSET
    activated_at: dt.datetime | UnsetType | None = UNSET
    archived_at: dt.datetime | UnsetType | None = UNSET
    step_count: int | UnsetType = UNSET


SEQUENCE_READ_ONLY = tuple(
    set(SequenceReplacement.__struct_fields__) - set(SequenceDefinition.__struct_fields__)
)
STEP_READ_ONLY = ("position", "created_at", "updated_at")  # a step's place is its index in `steps`
SERVER_TIMES = ("created_at", "updated_at", "activated_at", "archived_at", "scheduled_start_at")
SequenceReplacementBody = Annotated[SequenceReplacement, msgspec.Meta(examples=[EXAMPLE_DEFINITION])]


class SequencePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields given change; `settings` and `exit_conditions` are replaced whole, and `steps` too
    (steps given with their id are kept, steps left out are removed)."""

    name: Name | UnsetType = UNSET
    description: Annotated[str, msgspec.Meta(max_length=5000)] | UnsetType | None = UNSET
    channel: Channel | UnsetType = UNSET
    settings: SequenceSettings | UnsetType | None = UNSET
    exit_conditions: ExitConditions | UnsetType | None = UNSET
    steps: Annotated[list[StepDefinition], msgspec.Meta(min_length=1, max_length=MAX_STEPS)] | UnsetType = (
        UNSET
    )


SequencePatchBody = Annotated[
    SequencePatch,
    msgspec.Meta(
        examples=[
            {"name": "Cold outreach (spring)"},
            {
                "settings": {
                    "timezone": "America/New_York",
                    "exclude_weekends": True,
                    "quiet_hours": {"start": "09:00", "end": "20:00"},
                    "max_per_day": 200,
                }
            },
        ]
    ),
]


class StepCreate(StepFields, kw_only=True):
    position: (
        Annotated[
            int, msgspec.Meta(ge=1, description="Where the step goes (1 = first); at the end when left out")
        ]
        | None
    ) = None


StepCreateBody = Annotated[
    StepCreate,
    msgspec.Meta(
        examples=[
            {"kind": "sms", "name": "Last call", "delay": {"value": 3, "unit": "days"}, "body": "Bye for now"}
        ]
    ),
]


class StepPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields given change; null clears one (e.g. `"send_at": null`)."""

    kind: StepKind | UnsetType = UNSET
    name: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType | None = UNSET
    delay: Delay | UnsetType | None = UNSET
    send_at: TimeOfDay | UnsetType | None = UNSET
    subject: Subject | UnsetType | None = UNSET
    body: Body | UnsetType | None = UNSET
    html_body: HtmlBody | UnsetType | None = UNSET
    variants: list[Variant] | UnsetType | None = UNSET
    condition: Condition | UnsetType | None = UNSET
    then: Branch | UnsetType | None = UNSET
    else_: Branch | UnsetType | None = msgspec.field(default=UNSET, name="else")
    action: Action | UnsetType | None = UNSET
    task_description: Annotated[str, msgspec.Meta(max_length=10000)] | UnsetType | None = UNSET
    is_active: bool | UnsetType = UNSET


StepPatchBody = Annotated[StepPatch, msgspec.Meta(examples=[{"body": ex.EDITED_INTRO, "send_at": "09:30"}])]


class StepReorder(msgspec.Struct, forbid_unknown_fields=True):
    step_ids: Annotated[
        list[UUID],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_STEPS,
            description="Every live step's id, once each, in the new order",
        ),
    ]


StepReorderBody = Annotated[
    StepReorder, msgspec.Meta(examples=[{"step_ids": [ex.STEP_IDS[1], ex.STEP_IDS[0], ex.STEP_IDS[2]]}])
]


class SequenceActivate(msgspec.Struct, forbid_unknown_fields=True):
    scheduled_start_at: Annotated[
        AwareDatetime | None,
        msgspec.Meta(description="Nothing is sent before this instant (enrollments wait for it)"),
    ] = None


SequenceActivateBody = Annotated[
    SequenceActivate | None, msgspec.Meta(examples=[{"scheduled_start_at": ex.START_AT}])
]


class SequenceDuplicate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[Name | None, msgspec.Meta(description='Default: the name + " (copy)"')] = None


SequenceDuplicateBody = Annotated[
    SequenceDuplicate | None, msgspec.Meta(examples=[{"name": "Cold outreach (EMEA)"}])
]


# ---------------------------------------------------------------------------------------------- responses


class Step(msgspec.Struct, kw_only=True):
    id: UUID
    position: int
    kind: StepKind
    name: str | None
    delay: Delay
    send_at: str | None
    subject: str | None
    body: str | None
    html_body: str | None
    variants: list[Variant]
    condition: Condition | None
    then: Branch | None
    else_: Branch | None = msgspec.field(name="else")
    action: Action | None
    task_description: str | None
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class Sequence(msgspec.Struct, kw_only=True):
    id: UUID
    workspace_id: UUID
    name: str
    description: str | None
    status: SequenceStatus
    channel: Channel
    settings: dict[str, Any]
    exit_conditions: dict[str, bool]
    version: Annotated[int, msgspec.Meta(description="Goes up by one with every edit")]
    scheduled_start_at: dt.datetime | None
    created_by: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime
    activated_at: dt.datetime | None
    archived_at: dt.datetime | None
    step_count: int


SequencePage = page_of(Sequence)  # the response of the list endpoint: Page[Sequence]


class SequenceDetail(Sequence, kw_only=True):
    steps: list[Step]


class EnrollmentCounts(msgspec.Struct):
    scheduled: int
    active: int
    paused: int
    completed: int
    replied: int
    bounced: int
    unsubscribed: int
    cancelled: int
    failed: int
    total: int


class ProportionTest(msgspec.Struct):
    rate_difference: Annotated[float, msgspec.Meta(description="This variant's rate minus the control's")]
    z: float
    p_value: Annotated[
        float,
        msgspec.Meta(
            description="Two-sided, two-proportion z-test: the chance of a difference this large if the "
            "variants were alike (below 0.05: a difference to act on)"
        ),
    ]


class VersusControl(msgspec.Struct):
    control: Annotated[str, msgspec.Meta(description="The step's first variant")]
    open_rate: ProportionTest | None
    click_rate: ProportionTest | None
    reply_rate: Annotated[
        ProportionTest | None, msgspec.Meta(description="null until both have sends and some differ")
    ]


class VariantStats(msgspec.Struct):
    key: str
    sent: int
    delivered: int
    bounced: int
    opened: Annotated[int, msgspec.Meta(description="Distinct enrollments that received this variant")]
    clicked: int
    replied: int
    delivery_rate: float | None
    open_rate: float | None
    click_rate: float | None
    reply_rate: float | None
    bounce_rate: Annotated[float | None, msgspec.Meta(description="Of sent and bounced")]
    versus_control: VersusControl | None


class TaskStats(msgspec.Struct):
    created: int
    completed: int
    cancelled: Annotated[int, msgspec.Meta(description="The enrollment ended before the task was done")]
    pending: int
    outcomes: Annotated[dict[str, int], msgspec.Meta(description="Completed tasks by logged outcome")]


class StepStats(msgspec.Struct):
    step_id: UUID
    position: int
    kind: StepKind
    name: str | None
    sent: int
    delivered: int
    failed: int
    unknown: Annotated[
        int,
        msgspec.Meta(
            description="The provider's answer was ambiguous or lost: may have gone out, never resent"
        ),
    ]
    opened: Annotated[int, msgspec.Meta(description="Distinct enrollments")]
    clicked: int
    replied: int
    delivery_rate: Annotated[float | None, msgspec.Meta(description="Of sent; null before the first send")]
    open_rate: float | None
    click_rate: float | None
    reply_rate: float | None
    variants: Annotated[list[VariantStats], msgspec.Meta(description="A/B results; empty without variants")]
    tasks: Annotated[TaskStats | None, msgspec.Meta(description="Manual steps only")]


class SequenceStats(msgspec.Struct):
    sequence_id: UUID
    enrollments: EnrollmentCounts
    replied: Annotated[int, msgspec.Meta(description="Enrollments with a reply")]
    steps: list[StepStats]


class PlannedStep(msgspec.Struct):
    position: int
    step_id: UUID
    kind: StepKind
    planned_at: Annotated[dt.datetime | None, msgspec.Meta(description="null when after the year 9999")]


class SchedulePreview(msgspec.Struct):
    sequence_id: UUID
    contact_id: UUID
    steps: Annotated[
        list[PlannedStep],
        msgspec.Meta(description="In the order they would run; conditions take their no-engagement branch"),
    ]


# ---------------------------------------------------------------------------------------------- helpers

TEMPLATE_PARTS = (("subject", False), ("body", False), ("html_body", True))


def as_utc(instant: dt.datetime | None) -> dt.datetime | None:
    """A query-string instant without a UTC offset is read as UTC (not in the database session's zone)."""
    return instant.replace(tzinfo=dt.UTC) if instant and instant.tzinfo is None else instant


def compile_template(text: str, html: bool, field: str) -> None:
    """Compile as the worker will (same sandbox, same cache), or 422 naming the field."""
    try:
        templates.compile_template(text, html=html)
    except templates.RenderError as error:
        raise Invalid(str(error), field) from None


def check_templates(steps: list[dict[str, Any]]) -> None:
    """Every message template of every step (and A/B variant), as steps[i].body / steps[i].variants[j].subject."""
    for i, step in enumerate(steps):
        check_step_templates(step, f"steps[{i}]")


def check_step_templates(step: dict[str, Any], path: str) -> None:
    holders = [(path, step)] + [
        (f"{path}.variants[{j}]", v) for j, v in enumerate(step.get("variants") or [])
    ]
    for holder_path, holder in holders:
        for key, html in TEMPLATE_PARTS:
            if isinstance(holder.get(key), str):
                compile_template(holder[key], html, f"{holder_path}.{key}")


def check_text(value: Any, field: str) -> None:
    """Postgres text and jsonb cannot hold NUL characters: a 422 naming the field, not a database fault."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Invalid("must not contain NUL (\\u0000) characters", field)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, field)
            check_text(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{field}[{i}]")


def checked(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition whose strings Postgres can store and whose templates compile (nothing written otherwise)."""
    check_text(definition, "")
    check_templates(definition["steps"])
    return definition


def checked_step(step: dict[str, Any], index: int) -> dict[str, Any]:
    """One step (new, or the fields a PATCH changes) as `checked` would see it at steps[index]."""
    path = f"steps[{index}]"
    check_text(step, path)
    check_step_templates(step, path)
    return step


def base_definition(sequence: dict[str, Any]) -> dict[str, Any]:
    """A sequence_for_edit row as the definition's top level (without steps)."""
    definition = {
        key: sequence[key]
        for key in ("name", "channel", "settings", "exit_conditions")
        if sequence[key] is not None
    }
    if sequence["description"] is not None:
        definition["description"] = sequence["description"]
    return definition


async def visible_sequence(db: Db, sequence_id: UUID) -> dict[str, Any]:
    return require_row(await fetch_one(db, Q["get_sequence"], {"id": sequence_id}), "sequence", "sequence_id")


async def locked_sequence(db: Db, sequence_id: UUID) -> dict[str, Any]:
    """The sequence row, no other edit of it running until the request's transaction ends; 404 when RLS
    hides it."""
    await fetch_one(db, Q["lock_sequence_edits"], {"id": sequence_id})
    return require_row(
        await fetch_one(db, Q["sequence_for_edit"], {"id": sequence_id}), "sequence", "sequence_id"
    )


async def step_rows(db: Db, sequence_id: UUID) -> list[dict[str, Any]]:
    return await fetch_all(db, Q["list_steps"], {"sequence_id": sequence_id})


async def detail_of(db: Db, sequence_id: UUID) -> SequenceDetail:
    row = await visible_sequence(db, sequence_id)
    return msgspec.convert(row | {"steps": await step_rows(db, sequence_id)}, SequenceDetail)


async def save(db: Db, sequence_id: UUID, definition: dict[str, Any]) -> None:
    """Checked first (nothing is written when a template is broken), then drumbeat_api.update_sequence."""
    await fetch_one(db, Q["update_sequence"], {"id": sequence_id, "definition": Jsonb(checked(definition))})


def without_read_only(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A PUT's definition with the read-only fields of a GET taken out: 409 for a stale `version`, 422 naming
    an identity or state field that differs from the sequence's (id, workspace_id, status, ...). Times are
    the server's and dropped whatever they say: a client may have re-written them (JavaScript keeps
    milliseconds, another zone writes +02:00), and they change nothing either way."""
    if "version" in body and body["version"] != current["version"]:
        raise Conflict(
            f"the sequence changed since it was read (version {body['version']}, now {current['version']}): "
            "read it again and re-apply the edit",
            "version",
        )
    for field in SEQUENCE_READ_ONLY:
        if field in body and body.pop(field) != current[field] and field not in SERVER_TIMES:
            raise Invalid(f"read-only: this sequence's is {current[field]!r}", field)
    for step in body["steps"]:
        for field in STEP_READ_ONLY:
            step.pop(field, None)
    return body


def message_parts(step: dict[str, Any], variant: str | None) -> dict[str, Any]:
    """The step's subject, body and html_body, or those of its A/B variant (what the variant leaves out is the
    step's); 422 naming `variant` when the step has no such variant."""
    parts = {key: step.get(key) for key in ("subject", "body", "html_body")}
    if variant is None:
        return parts
    for candidate in step.get("variants") or []:
        if candidate.get("key") == variant:
            return parts | {key: candidate[key] for key in parts if candidate.get(key) is not None}
    keys = ", ".join(v["key"] for v in step.get("variants") or []) or "none"
    raise Invalid(f"the step has no variant {variant!r} (its variants: {keys})", "variant")


def find_step(rows: list[dict[str, Any]], step_id: UUID) -> dict[str, Any]:
    for row in rows:
        if row["id"] == step_id:
            return row
    raise NotFound("step not found", "step_id")


# ---------------------------------------------------------------------------------------------- controllers

SEQUENCE_PATH = "/{sequence_id:uuid}"


class SequenceController(Controller):
    path = "/sequences"
    tags = ["sequences"]

    @example_response(ex.DRAFT_SEQUENCE)
    @post(
        "/",
        summary="Create a sequence (a draft) from its definition",
        description="The definition (docs/ARCHITECTURE.md): name, description, channel, settings, "
        "exit_conditions and 1 to 100 steps. Everything is checked before anything is written: 422 naming "
        "the field (`steps[1].delay.unit`, `settings.timezone`, `steps[0].body` for a template that does "
        "not compile).",
        status_code=201,
        dependencies={"workspace": Provide(provide_workspace_id)},
    )
    async def create(
        self, db: Db, workspace: WorkspaceId, data: example_body(SequenceDefinitionBody)
    ) -> SequenceDetail:
        definition = checked(msgspec.to_builtins(data))
        sequence_id = await fetch_value(
            db, Q["create_sequence"], {"workspace_id": workspace, "definition": Jsonb(definition)}
        )
        return await detail_of(db, sequence_id)

    @example_response(ex.page(ex.SEQUENCE))
    @get(
        "/",
        summary="List the workspace's sequences, newest first",
        dependencies={"workspace": Provide(provide_workspace_id)},
    )
    async def index(
        self,
        db: Db,
        workspace: WorkspaceId,
        status: Annotated[SequenceStatus | None, QueryParameter(description="Only this status")] = None,
        page: PageNumber = 1,
        page_size: PageSize = 50,
    ) -> SequencePage:
        params = {
            "workspace_id": workspace,
            "status": status,
            "limit": page_size,
            "offset": (page - 1) * page_size,
        }
        rows, total = await paged(db, Q["list_sequences"], Q["count_sequences"], params)
        return Page(msgspec.convert(rows, list[Sequence]), total, page, page_size)

    @example_response(ex.SEQUENCE_DETAIL)
    @get(SEQUENCE_PATH, summary="One sequence with its steps")
    async def detail(self, db: Db, sequence_id: FromPath[UUID]) -> SequenceDetail:
        return await detail_of(db, sequence_id)

    @example_response(ex.REPLACED_SEQUENCE)
    @put(
        SEQUENCE_PATH,
        summary="Replace a sequence's definition (live enrollments follow the edit)",
        description="Steps sent with their `id` are kept (and edited in place), steps without one are new, "
        "live steps left out are removed: an enrollment waiting on a removed step moves to the step that now "
        "follows. Waiting enrollments are re-planned from when their previous step was done, never into the "
        "past. `version` goes up by one. 409 for an archived sequence.",
    )
    async def replace(
        self, db: Db, sequence_id: FromPath[UUID], data: example_body(SequenceReplacementBody)
    ) -> SequenceDetail:
        await locked_sequence(db, sequence_id)
        current = msgspec.to_builtins(await detail_of(db, sequence_id))
        await save(db, sequence_id, without_read_only(msgspec.to_builtins(data), current))
        return await detail_of(db, sequence_id)

    @example_response(ex.EDITED_SEQUENCE)
    @patch(
        SEQUENCE_PATH,
        summary="Change some of a sequence's fields (live enrollments follow the edit)",
        description="As PUT, for the fields given only; `settings` and `exit_conditions` are replaced whole.",
    )
    async def change(
        self, db: Db, sequence_id: FromPath[UUID], data: example_body(SequencePatchBody)
    ) -> SequenceDetail:
        definition = base_definition(await locked_sequence(db, sequence_id))
        definition["steps"] = (await fetch_one(db, Q["step_definitions"], {"id": sequence_id}))["steps"]
        for key, value in msgspec.structs.asdict(data).items():
            if value is UNSET:
                continue
            if value is None:
                definition.pop(key, None)
            else:
                definition[key] = msgspec.to_builtins(value)
        await save(db, sequence_id, definition)
        return await detail_of(db, sequence_id)

    @delete(
        SEQUENCE_PATH,
        summary="Archive a sequence (nothing is deleted)",
        description="As POST /archive: live enrollments are cancelled and every record is kept. Deleting an "
        "archived sequence again changes nothing (204).",
    )
    async def remove(self, db: Db, sequence_id: FromPath[UUID]) -> None:
        if (await locked_sequence(db, sequence_id))["status"] != "archived":
            await fetch_one(db, Q["archive_sequence"], {"id": sequence_id})

    @example_response(ex.SCHEDULED_SEQUENCE)
    @post(
        SEQUENCE_PATH + "/activate",
        summary="Activate a draft or paused sequence (optionally from a start time)",
        description="Message steps need a sender of their channel (422 naming the step otherwise). With "
        "`scheduled_start_at` in the future nothing is sent before it. 409 unless draft or paused.",
        status_code=200,
    )
    async def activate(
        self, db: Db, sequence_id: FromPath[UUID], data: example_body(SequenceActivateBody) = None
    ) -> SequenceDetail:
        start_at = data.scheduled_start_at if data else None
        await fetch_one(db, Q["activate_sequence"], {"id": sequence_id, "start_at": start_at})
        return await detail_of(db, sequence_id)

    @example_response(ex.PAUSED_SEQUENCE)
    @post(
        SEQUENCE_PATH + "/pause",
        summary="Pause an active sequence: every enrollment holds where it is",
        description="409 unless active.",
        status_code=200,
    )
    async def pause(self, db: Db, sequence_id: FromPath[UUID]) -> SequenceDetail:
        await fetch_one(db, Q["pause_sequence"], {"id": sequence_id})
        return await detail_of(db, sequence_id)

    @example_response(ex.SEQUENCE_DETAIL)
    @post(
        SEQUENCE_PATH + "/resume",
        summary="Resume a paused sequence",
        description="Steps that fell due while paused are re-planned from now into their allowed window. "
        "409 unless paused.",
        status_code=200,
    )
    async def resume(self, db: Db, sequence_id: FromPath[UUID]) -> SequenceDetail:
        await fetch_one(db, Q["resume_sequence"], {"id": sequence_id})
        return await detail_of(db, sequence_id)

    @example_response(ex.ARCHIVED_SEQUENCE)
    @post(
        SEQUENCE_PATH + "/archive",
        summary="Archive a sequence: live enrollments are cancelled, every record is kept",
        description="409 when it is archived already.",
        status_code=200,
    )
    async def archive(self, db: Db, sequence_id: FromPath[UUID]) -> SequenceDetail:
        await fetch_one(db, Q["archive_sequence"], {"id": sequence_id})
        return await detail_of(db, sequence_id)

    @example_response(ex.SEQUENCE_COPY)
    @post(
        SEQUENCE_PATH + "/duplicate",
        summary="Copy a sequence as a new draft (same settings and steps, new step ids)",
        status_code=201,
    )
    async def duplicate(
        self, db: Db, sequence_id: FromPath[UUID], data: example_body(SequenceDuplicateBody) = None
    ) -> SequenceDetail:
        name = data.name if data else None
        check_text(name, "name")
        copy_id = await fetch_value(db, Q["duplicate_sequence"], {"id": sequence_id, "name": name})
        return await detail_of(db, copy_id)

    @example_response(ex.SEQUENCE_STATS)
    @get(
        SEQUENCE_PATH + "/stats", summary="Enrollments by status and per-step sends, failures and engagement"
    )
    async def stats(self, db: Db, sequence_id: FromPath[UUID]) -> SequenceStats:
        stats = await fetch_value(db, Q["sequence_stats"], {"id": sequence_id})
        return msgspec.convert(stats, SequenceStats)

    @example_response(ex.SCHEDULE_PREVIEW)
    @get(
        SEQUENCE_PATH + "/preview",
        summary="When each step would run for one contact (a dry run)",
        description="Planned with the dispatcher's calculus in the contact's time zone; each step assumed done "
        "at its planned time and no engagement, so conditions take their no-engagement branch.",
    )
    async def preview(
        self,
        db: Db,
        sequence_id: FromPath[UUID],
        contact_id: Annotated[UUID, QueryParameter(description="A contact of the sequence's workspace")],
        start_at: Annotated[
            dt.datetime | None, QueryParameter(description="Start instead of now (no offset: UTC)")
        ] = None,
    ) -> SchedulePreview:
        params = {"id": sequence_id, "contact_id": contact_id, "start_at": as_utc(start_at)}
        rows = await fetch_all(db, Q["preview_schedule"], params)
        return SchedulePreview(sequence_id, contact_id, msgspec.convert(rows, list[PlannedStep]))


class StepController(Controller):
    path = "/sequences/{sequence_id:uuid}/steps"
    tags = ["sequences"]

    @example_response(ex.STEPS)
    @get("/", summary="A sequence's steps in order")
    async def index(self, db: Db, sequence_id: FromPath[UUID]) -> list[Step]:
        await visible_sequence(db, sequence_id)
        return msgspec.convert(await step_rows(db, sequence_id), list[Step])

    @example_response(ex.STEPS[0])
    @get("/{step_id:uuid}", summary="One step")
    async def detail(self, db: Db, sequence_id: FromPath[UUID], step_id: FromPath[UUID]) -> Step:
        await visible_sequence(db, sequence_id)
        return msgspec.convert(find_step(await step_rows(db, sequence_id), step_id), Step)

    @example_response(ex.NEW_STEP)
    @post(
        "/",
        summary="Add a step (at the end, or at `position`)",
        description="Later steps move down one; conditions that look at or jump to them follow. The new "
        "step's own condition/goto positions are in the new numbering.",
        status_code=201,
    )
    async def create(self, db: Db, sequence_id: FromPath[UUID], data: example_body(StepCreateBody)) -> Step:
        new_step = msgspec.to_builtins(data)
        position = new_step.pop("position", None)
        live_steps = (await visible_sequence(db, sequence_id))["step_count"]  # 404 before any 422
        index = position - 1 if position else live_steps
        params = {"id": sequence_id, "step": Jsonb(checked_step(new_step, index)), "position": position}
        added = await fetch_one(db, Q["add_step"], params)
        return msgspec.convert(find_step(await step_rows(db, sequence_id), added["id"]), Step)

    @example_response(ex.EDITED_STEP)
    @patch(
        "/{step_id:uuid}",
        summary="Change a step (the fields given; null clears one)",
        description="Enrollments waiting on this step are re-planned with its new delay, send_at or window.",
    )
    async def change(
        self, db: Db, sequence_id: FromPath[UUID], step_id: FromPath[UUID], data: example_body(StepPatchBody)
    ) -> Step:
        changes = {
            "else" if attribute == "else_" else attribute: msgspec.to_builtins(value)
            for attribute, value in msgspec.structs.asdict(data).items()
            if value is not UNSET
        }
        await visible_sequence(db, sequence_id)  # 404 naming the sequence before the step
        index = find_step(await step_rows(db, sequence_id), step_id)["position"] - 1
        params = {"id": sequence_id, "step_id": step_id, "changes": Jsonb(checked_step(changes, index))}
        await fetch_one(db, Q["update_step"], params)
        return msgspec.convert(find_step(await step_rows(db, sequence_id), step_id), Step)

    @delete(
        "/{step_id:uuid}",
        summary="Remove a step",
        description="Enrollments waiting on it move to the step that now follows (or end when none is left). "
        "The step stays in the records (deliveries and events point at it). 409 when a condition looks at it.",
    )
    async def remove(self, db: Db, sequence_id: FromPath[UUID], step_id: FromPath[UUID]) -> None:
        await fetch_one(db, Q["remove_step"], {"id": sequence_id, "step_id": step_id})

    @example_response(ex.MESSAGE_PREVIEW)
    @post(
        "/{step_id:uuid}/preview",
        summary="A message step rendered for one contact, as the worker would send it",
        description="With the worker's own sandbox and context (contact, sender, sequence, workspace, the "
        "contact's enrollment in this sequence, unsubscribe_url as a placeholder): subject, text, HTML, and "
        "for SMS the encoding and segment count. `variant` renders an A/B variant. Nothing is sent or saved. A "
        "template that cannot be rendered for this contact is a 422 naming the part (subject, body, html_body).",
        status_code=200,
    )
    async def preview(
        self,
        db: Db,
        sequence_id: FromPath[UUID],
        step_id: FromPath[UUID],
        data: example_body(PreviewRequestBody),
    ) -> MessagePreview:
        await visible_sequence(db, sequence_id)
        step = find_step(await step_rows(db, sequence_id), step_id)
        if step["kind"] not in ("sms", "email"):
            raise Invalid(
                f"a {step['kind']} step sends no message: only sms and email steps render", "step_id"
            )
        parts = message_parts(step, data.variant)
        params = {"sequence_id": sequence_id, "contact_id": data.contact_id, "channel": step["kind"]}
        row = require_row(await fetch_one(db, Q["preview_context"], params), "contact", "contact_id")
        context = row["context"] | {"unsubscribe_url": templates.PREVIEW_UNSUBSCRIBE_URL}
        try:
            rendered = await anyio.to_thread.run_sync(  # user templates: off the event loop
                templates.render_message, parts["subject"], parts["body"] or "", parts["html_body"], context
            )
        except templates.RenderError as error:
            part, _, reason = str(error).partition(": ")
            raise Invalid(reason or str(error), part) from None
        sms = None
        if step["kind"] == "sms":
            sms = SmsCost(
                templates.sms_encoding(rendered.text),
                templates.sms_segments(rendered.text),
                len(rendered.text),
            )
        return MessagePreview(data.variant, rendered.subject, rendered.text, rendered.html, sms)

    @example_response(ex.REORDERED_STEPS)
    @post(
        "/reorder",
        summary="Put the steps in a new order",
        description="`step_ids`: every live step's id, once each. Steps keep their ids, so enrollments keep "
        "their place; conditions follow the steps they look at (422 when one would now look forward).",
        status_code=200,
    )
    async def reorder(
        self, db: Db, sequence_id: FromPath[UUID], data: example_body(StepReorderBody)
    ) -> list[Step]:
        await fetch_one(db, Q["reorder_steps"], {"id": sequence_id, "step_ids": data.step_ids})
        return msgspec.convert(await step_rows(db, sequence_id), list[Step])


route_handlers = [SequenceController, StepController]
