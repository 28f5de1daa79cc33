"""Fixtures the SQL tests share."""

from __future__ import annotations

import pytest

from tests.sql.factories import new_tenant
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, set_clock


@pytest.fixture
def tenant(conn):
    """A workspace (with an SMS and an email sender) on the SQL clock at Monday 09:00 in New York."""
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    return new_tenant(conn)
