"""The dispatch protocol in SQL (claim / record / recover), driven as the worker role with the SQL clock."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, at, claim, enrollment, record, set_clock
from tests.support import call, sql_error


@pytest.fixture
def enrolled(tenant):
    """One contact enrolled in the SMS sequence: its first SMS is due now."""
    sequence = tenant.sequence()
    contact = tenant.contact(first_name="Ada")
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [contact])
    return sequence, contact, enrollment_id


def test_claim_returns_each_due_message_once(conn, enrolled):
    _, _, enrollment_id = enrolled
    [delivery] = claim(conn)
    assert delivery["enrollment_id"] == enrollment_id and delivery["channel"] == "sms"
    assert delivery["attempt"] == 1 and delivery["idempotency_key"].endswith(":1")
    assert delivery["body"] == "Hi {{ contact.first_name }}"  # rendering is the worker's job
    assert delivery["context"]["contact"]["first_name"] == "Ada"
    assert delivery["from_address"] == delivery["context"]["sender"]["address"]
    assert claim(conn) == []
    assert enrollment(conn, enrollment_id)["next_action_at"] is None


def test_recorded_send_moves_to_the_next_step(conn, tenant, enrolled):
    _, _, enrollment_id = enrolled
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.workspaces SET sms_credits = 10 WHERE id = %s", (tenant.workspace_id,))
    [delivery] = claim(conn)
    result = {
        "delivery_id": str(delivery["delivery_id"]),
        "outcome": "sent",
        "provider_message_id": "SM1",
        "segments": 2,
        "body": "Hi Ada",
    }
    assert record(conn, result) == 1
    assert record(conn, result) == 0  # recording twice changes nothing
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["position"]) == ("active", 2)
    assert state["next_action_at"] == at("2026-11-25 15:00Z")  # two days later, 10:00 New York
    sent = conn.execute(
        "SELECT status, body, segments FROM drumbeat.deliveries WHERE id = %s", (delivery["delivery_id"],)
    ).fetchone()
    assert sent == ("sent", "Hi Ada", 2)
    assert conn.execute(
        "SELECT sms_credits FROM drumbeat.workspaces WHERE id = %s", (tenant.workspace_id,)
    ).fetchone() == (8,)


def test_transient_errors_retry_then_fail(conn, enrolled):
    _, _, enrollment_id = enrolled
    for attempt, retry_at in [(1, "2026-11-23 14:01Z"), (2, "2026-11-23 14:05Z")]:
        [delivery] = claim(conn)
        assert delivery["attempt"] == attempt
        record(
            conn,
            {
                "delivery_id": str(delivery["delivery_id"]),
                "outcome": "failed",
                "transient": True,
                "error_code": "429",
            },
        )
        state = enrollment(conn, enrollment_id)
        assert (state["attempt"], state["next_action_at"]) == (attempt + 1, at(retry_at))
        assert claim(conn) == []  # not before the backoff
        set_clock(conn, retry_at)
    [delivery] = claim(conn)
    record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "failed", "transient": True})
    assert enrollment(conn, enrollment_id)["status"] == "failed"


def test_retry_moves_into_the_allowed_window(conn, enrolled):
    set_clock(conn, "2026-11-24 01:59:30Z")  # 20:59:30 in New York, just before SMS quiet hours
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.enrollments SET next_action_at = '2026-11-24 01:59Z'")
    [delivery] = claim(conn)
    record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "failed", "transient": True})
    assert enrollment(conn, enrolled[2])["next_action_at"] == at("2026-11-24 13:00Z")  # 08:00 next morning


@pytest.mark.parametrize(
    ("code", "status", "reason", "opted_out"),
    [
        ("21211", "bounced", "bounced", False),  # no such number: a bounce (on_bounce: exit)
        ("21612", "failed", "send_failed: 21612", False),  # cannot route there: not the number's fault
        ("21610", "unsubscribed", "carrier_opt_out", True),
    ],
)
def test_permanent_errors_end_the_enrollment(conn, enrolled, code, status, reason, opted_out):
    _, contact, enrollment_id = enrolled
    [delivery] = claim(conn)
    record(
        conn,
        {
            "delivery_id": str(delivery["delivery_id"]),
            "outcome": "failed",
            "transient": False,
            "error_code": code,
        },
    )
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["exit_reason"]) == (status, reason)
    assert conn.execute(
        "SELECT sms_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s", (contact,)
    ).fetchone() == (opted_out,)


def test_expired_lease_becomes_unknown_and_is_never_resent(conn, enrolled):
    _, _, enrollment_id = enrolled
    [delivery] = claim(conn)
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.recover_deliveries('10 minutes')").fetchone() == (0,)
    set_clock(conn, "2026-11-23 14:11Z")
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.recover_deliveries('10 minutes')").fetchone() == (1,)
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT status FROM drumbeat.deliveries WHERE id = %s", (delivery["delivery_id"],)
    ).fetchone() == ("unknown",)
    assert enrollment(conn, enrollment_id)["position"] == 2
    assert conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = 'delivery_unknown'"
    ).fetchone() == (1,)
    assert record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent"}) == 0


def test_opted_out_contact_is_skipped_without_a_delivery(conn, tenant, enrolled):
    _, contact, enrollment_id = enrolled
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (contact,))
    assert claim(conn) == []
    assert enrollment(conn, enrollment_id)["position"] == 2
    reason = conn.execute(
        "SELECT payload->>'reason' FROM drumbeat.events WHERE kind = 'step_skipped'"
    ).fetchone()
    assert reason == ("opted_out",)


def test_manual_step_opens_a_task_and_waits(conn, tenant):
    sequence = tenant.sequence(
        sms_sequence(steps=[{"kind": "call", "name": "Intro call", "task_description": "Ask"}])
    )
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    assert claim(conn) == []
    conn.execute("RESET ROLE")
    task = conn.execute(
        "SELECT id, title, status FROM drumbeat.tasks WHERE enrollment_id = %s", (enrollment_id,)
    ).fetchone()
    assert task[1:] == ("Intro call", "pending")
    assert enrollment(conn, enrollment_id)["next_action_at"] is None
    assert claim(conn) == []  # waiting, not due
    tenant.as_owner()
    call(conn, "complete_task", task[0], "connected", None)
    assert enrollment(conn, enrollment_id)["status"] == "completed"


@pytest.mark.parametrize(("replied", "positions"), [(True, "exit"), (False, 4)])
def test_condition_branches_on_engagement(conn, tenant, replied, positions):
    steps = [
        SMS_SEQUENCE["steps"][0],
        {"kind": "condition", "condition": {"if": "replied", "step": 1}, "then": "exit", "else": {"goto": 4}},
        {"kind": "sms", "body": "never sent"},
        {"kind": "action", "action": {"type": "tag", "tag": "no-reply"}},
        {"kind": "sms", "delay": {"value": 1, "unit": "days"}, "body": "Last try"},
    ]
    sequence = tenant.sequence(sms_sequence(steps=steps, exit_conditions={"on_reply": False}))
    contact = tenant.contact()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [contact])
    [delivery] = claim(conn)
    record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent"})
    if replied:
        tenant.as_owner()
        call(conn, "record_event", contact, "replied", Jsonb({}))
    assert claim(conn) == []  # the condition and the action ran inside the claim; the last SMS waits a day
    state = enrollment(conn, enrollment_id)
    if positions == "exit":
        assert (state["status"], state["exit_reason"]) == ("completed", "condition_exit")
    else:
        assert (state["status"], state["position"]) == ("active", 5)
        assert conn.execute("SELECT tags FROM drumbeat.contacts WHERE id = %s", (contact,)).fetchone() == (
            ["no-reply"],
        )


def test_paused_sequences_and_future_starts_are_not_claimed(conn, tenant):
    paused = tenant.sequence()
    tenant.enroll(paused, [tenant.contact()])
    call(conn, "pause_sequence", paused)
    later = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(later, [tenant.contact()], start_at=at("2026-11-24 14:00Z"))
    assert claim(conn) == []
    set_clock(conn, "2026-11-24 14:00Z")
    [delivery] = claim(conn)
    assert delivery["enrollment_id"] == enrollment_id
    assert enrollment(conn, enrollment_id)["status"] == "active"


def test_variants_are_weighted_and_stable_per_enrollment(conn, tenant):
    step = {
        **SMS_SEQUENCE["steps"][0],
        "variants": [
            {"key": "A", "weight": 1, "body": "Hello A"},
            {"key": "B", "weight": 3, "body": "Hello B"},
        ],
    }
    sequence = tenant.sequence(sms_sequence(steps=[step]))
    tenant.enroll(sequence, [tenant.contact() for _ in range(40)])
    deliveries = claim(conn)
    assert {d["variant"] for d in deliveries} == {"A", "B"}
    assert all(d["body"] == f"Hello {d['variant']}" for d in deliveries)
    as_worker(conn)
    again = conn.execute(
        "SELECT drumbeat.pick_variant(%s, %s)->>'key'",
        (Jsonb(step["variants"]), deliveries[0]["enrollment_id"]),
    ).fetchone()[0]
    assert again == deliveries[0]["variant"]


def test_only_the_worker_may_claim(conn, tenant):
    tenant.as_owner()
    with sql_error(conn, "42501"):
        conn.execute("SELECT * FROM drumbeat.claim_due(10)")


def test_concurrent_workers_never_claim_the_same_enrollment(db_url):
    with psycopg.connect(db_url, autocommit=True) as setup:
        set_clock(setup, MONDAY_9AM_NEW_YORK)
        with setup.transaction():
            tenant = new_tenant(setup)
            sequence = tenant.sequence()
            tenant.enroll(sequence, [tenant.contact() for _ in range(300)])
    claimed: list[uuid.UUID] = []
    barrier = threading.Barrier(3)

    def worker(wait: bool = True):
        with psycopg.connect(db_url) as conn:
            set_clock(conn, MONDAY_9AM_NEW_YORK)
            if wait:
                barrier.wait()
            while batch := claim(conn, limit=25):
                claimed.extend(d["enrollment_id"] for d in batch)
                conn.commit()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # SKIP LOCKED lets a worker come back empty-handed while another still holds rows it then leaves due
    # (the next tick's work, as in production): one more pass once all are done must find exactly those.
    worker(wait=False)
    assert len(claimed) == 300 and len(set(claimed)) == 300


def _held(conn):
    conn.execute("RESET ROLE")
    return dict(
        conn.execute(
            "SELECT payload->>'reason', count(*) FROM drumbeat.events WHERE kind = 'held' GROUP BY 1"
        )
    )


def test_sender_rate_spreads_sends_over_the_next_seconds(conn, tenant):
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.senders SET rate_per_second = 2 WHERE workspace_id = %s", (tenant.workspace_id,)
    )
    sequence = tenant.sequence()
    tenant.enroll(sequence, [tenant.contact() for _ in range(5)])
    assert len(claim(conn)) == 2
    assert _held(conn) == {"sender_rate": 3}
    waits = conn.execute(
        "SELECT next_action_at FROM drumbeat.enrollments WHERE next_action_at IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert [w for (w,) in waits] == [at("2026-11-23 14:00:01Z")] * 2 + [at("2026-11-23 14:00:02Z")]
    set_clock(conn, "2026-11-23 14:00:01Z")
    assert len(claim(conn)) == 2


def test_max_per_day_holds_the_rest_until_the_next_local_day_window(conn, tenant):
    sequence = tenant.sequence(sms_sequence(settings={"timezone": "America/New_York", "max_per_day": 2}))
    tenant.enroll(sequence, [tenant.contact() for _ in range(3)])
    assert len(claim(conn)) == 2
    assert _held(conn) == {"max_per_day": 1}
    # Next New York day starts at 05:00Z; SMS quiet hours move it to 08:00 New York (13:00Z).
    assert conn.execute("SELECT max(next_action_at) FROM drumbeat.enrollments").fetchone() == (
        at("2026-11-24 13:00Z"),
    )
    set_clock(conn, "2026-11-24 13:00Z")
    assert len(claim(conn)) == 1


def test_sender_daily_cap_counts_the_local_day(conn, tenant):
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.senders SET daily_cap = 1, rate_per_second = 100 WHERE workspace_id = %s",
        (tenant.workspace_id,),
    )
    sequence = tenant.sequence()
    tenant.enroll(sequence, [tenant.contact() for _ in range(2)])
    assert len(claim(conn)) == 1
    assert _held(conn) == {"sender_daily_cap": 1}


def test_sms_credits_hold_sends_instead_of_dropping_them(conn, tenant):
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.workspaces SET sms_credits = 1 WHERE id = %s", (tenant.workspace_id,))
    conn.execute(
        "UPDATE drumbeat.senders SET rate_per_second = 100 WHERE workspace_id = %s", (tenant.workspace_id,)
    )
    sequence = tenant.sequence()
    tenant.enroll(sequence, [tenant.contact() for _ in range(3)])
    assert len(claim(conn)) == 1
    assert _held(conn) == {"no_sms_credits": 2}
    assert conn.execute(
        "SELECT count(*) FROM drumbeat.enrollments WHERE next_action_at = %s", (at("2026-11-23 15:00Z"),)
    ).fetchone() == (2,)


def test_concurrent_claims_never_pass_a_daily_cap_together(db_url):
    """The second claim waits for the first (a lock per capped sequence) and counts its deliveries."""
    with psycopg.connect(db_url, autocommit=True) as setup:
        set_clock(setup, MONDAY_9AM_NEW_YORK)
        with setup.transaction():
            tenant = new_tenant(setup)
            sequence = tenant.sequence(
                sms_sequence(settings={"timezone": "America/New_York", "max_per_day": 2})
            )
            tenant.enroll(sequence, [tenant.contact() for _ in range(4)])
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        for conn in (first, second):
            set_clock(conn, MONDAY_9AM_NEW_YORK)
        assert len(claim(first, limit=2)) == 2  # uncommitted: its deliveries are invisible to others
        outcome: list[int] = []
        waiting = threading.Thread(target=lambda: outcome.append(len(claim(second, limit=2))))
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive(), "the second claim should wait for the first one's cap lock"
        first.commit()
        waiting.join(timeout=10)
        second.commit()
    assert outcome == [0]
    with psycopg.connect(db_url) as check:
        assert check.execute("SELECT count(*) FROM drumbeat.deliveries").fetchone()[0] == 2


BUSINESS_HOURS = {
    day: {"start": "09:00", "end": "17:00"}
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}


def _business_hours_enrollment(conn, tenant) -> None:
    sequence = tenant.sequence(
        sms_sequence(settings={"timezone": "America/New_York", "business_hours": BUSINESS_HOURS})
    )
    tenant.enroll(sequence, [tenant.contact()])


def test_a_step_claimed_after_its_window_closed_waits_for_the_next_window(conn, tenant):
    """Due Monday 09:00 New York; the workers were down until 17:30: not sent at 17:30, held to Tuesday
    09:00 (0023)."""
    _business_hours_enrollment(conn, tenant)
    set_clock(conn, "2026-11-23 22:30Z")  # Monday 17:30 in New York
    assert claim(conn) == []
    assert _held(conn) == {"window_closed": 1}
    assert conn.execute("SELECT next_action_at FROM drumbeat.enrollments").fetchone() == (
        at("2026-11-24 14:00Z"),  # Tuesday 09:00 New York
    )
    set_clock(conn, "2026-11-24 14:00Z")
    assert len(claim(conn)) == 1


def test_a_late_claim_inside_the_window_or_within_the_tolerance_still_sends(conn, tenant):
    _business_hours_enrollment(conn, tenant)  # due Monday 09:00 New York
    set_clock(conn, "2026-11-23 17:00Z")  # three hours late, but 12:00 in New York: the window is open
    assert len(claim(conn)) == 1
    conn.execute("RESET ROLE")
    set_clock(conn, "2026-11-23 21:59Z")  # 16:59 New York
    _business_hours_enrollment(conn, tenant)
    set_clock(conn, "2026-11-23 22:01Z")  # two minutes late, one past the close: within the tolerance
    assert len(claim(conn)) == 1
    assert _held(conn) == {}


def test_a_reply_naming_no_step_counts_for_the_last_message_sent(conn, tenant, enrolled):
    """An inbound SMS reply names only the contact: sequence_stats counts it on the step last sent."""
    sequence, contact, _ = enrolled
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.workspaces SET sms_credits = 10 WHERE id = %s", (tenant.workspace_id,))
    [delivery] = claim(conn)
    record(
        conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SM1"}
    )
    conn.execute("RESET ROLE")
    set_clock(conn, "2026-11-23 15:00Z")  # an hour after the send
    conn.execute("SELECT drumbeat_api.record_event(%s, 'replied', '{}')", (contact,))
    stats = conn.execute("SELECT drumbeat_api.sequence_stats(%s)", (sequence,)).fetchone()[0]
    assert [(step["position"], step["sent"], step["replied"]) for step in stats["steps"]] == [
        (1, 1, 1),
        (2, 0, 0),
        (3, 0, 0),
    ]
    assert stats["steps"][0]["reply_rate"] == 1


def _pause(tenant, enrollment_id) -> None:
    tenant.as_owner()
    call(tenant.conn, "pause_enrollment", enrollment_id)


def _resume(tenant, enrollment_id) -> None:
    tenant.as_owner()
    call(tenant.conn, "resume_enrollment", enrollment_id)


def _deliveries_of(conn, enrollment_id) -> list[tuple]:
    conn.execute("RESET ROLE")
    return conn.execute(
        """SELECT st.position, d.attempt, d.status FROM drumbeat.deliveries d
           JOIN drumbeat.sequence_steps st ON st.id = d.step_id WHERE d.enrollment_id = %s
           ORDER BY d.claimed_at, d.attempt""",
        (enrollment_id,),
    ).fetchall()


def _sent(delivery: dict) -> dict:
    return {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SM1"}


def test_a_step_sent_while_its_enrollment_was_paused_is_not_sent_again_on_resume(conn, tenant, enrolled):
    """Paused while its message was in flight, resumed after the send was recorded: the resumed
    enrollment is due on the same step and attempt, whose delivery exists. It moves on (never a second
    send) instead of staying due and blocking the claims of everyone behind it."""
    sequence, _, enrollment_id = enrolled
    [delivery] = claim(conn)
    _pause(tenant, enrollment_id)
    assert record(conn, _sent(delivery)) == 1
    _resume(tenant, enrollment_id)
    [(_, behind, _)] = tenant.enroll(sequence, [tenant.contact(first_name="Bo")])
    assert claim(conn, limit=1) == []  # the resumed one, oldest due: settled, nothing to send
    [claimed] = claim(conn, limit=1)  # so the claims behind it are no longer stuck on it
    assert claimed["enrollment_id"] == behind
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["position"]) == ("active", 2)
    assert state["next_action_at"] == at("2026-11-25 15:00Z")  # the next step, planned as after a send
    assert _deliveries_of(conn, enrollment_id) == [(1, 1, "sent")]


def test_a_message_still_in_flight_when_its_enrollment_resumes_is_waited_for(conn, tenant, enrolled):
    _, _, enrollment_id = enrolled
    [delivery] = claim(conn)
    _pause(tenant, enrollment_id)
    _resume(tenant, enrollment_id)
    assert claim(conn) == []
    assert enrollment(conn, enrollment_id)["next_action_at"] is None  # waits for the record, as claimed
    assert record(conn, _sent(delivery)) == 1
    assert enrollment(conn, enrollment_id)["position"] == 2
    assert _deliveries_of(conn, enrollment_id) == [(1, 1, "sent")]


@pytest.mark.parametrize(
    ("transient", "error_code", "expected"),
    [(True, "network", ("active", 1, 2)), (False, "21612", ("failed", 1, 1))],
)
def test_a_send_that_failed_while_paused_is_retried_or_ends_as_the_record_would_have(
    conn, tenant, enrolled, transient, error_code, expected
):
    _, _, enrollment_id = enrolled
    [delivery] = claim(conn)
    _pause(tenant, enrollment_id)
    failure = {"delivery_id": str(delivery["delivery_id"]), "outcome": "failed", "transient": transient}
    assert record(conn, failure | {"error_code": error_code}) == 1
    _resume(tenant, enrollment_id)
    assert claim(conn) == []
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["position"], state["attempt"]) == expected
    if transient:  # the next attempt after the first backoff, then a new delivery
        assert state["next_action_at"] == at("2026-11-23 14:01Z")
        set_clock(conn, "2026-11-23 14:01Z")
        [retry] = claim(conn)
        assert (retry["enrollment_id"], retry["attempt"]) == (enrollment_id, 2)


def test_a_step_already_sent_and_moved_later_is_not_sent_again(conn, tenant):
    """Steps already executed are never re-run: the first text, sent, is moved after the second."""
    definition = sms_sequence(
        settings={"timezone": "UTC", "quiet_hours": {"start": "00:00", "end": "24:00"}},
        steps=[
            {"kind": "sms", "body": "One"},
            {"kind": "sms", "delay": {"value": 5, "unit": "minutes"}, "body": "Two"},
            {"kind": "sms", "delay": {"value": 5, "unit": "minutes"}, "body": "Three"},
        ],
    )
    sequence = tenant.sequence(definition)
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    [first] = claim(conn)
    record(conn, _sent(first))
    conn.execute("RESET ROLE")
    conn.execute(  # "One" becomes the second step (position is deferred: one statement swaps them)
        """UPDATE drumbeat.sequence_steps SET position = 3 - position
           WHERE sequence_id = %s AND position IN (1, 2)""",
        (sequence,),
    )
    bodies = []
    for minute in (5, 10, 15, 20):
        set_clock(conn, f"2026-11-23 14:{minute:02d}Z")
        for delivery in claim(conn):
            bodies.append(delivery["body"])
            record(conn, _sent(delivery))
    assert bodies == ["Two", "Three"]
    assert enrollment(conn, enrollment_id)["status"] == "completed"


def _refused_email(conn, tenant, exit_conditions: dict, error_message: str, code: str = "550"):
    steps = [{"kind": "email", "subject": "Hi", "body": "Hello"}]
    definition = sms_sequence(channel="email", steps=steps, exit_conditions=exit_conditions)
    contact = tenant.contact(email="gone@example.com")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(definition), [contact])
    [delivery] = [d for d in claim(conn) if d["enrollment_id"] == enrollment_id]
    refusal = {"outcome": "failed", "transient": False, "error_code": code, "error_message": error_message}
    record(conn, {"delivery_id": str(delivery["delivery_id"])} | refusal)
    conn.execute("RESET ROLE")
    bounced = conn.execute("SELECT bounced_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s", (contact,))
    events = conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = 'bounced' AND contact_id = %s", (contact,)
    )
    state = enrollment(conn, enrollment_id)
    return (state["status"], state["exit_reason"]), bounced.fetchone()[0], events.fetchone()[0]


@pytest.mark.parametrize(
    ("exit_conditions", "error_message", "code", "expected"),
    [
        ({}, "5.1.1 No such user", "550", (("bounced", "bounced"), True, 1)),
        ({"on_bounce": False}, "5.1.1 No such user", "550", (("failed", "send_failed: 550"), True, 1)),
        ({}, "5.1.10 Null MX", "550", (("bounced", "bounced"), True, 1)),
        ({}, "5.7.1 Message rejected as spam", "550", (("failed", "send_failed: 550"), False, 0)),
        ({}, "5.1.1 No such user", "554", (("failed", "send_failed: 554"), False, 0)),
    ],
)
def test_an_address_refused_at_send_is_a_bounce(conn, tenant, exit_conditions, error_message, code, expected):
    """A mailbox that does not exist marks the contact bounced (its other sequences stop mailing it) and
    applies on_bounce; a refusal of the message itself (spam, policy) is only this send's failure."""
    assert _refused_email(conn, tenant, exit_conditions, error_message, code) == expected


