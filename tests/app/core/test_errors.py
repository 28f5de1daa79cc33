"""SQLSTATEs raised by the contract reach Python as domain errors naming the field."""

import uuid

import psycopg
import pytest

from app.core.errors import Conflict, Invalid, NotFound, Unauthenticated, domain_error
from tests.sql.factories import new_tenant
from tests.support import act_as


def _error_of(conn, statement, params=()):
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(statement, params)
    return domain_error(caught.value)


def test_validation_error_keeps_field_and_message(conn):
    act_as(conn, uuid.uuid4())
    error = _error_of(conn, "SELECT drumbeat_api.create_workspace('Acme', 'Mars/Base')")
    assert isinstance(error, Invalid) and error.http_status == 422
    assert error.field == "p_timezone" and error.message.startswith("unknown time zone")


def test_not_found_conflict_and_unauthenticated(conn):
    tenant = new_tenant(conn)
    missing = _error_of(conn, "SELECT drumbeat_api.pause_sequence(%s)", (uuid.uuid4(),))
    assert isinstance(missing, NotFound) and missing.http_status == 404
    sequence = tenant.sequence(activate=False)
    conflict = _error_of(conn, "SELECT drumbeat_api.pause_sequence(%s)", (sequence,))
    assert isinstance(conflict, Conflict) and conflict.field == "status"
    act_as(conn, None)
    anonymous = _error_of(conn, "SELECT drumbeat_api.pause_sequence(%s)", (sequence,))
    assert isinstance(anonymous, Unauthenticated) and anonymous.http_status == 401


def test_a_real_fault_is_not_a_domain_error(conn):
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute("SELECT 1 / 0")
    assert domain_error(caught.value) is None
