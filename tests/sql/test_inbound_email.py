"""Inbound email as the worker role hands it over (drumbeat.inbound_email, after app/core/inbound_email.py
read the message): matched by the Message-IDs we sent, else by address; replies end enrollments, auto-replies
do not (and hold the next step until the person is back), bounces bounce, unsubscribe requests opt out, and
a message is handled once."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, enrollment, record, set_clock
from tests.support import sql_error

EMAIL_STEPS = [
    {"kind": "email", "subject": "Quick question", "body": "Hi {{ contact.first_name }}"},
    {
        "kind": "email",
        "subject": "Following up",
        "body": "Any thoughts?",
        "delay": {"value": 2, "unit": "days"},
    },
]
_ids = itertools.count(1)


@pytest.fixture
def tenant(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    return new_tenant(conn)


@pytest.fixture
def sent(conn, tenant):
    """Ada, enrolled in a two-email sequence whose first email went out as <first@acme.example>."""
    contact = tenant.contact(email="ada@example.com", first_name="Ada", timezone="America/New_York")
    sequence = tenant.sequence(sms_sequence(channel="email", steps=EMAIL_STEPS))
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [contact])
    [delivery] = claim(conn)
    record(
        conn,
        {
            "delivery_id": str(delivery["delivery_id"]),
            "outcome": "sent",
            "provider_message_id": "<first@acme.example>",
        },
    )
    return {"contact": contact, "enrollment": enrollment_id, "delivery": delivery["delivery_id"]}


def email(kind: str = "reply", **fields) -> dict:
    message = {
        "dedupe_key": f"<in-{next(_ids)}@mail.example>",
        "kind": kind,
        "from_address": "ada@example.com",
        "subject": "Re: Quick question",
        "references": ["<first@acme.example>"],
        "text": "Yes, Tuesday works.",
    }
    return message | fields


def inbound(conn, tenant, message: dict) -> str:
    as_worker(conn)
    return conn.execute(
        "SELECT drumbeat.inbound_email(%s, %s)", (tenant.workspace_id, Jsonb(message))
    ).fetchone()[0]


def events(conn, kind: str) -> list[dict]:
    conn.execute("RESET ROLE")
    rows = conn.execute(
        "SELECT contact_id, enrollment_id, step_id, delivery_id, payload FROM drumbeat.events WHERE kind = %s ORDER BY id",
        (kind,),
    )
    return [
        dict(zip(["contact", "enrollment", "step", "delivery", "payload"], row, strict=True)) for row in rows
    ]


def test_a_reply_ends_the_enrollment_it_answers_with_its_text(conn, tenant, sent):
    assert inbound(conn, tenant, email()) == "replied"
    assert enrollment(conn, sent["enrollment"])["status"] == "replied"
    [reply] = events(conn, "replied")
    assert (reply["contact"], reply["enrollment"], reply["delivery"]) == (
        sent["contact"],
        sent["enrollment"],
        sent["delivery"],
    )
    assert reply["payload"]["text"] == "Yes, Tuesday works." and reply["payload"]["channel"] == "email"


def test_a_retried_or_twice_seen_message_counts_once(conn, tenant, sent):
    message = email()
    assert inbound(conn, tenant, message) == "replied"
    assert inbound(conn, tenant, message) == "duplicate"
    assert len(events(conn, "replied")) == 1


def test_a_reply_naming_nothing_we_sent_is_matched_by_its_sender(conn, tenant, sent):
    assert inbound(conn, tenant, email(references=[])) == "replied"
    assert enrollment(conn, sent["enrollment"])["status"] == "replied"


def test_a_reply_after_the_last_step_still_counts_for_it(conn, tenant, sent):
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.enrollments SET status = 'completed', completed_at = now(), next_action_at = NULL WHERE id = %s",
        (sent["enrollment"],),
    )
    assert inbound(conn, tenant, email(references=[])) == "replied"
    [reply] = events(conn, "replied")
    assert (reply["enrollment"], reply["delivery"]) == (sent["enrollment"], sent["delivery"])
    tenant.as_owner()
    [(stats,)] = conn.execute(
        "SELECT drumbeat_api.sequence_stats(sequence_id) FROM drumbeat.enrollments WHERE id = %s",
        (sent["enrollment"],),
    ).fetchall()
    assert [step["replied"] for step in stats["steps"]][:1] == [1]


def test_an_auto_reply_is_not_a_reply_and_holds_the_next_step_until_the_person_is_back(conn, tenant, sent):
    before = enrollment(conn, sent["enrollment"])
    message = email("auto_reply", subject="Automatic reply: Quick question", return_date="2026-12-14")
    assert inbound(conn, tenant, message) == "auto_replied"
    after = enrollment(conn, sent["enrollment"])
    assert after["status"] == "active" and after["position"] == before["position"]
    back = dt.datetime(2026, 12, 15, tzinfo=ZoneInfo("America/New_York"))
    assert after["next_action_at"] >= back > before["next_action_at"]
    assert [e["payload"]["return_date"] for e in events(conn, "auto_replied")] == ["2026-12-14"]
    assert events(conn, "replied") == []


def test_an_auto_reply_without_a_return_date_changes_nothing(conn, tenant, sent):
    before = enrollment(conn, sent["enrollment"])
    assert inbound(conn, tenant, email("auto_reply")) == "auto_replied"
    assert enrollment(conn, sent["enrollment"]) == before


def test_a_permanent_bounce_bounces_the_address_and_the_delivery(conn, tenant, sent):
    bounce = {
        "permanent": True,
        "status": "5.1.1",
        "recipients": ["ada@example.com"],
        "diagnostic": "550 5.1.1 no such user",
    }
    message = email("bounce", from_address="mailer-daemon@mx.example", text="", bounce=bounce)
    assert inbound(conn, tenant, message) == "bounced"
    assert enrollment(conn, sent["enrollment"])["status"] == "bounced"
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT bounced_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s", (sent["contact"],)
    ).fetchone() == (True,)
    assert conn.execute(
        "SELECT status, error_code FROM drumbeat.deliveries WHERE id = %s", (sent["delivery"],)
    ).fetchone() == ("bounced", "5.1.1")


def test_a_bounce_naming_nothing_we_sent_is_matched_by_its_failed_recipient(conn, tenant, sent):
    bounce = {"permanent": True, "status": "5.1.1", "recipients": ["ada@example.com"]}
    message = email("bounce", from_address="postmaster@mx.example", references=[], bounce=bounce)
    assert inbound(conn, tenant, message) == "bounced"
    assert enrollment(conn, sent["enrollment"])["status"] == "bounced"


def test_a_temporary_bounce_is_logged_and_nothing_ends(conn, tenant, sent):
    bounce = {"permanent": False, "status": "4.2.2", "recipients": ["ada@example.com"]}
    message = email("bounce", from_address="mailer-daemon@mx.example", bounce=bounce)
    assert inbound(conn, tenant, message) == "soft_bounced"
    assert enrollment(conn, sent["enrollment"])["status"] == "active"
    assert [e["delivery"] for e in events(conn, "soft_bounced")] == [sent["delivery"]]


def test_an_unsubscribe_request_opts_out_of_email(conn, tenant, sent):
    assert inbound(conn, tenant, email("unsubscribe_request", text="Please remove me")) == "unsubscribed"
    assert enrollment(conn, sent["enrollment"])["status"] == "unsubscribed"
    conn.execute("RESET ROLE")
    opted = conn.execute(
        "SELECT email_opted_out_at IS NOT NULL, sms_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s",
        (sent["contact"],),
    )
    assert opted.fetchone() == (True, False)


def test_a_message_from_a_stranger_is_unmatched(conn, tenant, sent):
    assert (
        inbound(conn, tenant, email(from_address="who@else.example", references=["<nope@x>"]))
        == "unknown_contact"
    )
    assert enrollment(conn, sent["enrollment"])["status"] == "active"
    assert [e["payload"]["from"] for e in events(conn, "inbound_unmatched")] == ["who@else.example"]


def test_another_workspace_cannot_reach_our_deliveries(conn, tenant, sent):
    """The same Message-ID and sender, delivered with another workspace's key: nothing of ours moves."""
    rival = new_tenant(conn, "Rival")
    assert inbound(conn, rival, email()) == "unknown_contact"
    assert enrollment(conn, sent["enrollment"])["status"] == "active"


def test_a_message_without_key_or_kind_is_refused(conn, tenant):
    with sql_error(conn, "PT422", field="p_email"):
        inbound(conn, tenant, {"kind": "reply"})
    with sql_error(conn, "PT422", field="p_email"):
        inbound(conn, tenant, email("greeting"))
