"""Inbound SMS (keywords, replies) and provider status callbacks, as the worker role calls them."""

from __future__ import annotations

import itertools

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, enrollment, record, set_clock
from tests.support import sql_error

OUR_NUMBER = "+15550009999"


@pytest.fixture
def tenant(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant = new_tenant(conn, with_sender=False)
    tenant.sender("sms", OUR_NUMBER)
    tenant.sender("email", "sales@example.com")
    return tenant


_sids = itertools.count(1)


def inbound(
    conn, body: str, sender: str = "+15551112222", to: str = OUR_NUMBER, sid: str | None = None
) -> str:
    """One inbound message, with its own MessageSid unless `sid` repeats one (a retried webhook)."""
    as_worker(conn)
    sid = sid or f"SM{next(_sids):032d}"
    return conn.execute("SELECT drumbeat.inbound_sms(%s, %s, %s, %s)", (to, sender, body, sid)).fetchone()[0]


def events_of(conn, kind: str) -> int:
    conn.execute("RESET ROLE")
    return conn.execute("SELECT count(*) FROM drumbeat.events WHERE kind = %s", (kind,)).fetchone()[0]


@pytest.mark.parametrize(("body", "outcome", "kind"), [
    ("Yes, Tuesday works", "replied", "replied"),
    ("STOP", "opted_out", "unsubscribed"),
    ("START", "opted_in", "opted_in"),
    ("HELP", "help", "help_requested"),
])  # fmt: skip
def test_a_retried_webhook_acts_once(conn, tenant, body, outcome, kind):
    """Twilio retries a webhook it got no 2xx for, with the same MessageSid: one event, one action."""
    sequence = tenant.sequence(sms_sequence())
    [contact] = tenant.contacts({"phone": "+15551112222"})
    tenant.enroll(sequence, [contact])
    assert inbound(conn, body, sid="SMretried") == outcome
    before = events_of(conn, kind)
    assert before >= 1
    assert inbound(conn, body, sid="SMretried") == "duplicate"
    assert events_of(conn, kind) == before
    assert inbound(conn, body) == outcome  # a new message (another sid) is handled as usual


def test_a_retried_unmatched_message_is_logged_once(conn, tenant):
    assert inbound(conn, "who is this?", sender="+15553334444", sid="SMx") == "unknown_contact"
    assert inbound(conn, "who is this?", sender="+15553334444", sid="SMx") == "duplicate"
    assert events_of(conn, "inbound_unmatched") == 1


def test_status_callbacks_are_idempotent_and_never_go_backwards(conn, tenant):
    _sent_delivery(conn, tenant)
    assert status_callback(conn, "delivered") == "delivered"
    for late in ("delivered", "sent", "queued", "undelivered", "failed"):  # repeated, late or out of order
        assert status_callback(conn, late) == "delivered"
    assert events_of(conn, "delivered") == 1
    assert events_of(conn, "undelivered") == 0


def opted_out(conn, contact) -> bool:
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT sms_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s", (contact,)
    ).fetchone()[0]


@pytest.mark.parametrize(
    "body",
    [
        *["STOP", "stop", "  Stop ", "STOPALL", "unsubscribe", "Cancel", "END", "quit.", "REVOKE", "optout"],
        *[
            "Opt-out",
            "stop please",
            "STOP!!!",
            "Please stop texting me",
            "please remove me",
            "Remove me from your list",
        ],
        *[
            "take me off the list",
            "Do not text me again",
            "don't text me",
            "no more texts",
            "unsubscribe me please",
        ],
    ],
)
def test_stop_keywords_opt_out_and_end_sms_enrollments(conn, tenant, body):
    contact = tenant.contact(phone="+15551112222", email="ada@example.com")
    [(_, sms_enrollment, _)] = tenant.enroll(tenant.sequence(), [contact])
    email_steps = [{"kind": "email", "subject": "Hi", "body": "Hello"}]
    email_sequence = tenant.sequence(sms_sequence(channel="email", steps=email_steps))
    [(_, email_enrollment, _)] = tenant.enroll(email_sequence, [contact])
    assert inbound(conn, body) == "opted_out"
    assert opted_out(conn, contact)
    assert enrollment(conn, sms_enrollment)["status"] == "unsubscribed"
    assert enrollment(conn, email_enrollment)["status"] == "active"  # only SMS was refused


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_start_keywords_opt_back_in(conn, tenant, body):
    contact = tenant.contact(phone="+15551112222")
    inbound(conn, "STOP")
    assert inbound(conn, body) == "opted_in" and not opted_out(conn, contact)


