"""A dispatch batch end to end against a real database, through the outbox transport."""

from __future__ import annotations

import threading
import uuid
from html.parser import HTMLParser

import psycopg
import pytest

from app.core.links import LinkSigner
from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.support.twilio import ACCOUNT_SID, Answer
from workers.dispatcher import Dispatcher
from workers.transports import Message, OutboxTransport, SendResult, TwilioTransport

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York


def _setup(db_url: str, definition: dict, contacts: list[dict]) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        sequence = tenant.sequence(definition)
        tenant.enroll(sequence, tenant.contacts(*contacts))
        conn.commit()


@pytest.fixture
def dispatcher(db_url):
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
    outbox = OutboxTransport(db_url)
    yield Dispatcher(conn, {"sms": outbox, "email": outbox}, batch_size=2)
    outbox.close()
    conn.close()


def _rows(db_url: str, query: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def test_due_steps_are_rendered_sent_and_recorded_once(db_url, dispatcher):
    _setup(db_url, SMS_SEQUENCE, [{"phone": f"+1555000100{i}", "first_name": f"Ada{i}"} for i in range(3)])
    assert [dispatcher.run_once() for _ in range(3)] == [2, 1, 0]
    assert sorted(_rows(db_url, "SELECT to_address, text_body FROM drumbeat.outbox")) == [
        (f"+1555000100{i}", f"Hi Ada{i}") for i in range(3)
    ]
    assert _rows(db_url, "SELECT status, segments, count(*) FROM drumbeat.deliveries GROUP BY 1, 2") == [
        ("sent", 1, 3)
    ]
    positions = _rows(
        db_url,
        """SELECT st.position, count(*) FROM drumbeat.enrollments e
                                 JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id GROUP BY 1""",
    )
    assert positions == [(2, 3)]


def test_a_template_that_cannot_render_fails_that_delivery_only(db_url, dispatcher):
    steps = [{**SMS_SEQUENCE["steps"][0], "body": "Your plan: {{ contact.fields.plan }}"}]
    _setup(
        db_url,
        sms_sequence(steps=steps),
        [{"phone": "+15550001001", "fields": {"plan": "pro"}}, {"phone": "+15550001002"}],
    )
    assert dispatcher.run_once() == 2
    assert _rows(db_url, "SELECT text_body FROM drumbeat.outbox") == [("Your plan: pro",)]
    failed = _rows(
        db_url, "SELECT error_code, error_message FROM drumbeat.deliveries WHERE status = 'failed'"
    )
    assert failed[0][0] == "render_error" and "plan" in failed[0][1]
    assert sorted(_rows(db_url, "SELECT status FROM drumbeat.enrollments")) == [("completed",), ("failed",)]


class FlakyProvider:
    """A provider that refuses its first calls (certainly not accepted: transient), then accepts."""

    name = "flaky"
    concurrent = False

    def __init__(self, failures: int):
        self.failures = failures
        self.accepted: list[Message] = []

    def send(self, message: Message) -> SendResult:
        if self.failures:
            self.failures -= 1
            return SendResult(sent=False, error_code="network", error_message="refused", transient=True)
        self.accepted.append(message)
        return SendResult(sent=True, provider_message_id="SM123")


def test_a_transport_fault_is_retried_with_a_new_attempt(db_url):
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550001003", "first_name": "Bo"}])
    provider = FlakyProvider(failures=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        dispatcher = Dispatcher(conn, {"sms": provider})
        assert dispatcher.run_once() == 1 and provider.accepted == []
        assert dispatcher.run_once() == 0  # the retry waits for its backoff
        conn.execute("SELECT set_config('drumbeat.clock', '2026-11-23 14:01Z', false)")
        assert dispatcher.run_once() == 1
    [message] = provider.accepted
    assert message.idempotency_key.endswith(":2") and message.text == "Hi Bo"
    assert _rows(db_url, "SELECT attempt, status FROM drumbeat.deliveries ORDER BY attempt") == [
        (1, "failed"),
        (2, "sent"),
    ]


class CrashingProvider:
    """A transport that raises instead of classifying what happened."""

    name = "crashing"
    concurrent = False

    def __init__(self):
        self.calls = 0

    def send(self, message: Message) -> SendResult:
        self.calls += 1
        raise RuntimeError("the SDK gave up half-way")


def _twilio_dispatcher(conn, twilio, timeout: float = 10.0) -> Dispatcher:
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
    return Dispatcher(conn, {"sms": TwilioTransport(ACCOUNT_SID, "secret", twilio.url, timeout=timeout)})


def _set_clock(conn, instant: str) -> None:
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (instant,))


def _position(db_url: str) -> list[tuple]:
    return _rows(
        db_url,
        """SELECT e.status, st.position FROM drumbeat.enrollments e
           JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id""",
    )


@pytest.mark.parametrize(
    "answer",
    [
        Answer(
            500, {"code": 20500, "message": "Internal", "status": 500}, accept=True
        ),  # created, then failed
        Answer(delay=1.5),  # created, answered after the client's timeout
    ],
    ids=["5xx-after-creating", "read-timeout"],
)
def test_an_ambiguous_answer_is_unknown_until_twilio_says_it_has_the_message(db_url, twilio, answer):
    """A 5xx or a lost answer may hide an accepted message: unknown at once, never sent again; the
    enrollment waits until reconciliation finds the message in Twilio's list, then it is sent with its SID."""
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550001004", "first_name": "Cy"}])
    twilio.replies.append(answer)
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _twilio_dispatcher(conn, twilio, timeout=0.5)
        assert dispatcher.run_once() == 1
        assert dispatcher.reconcile() == 0  # the provider's list is asked only after reconcile_delay
        _set_clock(conn, "2026-11-23 14:00:31Z")
        assert dispatcher.run_once() == 0  # waiting, not due again
        [(_, reason)] = _rows(
            db_url, "SELECT kind, payload->>'reason' FROM drumbeat.events WHERE kind = 'delivery_unknown'"
        )
        assert reason == "ambiguous_provider_answer"
        assert dispatcher.reconcile() == 1
    [created] = twilio.messages
    assert len(twilio.requests) == 1 and twilio.lookups == 1
    assert _rows(db_url, "SELECT attempt, status, provider_message_id FROM drumbeat.deliveries") == [
        (1, "sent", created["sid"])
    ]
    assert _position(db_url) == [("active", 2)]


def test_a_5xx_that_created_nothing_is_retried_once_twilio_says_so(db_url, twilio):
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550001004", "first_name": "Cy"}])
    twilio.replies.append((503, {"message": "down", "status": 503}))  # nothing created
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _twilio_dispatcher(conn, twilio)
        assert dispatcher.run_once() == 1
        _set_clock(conn, "2026-11-23 14:00:31Z")
        assert dispatcher.reconcile() == 1
        assert (
            dispatcher.run_once() == 1
        )  # a failed attempt, retried at once (the reconcile delay was its wait)
    assert len(twilio.requests) == 2 and len(twilio.messages) == 1  # sent once, in the end
    assert _rows(db_url, "SELECT attempt, status FROM drumbeat.deliveries ORDER BY attempt") == [
        (1, "failed"),
        (2, "sent"),
    ]
    assert _position(db_url) == [("active", 2)]


def test_an_unknown_stays_unknown_while_twilio_cannot_be_asked(db_url, twilio):
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550001004", "first_name": "Cy"}])
    twilio.replies.append((500, {"message": "Internal", "status": 500}))
    twilio.lookup_status = 503
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _twilio_dispatcher(conn, twilio)
        assert dispatcher.run_once() == 1
        _set_clock(conn, "2026-11-23 14:00:31Z")
        assert dispatcher.reconcile() == 0
        assert dispatcher.reconcile() == 0  # asked again only after its backoff
        _set_clock(conn, "2026-11-23 14:30Z")
        assert dispatcher.run_once() == 0  # never sent again meanwhile
    assert len(twilio.requests) == 1 and twilio.lookups == 1
    assert _rows(db_url, "SELECT status FROM drumbeat.deliveries") == [("unknown",)]
    assert _position(db_url) == [("active", 1)]


def test_a_fault_the_transport_did_not_classify_is_unknown_not_retried(db_url):
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550001005", "first_name": "Di"}])
    provider = CrashingProvider()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        dispatcher = Dispatcher(conn, {"sms": provider})
        assert dispatcher.run_once() == 1
        conn.execute("SELECT set_config('drumbeat.clock', '2026-11-23 14:30Z', false)")
        assert dispatcher.run_once() == 0
    assert provider.calls == 1
    assert _rows(db_url, "SELECT status, error_code FROM drumbeat.deliveries") == [
        ("unknown", "transport_error")
    ]


def test_email_carries_a_signed_one_click_unsubscribe(db_url):
    steps = [{"kind": "email", "subject": "Hi", "body": "Bye: {{ unsubscribe_url }}"}]
    _setup(db_url, sms_sequence(channel="email", steps=steps), [{"email": "ada@example.com"}])
    signer = LinkSigner("https://drumbeat.example", b"s" * 32)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        outbox = OutboxTransport(db_url)
        assert Dispatcher(conn, {"email": outbox}, links=signer).run_once() == 1
        outbox.close()
    [(delivery_id, text, headers)] = _rows(
        db_url, "SELECT delivery_id, text_body, headers FROM drumbeat.outbox"
    )
    url = signer.unsubscribe_url(str(delivery_id))
    assert text == f"Bye: {url}"
    assert headers == {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


class CapturingTransport:
    """A provider that accepts everything and keeps what it was given."""

    name = "capture"
    concurrent = False

    def __init__(self):
        self.sent: list[Message] = []
        self.threads: set[int] = set()

    def send(self, message: Message) -> SendResult:
        self.sent.append(message)
        self.threads.add(threading.get_ident())
        return SendResult(sent=True, provider_message_id=f"cap-{len(self.sent)}")


TRACKED_HTML = (
    "<html><body><p>Hi {{ contact.first_name }},</p>"
    '<p><a href="https://shop.example.com/pricing?plan=pro&amp;ref=mail" data-link-name="Pricing">See pricing</a> or '
    "<A HREF='mailto:sales@example.com'>write to us</A>.</p>"
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


def _send_email(db_url: str, settings: dict, html: str = TRACKED_HTML) -> tuple[Message, LinkSigner]:
    steps = [{"kind": "email", "subject": "Hi", "body": "Hi {{ contact.first_name }}", "html_body": html}]
    definition = sms_sequence(
        channel="email", settings={"timezone": "America/New_York", **settings}, steps=steps
    )
    _setup(db_url, definition, [{"email": "ada@example.com", "first_name": "Ada"}])
    signer = LinkSigner("https://drumbeat.example", b"s" * 32)
    transport = CapturingTransport()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        assert Dispatcher(conn, {"email": transport}, links=signer).run_once() == 1
    [message] = transport.sent
    return message, signer


class _Links(HTMLParser):
    def __init__(self, source: str):
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.hrefs.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])


def test_email_html_gets_an_open_pixel_and_signed_click_links(db_url):
    message, signer = _send_email(db_url, {})
    delivery_id = message.delivery_id
    links = _links_of(message.html)
    [pixel] = links.images
    assert pixel.startswith("https://drumbeat.example/t/o/")
    assert signer.verify_open(pixel.rsplit("/", 1)[1]) == delivery_id
    pricing, mailto, unsubscribe = links.hrefs
    assert pricing.startswith("https://drumbeat.example/t/c/")
    assert signer.verify_click(pricing.rsplit("/", 1)[1]) == (
        delivery_id,
        "https://shop.example.com/pricing?plan=pro&ref=mail",
        "Pricing",  # the template's data-link-name, carried for "clicked the link named Pricing"
    )
    assert "data-link-name" not in message.html
    assert mailto == "mailto:sales@example.com"
    assert unsubscribe == signer.unsubscribe_url(delivery_id)
    assert "<p>Hi Ada,</p>" in message.html
    # The text part is untouched and is what the delivery keeps.
    assert message.text == "Hi Ada"
    assert _rows(db_url, "SELECT status, body FROM drumbeat.deliveries") == [("sent", "Hi Ada")]


def test_tracking_can_be_switched_off_per_sequence(db_url):
    message, signer = _send_email(db_url, {"track_opens": False, "track_clicks": False})
    expected = TRACKED_HTML.replace("{{ contact.first_name }}", "Ada").replace(
        "{{ unsubscribe_url }}", signer.unsubscribe_url(message.delivery_id)
    )
    assert message.html == expected


def test_clicks_only(db_url):
    message, signer = _send_email(db_url, {"track_opens": False})
    links = _links_of(message.html)
    assert links.images == []
    assert signer.verify_click(links.hrefs[0].rsplit("/", 1)[1])[1].startswith("https://shop.example.com/")


def test_sms_is_never_tracked(db_url):
    steps = [{**SMS_SEQUENCE["steps"][0], "body": "Hi, see https://shop.example.com/pricing"}]
    _setup(db_url, sms_sequence(steps=steps), [{"phone": "+15550001009"}])
    transport = CapturingTransport()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        signer = LinkSigner("https://drumbeat.example", b"s" * 32)
        assert Dispatcher(conn, {"sms": transport}, links=signer).run_once() == 1
    [message] = transport.sent
    assert message.text == "Hi, see https://shop.example.com/pricing" and message.html is None


def test_without_a_signer_the_html_is_sent_as_rendered(db_url):
    html = '<p><a href="https://shop.example.com/">Shop</a></p>'
    steps = [{"kind": "email", "subject": "Hi", "body": "Hi", "html_body": html}]
    _setup(db_url, sms_sequence(channel="email", steps=steps), [{"email": "bo@example.com"}])
    transport = CapturingTransport()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        assert Dispatcher(conn, {"email": transport}).run_once() == 1
    assert transport.sent[0].html == html


def _links_of(html: str | None) -> _Links:
    assert html is not None
    return _Links(html)


@pytest.mark.parametrize(
    ("sequence", "pixel", "click"),
    [
        ({}, True, True),  # a claim without the keys: on by default
        ({"track_opens": None, "track_clicks": None}, True, True),
        ({"track_opens": True, "track_clicks": False}, True, False),
        ({"track_opens": False, "track_clicks": True}, False, True),
    ],
)
def test_missing_or_null_tracking_flags_mean_on(sequence, pixel, click):
    signer = LinkSigner("https://drumbeat.example", b"s" * 32)
    html = Dispatcher._track(signer, '<a href="https://example.com/">x</a>', str(uuid.uuid4()), sequence)
    assert ("/t/o/" in html, "/t/c/" in html) == (pixel, click)


@pytest.mark.parametrize(("send_concurrency", "most_at_once"), [(4, 4), (1, 1)])
def test_a_batch_is_sent_send_concurrency_messages_at_a_time(db_url, twilio, send_concurrency, most_at_once):
    """A slow provider (0.2 s an answer): a batch of 8 keeps send_concurrency requests in flight, never
    more, and every delivery is recorded with its own provider id."""
    _setup(db_url, SMS_SEQUENCE, [{"phone": f"+1555000200{i}", "first_name": f"Ada{i}"} for i in range(8)])
    twilio.delay = 0.2
    sms = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        dispatcher = Dispatcher(conn, {"sms": sms}, batch_size=8, send_concurrency=send_concurrency)
        assert dispatcher.run_once() == 8
    assert twilio.most_in_flight == most_at_once
    sent = _rows(
        db_url, "SELECT to_address, provider_message_id FROM drumbeat.deliveries WHERE status = 'sent'"
    )
    assert sorted(to for to, _ in sent) == [f"+1555000200{i}" for i in range(8)]
    assert len({sid for _, sid in sent}) == 8


@pytest.mark.parametrize("concurrent", [False, True])
def test_only_a_concurrent_transport_is_called_from_the_send_threads(db_url, concurrent):
    """A local transport (the outbox) gains nothing from threads, so its batch is sent in the dispatcher's
    own thread; a network provider's batch goes to the send threads."""
    _setup(db_url, SMS_SEQUENCE, [{"phone": f"+1555000300{i}"} for i in range(4)])
    transport = CapturingTransport()
    transport.concurrent = concurrent
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        assert Dispatcher(conn, {"sms": transport}, batch_size=4, send_concurrency=4).run_once() == 4
    assert (transport.threads == {threading.get_ident()}) is not concurrent


def _holds(db_url: str) -> list[tuple]:
    return _rows(db_url, "SELECT channel, sender_id IS NULL, reason, error_code FROM drumbeat.channel_holds")


AUTH_REFUSED = Answer(401, {"code": 20003, "message": "Authenticate", "status": 401}, accept=False)


def test_refused_credentials_hold_the_channel_probe_once_a_minute_and_resume(db_url, twilio, caplog):
    """Wrong credentials fail nothing: the channel is held (logged once), every due step waits, a probe
    goes through about once a minute, and once Twilio accepts again everything is sent, once."""
    _setup(db_url, SMS_SEQUENCE, [{"phone": f"+1555000200{i}", "first_name": f"P{i}"} for i in range(3)])
    twilio.replies += [AUTH_REFUSED, AUTH_REFUSED]
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _twilio_dispatcher(conn, twilio)
        with caplog.at_level("INFO", logger="drumbeat.dispatch"):
            assert dispatcher.run_once() == 0  # nothing recorded: all three given back unsent
            assert _holds(db_url) == [("sms", True, "auth", "20003")]
            assert len(twilio.requests) == 1  # the rest of the batch was never tried
            _set_clock(conn, "2026-11-23 14:00:30Z")
            assert dispatcher.run_once() == 0 and len(twilio.requests) == 1  # held: nothing is due
            _set_clock(conn, "2026-11-23 14:01:00Z")
            assert dispatcher.run_once() == 0 and len(twilio.requests) == 2  # one probe, refused again
            _set_clock(conn, "2026-11-23 14:02:00Z")
            assert dispatcher.run_once() == 3  # the next probe goes through, and so does the rest
    assert [r.getMessage() for r in caplog.records].count("channel_held") == 1
    assert [r.getMessage() for r in caplog.records].count("channel_resumed") == 1
    assert _holds(db_url) == []
    assert _rows(db_url, "SELECT status, attempt, count(*) FROM drumbeat.deliveries GROUP BY 1, 2") == [
        ("sent", 1, 3)
    ]
    assert len(twilio.messages) == 3 and _position(db_url) == [("active", 2)] * 3
    assert _rows(db_url, "SELECT count(*) FROM drumbeat.events WHERE kind = 'send_held'") == [(2,)]
    assert _rows(db_url, "SELECT count(*) FROM drumbeat.events WHERE kind IN ('failed', 'exited')") == [(0,)]


def test_a_429_holds_the_sender_for_its_retry_after_and_fails_nothing(db_url, twilio):
    _setup(db_url, SMS_SEQUENCE, [{"phone": f"+1555000300{i}", "first_name": f"R{i}"} for i in range(2)])
    too_many = {"code": 20429, "message": "Too Many Requests", "status": 429}
    twilio.replies.append(Answer(429, too_many, accept=False, headers={"Retry-After": "5"}))
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _twilio_dispatcher(conn, twilio)
        assert dispatcher.run_once() == 0
        assert _holds(db_url) == [("sms", False, "rate_limited", "20429")]  # the sender, not the channel
        _set_clock(conn, "2026-11-23 14:00:04Z")
        assert dispatcher.run_once() == 0
        _set_clock(conn, "2026-11-23 14:00:05Z")
        assert dispatcher.run_once() == 2
    assert _holds(db_url) == []
    assert _rows(db_url, "SELECT status, attempt, count(*) FROM drumbeat.deliveries GROUP BY 1, 2") == [
        ("sent", 1, 2)
    ]
    assert len(twilio.messages) == 2


class WitnessProvider:
    """A reconcilable provider that looks, while it is being called, at what the database already knows
    of the delivery: what a worker killed at this instant would leave for reconciliation."""

    name = "witness"
    concurrent = False
    reconciles = True

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.seen: list[tuple] = []

    def send(self, message: Message) -> SendResult:
        self.seen += _rows(
            self.db_url, f"SELECT status, body FROM drumbeat.deliveries WHERE id = '{message.delivery_id}'"
        )
        return SendResult(sent=True, provider_message_id="SMwitness")


def test_the_text_is_kept_before_the_provider_is_called(db_url):
    _setup(db_url, SMS_SEQUENCE, [{"phone": "+15550004001", "first_name": "Wu"}])
    provider = WitnessProvider(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        assert Dispatcher(conn, {"sms": provider}).run_once() == 1
    assert provider.seen == [("sending", "Hi Wu")]
