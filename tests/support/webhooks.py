"""Webhook traffic as the providers and recipients send it, for the webhook tests and their log tests:
Twilio requests signed with Twilio's own RequestValidator, deliveries from a real dispatcher claim at a
fixed SQL clock, and the links of the email it sent, signed as the worker signs them."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser

import psycopg
from litestar.testing import TestClient
from twilio.request_validator import RequestValidator

from app.core.links import LinkSigner
from tests.support.api import LINK_SECRET, PUBLIC_URL, TWILIO_TOKEN
from workers.dispatcher import Dispatcher
from workers.transports import Message, SendResult

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York: steps due at once are sent
LATER = "2026-12-15 14:00Z"  # enrollments starting then stay waiting
SIGNER = LinkSigner(PUBLIC_URL, LINK_SECRET)

TRACKED_HTML = (
    "<html><body><p>Hi {{ contact.first_name }}</p>"
    '<a href="https://shop.example.com/pricing?plan=pro" data-link-name="pricing">Pricing</a> '
    '<a href="https://shop.example.com/café?q=ü">Café</a>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)
EMAIL_STEPS = [
    {"kind": "email", "subject": "Hi", "body": "Hi {{ contact.first_name }}", "html_body": TRACKED_HTML},
    {"kind": "email", "delay": {"value": 2, "unit": "days"}, "subject": "Again", "body": "Again"},
]


def twilio_post(
    client: TestClient, path: str, params: dict[str, str], *, signed_params=None, token=TWILIO_TOKEN
):
    """POST `params` as Twilio would, signed over `signed_params` (default: the same params)."""
    signature = RequestValidator(token).compute_signature(
        PUBLIC_URL + path, params if signed_params is None else signed_params
    )
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def inbound(body: str, **changes) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": "SM" + uuid.uuid4().hex,
        "To": "+15550100000",
        "From": "+15550100001",
        "Body": body,
        "NumMedia": "0",
    } | changes


class CapturingTransport:
    """A provider that accepts everything, keeps it, and answers a Twilio-like message id."""

    name = "capture"
    concurrent = False

    def __init__(self):
        self.sent: list[Message] = []

    def send(self, message: Message) -> SendResult:
        self.sent.append(message)
        return SendResult(sent=True, provider_message_id=f"SM{uuid.uuid4().hex}")


def dispatch(db_url: str) -> list[Message]:
    """One real claim / send / record at NOW, links signed as the API verifies them."""
    transport = CapturingTransport()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        Dispatcher(conn, {"sms": transport, "email": transport}, links=SIGNER).run_once()
    return transport.sent


def at_now(conn: psycopg.Connection) -> None:
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))


class Links(HTMLParser):
    def __init__(self, source: str):
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.hrefs.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