def test_help_changes_nothing(conn, tenant):
    contact = tenant.contact(phone="+15551112222")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    assert inbound(conn, "help") == "help"
    assert enrollment(conn, enrollment_id)["status"] == "active" and not opted_out(conn, contact)


@pytest.mark.parametrize(
    "body",
    [
        "Stop by tomorrow?",
        "Don't stop, this is great",
        "Can you remove me from the 3pm meeting and add Tom?",
        "Please don't text me before 9am",
        "The end of the month works",
        "Yes please call me",
    ],
)
def test_anything_else_is_a_reply(conn, tenant, body):
    contact = tenant.contact(phone="+15551112222")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    assert inbound(conn, body) == "replied"
    assert enrollment(conn, enrollment_id)["status"] == "replied"


def test_unknown_numbers_and_contacts(conn, tenant):
    assert inbound(conn, "hi", to="+15550000000") == "unknown_number"
    assert inbound(conn, "hi", sender="+15559999999") == "unknown_contact"
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = 'inbound_unmatched'"
    ).fetchone() == (1,)


def test_a_number_is_matched_only_in_the_workspace_that_owns_it(conn, tenant):
    other = new_tenant(conn, "Other", with_sender=False)
    other.sender("sms", "+15550008888")
    stranger = other.contact(phone="+15551112222")
    assert inbound(conn, "STOP") == "unknown_contact"
    assert not opted_out(conn, stranger)


def _sent_delivery(conn, tenant):
    contact = tenant.contact(phone="+15551112222")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    [delivery] = claim(conn)
    record(
        conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SMabc"}
    )
    return enrollment_id


def status_callback(conn, status, code=None):
    as_worker(conn)
    return conn.execute("SELECT drumbeat.delivery_status('SMabc', %s, %s)", (status, code)).fetchone()[0]


def test_delivered_callback(conn, tenant):
    _sent_delivery(conn, tenant)
    assert status_callback(conn, "delivered") == "delivered"
    assert status_callback(conn, "sent") == "delivered"  # never back to an earlier state
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT delivered_at IS NOT NULL FROM drumbeat.deliveries").fetchone() == (True,)


@pytest.mark.parametrize(("code", "bounced"), [("30006", True), ("30003", False)])
def test_undelivered_permanent_counts_as_a_bounce(conn, tenant, code, bounced):
    enrollment_id = _sent_delivery(conn, tenant)
    assert status_callback(conn, "undelivered", code) == "undelivered"
    assert (enrollment(conn, enrollment_id)["status"] == "bounced") is bounced


def test_unknown_message_ids_are_ignored(conn, tenant):
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.delivery_status('SMnope', 'delivered', NULL)").fetchone() == (None,)


def test_record_event_unsubscribe_keeps_other_channel_sequences(conn, tenant):
    contact = tenant.contact(phone="+15551112222", email="ada@example.com")
    email_sequence = tenant.sequence(
        sms_sequence(channel="email", steps=[{"kind": "email", "subject": "Hi", "body": "x"}])
    )
    [(_, email_enrollment, _)] = tenant.enroll(email_sequence, [contact])
    tenant.as_owner()
    conn.execute(
        "SELECT drumbeat_api.record_event(%s, 'unsubscribed', %s)", (contact, Jsonb({"channel": "sms"}))
    )
    assert enrollment(conn, email_enrollment)["status"] == "active"


@pytest.fixture
def sharing(conn, tenant):
    """A second workspace that also uses OUR_NUMBER (one Twilio number serving two brands), shared by the
    operator (`drumbeat senders share`: a tenant cannot add a number another workspace owns)."""
    other = new_tenant(conn, "Other brand", with_sender=False)
    conn.execute("RESET ROLE")
    conn.execute("SELECT drumbeat.share_sender(%s, %s)", (other.workspace_id, OUR_NUMBER))
    return other


def test_stop_to_a_shared_number_opts_out_in_every_workspace_that_uses_it(conn, tenant, sharing):
    """The carrier blocks the number for this recipient whoever sends: so must we."""
    ours = tenant.contact(phone="+15551112222")
    theirs = sharing.contact(phone="+15551112222")
    [(_, their_enrollment, _)] = sharing.enroll(sharing.sequence(), [theirs])
    assert inbound(conn, "STOP") == "opted_out"
    assert opted_out(conn, ours) and opted_out(conn, theirs)
    assert enrollment(conn, their_enrollment)["status"] == "unsubscribed"
    assert inbound(conn, "START") == "opted_in"
    assert not opted_out(conn, ours) and not opted_out(conn, theirs)


def test_stop_reaches_a_contact_of_the_workspace_that_registered_the_number_last(conn, tenant, sharing):
    theirs = sharing.contact(phone="+15551112222")
    assert inbound(conn, "STOP") == "opted_out"
    assert opted_out(conn, theirs)


