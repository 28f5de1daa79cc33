"""app/core/event_log.py: the events a transaction wrote are read back (its own only, never another
transaction's, never a payload's address or body) and become one line each."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core import event_log
from tests.log_capture import captured_logs
from tests.sql.factories import new_tenant

log = logging.getLogger("drumbeat.test")


def insert_event(conn: psycopg.Connection, workspace_id, kind: str, payload: dict) -> None:
    conn.execute(
        "INSERT INTO drumbeat.events (workspace_id, kind, enrollment_id, payload) VALUES (%s, %s, %s, %s)",
        (workspace_id, kind, uuid.uuid4(), Jsonb(payload)),
    )


@pytest.fixture
def workspace_id(db_url):
    with psycopg.connect(db_url) as conn:
        workspace = new_tenant(conn, with_sender=False).workspace_id
        conn.commit()
    return workspace


def test_only_this_transactions_events_are_read_back(db_url, workspace_id):
    with (
        psycopg.connect(db_url, row_factory=dict_row) as mine,
        psycopg.connect(db_url, autocommit=True) as other,
    ):
        mine.execute("SET ROLE drumbeat_worker")
        mark = mine.execute(event_log.MARK).fetchone()["mark"]
        insert_event(other, workspace_id, "replied", {})  # committed meanwhile, after the mark
        insert_event(mine, workspace_id, "exited", {"to": "replied", "exit_reason": "replied"})
        written = mine.execute(event_log.WRITTEN, {"mark": mark}).fetchall()
        mine.rollback()
    assert [(row["kind"], row["workspace_id"], row["detail"]) for row in written] == [
        ("exited", str(workspace_id), {"status": "replied", "exit_reason": "replied"})
    ]


def test_a_transaction_that_wrote_nothing_reads_nothing_and_spends_no_transaction_id(db_url):
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        conn.execute("SET ROLE drumbeat_worker")
        assert conn.execute(event_log.WRITTEN, {"mark": 0}).fetchall() == []
        assert conn.execute("SELECT pg_current_xact_id_if_assigned() AS xid").fetchone()["xid"] is None


def test_payload_addresses_and_bodies_stay_in_the_database(db_url, workspace_id):
    inbound = {"channel": "sms", "from": "+15550101234", "to": "+15550100000", "body": "call me", "url": "x"}
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        mark = conn.execute(event_log.MARK).fetchone()["mark"]
        insert_event(conn, workspace_id, "replied", inbound)
        [row] = conn.execute(event_log.WRITTEN, {"mark": mark}).fetchall()
        conn.rollback()
    assert row["detail"] == {"channel": "sms"}


def event(kind: str, **detail) -> dict:
    """A row as events_written returns it."""
    ids = ("workspace_id", "sequence_id", "contact_id", "enrollment_id", "step_id", "delivery_id")
    row = dict.fromkeys(ids) | {"provider_message_id": None, "enrollment_id": "e-1", "workspace_id": "w-1"}
    return {"kind": kind, **row, "detail": detail}


@pytest.mark.parametrize(
    ("row", "msg", "level", "outcome"),
    [
        (event("step_executed", step_kind="action", action="tag"), "step_executed", "INFO", "action_applied"),
        (
            event("step_executed", step_kind="condition", result=True),
            "step_executed",
            "INFO",
            "condition_met",
        ),
        (
            event("step_executed", step_kind="condition", result=False),
            "step_executed",
            "INFO",
            "condition_not_met",
        ),
        (event("task_created", task_id="t-1"), "step_executed", "INFO", "task_created"),
        (event("step_skipped", reason="opted_out"), "step_executed", "INFO", "skipped"),
        (event("held", reason="sender_rate"), "step_held", "INFO", None),
        (event("sent", channel="sms"), "sent", "INFO", None),
        (event("failed", error_code="21211"), "send_failed", "WARNING", None),
        (event("unsubscribed", channel="sms"), "opted_out", "INFO", None),
        (event("exited", status="replied"), "exited", "INFO", None),
        (event("delivery_unknown"), "delivery_unknown", "WARNING", None),
    ],
)
def test_each_event_is_one_line_named_for_what_happened(row, msg, level, outcome):
    with captured_logs() as captured:
        event_log.log_events(log, [row])
    [line] = captured.lines()
    assert (line["msg"], line["level"], line.get("outcome")) == (msg, level, outcome)
    assert (line["enrollment_id"], line["workspace_id"]) == ("e-1", "w-1")
    assert row["detail"].items() <= line.items()


def test_a_scheduled_enrollment_starting_is_a_debug_line():
    with captured_logs() as captured:
        event_log.log_events(log, [event("started", status="active")])
    assert captured.lines() == []
    with captured_logs(logging.DEBUG) as captured:
        event_log.log_events(log, [event("started", status="active")])
    assert [line["msg"] for line in captured.lines()] == ["started"]
