"""Logging: one JSON object per line for machines, a readable one-liner on a terminal.

Lines are events with stable names ("enrolled", "step_executed", "sent", "send_failed", "replied",
"exited", ...) in `msg`, and their facts as fields passed with `extra=` (workspace_id, sequence_id,
enrollment_id, step_id, delivery_id, channel, outcome, ...). Every line written while a request or a
dispatch batch is handled also carries its `correlation_id` (`correlation()` binds it for a block).

What never goes into a line at INFO: credentials (Authorization headers, API keys, JWTs, provider
tokens, passwords), signed link tokens, message bodies and subjects, phone numbers and email addresses.
Callers pass ids and outcomes only; this module cannot tell a secret from an id, so it is their rule.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Libraries that talk too much at INFO, held at WARNING (or the configured level when it is higher):
# pgserver logs every pg_ctl call; psycopg.pool logs each connection it lends and takes back;
# procrastinate logs a start and an end line per job, and the tick alone is a job a second (~170k
# lines a day that say nothing: our own batch lines carry the job id as their correlation id, and
# failed jobs are still logged at ERROR); twilio logs every API request with its headers; uvicorn's
# access log writes the raw path and query string, which carry signed tokens (app/api/access.py
# writes the access line instead, with the route template), httpx (the tests' and bench's client, and
# any library's that uses it) logs every URL it requests, and imapclient logs its protocol traffic (the
# IMAP username with it) and every closed connection.
QUIET_LOGGERS = (
    "pgserver",
    "psycopg.pool",
    "procrastinate",
    "twilio",
    "uvicorn.access",
    "httpx",
    "imapclient",
)

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
# LogRecord attributes that are not `extra=` fields (a blank record has them all), and fields of
# libraries' records that only repeat the message (uvicorn's colored copy of it).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


# --- correlation ids ---------------------------------------------------------------------------------


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def correlation(correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id to every line logged in this block (this thread or task, and the tasks it
    starts). Without an argument: keep the one already bound, else bind a new one."""
    value = correlation_id or current_correlation_id() or new_correlation_id()
    token = _correlation_id.set(value)
    try:
        yield value
    finally:
        _correlation_id.reset(token)


class CorrelationFilter(logging.Filter):
    """Adds the bound correlation id to each record (an explicit `extra={"correlation_id": ...}` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = current_correlation_id()
        return True


# --- formatters --------------------------------------------------------------------------------------


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields that have a value, the correlation id last."""
    found = {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}
    if "correlation_id" in found:
        found["correlation_id"] = found.pop("correlation_id")
    return found


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg", ...fields, "exc"?} on one line; ts is ISO 8601 in UTC."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO sent channel=sms enrollment=... workspace=...`: local time, and field names
    without their `_id` suffix. Other libraries' lines name their logger."""

    def format(self, record: logging.LogRecord) -> str:
        clock = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        source = "" if record.name.startswith("drumbeat") else f"{record.name}: "
        parts = [clock, record.levelname, source + record.getMessage()]
        # What happened first (outcome, channel, counts), then the ids, the correlation id last.
        ordered = sorted(fields(record).items(), key=lambda item: item[0].endswith("_id"))
        parts += [f"{key.removesuffix('_id')}={_text_value(value)}" for key, value in ordered]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    """Containers as JSON; anything else as its text, quoted when it would not read as one token."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    text = str(value)
    plain = text and not any(c.isspace() or c in '="' for c in text)
    return text if plain else json.dumps(text, ensure_ascii=False)


# --- configuration -----------------------------------------------------------------------------------


def resolve_format(log_format: str | None, stream: TextIO) -> str:
    """json or text: as asked, and for auto (or anything else) text when `stream` is a terminal."""
    chosen = (log_format or "auto").lower()
    if chosen in ("json", "text"):
        return chosen
    return "text" if _is_terminal(stream) else "json"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def resolve_level(level: str | None) -> int:
    """The level named (case-insensitive); INFO when none or an unknown one (app/core/settings.py reports it)."""
    name = (level or "INFO").upper()
    return logging.getLevelName(name if name in LEVELS else "INFO")


class DrumbeatHandler(logging.StreamHandler):
    """The handler configure_logging installs (its own class, so that configuring again replaces it)."""


def make_handler(log_format: str, stream: TextIO) -> logging.Handler:
    """A handler writing `log_format` (json or text) lines to `stream`, with correlation ids."""
    handler = DrumbeatHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CorrelationFilter())
    return handler


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """Root logging to stderr in `log_format` (json, text or auto) at `level`, quieting QUIET_LOGGERS.
    Calling it again replaces the handler it installed (other handlers, such as pytest's, stay)."""
    stream = sys.stderr
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, DrumbeatHandler)]:
        root.removeHandler(handler)
    root.addHandler(make_handler(resolve_format(log_format, stream), stream))
    root.setLevel(resolve_level(level))
    quiet_libraries(root.level)


def quiet_libraries(level: int) -> None:
    """QUIET_LOGGERS at WARNING, or at `level` when it is higher."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
