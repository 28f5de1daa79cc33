"""Reservations (docs/ARCHITECTURE.md, "Dispatch protocol"): a claim only reserves its deliveries; each
becomes 'sending' right before its own provider call (start_sending), and a reservation its worker stops
extending goes back to the queue within seconds, never after the delivery lease."""

from __future__ import annotations

import pytest

from tests.sql.worker_calls import as_worker, at, enrollment, record, reserve, set_clock
from tests.support import call

DUE = "2026-11-23 14:00:00Z"


@pytest.fixture
def enrolled(tenant):
    """One contact enrolled in the SMS sequence: its first SMS is due now (DUE)."""
    contact = tenant.contact(first_name="Ada")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    return contact, enrollment_id


def start(conn, start_ids: list, keep: list | None = None) -> list:
    as_worker(conn)
    return conn.execute("SELECT drumbeat.start_sending(%s, %s)", (start_ids, keep or [])).fetchone()[0]


def release_lapsed(conn) -> int:
    as_worker(conn)
    return conn.execute("SELECT drumbeat.release_reservations()").fetchone()[0]


def delivery_status(conn, delivery_id) -> str | None:
    conn.execute("RESET ROLE")
    row = conn.execute("SELECT status FROM drumbeat.deliveries WHERE id = %s", (delivery_id,)).fetchone()
    return row and row[0]


def test_a_reservation_is_not_sent_until_started(conn, enrolled):
    [reserved] = reserve(conn)
    delivery_id = reserved["delivery_id"]
    assert delivery_status(conn, delivery_id) == "reserved"
    # A result for a delivery never started is not recorded: only a started one can have been sent.
    assert record(conn, {"delivery_id": str(delivery_id), "outcome": "sent"}) == 0
    assert delivery_status(conn, delivery_id) == "reserved"
    assert start(conn, [delivery_id]) == [delivery_id]
    assert delivery_status(conn, delivery_id) == "sending"
    assert start(conn, [delivery_id]) == []  # started once only
    assert record(conn, {"delivery_id": str(delivery_id), "outcome": "sent"}) == 1


def test_a_lapsed_reservation_is_claimable_again_within_seconds(conn, enrolled):
    _, enrollment_id = enrolled
    [first] = reserve(conn)
    assert reserve(conn) == []  # reserved: nobody else claims it
    set_clock(conn, "2026-11-23 14:00:09Z")
    assert release_lapsed(conn) == 0  # still inside the 10 s lease
    set_clock(conn, "2026-11-23 14:00:11Z")
    assert release_lapsed(conn) == 1
    assert delivery_status(conn, first["delivery_id"]) is None  # nothing was sent: the row goes
    assert enrollment(conn, enrollment_id)["next_action_at"] == at(DUE)  # keeps its place in the queue
    [again] = reserve(conn)
    assert again["enrollment_id"] == enrollment_id
    assert again["attempt"] == 1  # a lapsed reservation uses no attempt
    # The first worker comes back too late: its reservation is gone and it sends nothing.
    assert start(conn, [first["delivery_id"]]) == []
    assert start(conn, [again["delivery_id"]]) == [again["delivery_id"]]


def test_the_worker_extends_the_reservations_it_still_holds(conn, tenant):
    sequence = tenant.sequence()
    tenant.enroll(sequence, [tenant.contact(first_name="Ada"), tenant.contact(first_name="Bo")])
    first, second = reserve(conn)
    set_clock(conn, "2026-11-23 14:00:08Z")
    # The heartbeat: start the first, keep the second reserved for another lease.
    assert start(conn, [first["delivery_id"]], keep=[second["delivery_id"]]) == [first["delivery_id"]]
    set_clock(conn, "2026-11-23 14:00:15Z")
    assert release_lapsed(conn) == 0
    set_clock(conn, "2026-11-23 14:00:19Z")
    assert release_lapsed(conn) == 1
    assert delivery_status(conn, second["delivery_id"]) is None
    # A started delivery is never released, however long its provider takes: only its lease ends it.
    assert delivery_status(conn, first["delivery_id"]) == "sending"


def test_releasing_named_reservations_returns_them_at_once(conn, enrolled):
    """What a stopping worker does with the reservations it has not started (SIGTERM)."""
    _, enrollment_id = enrolled
    [reserved] = reserve(conn)
    as_worker(conn)
    released = conn.execute(
        "SELECT drumbeat.release_reservations(%s)", ([reserved["delivery_id"]],)
    ).fetchone()
    assert released == (1,)
    assert enrollment(conn, enrollment_id)["next_action_at"] == at(DUE)
    [again] = reserve(conn)
    assert again["enrollment_id"] == enrollment_id


def test_an_opt_out_after_the_claim_stops_the_message(conn, enrolled):
    contact, enrollment_id = enrolled
    [reserved] = reserve(conn)
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (contact,))
    assert start(conn, [reserved["delivery_id"]]) == []
    assert delivery_status(conn, reserved["delivery_id"]) is None
    assert reserve(conn) == []  # the claim decides again: skipped, opted out
    conn.execute("RESET ROLE")
    skipped = conn.execute(
        "SELECT payload->>'reason' FROM drumbeat.events WHERE kind = 'step_skipped' AND enrollment_id = %s",
        (enrollment_id,),
    ).fetchall()
    assert skipped == [("opted_out",)]


def test_a_pause_after_the_claim_stops_the_message_until_resumed(conn, tenant, enrolled):
    _, enrollment_id = enrolled
    [reserved] = reserve(conn)
    tenant.as_owner()
    call(conn, "pause_enrollment", enrollment_id)
    assert start(conn, [reserved["delivery_id"]]) == []
    assert delivery_status(conn, reserved["delivery_id"]) is None
    assert reserve(conn) == []
    tenant.as_owner()
    call(conn, "resume_enrollment", enrollment_id)
    [again] = reserve(conn)
    assert (again["enrollment_id"], again["attempt"]) == (enrollment_id, 1)


def test_a_reply_after_the_claim_stops_the_message(conn, tenant):
    contact = tenant.contact(first_name="Ada", phone="+15551112222")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    [reserved] = reserve(conn)
    as_worker(conn)
    sender = reserved["from_address"]
    assert conn.execute(
        "SELECT drumbeat.inbound_sms(%s, %s, 'Sounds good', 'SMreply1')", (sender, "+15551112222")
    ).fetchone() == ("replied",)
    assert start(conn, [reserved["delivery_id"]]) == []
    assert enrollment(conn, enrollment_id)["status"] == "replied"
    assert reserve(conn) == []
