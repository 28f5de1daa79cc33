"""What the webhooks log, on the real app and database: opens, clicks, unsubscribes, replies, STOPs and
status callbacks become lines with the delivery's, enrollment's and workspace's ids under the request's
id; the signed tokens, the phone numbers, the message bodies and Twilio's signature never appear."""

from __future__ import annotations

import psycopg
import pytest

from tests.log_capture import captured_logs
from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.support.api import PUBLIC_URL, TWILIO_TOKEN
from tests.support.webhooks import (
    EMAIL_STEPS,
    Links,
    at_now,
    dispatch,
    inbound,
    twilio_post,
)

PHONE = "+15550100001"  # the contact's
MARKER = "MARKER-body-5d1e"


def rows(db_url: str, query: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def ids_of(line: dict) -> tuple:
    return tuple(line.get(key) for key in ("workspace_id", "enrollment_id", "step_id", "delivery_id"))


@pytest.fixture
def email_links(db_url) -> dict:
    """An email sent through a real claim (its body holds MARKER), and the tracked paths in it."""
    steps = [{**EMAIL_STEPS[0], "body": MARKER}, EMAIL_STEPS[1]]
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn)
        contact = tenant.contact(email="ada@example.com", phone=PHONE, first_name="Ada")
        tenant.enroll(tenant.sequence(sms_sequence(channel="email", steps=steps)), [contact])
        conn.commit()
    [message] = dispatch(db_url)
    links = Links(message.html)
    [delivery] = rows(
        db_url,
        "SELECT workspace_id::text, enrollment_id::text, step_id::text, id::text FROM drumbeat.deliveries",
    )
    return {
        "delivery": delivery,
        "pixel": links.images[0].removeprefix(PUBLIC_URL),
        "click": links.hrefs[0].removeprefix(PUBLIC_URL),
        "unsubscribe": links.hrefs[2].removeprefix(PUBLIC_URL),
    }


def test_email_engagement_is_logged_by_ids_and_its_tokens_never(client, email_links):
    paths = [email_links[name] for name in ("pixel", "click", "unsubscribe")]
    with captured_logs() as captured:
        opened = client.get(paths[0], headers={"X-Request-ID": "req-open"})
        clicked = client.get(paths[1], headers={"X-Request-ID": "req-click"}, follow_redirects=False)
        page = client.get(paths[2])
        unsubscribed = client.post(paths[2], headers={"X-Request-ID": "req-unsub"})
    assert [r.status_code for r in (opened, clicked, page, unsubscribed)] == [200, 302, 200, 200]
    [open_line], [click_line] = captured.named("opened"), captured.named("clicked")
    assert ids_of(open_line) == ids_of(click_line) == email_links["delivery"]
    assert (open_line["correlation_id"], click_line["correlation_id"]) == ("req-open", "req-click")
    assert open_line["channel"] == "email"
    [opted_out] = captured.named("opted_out")
    [exited] = captured.named("exited")
    assert opted_out["correlation_id"] == exited["correlation_id"] == "req-unsub"
    assert (exited["enrollment_id"], exited["status"]) == (email_links["delivery"][1], "unsubscribed")
    routes = {line["route"] for line in captured.named("request")}
    assert routes == {"/t/o/{token}", "/t/c/{token}", "/u/{token}"}
    for path in paths:
        token = path.rsplit("/", 1)[1]
        assert token[:16] not in captured.text
    assert "plan=pro" not in captured.text and MARKER not in captured.text


@pytest.fixture
def sms_enrollment(db_url) -> tuple[str, str]:
    """A contact (PHONE) waiting in an SMS sequence of a workspace whose number is +15550100000:
    (workspace id, enrollment id)."""
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn, with_sender=False)
        tenant.sender("sms", "+15550100000")
        contact = tenant.contact(phone=PHONE)
        [(_, enrollment, _)] = tenant.enroll(tenant.sequence(SMS_SEQUENCE), [contact], start_at="2026-12-15Z")
        conn.commit()
    return str(tenant.workspace_id), str(enrollment)


@pytest.mark.parametrize(
    ("body", "logged", "status"),
    [(f"Yes! {MARKER}", "replied", "replied"), ("STOP", "opted_out", "unsubscribed")],
)
def test_an_inbound_sms_is_logged_without_its_number_or_body(client, sms_enrollment, body, logged, status):
    params = inbound(body)
    with captured_logs() as captured:
        response = twilio_post(client, "/webhooks/twilio/inbound", params)
    assert response.status_code == 200
    workspace_id, enrollment_id = sms_enrollment
    [line] = captured.named(logged)
    [exited] = captured.named("exited")
    assert (line["workspace_id"], line["enrollment_id"], line["channel"]) == (
        workspace_id,
        enrollment_id,
        "sms",
    )
    assert (exited["enrollment_id"], exited["status"]) == (enrollment_id, status)
    assert line["correlation_id"] == exited["correlation_id"] == response.headers["x-request-id"]
    signature = response.request.headers["x-twilio-signature"]
    for secret in (PHONE, params["To"], MARKER, TWILIO_TOKEN, signature):
        assert secret not in captured.text


def test_a_failed_delivery_callback_is_a_warning_with_its_ids(client, db_url):
    with psycopg.connect(db_url) as conn:
        at_now(conn)
        tenant = new_tenant(conn)
        tenant.enroll(tenant.sequence(SMS_SEQUENCE), [tenant.contact(phone=PHONE)])
        conn.commit()
    dispatch(db_url)
    [(sid, delivery_id)] = rows(db_url, "SELECT provider_message_id, id::text FROM drumbeat.deliveries")
    with captured_logs() as captured:
        params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003", "To": PHONE}
        assert twilio_post(client, "/webhooks/twilio/status", params).status_code == 204
        assert (
            twilio_post(client, "/webhooks/twilio/status", params | {"MessageSid": "SMnotours"}).status_code
            == 204
        )
    [line] = captured.named("undelivered")
    assert (line["level"], line["delivery_id"], line["provider_message_id"], line["error_code"]) == (
        "WARNING",
        delivery_id,
        sid,
        "30003",
    )
    [unmatched] = captured.named("status_unmatched")
    assert unmatched["provider_message_id"] == "SMnotours"
    assert PHONE not in captured.text
