"""GET /api/v1/messages: what was sent, as a CRM reads it back: the text as rendered and sent, the
sender, the provider's id and the status, filtered by contact, sequence, enrollment, status, channel and
time; one message with its history. Messages come from a real dispatcher run (outbox transport)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from tests.support.api import ApiTenant, dispatch

SMS = {
    "name": "Texts",
    "channel": "sms",
    "steps": [
        {
            "kind": "sms",
            "name": "Hello",
            "body": "Hi {{ contact.first_name }}, it's {{ sender.name }}"
            "{% if enrollment.metadata.deal is defined %} about {{ enrollment.metadata.deal }}{% endif %}",
        }
    ],
}
EMAIL = {
    "name": "Mails",
    "channel": "email",
    "steps": [
        {
            "kind": "email",
            "name": "Intro",
            "subject": "For {{ contact.first_name }}",
            "body": "Hello {{ contact.first_name }}",
            "html_body": "<p>Hello <b>{{ contact.first_name }}</b></p>",
        }
    ],
}


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def sent(tenant: ApiTenant, db_url) -> dict:
    """Ada gets the SMS and the email, Bob the SMS; all three sent by a real dispatcher run."""
    sms_sender = created(
        tenant.post(
            "/senders", {"channel": "sms", "address": "+15550109999", "name": "Acme", "rate_per_second": 100}
        )
    )
    tenant.sender("email", "team@acme.example")
    ada = created(
        tenant.post("/contacts", {"phone": "+12125550171", "email": "ada@example.com", "first_name": "Ada"})
    )
    bob = created(tenant.post("/contacts", {"phone": "+12125550172", "first_name": "Bob"}))
    texts, mails = (created(tenant.post("/sequences", body))["id"] for body in (SMS, EMAIL))
    for sequence in (texts, mails):
        assert tenant.post(f"/sequences/{sequence}/activate").status_code == 200
    enrollments = {}
    for sequence, contacts in ((texts, [ada, bob]), (mails, [ada])):
        for contact in contacts:
            metadata = {"deal": "the renewal"} if contact is bob else {}
            body = {"sequence_id": sequence, "contact_id": contact["id"], "metadata": metadata}
            enrolled = created(tenant.post("/enrollments", body))
            enrollments[(sequence, contact["id"])] = enrolled["id"]
    dispatch(db_url)
    return {"sms_sender": sms_sender, "ada": ada["id"], "bob": bob["id"], "texts": texts, "mails": mails} | {
        "enrollments": enrollments
    }


def listed(tenant: ApiTenant, **params) -> list[dict]:
    response = tenant.get("/messages", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_messages_show_the_text_as_sent_with_its_sender_and_status(tenant: ApiTenant, sent):
    messages = listed(tenant)
    assert len(messages) == 3
    assert [m["created_at"] for m in messages] == sorted((m["created_at"] for m in messages), reverse=True)
    [to_bob] = [m for m in messages if m["contact_id"] == sent["bob"]]
    assert to_bob["body"] == "Hi Bob, it's Acme about the renewal"  # the worker's context has the enrollment
    assert (to_bob["channel"], to_bob["status"], to_bob["in_outbox"]) == ("sms", "sent", True)
    assert (to_bob["from_address"], to_bob["to_address"]) == ("+15550109999", "+12125550172")
    assert to_bob["sender_id"] == sent["sms_sender"]["id"]
    assert (to_bob["sequence_name"], to_bob["step_name"], to_bob["step_position"]) == ("Texts", "Hello", 1)
    assert to_bob["provider_message_id"] and to_bob["sent_at"] and to_bob["segments"] == 1
    [mail] = [m for m in messages if m["channel"] == "email"]
    assert (mail["subject"], mail["body"]) == ("For Ada", "Hello Ada")
    assert mail["html_body"].startswith("<p>Hello <b>Ada</b></p>")
    assert (mail["from_address"], mail["to_address"]) == ("team@acme.example", "ada@example.com")


def test_messages_are_filtered(tenant: ApiTenant, sent):
    def ids(**params) -> set[str]:
        return {m["id"] for m in listed(tenant, **params)}

    everything = ids()
    assert len(ids(contact_id=sent["ada"])) == 2
    assert len(ids(sequence_id=sent["texts"])) == 2
    assert len(ids(channel="email")) == 1
    assert ids(status="sent") == everything and ids(status="failed") == set()
    [bob_texts] = [
        m["id"] for m in listed(tenant, enrollment_id=sent["enrollments"][(sent["texts"], sent["bob"])])
    ]
    assert ids(contact_id=sent["bob"]) == {bob_texts}
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert ids(created_after=soon) == set() and ids(created_before=soon) == everything
    assert ids(contact_id=sent["ada"], channel="sms") == ids(sequence_id=sent["texts"]) - {bob_texts}
    paged = tenant.get("/messages", params={"page_size": 2, "page": 2}).json()
    assert (paged["total"], len(paged["items"])) == (3, 1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"channel": "fax"}, "channel"),
        ({"created_after": "yesterday"}, "created_after"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(tenant: ApiTenant, params, field):
    refused = tenant.get("/messages", params=params)
    assert refused.status_code in (400, 422), refused.text
    assert refused.json()["error"]["field"] == field


def test_one_message_has_its_history(tenant: ApiTenant, sent, db_url):
    [mail] = listed(tenant, channel="email")
    with psycopg.connect(db_url) as conn:  # Ada opens it (the open pixel's own call)
        conn.execute("SELECT drumbeat.record_delivery_engagement(%s, 'opened', '{}')", (mail["id"],))
    detail = tenant.get(f"/messages/{mail['id']}")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert {k: v for k, v in body.items() if k != "history"} == mail
    # (Oldest first; the send's time is the test dispatcher's clock, the open's the real one: the order of
    # the two is not the point here.)
    history = body["history"]
    assert sorted(entry["kind"] for entry in history) == ["opened", "sent"]
    assert [entry["occurred_at"] for entry in history] == sorted(entry["occurred_at"] for entry in history)
    assert next(e for e in history if e["kind"] == "opened")["payload"]["channel"] == "email"


def test_another_tenants_messages_are_not_seen(tenant: ApiTenant, other_tenant: ApiTenant, sent):
    assert listed(other_tenant) == []
    [mail] = listed(tenant, channel="email")
    assert other_tenant.get(f"/messages/{mail['id']}").status_code == 404
