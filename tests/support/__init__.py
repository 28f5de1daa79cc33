"""Helpers shared by the tests: acting as a user the way PostgREST does, and reading SQL errors. The
modules beside this one hold the rest of what several test modules use: `api` (the API under test, its
tenants and JWTs), `webhooks` (signed provider requests, a real dispatch), `processes` (`drumbeat` and
`drumbeat worker` as real processes) and `twilio` (a stand-in for Twilio's REST API). Test modules import
helpers from here (or from tests/sql/factories.py, tests/sql/worker_calls.py, tests/log_capture.py),
never from one another or from a conftest.py (tests/test_layers.py checks it)."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager

import psycopg
import pytest


def act_as(conn: psycopg.Connection, user_id: uuid.UUID | str | None, role: str = "authenticated") -> None:
    """Become `role` with JWT claims for `user_id` until the end of the current transaction —
    exactly what PostgREST does before calling a function (SET LOCAL ROLE + request.jwt.claims)."""
    claims = {"role": role} if user_id is None else {"sub": str(user_id), "role": role}
    conn.execute(psycopg.sql.SQL("SET LOCAL ROLE {}").format(psycopg.sql.Identifier(role)))
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def act_as_owner(conn: psycopg.Connection) -> None:
    """Back to the connection's own (superuser) role inside the current transaction."""
    conn.execute("RESET ROLE")
    conn.execute("SELECT set_config('request.jwt.claims', '', true)")


@contextmanager
def raises_sqlstate(sqlstate: str, *, field: str | None = None, match: str | None = None):
    """Expect a database error with this SQLSTATE (and, when given, this field path in its message),
    inside a savepoint so the surrounding test transaction stays usable."""
    with pytest.raises(psycopg.Error) as caught:
        yield caught
    error = caught.value
    assert error.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {error.sqlstate}: {error}"
    message = error.diag.message_primary or ""
    if field is not None:
        assert message.startswith(f"{field}: "), f"expected field {field!r} in {message!r}"
    if match is not None:
        assert match in message, f"expected {match!r} in {message!r}"


@contextmanager
def sql_error(conn: psycopg.Connection, sqlstate: str, *, field: str | None = None, match: str | None = None):
    """`raises_sqlstate` around a savepoint: the failing call is rolled back, the test goes on."""
    with raises_sqlstate(sqlstate, field=field, match=match) as caught, conn.transaction():
        yield caught


def call(conn: psycopg.Connection, function: str, *args):
    """Call a drumbeat_api function with positional arguments; returns all rows."""
    placeholders = ", ".join(["%s"] * len(args))
    return conn.execute(f"SELECT * FROM drumbeat_api.{function}({placeholders})", args).fetchall()


def call_one(conn: psycopg.Connection, function: str, *args):
    """Call a drumbeat_api function returning a scalar."""
    return call(conn, function, *args)[0][0]