def test_a_reply_to_a_shared_number_goes_to_the_workspace_that_last_texted_them(conn, tenant, sharing):
    ours = tenant.contact(phone="+15551112222")
    [(_, our_enrollment, _)] = tenant.enroll(tenant.sequence(activate=True), [ours])
    conn.execute("RESET ROLE")
    conn.execute(  # our first text waits till tomorrow: only the other brand's goes out now
        "UPDATE drumbeat.enrollments SET next_action_at = now() + interval '1 day' WHERE id = %s",
        (our_enrollment,),
    )
    theirs = sharing.contact(phone="+15551112222")
    [(_, their_enrollment, _)] = sharing.enroll(sharing.sequence(), [theirs])
    [delivery] = claim(conn)
    assert delivery["enrollment_id"] == their_enrollment
    record(
        conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SMx"}
    )
    assert inbound(conn, "Not interested, thanks") == "replied"
    assert enrollment(conn, their_enrollment)["status"] == "replied"
    assert enrollment(conn, our_enrollment)["status"] == "active"


def logged_in(conn, kind: str) -> list:
    conn.execute("RESET ROLE")
    return [w for (w,) in conn.execute("SELECT workspace_id FROM drumbeat.events WHERE kind = %s", (kind,))]


def test_an_unmatched_message_to_a_shared_number_goes_to_its_owner(conn, tenant, sharing):
    assert inbound(conn, "who is this?") == "unknown_contact"
    assert logged_in(conn, "inbound_unmatched") == [tenant.workspace_id]


def test_a_reply_reaches_a_sharing_workspace_only_if_it_texted_the_person(conn, tenant, sharing):
    """The sharing workspace knows the person, but never texted them from this number: the reply is
    not its business, and with no contact at the owner it is the owner's unmatched message."""
    theirs = sharing.contact(phone="+15551112222")
    [(_, their_enrollment, _)] = sharing.enroll(sharing.sequence(activate=True), [theirs])
    assert inbound(conn, "Who is this?") == "unknown_contact"
    assert inbound(conn, "HELP") == "unknown_contact"
    assert enrollment(conn, their_enrollment)["status"] == "active"
    assert logged_in(conn, "inbound_unmatched") == [tenant.workspace_id] * 2
    assert logged_in(conn, "replied") == logged_in(conn, "help_requested") == []


def test_a_reply_to_a_shared_number_goes_to_the_owner_when_nobody_texted_the_person(conn, tenant, sharing):
    ours = tenant.contact(phone="+15551112222")
    sharing.contact(phone="+15551112222")
    assert inbound(conn, "Hello?") == "replied"
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT contact_id FROM drumbeat.events WHERE kind = 'replied'").fetchall() == [
        (ours,)
    ]


def test_a_tenant_cannot_share_a_number(conn, tenant, sharing):
    sharing.as_owner()
    with sql_error(conn, "42501", match="permission denied for function share_sender"):
        conn.execute("SELECT drumbeat.share_sender(%s, %s)", (sharing.workspace_id, "+15550007777"))


def stats(tenant, sequence_id) -> dict:
    tenant.as_owner()
    return tenant.conn.execute("SELECT drumbeat_api.sequence_stats(%s)", (sequence_id,)).fetchone()[0]


def test_a_reply_after_the_last_step_counts_for_it_and_reopens_nothing(conn, tenant):
    one_step = sms_sequence(steps=sms_sequence()["steps"][:1])
    sequence_id = tenant.sequence(one_step)
    contact = tenant.contact(phone="+15551112222")
    [(_, enrollment_id, _)] = tenant.enroll(sequence_id, [contact])
    [delivery] = claim(conn)
    record(
        conn,
        {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent", "provider_message_id": "SMlast"},
    )
    assert enrollment(conn, enrollment_id)["status"] == "completed"

    assert inbound(conn, "Thanks, let's talk next week") == "replied"
    assert enrollment(conn, enrollment_id)["status"] == "completed"  # finished, not reopened nor re-exited
    figures = stats(tenant, sequence_id)
    assert figures["replied"] == 1
    assert [(s["position"], s["sent"], s["replied"]) for s in figures["steps"]] == [(1, 1, 1)]


def test_a_reply_with_nothing_ever_sent_counts_for_no_sequence(conn, tenant):
    sequence_id = tenant.sequence()
    tenant.contact(phone="+15551112222")
    assert inbound(conn, "Who is this?") == "replied"
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT sequence_id, enrollment_id FROM drumbeat.events WHERE kind = 'replied'"
    ).fetchall() == [(None, None)]
    assert stats(tenant, sequence_id)["replied"] == 0
