"""Transports against real local servers: an HTTP server standing in for Twilio's REST API (driven by
the real twilio SDK) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from app.core.settings import Settings
from tests.support.processes import free_port
from tests.support.smtp import Inbox
from tests.support.twilio import ACCOUNT_SID, Answer
from workers.app import transports_for
from workers.transports import Hold, Lookup, Message, SmtpTransport, TwilioTransport


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


@pytest.mark.parametrize(
    ("defaulted", "callback"), [(False, "http://127.0.0.1:8000/webhooks/twilio/status"), (True, None)]
)
def test_twilio_is_never_asked_to_call_the_development_default_public_url(twilio, defaulted, callback):
    """An explicit DRUMBEAT_PUBLIC_URL is passed on whatever it is; the development default (this machine,
    which Twilio cannot reach) is not."""
    settings = Settings(
        database_url="postgresql://unused",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token="secret",
        twilio_base_url=twilio.url,
        public_url="http://127.0.0.1:8000",
        public_url_defaulted=defaulted,
    )
    transports_for(settings)["sms"].send(sms())
    assert twilio.requests[0]["form"].get("StatusCallback") == callback


def test_twilio_messaging_service_sender(twilio):
    TwilioTransport(ACCOUNT_SID, "secret", twilio.url).send(sms(sender="MG" + "a" * 32))
    assert twilio.requests[0]["form"]["MessagingServiceSid"] == "MG" + "a" * 32


@pytest.mark.parametrize(
    ("status", "code", "transient", "ambiguous"),
    [
        (429, 20429, True, False),  # a refusal: nothing was created, retried
        (500, None, False, True),  # the API may have created it before failing: unknown
        (503, None, False, True),
        (400, 21211, False, False),  # validation refusals: a retry would be refused again
        (400, 21614, False, False),
        (400, 21610, False, False),
        (401, 20003, False, False),
    ],
)
def test_twilio_errors_are_classified(twilio, status, code, transient, ambiguous):
    twilio.replies.append((status, {"code": code, "message": "nope", "status": status}))
    result = TwilioTransport(ACCOUNT_SID, "secret", twilio.url).send(sms())
    assert (result.sent, result.transient, result.ambiguous) == (False, transient, ambiguous)
    assert result.error_code == str(code or status)


@pytest.mark.parametrize(
    ("answer", "hold"),
    [
        (Answer(401, {"code": 20003, "message": "Authenticate", "status": 401}, accept=False), Hold("auth")),
        (Answer(403, {"code": 20005, "message": "Suspended", "status": 403}, accept=False), Hold("auth")),
        (
            Answer(
                429,
                {"code": 20429, "message": "Too many", "status": 429},
                False,
                headers={"Retry-After": "7"},
            ),
            Hold("rate_limited", 7.0, sender_only=True),
        ),
        (
            Answer(429, {"code": 20429, "message": "Too many", "status": 429}, False),
            Hold("rate_limited", 1.0, True),
        ),
        (Answer(400, {"code": 21211, "message": "Invalid To", "status": 400}, accept=False), None),
    ],
    ids=["auth", "suspended", "retry-after", "no-retry-after", "validation"],
)
def test_twilio_refusals_that_hold_the_channel_or_sender(twilio, answer, hold):
    twilio.replies.append(answer)
    result = TwilioTransport(ACCOUNT_SID, "secret", twilio.url).send(sms())
    assert (result.sent, result.ambiguous, result.hold, result.held) == (False, False, hold, hold is not None)


def test_twilio_a_run_of_5xx_is_an_outage(twilio):
    """Each 5xx stays ambiguous (unknown); five in a row with no success between also hold the channel."""
    transport = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    for _ in range(4):
        twilio.replies.append((500, {"message": "Internal", "status": 500}))
    twilio.replies.append(Answer())  # a success resets the run
    for _ in range(5):
        twilio.replies.append((503, {"message": "down", "status": 503}))
    results = [transport.send(sms()) for _ in range(10)]
    assert [result.hold for result in results] == [None] * 9 + [Hold("outage")]
    assert results[9].ambiguous and not results[9].held  # recorded unknown, never given back


def test_twilio_unreachable_is_transient():
    result = TwilioTransport(ACCOUNT_SID, "secret", "http://127.0.0.1:9", timeout=2).send(sms())
    assert (result.sent, result.transient, result.ambiguous, result.error_code) == (
        False,
        True,
        False,
        "network",
    )
    assert result.hold == Hold("unreachable") and result.held


def test_twilio_unknown_host_is_transient():
    result = TwilioTransport(ACCOUNT_SID, "secret", "http://no-such-host.invalid", timeout=2).send(sms())
    assert (result.sent, result.transient, result.ambiguous) == (False, True, False)


def test_twilio_read_timeout_after_the_request_is_ambiguous(twilio):
    """The stand-in takes the request (and would create the message) but answers after the timeout."""
    twilio.delay = 1.5
    result = TwilioTransport(ACCOUNT_SID, "secret", twilio.url, timeout=0.5).send(sms())
    assert (result.sent, result.transient, result.ambiguous) == (False, False, True)
    assert result.error_code == "network_ambiguous"
    deadline = time.monotonic() + 5
    while not twilio.requests and time.monotonic() < deadline:  # it records the request as it answers
        time.sleep(0.05)
    assert len(twilio.requests) == 1


def test_twilio_connection_lost_after_the_request_is_ambiguous():
    """A server that reads the whole request, then hangs up without answering."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        received: list[bytes] = []

        def serve_once():
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(5)
                data = b""
                while b"Body=" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)

        server = threading.Thread(target=serve_once)
        server.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = TwilioTransport(ACCOUNT_SID, "secret", url, timeout=5).send(sms())
        server.join(timeout=10)
    assert received and b"Body=Hi+Ada" in received[0]
    assert (result.sent, result.transient, result.ambiguous) == (False, False, True)


