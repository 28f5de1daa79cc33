"""Rendering console pages: Jinja2 templates shipped in the package (app/console/templates), autoescaped,
and the headers every page carries. The Content-Security-Policy lets a page load nothing but this server's
own assets and post forms nowhere else: no CDN, no inline script, no third party ever sees a page."""

from __future__ import annotations

import datetime as dt
import math
import time
import zoneinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from litestar import Response

from app.console.session import CSRF_FIELD

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def local_time(value: dt.datetime | str | None, zone: str | None, style: str = "long") -> str:
    """An instant (or its ISO text, as JSON carries it) as the wall-clock time in `zone`:
    "Mon 7 Dec 2026, 14:05" (style "short": "7 Dec 14:05")."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    try:
        here = value.astimezone(zoneinfo.ZoneInfo(zone or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        here = value.astimezone(dt.UTC)
    if style == "short":
        return f"{here.day} {here:%b %H:%M}"
    return f"{here:%a} {here.day} {here:%b %Y, %H:%M}"


def person(row: dict[str, Any]) -> str:
    """A contact's name, else its email or phone."""
    name = " ".join(part for part in (row.get("first_name"), row.get("last_name")) if part)
    return name or row.get("email") or row.get("phone") or "(no name)"


def query_string(params: dict[str, Any], **changes: Any) -> str:
    """The current filters with `changes` applied, as `?a=b` (empty values left out)."""
    merged = {key: value for key, value in (params | changes).items() if value not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


def pages(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.ChainableUndefined,  # a posted form lacks the fields of other step kinds
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(local=local_time, person=person)
ENVIRONMENT.globals.update(query_string=query_string, pages=pages, CSRF_FIELD=CSRF_FIELD)


def html(template: str, status: int = 200, **context: Any) -> Response[str]:
    """The page; a signed-in one says in Server-Timing how long the server took (session, queries and
    rendering: what bench/console.py measures against the 300 ms target)."""
    body = ENVIRONMENT.get_template(template).render(**context)
    headers = dict(SECURITY_HEADERS)
    if (started := getattr(context.get("console"), "started", None)) is not None:
        headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return Response(body, status_code=status, media_type="text/html", headers=headers)