def test_action_steps_change_the_contact_enroll_it_and_log_a_webhook_event(conn, tenant):
    """Every action type, run by the claim in one go (actions have no delay and no window)."""
    follow_up = tenant.sequence()
    steps = [
        {"kind": "action", "action": {"type": "tag", "tag": "warm"}},
        {"kind": "action", "action": {"type": "tag", "tag": "asked"}},
        {"kind": "action", "action": {"type": "untag", "tag": "warm"}},
        {"kind": "action", "action": {"type": "set_field", "field": "stage", "value": {"name": "nurture"}}},
        {"kind": "action", "action": {"type": "enroll", "sequence_id": str(follow_up)}},
        {"kind": "action", "action": {"type": "webhook", "event": "lead.nurtured"}},
    ]
    sequence = tenant.sequence(sms_sequence(steps=steps))
    contact = tenant.contact(fields={"source": "web"})
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [contact])
    assert claim(conn) == []  # every action ran in this claim, which has no message to send
    assert enrollment(conn, enrollment_id)["status"] == "completed"
    [follow_up_text] = claim(conn)  # the next claim: the follow-up's first text, due at once
    assert follow_up_text["context"]["sequence"]["id"] == str(follow_up)
    tags, fields = conn.execute(
        "SELECT tags, fields FROM drumbeat.contacts WHERE id = %s", (contact,)
    ).fetchone()
    assert (tags, fields) == (["asked"], {"source": "web", "stage": {"name": "nurture"}})
    assert conn.execute(
        """SELECT status, metadata ->> 'enrolled_by_enrollment' FROM drumbeat.enrollments
           WHERE sequence_id = %s AND contact_id = %s""",
        (follow_up, contact),
    ).fetchone() == ("active", str(enrollment_id))
    executed = conn.execute(
        """SELECT payload -> 'action' ->> 'type' FROM drumbeat.events
           WHERE enrollment_id = %s AND kind = 'step_executed' ORDER BY id""",
        (enrollment_id,),
    ).fetchall()
    assert [t for (t,) in executed] == ["tag", "tag", "untag", "set_field", "enroll", "webhook"]


