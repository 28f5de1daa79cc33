"""From the console's HTML forms to the contract's JSON, and from the contract's errors back to the form
field they are about. Forms are flat (delay_value, delay_unit, send_at, ...); the contract names nested
paths (steps[2].delay.unit, p_step.body, settings.quiet_hours.start): an error is shown next to the form
field its path starts with, and always in the page's banner with its full path."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from uuid import UUID

from app.core.errors import DrumbeatError, Invalid

PAGE_SIZE = 50
MESSAGE_KINDS = ("sms", "email")
MANUAL_KINDS = ("call", "manual_email", "linkedin", "task")
STEP_KINDS = (*MESSAGE_KINDS, *MANUAL_KINDS, "condition", "action")
DELAY_UNITS = ("minutes", "hours", "days", "weeks")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CONDITIONS = ("replied", "opened", "clicked", "not_replied", "not_opened", "not_clicked")
# The part of a contract path before the form's own field name.
PATH_PREFIX = re.compile(r"^(p_)?((step|changes|definition)\.|steps\[\d+\]\.?)?")


@dataclasses.dataclass(frozen=True)
class FormErrors:
    """What a refused form shows: the message next to its field (`at`), and the whole error, with its
    full path, in the page's banner. Empty (false) when nothing was refused."""

    fields: dict[str | None, str] = dataclasses.field(default_factory=dict)
    banner: str | None = None

    @classmethod
    def of(cls, error: DrumbeatError) -> FormErrors:
        return cls({form_field(error.field): error.message}, str(error))

    def at(self, name: str) -> str | None:
        return self.fields.get(name)

    def __bool__(self) -> bool:
        return self.banner is not None


def form_field(path: str | None) -> str | None:
    """steps[2].delay.unit -> delay; p_step.body -> body; settings.quiet_hours.start -> quiet_hours."""
    if not path:
        return None
    rest = PATH_PREFIX.sub("", path)
    if rest.startswith("settings."):
        rest = rest[len("settings.") :]
    return re.split(r"[.\[]", rest, maxsplit=1)[0] or None


def page_number(page: Any) -> int:
    try:
        return max(1, min(int(page), 1_000_000))
    except (TypeError, ValueError):
        return 1


def paging(console: Any, page: Any, **filters: Any) -> dict[str, Any]:
    """A list statement's parameters: the console's workspace, the page's limit and offset, and `filters`."""
    number = page_number(page)
    return {
        "workspace_id": console.workspace_id,
        "limit": PAGE_SIZE,
        "offset": (number - 1) * PAGE_SIZE,
    } | filters


def uuid_or_none(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def text(form: dict[str, Any], name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.replace("\r\n", "\n").strip()
    return value or None


def whole_number(form: dict[str, Any], name: str, field: str) -> int | None:
    value = text(form, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"must be a whole number, not {value!r}", field) from None


def step_from_form(form: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """A step of the definition (or, `partial`, the changes of an edit form, which sends every field of
    its step's kind: an emptied field clears it). The kind decides which fields a step has."""
    kind = text(form, "kind")
    if kind not in STEP_KINDS:
        raise Invalid(f"choose a step kind: one of {', '.join(STEP_KINDS)}", "kind")
    step: dict[str, Any] = {} if partial else {"kind": kind}
    step["name"] = text(form, "name")
    value = whole_number(form, "delay_value", "delay")
    step["delay"] = {"value": value or 0, "unit": text(form, "delay_unit") or "days"}
    if kind != "action":
        step["send_at"] = text(form, "send_at")
    if kind in MESSAGE_KINDS:
        step["body"] = text(form, "body")
        if kind == "email":
            step["subject"] = text(form, "subject")
        step["variants"] = variants(form, kind)
    elif kind in MANUAL_KINDS:
        step["task_description"] = text(form, "task_description")
    elif kind == "condition":
        step |= condition(form)
    else:
        tag = text(form, "tag")
        if tag is None:
            raise Invalid("an action step needs a tag to add (other actions: use the API)", "tag")
        step["action"] = {"type": "tag", "tag": tag}
    return step if partial else {key: value for key, value in step.items() if value is not None}


def variants(form: dict[str, Any], kind: str) -> list[dict[str, Any]] | None:
    """A/B: variant A is the step's own text, variant B the form's alternative, half of sends each."""
    body = text(form, "variant_b_body")
    subject = text(form, "variant_b_subject") if kind == "email" else None
    if body is None and subject is None:
        return None
    weight = whole_number(form, "variant_b_weight", "variants") or 50
    alternative = (
        {"key": "B", "weight": weight}
        | ({"body": body} if body else {})
        | ({"subject": subject} if subject else {})
    )
    return [{"key": "A", "weight": max(0, 100 - weight)}, alternative]


def condition(form: dict[str, Any]) -> dict[str, Any]:
    """if <event> of step N [within D days] [on link L, or the link named L]: then / else continue, exit or go
    to a later step."""
    check = {"if": text(form, "condition_if"), "step": whole_number(form, "condition_step", "condition")}
    within = whole_number(form, "condition_within_days", "condition")
    if within:
        check["within"] = {"value": within, "unit": "days"}
    if link := text(form, "condition_link"):
        check["link"] = link
    if link_name := text(form, "condition_link_name"):
        check["link_name"] = link_name
    return {"condition": check, "then": outcome(form, "then"), "else": outcome(form, "else")}


def outcome(form: dict[str, Any], name: str) -> Any:
    chosen = text(form, name) or "continue"
    if chosen.startswith("goto:"):
        return {"goto": whole_number({"n": chosen[5:]}, "n", name)}
    return chosen


def sequence_settings_changes(form: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Name, description and the scheduling settings of the settings form, over the sequence's others
    (sender choice, tracking, max_per_day stay as they were)."""
    settings = dict(settings)
    for key in ("timezone",):
        settings[key] = text(form, key)
    settings["exclude_weekends"] = form.get("exclude_weekends") == "on"
    settings["exclude_holidays"] = form.get("exclude_holidays") == "on"
    quiet = (text(form, "quiet_start"), text(form, "quiet_end"))
    settings["quiet_hours"] = {"start": quiet[0], "end": quiet[1]} if all(quiet) else None
    hours = (text(form, "hours_start"), text(form, "hours_end"))
    days = [day for day in WEEKDAYS if form.get(f"day_{day}") == "on"]
    settings["business_hours"] = (
        {day: {"start": hours[0], "end": hours[1]} for day in days} if all(hours) else None
    )
    return {
        "name": text(form, "name") or "",
        "description": text(form, "description"),
        "settings": {key: value for key, value in settings.items() if value is not None},
    }
