"""Request ids and the access log.

Every HTTP request gets an id: the caller's `X-Request-ID` when it is a sane short token (a proxy's or
a client's, so their logs and ours meet), else a new one. It is echoed in the response's X-Request-ID
and is the correlation id of every line logged while the request is handled.

The access line ("request") names the route template (`/t/c/{token}`), never the raw path or the
query string: webhook paths carry signed tokens and query strings may carry anything. uvicorn's own
access log, which writes both, is held at WARNING (app/core/logs.py), so this line replaces it. No
request header is logged either (the Authorization header carries the API key or JWT); only the
request id is read, and kept only when it is a sane token. tests/app/api/test_credentials_not_logged.py
holds every logged line, the API server's included, to that."""

from __future__ import annotations

import logging
import re
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logs import correlation, new_correlation_id

log = logging.getLogger("drumbeat.access")
HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Probes and scrapes: every few seconds, all day; at DEBUG so that they do not drown the rest.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is a sane token (letters, digits, . _ : -, at most 128), else new."""
    for name, value in scope["headers"]:
        if name == HEADER.encode():
            incoming = value.decode("latin-1")
            return incoming if _SANE_ID.fullmatch(incoming) else new_correlation_id()
    return new_correlation_id()


def with_request_context(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app: each HTTP request runs under its request id, answers it in X-Request-ID and
    ends with one access line. Wrap the whole app, not a route: 404s and 405s need an id too."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        with correlation(request_id(scope)) as rid:

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = [*message.get("headers", []), (HEADER.encode(), rid.encode())]
                    message = {**message, "headers": headers}
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                _access_line(scope, status, time.perf_counter() - started)

    return middleware


def _access_line(scope: Scope, status: int, seconds: float) -> None:
    route = scope.get("path_template") or "unmatched"  # set by Litestar's router when a route matched
    level = logging.DEBUG if route in _QUIET_ROUTES else logging.INFO
    log.log(
        level,
        "request",
        extra={
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        },
    )
