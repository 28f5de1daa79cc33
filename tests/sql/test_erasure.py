"""A person's data on request, as a Supabase admin calls it: export_contact gives everything held about a
contact; erase_contact wipes it everywhere (contact, messages, outbox, inbound texts, event payloads,
tasks, metadata) while the anonymous counts stay, and a re-import or edit that would bring the person
back is refused."""

from __future__ import annotations

import uuid

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, enrollment, record, set_clock
from tests.support import act_as, act_as_owner, call, call_one, sql_error

ADA = "+12125550123"
OUR_NUMBER = "+15550009999"


@pytest.fixture
def tenant(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant = new_tenant(conn, with_sender=False)
    tenant.sender("sms", OUR_NUMBER)
    return tenant


@pytest.fixture
def history(conn, tenant):
    """Ada, enrolled in two sequences (one with metadata), got the first text of each (also in the outbox)
    and replied by text; the sequence that does not exit on reply still has her."""
    first = tenant.sequence(sms_sequence(exit_conditions={"on_reply": False}))
    second = tenant.sequence(sms_sequence(name="Second"))
    ada = tenant.contact(phone=ADA, email="ada@example.com", first_name="Ada", fields={"ssn": "123"})
    [(_, enrolled, _)] = tenant.enroll(first, [ada], metadata={"deal": "Ada's renewal"})
    tenant.enroll(second, [ada])
    sent = claim(conn)
    record(conn, *[{"delivery_id": str(d["delivery_id"]), "outcome": "sent", "provider_message_id": f"SM{i}"}
                   for i, d in enumerate(sent)])  # fmt: skip
    act_as_owner(conn)
    conn.execute("UPDATE drumbeat.deliveries SET body = 'Hi Ada'")  # the text the worker rendered and sent
    as_worker(conn)
    conn.execute(
        "INSERT INTO drumbeat.outbox (workspace_id, delivery_id, channel, to_address, from_address, text_body) "
        "SELECT workspace_id, id, channel, to_address, %s, body FROM drumbeat.deliveries",
        (OUR_NUMBER,),
    )
    assert conn.execute(
        "SELECT drumbeat.inbound_sms(%s, %s, 'Call me at 5, Ada', 'SMreply')", (OUR_NUMBER, ADA)
    ).fetchone()
    return first, ada, enrolled


def test_erasure_wipes_the_person_everywhere_and_keeps_the_counts(conn, tenant, history):
    first, ada, enrolled = history
    tenant.as_owner()
    counts_before = call_one(conn, "sequence_stats", first)
    erasure = call_one(conn, "erase_contact", ada)
    assert erasure["already_erased"] is False
    assert (
        erasure["messages_wiped"] == 2
        and erasure["outbox_rows_deleted"] == 2
        and erasure["events_wiped"] >= 1
    )
    act_as_owner(conn)
    contact = conn.execute(
        "SELECT phone, email, first_name, fields, erased_at IS NOT NULL, deleted_at IS NOT NULL "
        "FROM drumbeat.contacts WHERE id = %s",
        (ada,),
    ).fetchone()
    assert contact == (None, None, None, {}, True, True)
    personal = conn.execute(
        """SELECT (SELECT count(*) FROM drumbeat.deliveries WHERE to_address IS NOT NULL OR body IS NOT NULL),
                  (SELECT count(*) FROM drumbeat.outbox),
                  (SELECT count(*) FROM drumbeat.events WHERE payload::text LIKE %s OR payload::text LIKE %s),
                  (SELECT count(*) FROM drumbeat.enrollments WHERE metadata <> '{}')""",
        ("%Ada%", f"%{ADA}%"),
    ).fetchone()
    assert personal == (0, 0, 0, 0)
    assert (enrollment(conn, enrolled)["status"], enrollment(conn, enrolled)["exit_reason"]) == (
        "cancelled",
        "contact_erased",
    )
    statuses = conn.execute(
        "SELECT status FROM drumbeat.enrollments WHERE contact_id = %s", (ada,)
    ).fetchall()
    assert sorted(statuses) == [("cancelled",), ("replied",)]  # the other one had ended on her reply
    tenant.as_owner()
    counts_after = call_one(conn, "sequence_stats", first)
    assert (
        counts_after["steps"] == counts_before["steps"]
        and counts_after["replied"] == counts_before["replied"] == 1
    )
    again = call_one(conn, "erase_contact", ada)
    assert again["already_erased"] is True


def test_an_erased_person_cannot_be_imported_or_edited_back(conn, tenant, history):
    _, ada, _ = history
    tenant.as_owner()
    call(conn, "erase_contact", ada)
    with sql_error(conn, "PT422", field="p_contacts[1].phone", match="erased at the person's request"):
        call(conn, "upsert_contacts", tenant.workspace_id, Jsonb([{"phone": "+12125550199"}, {"phone": ADA}]))
    with sql_error(conn, "PT422", field="p_contacts[0].email", match="erased"):
        call(conn, "upsert_contacts", tenant.workspace_id, Jsonb([{"email": "ada@example.com"}]))
    other = tenant.contact(phone="+12125550198")
    with sql_error(conn, "PT422", field="p_changes.phone", match="erased"):
        call(conn, "update_contact", other, Jsonb({"phone": ADA}))
    elsewhere = new_tenant(conn, "Elsewhere", with_sender=False)  # another workspace's list says nothing
    assert elsewhere.contact(phone=ADA)


def test_the_export_holds_everything_and_is_logged(conn, tenant, history):
    _, ada, _ = history
    tenant.as_owner()
    export = call_one(conn, "export_contact", ada)
    assert export["contact"]["first_name"] == "Ada" and export["contact"]["fields"] == {"ssn": "123"}
    assert {e["sequence"] for e in export["enrollments"]} == {"Cold outreach", "Second"}
    assert sorted(m["body"] for m in export["messages"]) == ["Hi Ada", "Hi Ada"]
    assert any(
        e["kind"] == "replied" and e["payload"].get("body") == "Call me at 5, Ada" for e in export["events"]
    )
    act_as_owner(conn)
    assert conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = 'contact_exported' AND contact_id = %s", (ada,)
    ).fetchone() == (1,)


