"""Webhooks against the real app and database: Twilio callbacks verified with X-Twilio-Signature (computed
here with Twilio's own RequestValidator), and the email open pixel, click redirect and unsubscribe links
signed as the worker signs them. Deliveries come from a real dispatcher claim."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg.types.json import Jsonb
from twilio.request_validator import RequestValidator

from app.api.app import create_app
from app.api.webhooks import location
from app.core.links import LinkSigner
from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.support.api import PUBLIC_URL, TWILIO_TOKEN
from tests.support.webhooks import (
    EMAIL_STEPS,
    LATER,
    Links,
    at_now,
    dispatch,
    inbound,
    twilio_post,
)
from workers.transports import Message

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


# --- helpers -----------------------------------------------------------------------------------------


def rows(db_url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


def value(db_url: str, query: str, params=None):
    return rows(db_url, query, params)[0][0]


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    if field is not None:
        assert error["field"] == field, error
    return error


def enrollment_status(db_url: str, enrollment_id) -> str:
    return value(db_url, "SELECT status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,))


def events(db_url: str, kind: str) -> list[tuple]:
    return rows(
        db_url,
        "SELECT contact_id, enrollment_id, step_id, delivery_id, payload FROM drumbeat.events WHERE kind = %s"
        " ORDER BY id",
        (kind,),
    )


# --- Twilio: signatures ------------------------------------------------------------------------------


@pytest.fixture
def sms_tenant(db_url):
    """A workspace whose SMS number is +15550100000, a contact (+15550100001, also on email) enrolled in an
    active SMS sequence and an active email sequence (both waiting), and another workspace with a contact
    of the same phone number, also enrolled."""
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn, with_sender=False)
        tenant.sender("sms", "+15550100000")
        tenant.sender("email", "sales@acme.example")
        contact = tenant.contact(phone="+15550100001", email="ada@example.com")
        sms = tenant.sequence(SMS_SEQUENCE)
        email = tenant.sequence(
            sms_sequence(
                name="Mail", channel="email", steps=[{"kind": "email", "subject": "Hi", "body": "Hi"}]
            )
        )
        [(_, sms_enrollment, _)] = tenant.enroll(sms, [contact], start_at=LATER)
        [(_, email_enrollment, _)] = tenant.enroll(email, [contact], start_at=LATER)
        other = new_tenant(conn, "Globex", with_sender=False)
        other.sender("sms", "+15550200000")
        other_contact = other.contact(phone="+15550100001")
        [(_, other_enrollment, _)] = other.enroll(
            other.sequence(SMS_SEQUENCE), [other_contact], start_at=LATER
        )
        conn.commit()
    return {
        "contact": contact,
        "sms_enrollment": sms_enrollment,
        "email_enrollment": email_enrollment,
        "other_contact": other_contact,
        "other_enrollment": other_enrollment,
    }


def test_stop_by_sms_opts_the_contact_out_and_ends_only_its_sms_enrollments(client, db_url, sms_tenant):
    response = twilio_post(client, "/webhooks/twilio/inbound", inbound(" stop. "))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text == EMPTY_TWIML
    contact = sms_tenant["contact"]
    opted = rows(
        db_url, "SELECT sms_opted_out_at, email_opted_out_at FROM drumbeat.contacts WHERE id = %s", (contact,)
    )
    assert opted[0][0] is not None and opted[0][1] is None
    assert enrollment_status(db_url, sms_tenant["sms_enrollment"]) == "unsubscribed"
    assert enrollment_status(db_url, sms_tenant["email_enrollment"]) == "scheduled"
    logged = events(db_url, "unsubscribed")
    assert {e[0] for e in logged} == {contact} and {e[4]["channel"] for e in logged} == {"sms"}
    # The other workspace's contact with the same number is not touched: the receiving number decides.
    other = sms_tenant["other_contact"]
    assert value(db_url, "SELECT sms_opted_out_at FROM drumbeat.contacts WHERE id = %s", (other,)) is None
    assert enrollment_status(db_url, sms_tenant["other_enrollment"]) == "scheduled"


def test_a_reply_ends_enrollments_that_exit_on_reply(client, db_url, sms_tenant):
    response = twilio_post(client, "/webhooks/twilio/inbound", inbound("Sounds good, call me"))
    assert response.status_code == 200 and response.text == EMPTY_TWIML
    assert enrollment_status(db_url, sms_tenant["sms_enrollment"]) == "replied"
    [(_, _, _, _, payload)] = events(db_url, "replied")[:1]
    assert payload["body"] == "Sounds good, call me" and payload["channel"] == "sms"


def test_a_retried_inbound_webhook_is_answered_and_acts_once(client, db_url, sms_tenant):
    """Twilio retries the same MessageSid when it got no 2xx in time: 200 again, one event, one exit."""
    params = inbound("Sounds good, call me")
    counts = []
    for _ in range(3):
        response = twilio_post(client, "/webhooks/twilio/inbound", params)
        assert response.status_code == 200 and response.text == EMPTY_TWIML
        counts.append(len(events(db_url, "replied")))  # one per enrollment of the contact it concerns
    assert counts[0] >= 1 and counts == [counts[0]] * 3
    assert enrollment_status(db_url, sms_tenant["sms_enrollment"]) == "replied"


def test_an_unknown_number_or_sender_changes_nothing(client, db_url, sms_tenant):
    for params in (inbound("STOP", To="+15559999999"), inbound("STOP", From="+15559999998")):
        response = twilio_post(client, "/webhooks/twilio/inbound", params)
        assert response.status_code == 200 and response.text == EMPTY_TWIML
    assert enrollment_status(db_url, sms_tenant["sms_enrollment"]) == "scheduled"
    assert value(db_url, "SELECT count(*) FROM drumbeat.contacts WHERE sms_opted_out_at IS NOT NULL") == 0


def test_a_tampered_or_unsigned_request_is_403_and_changes_nothing(client, db_url, sms_tenant):
    signed = inbound("Hello")
    tampered = signed | {"Body": "STOP"}
    assert_error(
        twilio_post(client, "/webhooks/twilio/inbound", tampered, signed_params=signed), 403, "forbidden"
    )
    added = signed | {"Extra": "1"}
    assert_error(
        twilio_post(client, "/webhooks/twilio/inbound", added, signed_params=signed), 403, "forbidden"
    )
    wrong_key = twilio_post(client, "/webhooks/twilio/inbound", inbound("STOP"), token="not-our-auth-token")
    assert_error(wrong_key, 403, "forbidden")
    missing = client.post("/webhooks/twilio/inbound", data=inbound("STOP"))
    assert "X-Twilio-Signature" in assert_error(missing, 403, "forbidden")["message"]
    assert_error(client.post("/webhooks/twilio/status", data={"MessageSid": "SM1"}), 403, "forbidden")
    assert enrollment_status(db_url, sms_tenant["sms_enrollment"]) == "scheduled"
    assert (
        value(db_url, "SELECT count(*) FROM drumbeat.events WHERE kind IN ('replied', 'unsubscribed')") == 0
    )


def test_the_signature_covers_the_query_string(client, db_url, sms_tenant):
    path = "/webhooks/twilio/inbound?source=twilio"
    assert twilio_post(client, path, inbound("Hello")).status_code == 200
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, inbound("Hi"))
    response = client.post(
        "/webhooks/twilio/inbound?source=other", data=inbound("Hi"), headers={"X-Twilio-Signature": signature}
    )
    assert_error(response, 403, "forbidden")


def test_without_an_auth_token_twilio_webhooks_are_503_not_500(api_settings):
    settings = dataclasses.replace(api_settings, twilio_auth_token=None)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as unconfigured:
        response = twilio_post(unconfigured, "/webhooks/twilio/inbound", inbound("STOP"))
    assert "TWILIO_AUTH_TOKEN" in assert_error(response, 503, "not_configured")["message"]


def test_the_development_default_public_url_does_not_verify_twilio_webhooks(api_settings):
    """Twilio signs the URL it called, never this machine's own address: 503 naming the variable to set,
    rather than a 403 for every request that came through a tunnel."""
    settings = dataclasses.replace(
        api_settings, public_url="http://127.0.0.1:8000", public_url_defaulted=True
    )
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as defaulted:
        response = twilio_post(defaulted, "/webhooks/twilio/inbound", inbound("STOP"))
    assert "DRUMBEAT_PUBLIC_URL" in assert_error(response, 503, "not_configured")["message"]


# --- Twilio: status callbacks ------------------------------------------------------------------------


@pytest.fixture
def sms_delivery(db_url) -> Message:
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn)
        tenant.enroll(tenant.sequence(SMS_SEQUENCE), [tenant.contact(phone="+15550100009", first_name="Bo")])
        conn.commit()
    [message] = dispatch(db_url)
    return message


def provider_id(db_url: str, delivery_id: str) -> str:
    return value(db_url, "SELECT provider_message_id FROM drumbeat.deliveries WHERE id = %s", (delivery_id,))


def test_a_status_callback_updates_the_delivery(client, db_url, sms_delivery):
    sid = provider_id(db_url, sms_delivery.delivery_id)
    params = {
        "MessageSid": sid,
        "MessageStatus": "delivered",
        "AccountSid": "AC" + "0" * 32,
        "To": "+15550100009",
    }
    response = twilio_post(client, "/webhooks/twilio/status", params)
    assert response.status_code == 204 and response.content == b""
    [(status, delivered_at)] = rows(
        db_url,
        "SELECT status, delivered_at FROM drumbeat.deliveries WHERE id = %s",
        (sms_delivery.delivery_id,),
    )
    assert status == "delivered" and delivered_at is not None
    [(_, _, _, delivery, _)] = events(db_url, "delivered")
    assert str(delivery) == sms_delivery.delivery_id
    # A late "sent" (callbacks arrive out of order) never moves it back; an unknown sid changes nothing.
    assert (
        twilio_post(client, "/webhooks/twilio/status", params | {"MessageStatus": "sent"}).status_code == 204
    )
    assert (
        twilio_post(client, "/webhooks/twilio/status", params | {"MessageSid": "SMnotours"}).status_code
        == 204
    )
    assert value(db_url, "SELECT status FROM drumbeat.deliveries") == "delivered"
    assert len(events(db_url, "delivered")) == 1


def test_an_undelivered_callback_keeps_the_error_code(client, db_url, sms_delivery):
    sid = provider_id(db_url, sms_delivery.delivery_id)
    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert twilio_post(client, "/webhooks/twilio/status", params).status_code == 204
    assert rows(db_url, "SELECT status, error_code FROM drumbeat.deliveries") == [("undelivered", "30003")]


def test_a_signed_status_callback_without_its_fields_is_422(client, db_url, sms_delivery):
    response = twilio_post(client, "/webhooks/twilio/status", {"MessageSid": "SM1"})
    assert_error(response, 422, "invalid", "MessageStatus")
    assert_error(
        twilio_post(client, "/webhooks/twilio/inbound", {"From": "+15550100009"}), 422, "invalid", "To"
    )
    assert value(db_url, "SELECT status FROM drumbeat.deliveries") == "sent"


# --- Email: open pixel, click redirect, unsubscribe ----------------------------------------------------


@pytest.fixture
def email(db_url):
    """An email delivery (sent through a real claim) with its tracked links, to a contact who is also
    enrolled, waiting, in another email sequence and in an SMS sequence."""
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn)
        contact = tenant.contact(email="ada@example.com", phone="+15550100011", first_name="Ada")
        tenant.enroll(tenant.sequence(sms_sequence(channel="email", steps=EMAIL_STEPS)), [contact])
        other_email = tenant.sequence(sms_sequence(name="Other mail", channel="email", steps=EMAIL_STEPS[1:]))
        [(_, other_email_enrollment, _)] = tenant.enroll(other_email, [contact], start_at=LATER)
        [(_, sms_enrollment, _)] = tenant.enroll(tenant.sequence(SMS_SEQUENCE), [contact], start_at=LATER)
        conn.commit()
    [message] = dispatch(db_url)
    links = Links(message.html)
    [(enrollment_id, step_id)] = rows(
        db_url, "SELECT enrollment_id, step_id FROM drumbeat.deliveries WHERE id = %s", (message.delivery_id,)
    )
    return {
        "message": message,
        "contact": contact,
        "enrollment": enrollment_id,
        "step": step_id,
        "pixel": links.images[0].removeprefix(PUBLIC_URL),
        "pricing": links.hrefs[0].removeprefix(PUBLIC_URL),
        "cafe": links.hrefs[1].removeprefix(PUBLIC_URL),
        "unsubscribe": links.hrefs[2].removeprefix(PUBLIC_URL),
        "other_email_enrollment": other_email_enrollment,
        "sms_enrollment": sms_enrollment,
    }


def assert_gif(response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"] and "no-cache" in response.headers["cache-control"]
    body = response.content
    assert body[:6] == b"GIF89a" and body[-1:] == b";" and len(body) == 43
    assert struct.unpack("<HH", body[6:10]) == (1, 1)  # logical screen: 1 x 1
    assert body[13:19] == b"\x00\x00\x00\xff\xff\xff"  # global color table: black, white
    assert body[19:23] == b"!\xf9\x04\x01"  # graphic control extension: transparency on


def test_the_open_pixel_is_a_gif_and_records_one_open_on_the_step(client, db_url, email):
    assert email["pixel"].startswith("/t/o/")
    for _ in range(3):
        assert_gif(client.get(email["pixel"]))
    [(contact, enrollment, step, delivery, payload)] = events(db_url, "opened")
    assert (contact, enrollment, step) == (email["contact"], email["enrollment"], email["step"])
    assert str(delivery) == email["message"].delivery_id and payload["channel"] == "email"
    # Conditions look at events on the step itself: "if opened step 1" now holds for this enrollment.
    holds = value(
        db_url,
        """SELECT drumbeat.condition_holds(e, '{"if": "opened", "step": 1}')
           FROM drumbeat.enrollments e WHERE e.id = %s""",
        (email["enrollment"],),
    )
    assert holds is True


def test_an_invalid_pixel_token_gets_the_same_gif_and_records_nothing(client, db_url, email):
    token = email["pixel"].removeprefix("/t/o/")
    unsubscribe_token = email["unsubscribe"].removeprefix("/u/")
    for bad in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "x", unsubscribe_token, "A" * 9000):
        assert_gif(client.get(f"/t/o/{bad}"))
    assert events(db_url, "opened") == []


def test_a_click_redirects_to_the_signed_url_and_records_it_once(client, db_url, email):
    response = client.get(email["pricing"], follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example.com/pricing?plan=pro"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert client.get(email["pricing"], follow_redirects=False).status_code == 302
    [(contact, enrollment, step, delivery, payload)] = events(db_url, "clicked")
    assert str(delivery) == email["message"].delivery_id
    assert (contact, enrollment, step) == (email["contact"], email["enrollment"], email["step"])
    assert payload["url"] == "https://shop.example.com/pricing?plan=pro"
    assert payload["link_name"] == "pricing"  # the template's <a data-link-name="pricing">
    # Another link of the same message is another click; non-ASCII is percent-encoded for the header.
    response = client.get(email["cafe"], follow_redirects=False)
    assert response.headers["location"] == "https://shop.example.com/caf%C3%A9?q=%C3%BC"
    assert [e[4]["url"] for e in events(db_url, "clicked")] == [
        "https://shop.example.com/pricing?plan=pro",
        "https://shop.example.com/café?q=ü",
    ]


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ({"if": "clicked", "step": 1, "link_name": "Pricing"}, True),  # names match whatever their case
        ({"if": "clicked", "step": 1, "link_name": "cafe"}, False),  # that link has no name
        ({"if": "not_clicked", "step": 1, "link_name": "pricing"}, False),
    ],
)
def test_a_click_on_a_named_link_counts_for_a_condition_on_that_name(client, db_url, email, condition, holds):
    assert client.get(email["pricing"], follow_redirects=False).status_code == 302
    assert client.get(email["cafe"], follow_redirects=False).status_code == 302
    seen = value(
        db_url,
        "SELECT drumbeat.condition_holds(e, %s) FROM drumbeat.enrollments e WHERE e.id = %s",
        (Jsonb(condition), email["enrollment"]),
    )
    assert seen is holds


def test_a_tampered_click_token_is_404_and_never_a_redirect(client, db_url, email):
    token = email["pricing"].removeprefix("/t/c/")
    # The original delivery id and MAC with another target URL: an attacker's open-redirect attempt.
    blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    swapped = base64.urlsafe_b64encode(blob[:32] + b"https://evil.example/").rstrip(b"=").decode()
    other_key = LinkSigner(PUBLIC_URL, b"k" * 32).click_token(
        email["message"].delivery_id, "https://evil.example/"
    )
    open_token = email["pixel"].removeprefix("/t/o/")
    for bad in (token[:-3] + "abc", swapped, other_key, open_token, "x"):
        response = client.get(f"/t/c/{bad}", follow_redirects=False)
        assert_error(response, 404, "not_found")
        assert "location" not in response.headers
    assert events(db_url, "clicked") == []


def test_the_unsubscribe_page_offers_a_form_and_changes_nothing(client, db_url, email):
    response = client.get(email["unsubscribe"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert re.search(rf'<form method="post" action="{re.escape(email["unsubscribe"])}">', response.text)
    assert response.headers["referrer-policy"] == "no-referrer"
    assert value(db_url, "SELECT email_opted_out_at FROM drumbeat.contacts") is None
    invalid = client.get("/u/not-a-token")
    assert invalid.status_code == 404 and "not valid" in invalid.text


def test_one_click_unsubscribe_opts_out_of_email_and_ends_email_sequences(client, db_url, email):
    response = client.post(
        email["unsubscribe"],
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    [(email_out, sms_out)] = rows(
        db_url, "SELECT email_opted_out_at, sms_opted_out_at FROM drumbeat.contacts"
    )
    assert email_out is not None and sms_out is None
    assert enrollment_status(db_url, email["enrollment"]) == "unsubscribed"
    assert enrollment_status(db_url, email["other_email_enrollment"]) == "unsubscribed"
    assert enrollment_status(db_url, email["sms_enrollment"]) == "scheduled"
    logged = events(db_url, "unsubscribed")
    # Logged for each of the contact's enrollments (channel email in the payload); only email ones ended.
    assert {email["enrollment"], email["other_email_enrollment"]} <= {e[1] for e in logged}
    assert all(
        e[4]["source"] == "one_click" and e[4]["via_delivery_id"] == email["message"].delivery_id
        for e in logged
    )
    # Again (a mail client retrying, or the page's button): 200, nothing more happens.
    assert client.post(email["unsubscribe"], data={}).status_code == 200
    assert len(events(db_url, "unsubscribed")) == len(logged)


def test_an_invalid_unsubscribe_post_is_404_and_changes_nothing(client, db_url, email):
    token = email["unsubscribe"].removeprefix("/u/")
    for bad in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), email["pixel"].removeprefix("/t/o/")):
        assert_error(client.post(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"}), 404, "not_found")
    assert value(db_url, "SELECT email_opted_out_at FROM drumbeat.contacts") is None
    assert events(db_url, "unsubscribed") == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.example.com/a?b=c#d", "https://shop.example.com/a?b=c#d"),
        ("https://shop.example.com/a%20b?q=%C3%BC", "https://shop.example.com/a%20b?q=%C3%BC"),
        ("https://bücher.example/ä?x=ö#frag", "https://xn--bcher-kva.example/%C3%A4?x=%C3%B6#frag"),
        ("https://user@bücher.example:8443/", "https://user@xn--bcher-kva.example:8443/"),
        ('https://shop.example.com/a"b<c>', "https://shop.example.com/a%22b%3Cc%3E"),
    ],
)
def test_location_is_ascii_and_keeps_the_url(url, expected):
    assert location(url) == expected and location(url).isascii()