@pytest.mark.parametrize(
    ("condition", "replied_after", "branch"),
    [
        ({"if": "replied", "step": 1, "within": {"value": 2, "unit": "days"}}, "1 day", "then"),
        ({"if": "replied", "step": 1, "within": {"value": 2, "unit": "days"}}, "3 days", "else"),
        ({"if": "not_replied", "step": 1}, None, "then"),
        ({"if": "not_replied", "step": 1}, "1 day", "else"),
        ({"if": "clicked", "step": 1}, None, "else"),
    ],
)
def test_conditions_decide_in_the_claim(conn, tenant, condition, replied_after, branch):
    """A condition three days after the first text: `within` counts from that text's send."""
    steps = [
        {"kind": "sms", "body": "Hi"},
        {
            "kind": "condition",
            "delay": {"value": 3, "unit": "days"},
            "condition": condition,
            "then": "exit",
            "else": "continue",
        },
        {"kind": "action", "action": {"type": "tag", "tag": "went-on"}},
    ]
    settings = {"timezone": "UTC", "quiet_hours": {"start": "00:00", "end": "24:00"}}
    sequence = tenant.sequence(
        sms_sequence(steps=steps, settings=settings, exit_conditions={"on_reply": False})
    )
    contact = tenant.contact()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [contact])
    [delivery] = claim(conn)
    record(conn, _sent(delivery))
    if replied_after:
        conn.execute("RESET ROLE")
        sent_at = conn.execute(
            "SELECT sent_at FROM drumbeat.deliveries WHERE id = %s", (delivery["delivery_id"],)
        )
        reply_at = conn.execute(
            "SELECT %s + %s::interval", (sent_at.fetchone()[0], replied_after)
        ).fetchone()[0]
        set_clock(conn, reply_at.isoformat())
        tenant.as_owner()
        call(conn, "record_event", contact, "replied", Jsonb({}))
    set_clock(conn, "2026-11-27 14:00Z")  # past the condition's three days
    assert claim(conn) == []
    state = enrollment(conn, enrollment_id)
    expected = ("completed", "condition_exit") if branch == "then" else ("completed", None)
    assert (state["status"], state["exit_reason"]) == expected