def test_twilio_find_lists_the_messages_that_match_newest_first(twilio):
    transport = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    for message in (sms(), sms(to="+15551230001"), replace(sms(), text="Other"), sms()):
        assert transport.send(message).sent
    since = datetime.now(UTC) - timedelta(minutes=1)
    ada = Lookup("+15551230000", "+15550009999", "Hi Ada", since)
    assert transport.find(ada) == [twilio.messages[3]["sid"], twilio.messages[0]["sid"]]
    assert transport.find(replace(ada, text="Hi Bo")) == []
    assert transport.find(replace(ada, from_address="+15550008888")) == []
    # Created before the send began (less Twilio's clock skew): another message, not this one.
    assert transport.find(replace(ada, since=since + timedelta(minutes=10))) == []


def test_twilio_find_through_a_messaging_service(twilio):
    transport = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    service = "MG" + "a" * 32
    transport.send(sms(sender=service))
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert transport.find(Lookup("+15551230000", service, "Hi Ada", since)) == [twilio.messages[0]["sid"]]
    assert transport.find(Lookup("+15551230000", "MG" + "b" * 32, "Hi Ada", since)) == []


def test_twilio_find_without_an_answer_is_none(twilio):
    twilio.lookup_status = 503
    transport = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    assert transport.find(Lookup("+15551230000", None, "Hi Ada", datetime.now(UTC))) is None
    assert (
        TwilioTransport(ACCOUNT_SID, "secret", "http://127.0.0.1:9", timeout=2).find(
            Lookup("+15551230000", None, "Hi Ada", datetime.now(UTC))
        )
        is None
    )


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
    assert (result.sent, result.transient, result.ambiguous) == (False, True, False)


class HangsUp(Inbox):
    """Closes the connection at one point of the dialogue instead of answering."""

    def __init__(self, at: str):
        super().__init__()
        self.at = at

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.at == "RCPT":
            server.transport.close()
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.at == "DATA":  # the whole message arrived: the relay could have queued it
            self.messages.append(message_from_bytes(envelope.content))
            server.transport.close()
            return "250 never heard"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(("at", "transient", "ambiguous"), [("RCPT", True, False), ("DATA", False, True)])
def test_smtp_connection_lost_before_data_is_retried_after_it_is_ambiguous(at, transient, ambiguous):
    handler = HangsUp(at)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        result = SmtpTransport("127.0.0.1", controller.port, starttls=False, timeout=5).send(email())
    finally:
        controller.stop()
    assert (result.sent, result.transient, result.ambiguous) == (False, transient, ambiguous)
    assert len(handler.messages) == (1 if at == "DATA" else 0)


