"""Outgoing webhooks (workers/webhook_sender.py, workers/pinned_http.py) against a real receiver: an
http.server in a thread, plain and TLS (a self-signed certificate for a made-up name), answering as each
test says. Every delivered request is verified with the `standardwebhooks` library, not with our own code.
Names resolve through a fake DNS that counts lookups (tests/support/webhook_receiver.py)."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.webhook_receiver import Answer, FakeDns, Receiver, make_certificate, serve
from workers.pinned_http import ConnectFailed, PinnedPool, Route
from workers.webhook_sender import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE,
    Attempt,
    WebhookSender,
    new_secret,
    retry_delay,
    sign,
)

HOOK_HOST = "hooks.drumbeat.test"  # .test: never a real name, so only the fake DNS resolves it
BODY = json.dumps({"type": "enrollment.replied", "data": {"id": "e_1", "text": "¡Sí!"}}).encode()


def now() -> int:
    return int(time.time())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("webhook-cert"), [HOOK_HOST])


@pytest.fixture
def tls_receiver(certificate) -> Iterator[Receiver]:
    yield from serve(Receiver(tls=certificate.server_context()))


@pytest.fixture
def dns(monkeypatch) -> FakeDns:
    return FakeDns(monkeypatch)


@pytest.fixture
def sender(certificate) -> Iterator[WebhookSender]:
    # allow_private: the receiver is on 127.0.0.1. The refusals are tested with allow_private=False below.
    with WebhookSender(timeout=2.0, allow_private=True, ssl_context=certificate.client_context()) as sender:
        yield sender


def verify(secret: str, request) -> object:
    """What a receiver does with the standardwebhooks library; raises WebhookVerificationError."""
    return Webhook(secret).verify(request.body, request.headers)


# --- Signing ------------------------------------------------------------------------------------------


def test_new_secret_is_whsec_and_32_random_bytes():
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_sign_matches_the_standard_webhooks_test_vector():
    # The example of the Standard Webhooks specification (and of the Svix libraries).
    signature = sign(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_with_two_secrets_gives_one_signature_each_that_the_library_verifies():
    new, old, stranger = new_secret(), new_secret(), new_secret()
    timestamp = now()
    header = sign([new, old], "msg_1", timestamp, BODY)
    assert len(header.split(" ")) == 2 and all(part.startswith("v1,") for part in header.split(" "))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp), "webhook-signature": header}
    for secret in (new, old):
        assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(BODY + b" ", headers)


@pytest.mark.parametrize("secrets", [[], ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], ["whsec_***"], ["whsec_"]])
def test_sign_refuses_malformed_secrets_without_quoting_them(secrets):
    with pytest.raises(ValueError) as refused:
        sign(secrets, "msg_1", now(), BODY)
    for secret in secrets:
        if secret.removeprefix("whsec_"):
            assert secret.removeprefix("whsec_") not in str(refused.value)


@pytest.mark.parametrize("msg_id", ["", "msg 1", "msg_1\r\nx-evil: 1", "é", "m" * 257])
def test_sign_refuses_ids_unfit_for_a_header(msg_id):
    with pytest.raises(ValueError, match="webhook id"):
        sign([new_secret()], msg_id, now(), BODY)


# --- Delivery -----------------------------------------------------------------------------------------


def test_a_2xx_is_delivered_and_verifies(receiver, sender):
    secret = new_secret()
    attempt = sender.send(receiver.url("/in?team=7"), [secret], "msg_2xx", now(), BODY)
    assert attempt.outcome == "delivered" and attempt.status_code == 200 and attempt.error is None
    assert attempt.latency_ms > 0
    [request] = receiver.received
    assert request.method == "POST" and request.path == "/in?team=7"
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Drumbeat-Webhooks/1"
    assert request.headers["webhook-id"] == "msg_2xx"
    assert verify(secret, request) == json.loads(BODY)


def test_a_path_beyond_ascii_goes_percent_encoded_as_browsers_send_it(receiver, sender):
    attempt = sender.send(
        receiver.url("/hooks/café?name=zoë&already=%20"), [new_secret()], "msg_utf8", now(), BODY
    )
    assert attempt.outcome == "delivered"
    [request] = receiver.received
    assert request.path == "/hooks/caf%C3%A9?name=zo%C3%AB&already=%20"


def test_a_rotated_secret_and_its_successor_both_verify(receiver, sender):
    old, new = new_secret(), new_secret()
    assert sender.send(receiver.url(), [new, old], "msg_rot", now(), BODY).outcome == "delivered"
    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(new, request) == verify(old, request) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), request)


def test_retries_of_one_message_carry_the_same_id(receiver, sender):
    secret = new_secret()
    receiver.answer(Answer(503, body=b"busy"), Answer(500), Answer(204, body=b""))
    attempts = [sender.send(receiver.url(), [secret], "msg_same", now(), BODY) for _ in range(3)]
    assert [a.outcome for a in attempts] == ["retry", "retry", "delivered"]
    assert [a.status_code for a in attempts] == [503, 500, 204]
    assert attempts[0].error == "HTTP 503: busy"
    assert [r.headers["webhook-id"] for r in receiver.received] == ["msg_same"] * 3
    for request in receiver.received:
        verify(secret, request)


def test_a_410_disables(receiver, sender):
    receiver.answer(Answer(410, body=b"gone"))
    attempt = sender.send(receiver.url(), [new_secret()], "msg_410", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("disable", 410)
    assert "410" in attempt.error


@pytest.mark.parametrize("status", [400, 401, 404, 408, 413, 429, 500, 502, 503])
def test_other_errors_are_retried(receiver, sender, status):
    receiver.answer(Answer(status, body=b"x" * 10_000))
    attempt = sender.send(receiver.url(), [new_secret()], f"msg_{status}", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("retry", status)
    assert attempt.error.startswith(f"HTTP {status}") and len(attempt.error) <= 300


def test_a_redirect_is_not_followed(receiver, sender):
    receiver.answer(Answer(302, headers={"location": receiver.url("/elsewhere")}))
    attempt = sender.send(receiver.url("/in"), [new_secret()], "msg_302", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("retry", 302)
    assert receiver.url("/elsewhere") in attempt.error and "not followed" in attempt.error
    assert [request.path for request in receiver.received] == ["/in"]


def test_a_slow_receiver_times_out(receiver, certificate):
    receiver.answer(Answer(200, delay=5))
    with WebhookSender(timeout=0.5, allow_private=True) as sender:
        started = time.monotonic()
        attempt = sender.send(receiver.url(), [new_secret()], "msg_slow", now(), BODY)
        elapsed = time.monotonic() - started
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert "timed out" in attempt.error
    assert elapsed < 3  # generous: 0.5 s is the limit


def test_the_timeout_is_a_total_one_even_for_a_receiver_dripping_its_answer(receiver):
    # One byte every 0.1 s: no single read ever waits long, only the total deadline can stop this.
    receiver.answer(Answer(200, drip=0.1))
    with WebhookSender(timeout=1.0, allow_private=True) as sender:
        started = time.monotonic()
        attempt = sender.send(receiver.url(), [new_secret()], "msg_drip", now(), BODY)
        elapsed = time.monotonic() - started
    assert (attempt.outcome, attempt.status_code) == ("delivered", 200)  # the body is cut at the deadline
    assert elapsed < 4


def test_the_timeout_bounds_a_receiver_dripping_its_headers(receiver):
    receiver.answer(Answer(200, drip=0.1, drip_headers=True))
    with WebhookSender(timeout=1.0, allow_private=True) as sender:
        started = time.monotonic()
        attempt = sender.send(receiver.url(), [new_secret()], "msg_drip", now(), BODY)
        elapsed = time.monotonic() - started
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("retry", None, "timed out after 1 s")
    assert elapsed < 4


def test_a_hung_dns_lookup_is_bounded_by_the_timeout(monkeypatch):
    hung = threading.Event()

    def getaddrinfo(*args, **kwargs):
        hung.wait(10)  # released at the end of the test
        raise OSError("released")

    monkeypatch.setattr("socket.getaddrinfo", getaddrinfo)
    try:
        with WebhookSender(timeout=0.5) as sender:
            started = time.monotonic()
            attempt = sender.send(f"https://{HOOK_HOST}/in", [new_secret()], "msg_dns", now(), BODY)
            elapsed = time.monotonic() - started
    finally:
        hung.set()
    assert (attempt.outcome, attempt.error) == ("retry", f"DNS lookup of {HOOK_HOST} timed out")
    assert elapsed < 3


def test_a_huge_answer_is_not_read_whole(receiver, sender):
    receiver.answer(Answer(200, endless=True))  # announces 1 GiB, sends as fast as we read
    started = time.monotonic()
    attempt = sender.send(receiver.url(), [new_secret()], "msg_big", now(), BODY)
    assert attempt.outcome == "delivered"
    assert time.monotonic() - started < 2


def test_connection_refused_is_retried(sender):
    port = Receiver().port  # bound then closed at once: nobody listens there any more
    attempt = sender.send(f"http://127.0.0.1:{port}/in", [new_secret()], "msg_down", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert attempt.error.startswith("connection failed")


def test_a_connection_is_reused_across_sends(receiver, sender):
    for n in range(3):
        assert sender.send(receiver.url(), [new_secret()], f"msg_{n}", now(), BODY).outcome == "delivered"
    assert len({request.client_port for request in receiver.received}) == 1


def test_concurrent_sends_from_many_threads(receiver, sender):
    secret = new_secret()
    results: dict[str, Attempt] = {}

    def send(n: int) -> None:
        results[f"msg_{n}"] = sender.send(receiver.url(), [secret], f"msg_{n}", now(), BODY)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 24 and {a.outcome for a in results.values()} == {"delivered"}, [
        a for a in results.values() if a.outcome != "delivered"
    ]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(results)
    for request in receiver.received:
        verify(secret, request)


def test_errors_hold_no_secret_and_no_url_path(receiver, sender):
    secret = new_secret()
    receiver.answer(Answer(500, body=b""))
    attempt = sender.send(receiver.url("/T0/B0/tokensecret"), [secret], "msg_e", now(), BODY)
    assert attempt.error == "HTTP 500"
    refused = sender.send("https://user:pw@example.com/tokensecret", [secret], "msg_e", now(), BODY)
    assert refused.outcome == "refused"
    for text in (attempt.error, refused.error):
        assert "tokensecret" not in text and secret.removeprefix("whsec_") not in text and "pw" not in text


def test_a_malformed_secret_is_the_callers_bug(receiver, sender):
    with pytest.raises(ValueError, match="whsec_"):
        sender.send(receiver.url(), ["not-a-secret"], "msg_x", now(), BODY)
    assert receiver.received == []


# --- TLS and the pinned address -----------------------------------------------------------------------


def test_https_to_a_name_goes_to_the_checked_address_with_the_name_for_host_sni_and_certificate(
    tls_receiver, sender, dns
):
    # The name resolves once, to 127.0.0.1; any later lookup would answer 127.0.0.2, where nothing
    # listens: a client resolving again (DNS rebinding's opening) fails this test.
    dns.answer(HOOK_HOST, ["127.0.0.1"], ["127.0.0.2"])
    secret = new_secret()
    url = tls_receiver.url("/in", host=HOOK_HOST)
    attempt = sender.send(url, [secret], "msg_tls", now(), BODY)
    assert attempt.outcome == "delivered", attempt.error
    assert dns.lookups_of(HOOK_HOST) == 1
    [request] = tls_receiver.received
    assert request.headers["host"] == f"{HOOK_HOST}:{tls_receiver.port}"
    assert tls_receiver.server_names == [HOOK_HOST]  # SNI: the name, not the IP
    verify(secret, request)


def test_the_certificate_is_verified_for_the_name(tls_receiver, dns, tmp_path):
    # The receiver's certificate is for HOOK_HOST; reached under another name at the same address, the
    # handshake must fail, whatever the IP.
    other = make_certificate(tmp_path, ["other.drumbeat.test"])
    dns.answer("other.drumbeat.test", ["127.0.0.1"])
    with WebhookSender(timeout=2.0, allow_private=True, ssl_context=other.client_context()) as sender:
        attempt = sender.send(tls_receiver.url(host=HOOK_HOST), [new_secret()], "m", now(), BODY)
    assert attempt.outcome == "retry"  # HOOK_HOST does not resolve in this test's DNS
    dns.answer(HOOK_HOST, ["127.0.0.1"])
    with WebhookSender(timeout=2.0, allow_private=True, ssl_context=other.client_context()) as sender:
        attempt = sender.send(tls_receiver.url(host=HOOK_HOST), [new_secret()], "m", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert attempt.error.startswith("TLS failed") and "CERTIFICATE_VERIFY_FAILED" in attempt.error
    assert tls_receiver.received == []


def test_each_send_checks_again_and_a_rebound_name_is_refused_unsent(tls_receiver, sender, dns):
    dns.answer(HOOK_HOST, ["127.0.0.1"], ["169.254.169.254"])
    url = tls_receiver.url(host=HOOK_HOST)
    assert sender.send(url, [new_secret()], "msg_a", now(), BODY).outcome == "delivered"
    # The same name now points at the metadata service (a kept-alive connection to 127.0.0.1 exists).
    attempt = sender.send(url, [new_secret()], "msg_b", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("refused", None)
    assert "169.254.169.254" in attempt.error and "metadata" in attempt.error
    assert dns.lookups_of(HOOK_HOST) == 2
    assert [r.headers["webhook-id"] for r in tls_receiver.received] == ["msg_a"]


def test_a_name_that_stops_resolving_is_a_retry(sender, dns):
    attempt = sender.send(f"https://{HOOK_HOST}/in", [new_secret()], "msg_nx", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("retry", None)
    assert "does not resolve" in attempt.error


def test_the_pool_connects_only_to_the_route_s_checked_addresses(tls_receiver, certificate, dns):
    # The name resolves to the receiver, but the route says 127.0.0.2 (nothing listens there): the pool
    # never looks the name up, it connects where it is told or not at all.
    dns.answer(HOOK_HOST, ["127.0.0.1"])
    pool = PinnedPool(certificate.client_context())
    nowhere = Route(HOOK_HOST, tls_receiver.port, [ipaddress.ip_address("127.0.0.2")], time.monotonic() + 2)
    try:
        with pytest.raises(ConnectFailed):
            pool.post("https", nowhere, "/in", {}, b"{}", 100)
        no_address = Route(HOOK_HOST, tls_receiver.port, [], time.monotonic() + 2)
        with pytest.raises(ConnectFailed, match="no address"):
            pool.post("https", no_address, "/in", {}, b"{}", 100)
        checked = Route(
            HOOK_HOST, tls_receiver.port, [ipaddress.ip_address("127.0.0.1")], time.monotonic() + 2
        )
        assert pool.post("https", checked, "/in", {}, b"{}", 100).status == 200
    finally:
        pool.close()
    assert dns.lookups == [] and len(tls_receiver.received) == 1
    assert tls_receiver.server_names == [HOOK_HOST]  # SNI is the name, not the address


# --- Refusals (allow_private=False) -------------------------------------------------------------------


@pytest.fixture
def strict_sender() -> Iterator[WebhookSender]:
    with WebhookSender(timeout=2.0) as sender:
        yield sender


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.0.10", "100.64.1.1", "169.254.169.254", "0.0.0.0"],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_any_request(
    receiver, strict_sender, dns, address
):
    dns.answer(HOOK_HOST, [address])
    attempt = strict_sender.send(f"http://{HOOK_HOST}:{receiver.port}/in", [new_secret()], "m", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("refused", None)
    assert address in attempt.error
    assert receiver.received == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "metadata.google.internal"])
def test_forbidden_literals_and_names_are_refused_before_any_request(receiver, strict_sender, dns, host):
    dns.answer("localhost", ["127.0.0.1"])
    attempt = strict_sender.send(f"http://{host}:{receiver.port}/in", [new_secret()], "m", now(), BODY)
    assert (attempt.outcome, attempt.status_code) == ("refused", None)
    assert receiver.received == []


@pytest.mark.parametrize("url", ["ftp://example.com/", "https://u:p@example.com/", "https:///x"])
def test_urls_that_are_not_webhook_urls_are_refused(strict_sender, url):
    assert strict_sender.send(url, [new_secret()], "m", now(), BODY).outcome == "refused"


# --- Retry schedule -----------------------------------------------------------------------------------


def delays(random: float) -> list[timedelta]:
    schedule = []
    attempt = 1
    while (delay := retry_delay(attempt, random=lambda: random)) is not None:
        schedule.append(delay)
        attempt += 1
    return schedule


def test_the_schedule_without_jitter():
    assert delays(0.0) == list(RETRY_SCHEDULE)
    assert delays(0.0)[:4] == [
        timedelta(seconds=30),
        timedelta(minutes=2),
        timedelta(minutes=10),
        timedelta(minutes=30),
    ]
    assert len(delays(0.0)) + 1 == MAX_ATTEMPTS
    assert retry_delay(MAX_ATTEMPTS) is None and retry_delay(MAX_ATTEMPTS + 5) is None


@pytest.mark.parametrize("random", [0.0, 0.5, 0.999999])
def test_the_schedule_grows_and_gives_up_after_about_three_days(random):
    schedule = delays(random)
    assert schedule[0] <= timedelta(seconds=30)
    assert all(a <= b for a, b in itertools.pairwise(schedule))
    assert timedelta(days=2.5) <= sum(schedule, timedelta()) <= timedelta(days=3.25)


def test_jitter_shortens_by_at_most_a_fifth():
    for attempt, base in enumerate(RETRY_SCHEDULE, start=1):
        assert retry_delay(attempt, random=lambda: 0.0) == base
        assert retry_delay(attempt, random=lambda: 0.5) == base * 0.9
        assert base * 0.8 < retry_delay(attempt, random=lambda: 0.999999) < base
    spread = {retry_delay(5) for _ in range(20)}  # the real random: not all equal
    assert len(spread) > 1


def test_attempts_are_numbered_from_one():
    with pytest.raises(ValueError):
        retry_delay(0)