def test_a_sequence_sends_from_the_sender_its_settings_name(conn, tenant):
    """sms_sender_id / email_sender_id pick the sender; without them, the workspace's first of the channel."""
    chosen = tenant.sender("sms", "+15550004444")
    conn.execute("RESET ROLE")  # created in the same transaction as the first: make it clearly the second
    conn.execute(
        "UPDATE drumbeat.senders SET created_at = created_at + interval '1 second' WHERE id = %s", (chosen,)
    )
    settings = SMS_SEQUENCE["settings"] | {"sms_sender_id": str(chosen)}
    pinned = tenant.sequence(sms_sequence(settings=settings))
    default = tenant.sequence()
    tenant.enroll(pinned, [tenant.contact(first_name="Pinned")])
    tenant.enroll(default, [tenant.contact(first_name="Default")])
    sent_from = {d["context"]["contact"]["first_name"]: d["from_address"] for d in claim(conn)}
    assert sent_from["Pinned"] == "+15550004444"
    assert sent_from["Default"] not in ("+15550004444", None)


def test_an_enrollment_assigned_to_a_rep_goes_out_from_the_rep_s_own_sender(conn, tenant):
    """The rep's own mailbox for the enrollments assigned to them; the workspace's sender for the rest."""
    rep = uuid.uuid4()
    tenant.as_owner()
    call(conn, "add_member", tenant.workspace_id, rep, "member")
    call(
        conn,
        "create_sender",
        tenant.workspace_id,
        "email",
        "riley@acme.example",
        Jsonb({"user_id": str(rep)}),
    )
    with sql_error(conn, "PT422", field="p_settings.user_id", match="member of this workspace"):
        call(
            conn,
            "create_sender",
            tenant.workspace_id,
            "email",
            "nobody@acme.example",
            Jsonb({"user_id": str(uuid.uuid4())}),
        )
    sequence = tenant.sequence(
        sms_sequence(channel="email", steps=[{"kind": "email", "subject": "Hi", "body": "Hello"}])
    )
    mine, theirs = tenant.contact(email="m@example.com"), tenant.contact(email="t@example.com")
    tenant.enroll(sequence, [mine], assigned_to=rep)
    tenant.enroll(sequence, [theirs])
    senders = {row["to_address"]: row["from_address"] for row in claim(conn)}
    assert senders["m@example.com"] == "riley@acme.example"
    assert senders["t@example.com"] not in ("riley@acme.example", None)
