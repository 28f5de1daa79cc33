"""Log lines for the audit events (drumbeat.events) that a transaction wrote: the dispatcher's claim and
record, and the webhooks, read them back with sql/queries/events.sql and log one line per event, with
the ids the event carries and the payload fields that query lets out (never addresses or bodies).

A line's `msg` is the event kind, except where the log speaks of the step or the send rather than the
row: a task created or a message step skipped is a "step_executed" (with its outcome), a failed
delivery a "send_failed", an unsubscribe an "opted_out"."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from app.core.queries import queries

MARK = queries("events")["events_mark"]
WRITTEN = queries("events")["events_written"]

_MESSAGES = {
    "task_created": "step_executed",
    "step_skipped": "step_executed",
    "held": "step_held",
    "failed": "send_failed",
    "unsubscribed": "opted_out",
}
_LEVELS = {
    "started": logging.DEBUG,  # a scheduled enrollment's first step came due: its step line follows
    "failed": logging.WARNING,
    "undelivered": logging.WARNING,
    "delivery_unknown": logging.WARNING,
}
_IDS = (
    "workspace_id",
    "sequence_id",
    "contact_id",
    "enrollment_id",
    "step_id",
    "delivery_id",
    "provider_message_id",
)


def message_for(kind: str) -> str:
    """The log message of an event kind."""
    return _MESSAGES.get(kind, kind)


def wanted(logger: logging.Logger) -> bool:
    """Whether reading the events back is worth a query: nearly all their lines are INFO."""
    return logger.isEnabledFor(logging.INFO)


def log_events(logger: logging.Logger, events: Iterable[Mapping[str, Any]]) -> None:
    """One line per event row of events_written."""
    for event in events:
        level = _LEVELS.get(event["kind"], logging.INFO)
        if logger.isEnabledFor(level):
            logger.log(level, message_for(event["kind"]), extra=_fields(event))


def _fields(event: Mapping[str, Any]) -> dict[str, Any]:
    detail = event["detail"]
    return {key: event[key] for key in _IDS} | {"outcome": _outcome(event["kind"], detail)} | detail


def _outcome(kind: str, detail: Mapping[str, Any]) -> str | None:
    """What a non-message step did (message steps' outcome is their sent / send_failed line)."""
    if kind == "task_created":
        return "task_created"
    if kind == "step_skipped":
        return "skipped"
    if kind != "step_executed":
        return None
    if detail.get("step_kind") == "action":
        return "action_applied"
    return "condition_met" if detail.get("result") else "condition_not_met"
