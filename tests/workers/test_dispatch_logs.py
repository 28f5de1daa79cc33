"""What a dispatch batch logs, against a real database: a line per send and per executed step with the
ids the audit events carry, all under the batch's correlation id, and never the message, the address or
the provider's error text."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from app.core import event_log
from app.core.logs import correlation
from tests.log_capture import captured_logs
from tests.sql.factories import new_tenant, sms_sequence
from workers.dispatcher import Dispatcher
from workers.transports import Message, OutboxTransport, SendResult

NOW = "2026-11-23 14:00Z"  # Monday
MARKER = "MARKER-7f3c"  # in every message body: it must never reach the log
PHONES = ["+15550107001", "+15550107002"]


def sms(body: str = f"{MARKER} hi {{{{ contact.first_name }}}}", **more) -> dict:
    return {"kind": "sms", "body": body, **more}


def enroll(db_url: str, steps: list[dict], contacts: list[dict], *, opted_out: bool = False) -> uuid.UUID:
    """A workspace whose sequence of `steps` is due now for `contacts`; returns the sequence id."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        sequence = tenant.sequence(sms_sequence(steps=steps, settings={"timezone": "UTC"}))
        tenant.enroll(sequence, tenant.contacts(*contacts))
        if opted_out:  # after enrolling (enroll refuses opted-out contacts): the step will be skipped
            conn.execute("RESET ROLE")
            conn.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now()")
        conn.commit()
    return sequence


