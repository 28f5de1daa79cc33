"""Transports against real local servers: an HTTP server standing in for Twilio's REST API (driven by
the real twilio SDK) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import base64
import socket
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller

from tests.workers.conftest import ACCOUNT_SID
from workers.transports import Message, SmtpTransport, TwilioTransport


def sms(to="+15551230000", sender="+15550009999") -> Message:
    return Message(
        delivery_id="d1",
        workspace_id="w1",
        idempotency_key="k",
        channel="sms",
        to_address=to,
        from_address=sender,
        text="Hi Ada",
    )


def test_twilio_send_goes_through_the_sdk(twilio):
    transport = TwilioTransport(
        ACCOUNT_SID, "secret", twilio.url, status_callback="https://hooks.test/status"
    )
    result = transport.send(sms())
    assert result.sent and result.provider_message_id == f"SM{1:032d}"
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request["form"] == {
        "To": "+15551230000",
        "From": "+15550009999",
        "Body": "Hi Ada",
        "StatusCallback": "https://hooks.test/status",
    }
    assert base64.b64decode(request["auth"].split()[1]).decode() == f"{ACCOUNT_SID}:secret"


def test_twilio_messaging_service_sender(twilio):
    TwilioTransport(ACCOUNT_SID, "secret", twilio.url).send(sms(sender="MG" + "a" * 32))
    assert twilio.requests[0]["form"]["MessagingServiceSid"] == "MG" + "a" * 32


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (429, 20429, True),
        (500, None, True),
        (503, None, True),
        (400, 21211, False),
        (400, 21614, False),
        (400, 21610, False),
    ],
)
def test_twilio_errors_are_classified(twilio, status, code, transient):
    twilio.replies.append((status, {"code": code, "message": "nope", "status": status}))
    result = TwilioTransport(ACCOUNT_SID, "secret", twilio.url).send(sms())
    assert not result.sent and result.transient is transient
    assert result.error_code == str(code or status)


def test_twilio_unreachable_is_transient():
    result = TwilioTransport(ACCOUNT_SID, "secret", "http://127.0.0.1:9", timeout=2).send(sms())
    assert (result.sent, result.transient, result.error_code) == (False, True, "network")


class Inbox:
    def __init__(self, rcpt_reply: str | None = None):
        self.messages: list = []
        self.rcpt_reply = rcpt_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    def start(rcpt_reply=None):
        inbox = Inbox(rcpt_reply)
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
        controller.start()
        started.append(controller)
        return inbox, controller.port

    started: list[Controller] = []
    yield start
    for controller in started:
        controller.stop()


def email(**changes) -> Message:
    fields = dict(
        delivery_id="d2",
        workspace_id="w1",
        idempotency_key="k2",
        channel="email",
        to_address="ada@example.com",
        from_address="sam@drumbeat.test",
        text="Hello Ada",
        subject="Hi",
        html="<p>Hello Ada</p>",
        headers={
            "List-Unsubscribe": "<https://x.test/u/t>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    return Message(**(fields | changes))


def test_smtp_sends_text_and_html_with_headers(smtp_server):
    inbox, port = smtp_server()
    result = SmtpTransport("127.0.0.1", port, starttls=False).send(email())
    assert result.sent and result.provider_message_id.endswith("@drumbeat.test>")
    [received] = inbox.messages
    assert received["Message-ID"] == result.provider_message_id
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode().strip()
        for part in received.walk()
        if not part.is_multipart()
    }
    assert parts == {"text/plain": "Hello Ada", "text/html": "<p>Hello Ada</p>"}


@pytest.mark.parametrize(
    ("reply", "transient"), [("550 5.1.1 No such user", False), ("451 4.3.0 Try later", True)]
)
def test_smtp_rejections_are_classified(smtp_server, reply, transient):
    _, port = smtp_server(rcpt_reply=reply)
    result = SmtpTransport("127.0.0.1", port, starttls=False).send(email())
    assert (result.sent, result.transient, result.error_code) == (False, transient, reply[:3])


def test_smtp_unreachable_is_transient():
    result = SmtpTransport("127.0.0.1", 9, starttls=False, timeout=2).send(email())
    assert (result.sent, result.transient) == (False, True)
