"""POST /api/v1/webhooks/email/inbound on the real app and database: a raw reply with an API key, an
inbound-parse form with the workspace's inbound secret, each handled once; wrong, rotated or foreign
credentials are refused before anything is read; another workspace's key reaches none of our deliveries."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import psycopg
import pytest

from tests.support.api import ApiTenant, Contract, bearer, make_jwt
from workers.dispatcher import Dispatcher
from workers.transports import OutboxTransport

PATH = "/api/v1/webhooks/email/inbound"
SENT_ID = "<first-touch@acme.example>"
EMAIL_SEQUENCE = {
    "name": "Email outreach",
    "channel": "email",
    "steps": [
        {"kind": "email", "subject": "Quick question", "body": "Hi {{ contact.first_name }}"},
        {
            "kind": "email",
            "subject": "Following up",
            "body": "Any thoughts?",
            "delay": {"value": 2, "unit": "days"},
        },
    ],
}


@pytest.fixture
def sent(db_url: str, tenant: ApiTenant) -> dict:
    """Ada's first email went out (through the outbox) as SENT_ID; she is waiting for step 2."""
    contract = Contract(db_url, tenant)
    contract.sender("email", f"rep-{uuid.uuid4().hex[:6]}@acme.example")
    contact = contract.contact(email="ada@example.com", first_name="Ada")
    sequence = contract.sequence(EMAIL_SEQUENCE)
    enrolled = tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact})
    assert enrolled.status_code in (200, 201), enrolled.text
    with psycopg.connect(db_url, autocommit=True) as conn:
        outbox = OutboxTransport(db_url)
        Dispatcher(conn, {"sms": outbox, "email": outbox}).run_once()
        conn.execute(
            "UPDATE drumbeat.deliveries SET provider_message_id = %s WHERE contact_id = %s",
            (SENT_ID, contact),
        )
        [(enrollment_id,)] = conn.execute(
            "SELECT id FROM drumbeat.enrollments WHERE contact_id = %s", (contact,)
        ).fetchall()
    return {"contact": contact, "enrollment": str(enrollment_id)}


def reply(text: str = "Yes, Tuesday works.\n\nOn Mon, Rep wrote:\n> Hi Ada", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada Lovelace <ada@example.com>"
    message["To"] = "rep@acme.example"
    message["Subject"] = "Re: Quick question"
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="example.com")
    message["In-Reply-To"] = SENT_ID
    message["References"] = SENT_ID
    for name, value in headers.items():
        del message[name.replace("_", "-")]
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return message.as_bytes()


def status(db_url: str, enrollment_id: str) -> str:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
        ).fetchone()[0]


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def post_raw(client, raw: bytes, headers: dict[str, str]):
    return client.post(PATH, content=raw, headers=headers | {"Content-Type": "message/rfc822"})


def test_a_raw_reply_with_an_api_key_ends_the_enrollment_once(client, tenant, sent, db_url):
    message = reply()
    answer = post_raw(client, message, tenant.headers)
    assert answer.status_code == 200 and answer.json() == {"outcome": "replied"}, answer.text
    assert status(db_url, sent["enrollment"]) == "replied"
    again = post_raw(client, message, tenant.headers)
    assert again.json() == {"outcome": "duplicate"}
    timeline = tenant.get(f"/enrollments/{sent['enrollment']}").json()
    replies = [event for event in timeline["events"] if event["kind"] == "replied"]
    assert len(replies) == 1 and replies[0]["payload"]["text"].startswith("Yes, Tuesday works.")


def test_an_out_of_office_is_not_a_reply(client, tenant, sent, db_url):
    message = reply("I am out of the office until December 14.", Subject="Automatic reply: Quick question",
                    Auto_Submitted="auto-replied")  # fmt: skip
    answer = post_raw(client, message, tenant.headers)
    assert answer.json() == {"outcome": "auto_replied"}, answer.text
    assert status(db_url, sent["enrollment"]) == "active"


def test_an_inbound_parse_form_with_the_inbound_secret(client, tenant, sent, db_url):
    created = tenant.post(f"/workspaces/{tenant.workspace_id}/inbound-secret")
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("dbi_") and created.json()["url"].endswith(PATH)
    form = {"email": reply().decode(), "to": "rep@acme.example", "from": "ada@example.com"}
    answer = client.post(PATH, data=form, headers=basic(tenant.workspace_id, secret))
    assert answer.json() == {"outcome": "replied"}, answer.text
    assert status(db_url, sent["enrollment"]) == "replied"
    rotated = tenant.post(f"/workspaces/{tenant.workspace_id}/inbound-secret").json()["secret"]
    stale = client.post(
        PATH, data={"body-mime": reply().decode()}, headers=basic(tenant.workspace_id, secret)
    )
    assert stale.status_code == 401
    fresh = client.post(
        PATH, data={"body-mime": reply().decode()}, headers=basic(tenant.workspace_id, rotated)
    )
    assert fresh.status_code == 200, fresh.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("dbk_000000000000_" + "0" * 64),
        bearer(make_jwt(str(uuid.uuid4()))),
        basic(str(uuid.uuid4()), "dbi_nope"),
        {"Authorization": "Basic not-base64!"},
    ],
    ids=["none", "unknown key", "jwt", "unknown workspace", "malformed basic"],
)
def test_bad_credentials_are_refused_and_nothing_is_read(client, sent, db_url, headers):
    answer = post_raw(client, reply(), headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    assert status(db_url, sent["enrollment"]) == "active"


def test_another_workspace_key_reaches_none_of_our_deliveries(client, sent, other_tenant, db_url):
    answer = post_raw(client, reply(), other_tenant.headers)
    assert answer.json() == {"outcome": "unknown_contact"}
    assert status(db_url, sent["enrollment"]) == "active"


def test_a_form_without_the_raw_message_names_the_field(client, tenant):
    answer = client.post(PATH, data={"text": "hello"}, headers=tenant.headers)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "email"


def test_only_admins_create_the_inbound_secret(client, tenant):
    member = str(uuid.uuid4())
    assert tenant.post("/members", {"user_id": member, "role": "member"}).status_code == 201
    answer = client.post(
        f"/api/v1/workspaces/{tenant.workspace_id}/inbound-secret", headers=bearer(make_jwt(member))
    )
    assert answer.status_code == 403