@pytest.fixture
def worker_conn(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        yield conn


@pytest.fixture
def outbox(db_url):
    transport = OutboxTransport(db_url)
    yield {"sms": transport, "email": transport}
    transport.close()


def rows(db_url: str, query: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def test_each_send_is_logged_with_its_ids_under_the_batch_correlation_id(db_url, worker_conn, outbox):
    contacts = [{"phone": phone, "first_name": "Zebulon"} for phone in PHONES]
    enroll(db_url, [sms(), sms(delay={"value": 1, "unit": "days"})], contacts)
    with captured_logs() as captured:
        assert Dispatcher(worker_conn, outbox).run_once() == 2
    deliveries = rows(
        db_url,
        """SELECT id::text, workspace_id::text, sequence_id::text, enrollment_id::text, step_id::text,
                  provider_message_id FROM drumbeat.deliveries ORDER BY id""",
    )
    sent = sorted(captured.named("sent"), key=lambda line: line["delivery_id"])
    assert [
        (
            line["delivery_id"],
            line["workspace_id"],
            line["sequence_id"],
            line["enrollment_id"],
            line["step_id"],
            line["provider_message_id"],
        )
        for line in sent
    ] == deliveries
    assert {(line["channel"], line["attempt"], line["level"]) for line in sent} == {("sms", 1, "INFO")}
    [batch] = captured.named("batch_dispatched")
    assert (batch["deliveries"], batch["sent"], batch["failed"]) == (2, 2, 0)
    assert len({line["correlation_id"] for line in captured.lines()}) == 1
    for secret in (MARKER, "Zebulon", *PHONES):
        assert secret not in captured.text


def test_steps_that_send_nothing_are_logged_with_their_outcome(db_url, worker_conn, outbox):
    flow = [
        sms(),
        {"kind": "action", "action": {"type": "tag", "tag": "warm"}},
        {
            "kind": "condition",
            "condition": {"if": "not_replied", "step": 1},
            "then": "exit",
            "else": "continue",
        },
        sms(),
    ]
    flow_sequence = enroll(db_url, flow, [{"phone": PHONES[0]}])
    enroll(db_url, [{"kind": "call", "task_description": "Call them"}], [{"phone": PHONES[1]}])
    dispatcher = Dispatcher(worker_conn, outbox)
    with captured_logs() as captured:
        # The first batch sends step 1 and opens the call's task; the second runs the action and condition.
        assert [dispatcher.run_once(), dispatcher.run_once()] == [1, 0]
    steps = {line["outcome"]: line for line in captured.named("step_executed")}
    assert set(steps) == {"action_applied", "condition_met", "task_created"}
    assert steps["action_applied"]["action"] == "tag"
    assert steps["condition_met"]["branch"] == "exit"
    [(task_id, enrollment_id, step_id, sequence_id)] = rows(
        db_url,
        """SELECT t.id::text, t.enrollment_id::text, t.step_id::text, e.sequence_id::text
           FROM drumbeat.tasks t JOIN drumbeat.enrollments e ON e.id = t.enrollment_id""",
    )
    task = steps["task_created"]
    assert (task["task_id"], task["enrollment_id"], task["step_id"], task["sequence_id"]) == (
        task_id,
        enrollment_id,
        step_id,
        sequence_id,
    )
    [completed] = captured.named("completed")
    assert completed["exit_reason"] == "condition_exit" and completed["sequence_id"] == str(flow_sequence)
    assert PHONES[0] not in captured.text and PHONES[1] not in captured.text


def test_a_skipped_step_says_why(db_url, worker_conn, outbox):
    enroll(db_url, [sms(), sms(delay={"value": 1, "unit": "days"})], [{"phone": PHONES[0]}], opted_out=True)
    with captured_logs() as captured:
        Dispatcher(worker_conn, outbox).run_once()
    [skipped] = captured.named("step_executed")
    assert (skipped["outcome"], skipped["reason"], skipped["channel"]) == ("skipped", "opted_out", "sms")


def test_a_failed_send_and_the_exit_it_causes_are_logged_without_the_error_text(db_url, worker_conn, outbox):
    enroll(db_url, [sms(body=f"{MARKER} {{{{ contact.fields.plan }}}}")], [{"phone": PHONES[0]}])
    with captured_logs() as captured:
        Dispatcher(worker_conn, outbox).run_once()
    [failed] = captured.named("send_failed")
    assert (failed["level"], failed["error_code"], failed["channel"]) == ("WARNING", "render_error", "sms")
    [exited] = captured.named("exited")
    assert (exited["status"], exited["exit_reason"]) == ("failed", "send_failed: render_error")
    assert exited["enrollment_id"] == failed["enrollment_id"]
    assert "plan" not in captured.text and MARKER not in captured.text


class DownProvider:
    name = "down"
    concurrent = False

    def send(self, message: Message) -> SendResult:
        raise ConnectionError(f"cannot reach the provider for {message.to_address}: {message.text}")


def test_a_transport_fault_names_its_type_not_its_text(db_url, worker_conn):
    enroll(db_url, [sms()], [{"phone": PHONES[0]}])
    with captured_logs() as captured:
        Dispatcher(worker_conn, {"sms": DownProvider()}).run_once()
    [fault] = captured.named("transport_error")
    assert (fault["transport"], fault["error_type"], fault["channel"]) == ("down", "ConnectionError", "sms")
    [unknown] = captured.named("delivery_unknown")  # it may have gone out: never resent
    assert unknown["level"] == "WARNING" and unknown["enrollment_id"]
    assert PHONES[0] not in captured.text and MARKER not in captured.text


def test_lines_carry_the_correlation_id_already_bound(db_url, worker_conn, outbox):
    enroll(db_url, [sms()], [{"phone": PHONES[0]}])
    with captured_logs() as captured, correlation("job-42"):
        Dispatcher(worker_conn, outbox).run_once()
    assert {line["correlation_id"] for line in captured.lines()} == {"job-42"}
    assert {line["msg"] for line in captured.lines()} == {"sent", "completed", "batch_dispatched"}


def test_with_info_off_no_event_is_read_back(db_url, worker_conn, outbox, monkeypatch):
    enroll(db_url, [sms()], [{"phone": PHONES[0]}])
    statements: list[str] = []
    fetch = Dispatcher._fetch
    monkeypatch.setattr(
        Dispatcher,
        "_fetch",
        lambda self, sql, params=None: statements.append(sql) or fetch(self, sql, params),
    )
    with captured_logs(logging.WARNING) as captured:
        assert Dispatcher(worker_conn, outbox).run_once() == 1
    assert captured.text == ""
    assert statements and event_log.MARK not in statements and event_log.WRITTEN not in statements


def test_deliveries_recovered_after_their_lease_are_logged(db_url, worker_conn, outbox):
    enroll(db_url, [sms()], [{"phone": PHONES[0]}])
    dispatcher = Dispatcher(worker_conn, outbox)
    # claimed and started, never recorded
    dispatcher.conn.execute(
        "SELECT drumbeat.start_sending(array_agg(delivery_id)) FROM drumbeat.claim_due(10)"
    )
    worker_conn.execute("SELECT set_config('drumbeat.clock', '2026-11-23 14:30Z', false)")
    with captured_logs() as captured:
        assert dispatcher.recover("10 minutes") == 1
    [unknown] = captured.named("delivery_unknown")
    [(delivery_id,)] = rows(db_url, "SELECT id::text FROM drumbeat.deliveries WHERE status = 'unknown'")
    assert unknown["level"] == "WARNING" and unknown["delivery_id"] == delivery_id
