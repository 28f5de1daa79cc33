"""The one gateway from database errors to Drumbeat's domain errors. SQL functions raise named
SQLSTATEs (PT401/403/404/409/422, the codes PostgREST turns into HTTP statuses for Supabase callers);
the API maps these domain errors to the same HTTP statuses for its own callers."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass
class DrumbeatError(Exception):
    """An error the caller can act on: `field` names the offending input path, e.g. steps[2].delay.unit."""

    message: str
    field: str | None = None
    http_status: int = 400
    code: str = "bad_request"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Unauthenticated(DrumbeatError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field, 401, "unauthenticated")


class Forbidden(DrumbeatError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field, 403, "forbidden")


class NotFound(DrumbeatError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field, 404, "not_found")


class Conflict(DrumbeatError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field, 409, "conflict")


class NotConfigured(DrumbeatError):
    """This server lacks a setting the request needs (a webhook's verification secret, the key that encrypts
    stored passwords): 503, not a 500."""

    def __init__(self, message: str):
        super().__init__(message, None, 503, "not_configured")


class Invalid(DrumbeatError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field, 422, "invalid")


BY_SQLSTATE: dict[str, type[DrumbeatError]] = {
    "PT401": Unauthenticated,
    "PT403": Forbidden,
    "PT404": NotFound,
    "PT409": Conflict,
    "PT422": Invalid,
    "23505": Conflict,  # unique violation: a duplicate
    "23514": Invalid,  # check violation: an invariant of the data model
    "23503": NotFound,  # foreign key: the referenced row does not exist (for this tenant)
    "42501": Forbidden,  # insufficient privilege / RLS refused the row
    # Data exceptions: a value Postgres cannot hold or read (out of range, a NUL in JSON text, a bad date).
    "22001": Invalid,  # string too long
    "22003": Invalid,  # numeric value out of range
    "22007": Invalid,  # invalid datetime format
    "22008": Invalid,  # datetime field overflow
    "22023": Invalid,  # invalid parameter value
    "22P02": Invalid,  # invalid text representation
    "22P05": Invalid,  # untranslatable character (\u0000 in JSON)
}


def domain_error(error: psycopg.Error) -> DrumbeatError | None:
    """The domain error for a database error, or None for a real fault (a bug or an outage)."""
    kind = BY_SQLSTATE.get(error.sqlstate or "")
    if kind is None:
        return None
    field = error.diag.column_name
    message = error.diag.message_primary or str(error)
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    return kind(message, field)
