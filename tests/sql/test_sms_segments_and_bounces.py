"""SMS credits count segments everywhere (issue 21, item 9b), and an SMS refused for a bad number bounces
the phone as a refused email bounces the address (item 9c)."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from app.core.templates import GSM7_BASIC, GSM7_EXTENSION, sms_segments
from tests.sql.factories import sms_sequence
from tests.sql.worker_calls import as_worker, at, claim, enrollment, record, reserve, set_clock

THREE_SEGMENTS = "x" * 400  # 400 GSM-7 septets: three parts of 153


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hi Ada",
        "x" * 160,
        "x" * 161,
        "x" * 306,
        "x" * 307,
        "x" * 159 + "€",  # an extension character takes two septets: 161
        "[" * 80,
        "".join(sorted(GSM7_BASIC)) + "".join(sorted(GSM7_EXTENSION)),
        "Hi Zoë",
        "é" * 70 + "ê",
        "ê" * 70,
        "ê" * 134 + "!",
        "🙂" * 35,  # beyond the BMP: two UTF-16 units each
        "🙂" * 36,
        "line\nbreak\r\fform feed",
    ],
)
def test_sql_counts_segments_as_the_worker_does(conn, text):
    assert conn.execute("SELECT drumbeat.sms_segments(%s)", (text,)).fetchone()[0] == sms_segments(text)


def _long_text_enrollment(conn, tenant, credits: int, contacts: int = 1) -> list:
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.workspaces SET sms_credits = %s WHERE id = %s", (credits, tenant.workspace_id)
    )
    steps = [
        {"kind": "sms", "body": THREE_SEGMENTS},
        {"kind": "sms", "delay": {"value": 1, "unit": "days"}, "body": "Hi"},
    ]
    sequence = tenant.sequence(sms_sequence(steps=steps))
    return [row[1] for row in tenant.enroll(sequence, [tenant.contact() for _ in range(contacts)])]


def _start(conn, deliveries: list[dict]) -> list:
    """start_sending as the dispatcher calls it: with the rendered text of each SMS."""
    as_worker(conn)
    return conn.execute(
        "SELECT drumbeat.start_sending(%s, '{}', %s)",
        ([d["delivery_id"] for d in deliveries], [THREE_SEGMENTS for _ in deliveries]),
    ).fetchone()[0]


def _credits(conn, tenant) -> int:
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT sms_credits FROM drumbeat.workspaces WHERE id = %s", (tenant.workspace_id,)
    ).fetchone()[0]


def _held_for_credits(conn) -> int:
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = 'held' AND payload ->> 'reason' = 'no_sms_credits'"
    ).fetchone()[0]


def test_a_text_the_credits_cannot_pay_is_held_not_sent(conn, tenant):
    """Two credits left, a three-segment text: the claim cannot know its segments (rendered by the worker),
    so the text is held when it is about to start, and nothing is charged."""
    [enrollment_id] = _long_text_enrollment(conn, tenant, credits=2)
    [delivery] = reserve(conn)
    assert _start(conn, [delivery]) == []
    assert _held_for_credits(conn) == 1
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*) FROM drumbeat.deliveries").fetchone() == (0,)  # no attempt used
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["position"], state["attempt"]) == ("active", 1, 1)
    assert state["next_action_at"] == at("2026-11-23 15:00Z")  # an hour later
    assert _credits(conn, tenant) == 2


def test_texts_in_flight_count_against_the_credits(conn, tenant):
    """Seven credits: the first text (3) starts, the second (3 more) too, the third would need 9."""
    _long_text_enrollment(conn, tenant, credits=7, contacts=3)
    first, second, third = reserve(conn)
    assert _start(conn, [first]) == [first["delivery_id"]]  # sending, not yet recorded or charged
    assert _start(conn, [second, third]) == [second["delivery_id"]]
    assert _held_for_credits(conn) == 1


def test_a_recorded_text_is_charged_its_segments(conn, tenant):
    _long_text_enrollment(conn, tenant, credits=10)
    [delivery] = reserve(conn)
    _start(conn, [delivery])
    record(
        conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SM1"}
    )
    assert _credits(conn, tenant) == 7


def test_a_reconciled_text_is_charged_its_segments(conn, tenant):
    """The worker died mid-send (no record, so no segments from it); Twilio has the message: the segments
    counted when the text started are charged, not one credit per message."""
    _long_text_enrollment(conn, tenant, credits=10)
    [delivery] = reserve(conn)
    _start(conn, [delivery])
    set_clock(conn, "2026-11-23 14:20Z")
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.recover_deliveries('10 minutes', ARRAY['sms'])").fetchone() == (1,)
    results = [{"delivery_id": str(delivery["delivery_id"]), "candidates": ["SM1"]}]
    assert conn.execute("SELECT drumbeat.settle_reconciliations(%s)", (Jsonb(results),)).fetchone() == (1,)
    assert _credits(conn, tenant) == 7


@pytest.mark.parametrize("code", ["21211", "21614"])
def test_a_number_refused_at_send_bounces_the_phone(conn, tenant, code):
    """Twilio refuses the number itself (21211 invalid 'To', 21614 not a mobile): the phone is marked
    bounced, as a refused mailbox marks the email bounced, and no other sequence texts it again."""
    contact = tenant.contact(email="ada@example.com")
    [(_, first, _)] = tenant.enroll(tenant.sequence(), [contact])
    [refused] = claim(conn)
    record(
        conn,
        {
            "delivery_id": str(refused["delivery_id"]),
            "outcome": "failed",
            "error_code": code,
            "transient": False,
        },
    )
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT phone_bounced_at IS NOT NULL, bounced_at IS NULL FROM drumbeat.contacts WHERE id = %s",
        (contact,),
    ).fetchone() == (True, True)  # the phone, not the email
    assert enrollment(conn, first)["status"] == "bounced"  # as a refused mailbox ends an email sequence
    [(_, _, outcome)] = tenant.enroll(tenant.sequence(sms_sequence(name="Later")), [contact])
    assert outcome == "opted_out"  # as the API answers for a bounced email address