def test_smtp_keeps_one_session_for_a_thread_s_messages(smtp_server):
    inbox, port = smtp_server()
    transport = SmtpTransport("127.0.0.1", port, starttls=False)
    results = [transport.send(email(to_address=f"c{i}@example.com")) for i in range(3)]
    assert all(result.sent for result in results)
    assert [m["To"] for m in inbox.messages] == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert inbox.sessions() == 1


def test_smtp_sessions_are_not_shared_between_threads(smtp_server):
    """smtplib is not thread-safe: two sending threads, two sessions, every message delivered."""
    inbox, port = smtp_server()
    transport = SmtpTransport("127.0.0.1", port, starttls=False)
    ready = threading.Barrier(2)

    def send_two(thread: int) -> list[bool]:
        ready.wait(timeout=5)  # both threads are alive at once, so neither can be the other
        return [transport.send(email(to_address=f"t{thread}m{i}@example.com")).sent for i in range(2)]

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(send_two, [0, 1])) == [[True, True], [True, True]]
    assert len(inbox.messages) == 4 and inbox.sessions() == 2


def test_smtp_opens_a_new_session_when_the_server_closed_the_idle_one(smtp_server):
    """The relay drops a session idle for 0.3 s; the NOOP check notices and the message still goes."""
    inbox, port = smtp_server(timeout=0.3)
    transport = SmtpTransport("127.0.0.1", port, starttls=False)
    assert transport.send(email(to_address="first@example.com")).sent
    time.sleep(0.8)
    assert transport.send(email(to_address="second@example.com")).sent
    assert len(inbox.messages) == 2 and inbox.sessions() == 2


def test_smtp_replaces_a_session_after_its_share_of_messages_or_a_long_idle(smtp_server):
    inbox, port = smtp_server()
    transport = SmtpTransport("127.0.0.1", port, starttls=False)
    transport.MESSAGES_PER_SESSION = 2
    assert all(transport.send(email(to_address=f"c{i}@example.com")).sent for i in range(5))
    assert inbox.sessions() == 3  # 2 + 2 + 1
    transport.IDLE_SECONDS = 0.1
    time.sleep(0.3)
    assert transport.send(email(to_address="later@example.com")).sent
    assert inbox.sessions() == 4


def test_smtp_a_refused_recipient_does_not_stop_the_next_message(smtp_server):
    inbox, port = smtp_server(refused=frozenset({"gone@example.com"}))
    transport = SmtpTransport("127.0.0.1", port, starttls=False)
    refused = transport.send(email(to_address="gone@example.com"))
    assert (refused.sent, refused.error_code, refused.transient) == (False, "550", False)
    assert refused.error_message == "5.1.1 No such user"  # the status that makes it a bounce
    assert transport.send(email(to_address="here@example.com")).sent
    assert [m["To"] for m in inbox.messages] == ["here@example.com"]


def _accept_only_sam(server, session, envelope, mechanism, auth_data) -> AuthResult:
    # handled=False: aiosmtpd answers a refusal with 535 itself (handled=True would leave the client waiting)
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"sam", b"s3cret"), handled=False)


@pytest.mark.parametrize(
    ("password", "sent", "sessions"), [("s3cret", [True, True], 1), ("wrong", [False], 0)]
)
def test_smtp_logs_in_once_per_session_and_a_bad_login_is_permanent(smtp_server, password, sent, sessions):
    # AUTH over plain text is fine on loopback
    inbox, port = smtp_server(authenticator=_accept_only_sam, auth_require_tls=False)
    transport = SmtpTransport("127.0.0.1", port, username="sam", password=password, starttls=False)
    results = [transport.send(email(to_address=f"c{i}@example.com")) for i in range(len(sent))]
    assert [result.sent for result in results] == sent
    assert inbox.sessions() == sessions
    if not all(sent):
        assert (results[0].error_code, results[0].transient) == ("535", False)
        # Our credentials, not the message: the channel is held (circuit breaker), the message given back.
        assert results[0].hold == Hold("auth") and results[0].held


def test_smtp_an_unreachable_relay_holds_the_channel():
    result = SmtpTransport("127.0.0.1", 9, starttls=False, timeout=2).send(email())
    assert (result.sent, result.held, result.hold) == (False, True, Hold("unreachable"))