def test_only_admins_of_the_workspace(conn, tenant, history):
    _, ada, _ = history
    member = uuid.uuid4()
    tenant.as_owner()
    call(conn, "add_member", tenant.workspace_id, member, "member")
    act_as(conn, member)
    for function in ("erase_contact", "export_contact"):
        with sql_error(conn, "PT403"):
            call(conn, function, ada)
    other = new_tenant(conn, "Other")
    other.as_owner()
    for function in ("erase_contact", "export_contact"):
        with sql_error(conn, "PT404", field="p_contact_id"):
            call(conn, function, ada)


def test_erasure_reaches_what_integrations_and_strangers_wrote_and_a_send_in_flight(conn, tenant):
    """A CRM's free-form payload, an email from the person's address in capitals before they were a contact,
    a bounce report naming them, and a text whose provider call returns after the erasure."""
    ada = tenant.contact(phone=ADA, email="ada@example.com")
    tenant.enroll(tenant.sequence(), [ada])
    [in_flight] = claim(conn)  # started: the worker is calling the provider
    tenant.as_owner()
    call(
        conn, "record_event", ada, "meeting_booked", Jsonb({"note": "Ada prefers mornings", "channel": "all"})
    )
    act_as_owner(conn)
    strangers = [
        {"channel": "email", "from": "ADA@Example.com", "subject": "Hello", "text": "It's Ada"},
        {"channel": "email", "bounce": {"recipients": ["ada@example.com"], "diagnostic": "mailbox full"}},
    ]
    for payload in strangers:
        conn.execute(
            "INSERT INTO drumbeat.events (workspace_id, kind, payload) VALUES (%s, 'inbound_unmatched', %s)",
            (tenant.workspace_id, Jsonb(payload)),
        )
    tenant.as_owner()
    call(conn, "erase_contact", ada)
    record(conn, {"delivery_id": str(in_flight["delivery_id"]), "outcome": "sent", "provider_message_id": "SMlate",
                  "body": "Hi Ada", "error_message": "ada@example.com"})  # fmt: skip
    act_as_owner(conn)
    assert conn.execute("SELECT status, body, error_message FROM drumbeat.deliveries").fetchall() == [
        ("sent", None, None)
    ]
    left = conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE lower(payload::text) LIKE '%ada%'"
    ).fetchone()
    assert left == (0,)


def test_a_number_now_someone_else_s_is_not_refused_for_them(conn, tenant):
    """The erased person's old number was reissued to Bea, who is a contact now: her updates still go through."""
    bea = tenant.contact(phone=ADA, first_name="Bea")
    act_as_owner(conn)
    conn.execute(
        "INSERT INTO drumbeat.erased_identities (workspace_id, kind, digest) "
        "SELECT %s, 'phone', drumbeat.identity_digest(%s, 'phone', %s)",
        (tenant.workspace_id, tenant.workspace_id, ADA),
    )
    tenant.as_owner()
    rows = call(conn, "upsert_contacts", tenant.workspace_id, Jsonb([{"phone": ADA, "title": "CEO"}]))
    assert rows == [(bea, False)]
