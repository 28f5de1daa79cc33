"""One error shape for every 4xx/5xx: {"error": {"code", "message", "field"}}. Domain errors (from the SQL
functions' SQLSTATEs, through app/core/errors.py) keep their status; request validation is a 422 naming the
field; an unexpected fault is a 500 that says nothing about internals (it is logged)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app.core.errors import DrumbeatError
from app.core.validation import sql_field

log = logging.getLogger("drumbeat.api")


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


@asynccontextmanager
async def contract_fields(body: str | None = None) -> AsyncIterator[None]:
    """Errors of the contract functions name their own arguments (p_contacts[0].email, p_changes.phone,
    p_role): reported with the request's field names (email, phone, role). `body` names the JSON argument
    the endpoint builds from its request body's own members (a sender's settings, a mailbox): a field
    inside it is named as the body names it (p_settings.daily_cap -> daily_cap)."""
    try:
        yield
    except DrumbeatError as error:
        if body and error.field and error.field.removeprefix("p_").startswith(body + "."):
            error.field = error.field.removeprefix("p_").removeprefix(body + ".")
        elif error.field and error.field.startswith(("p_", "contacts[", "changes.")):
            error.field = sql_field(error.field)
        raise


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(ErrorBody(ErrorDetail(code, message, field)), status_code=status, headers=headers)


def on_domain_error(_: Request, error: DrumbeatError) -> Response[ErrorBody]:
    return error_response(error.http_status, error.code, error.message, error.field)


def on_validation_error(_: Request, error: ValidationException) -> Response[ErrorBody]:
    """msgspec / Litestar parameter validation: the first problem, with its field path (body.x.y -> x.y)."""
    problems: list[dict[str, Any]] = error.extra if isinstance(error.extra, list) else []
    first = problems[0] if problems else {}
    message = str(first.get("message") or error.detail)
    if message == "'data'":  # Litestar's words for a request without the body the handler needs
        return error_response(422, "invalid", "a JSON request body is required")
    return error_response(422, "invalid", message, _field_path(first.get("key"), message))


# msgspec names an unknown or missing member in its message, with the path of the object holding it;
# Litestar names a missing parameter in its message only.
_MEMBER = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
_PARAMETER = re.compile(r"parameter '([^']+)'")


def _field_path(key: Any, message: str) -> str | None:
    """`steps[2].colour` for an unknown member of the third step; `page` for a missing query parameter."""
    path = (
        key[2:] if isinstance(key, str) and key.startswith("$.") else (None if key in ("$", "data") else key)
    )
    if member := _MEMBER.search(message):
        return f"{path}.{member.group(1)}" if path else member.group(1)
    if path is None and (parameter := _PARAMETER.search(message)):
        return parameter.group(1)
    return path


CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def on_http_error(request: Request, error: HTTPException) -> Response[ErrorBody]:
    """Litestar's and our own HTTP errors, with their headers (429's Retry-After, 405's Allow)."""
    status = error.status_code
    if status >= 500:
        log.error("HTTP %s: %s", status, error.detail)
        return error_response(status, "internal_error", "internal error")
    message = body_too_large(request) if isinstance(error, RequestEntityTooLarge) else str(error.detail)
    return error_response(status, CODES.get(status, "error"), message, headers=error.headers)


def body_too_large(request: Request) -> str:
    """Litestar says only "Request Entity Too Large": name the limit of the route that refused the body."""
    limit = request.route_handler.resolve_request_max_body_size()
    return f"the request body is larger than this endpoint's limit of {limit} bytes{_in_units(limit)}"


def _in_units(size: int | None) -> str:
    """` (1 MiB)` for a whole number of KiB, MiB or GiB, else nothing."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size and size >= factor and size % factor == 0:
            return f" ({size // factor} {unit})"
    return ""


def on_unexpected(request: Request, error: Exception) -> Response[ErrorBody]:
    # The route template, not the path: webhook paths carry signed tokens (app/api/access.py).
    route = request.scope.get("path_template") or "unmatched"
    log.exception("unhandled_error", extra={"method": request.method, "route": route}, exc_info=error)
    return error_response(500, "internal_error", "internal error")


EXCEPTION_HANDLERS = {
    DrumbeatError: on_domain_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
