"""Outgoing webhooks, the Standard Webhooks way (https://www.standardwebhooks.com/): signing, one delivery
attempt, and the retry schedule. What to send, when, and what an attempt's outcome changes in the
database belong to the caller; this module holds no state but a connection pool.

A delivery is a POST of a JSON body with three headers:

- `webhook-id`: the message id, the same on every retry of one message (receivers de-duplicate on it);
- `webhook-timestamp`: unix seconds of this attempt (receivers refuse one more than ~5 minutes off);
- `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per secret, space-separated;
  the key is the base64 part of a `whsec_...` secret. While a rotated-out secret still signs (24 h),
  both sign, and a receiver holding either verifies.

`WebhookSender.send` reports one attempt as an `Attempt`: delivered (2xx), disable (410 Gone: the receiver
asks us to stop), refused (the URL is not allowed, or now resolves to a forbidden address: no request was
made) or retry (any other status, a redirect, a timeout, a connection or TLS failure, DNS failing).
`retry_delay` says when to try again, and when to give up."""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import http.client
import random as _random
import re
import secrets as _secrets
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import certifi

from app.core.webhook_urls import (
    ForbiddenAddress,
    IPAddress,
    UnresolvableHost,
    WebhookTarget,
    WebhookUrlError,
    literal_address,
    parse_webhook_url,
    resolve_public,
)
from workers.pinned_http import ConnectFailed, DeadlineReached, PinnedPool, Route

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_RESPONSE_BYTES = 4096  # what we keep of a receiver's answer; the rest is never read
MAX_ERROR_CHARS = 300
DEFAULT_TIMEOUT = 10.0

Outcome = Literal["delivered", "retry", "disable", "refused"]


# --- Signing ------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: "whsec_" and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a "whsec_<base64>" secret. The ValueError never quotes the secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


# A webhook-id goes in a header and in the signed content: visible ASCII, no space.
_MSG_ID = re.compile(r"[\x21-\x7e]{1,256}")


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: one "v1,<base64 HMAC-SHA256>" of "{msg_id}.{timestamp}.{body}" per
    secret (newest first by convention), separated by spaces."""
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValueError("a webhook id is 1 to 256 visible ASCII characters (no spaces)")
    if isinstance(secrets, str) or not secrets:
        raise ValueError("sign() takes a non-empty list of secrets")
    if not isinstance(body, bytes | bytearray):
        raise TypeError("the body is signed as sent: pass bytes")
    signed = f"{msg_id}.{int(timestamp)}.".encode() + bytes(body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()
        for secret in secrets
    )


# --- Retry schedule -----------------------------------------------------------------------------------

# The wait after the Nth failed attempt (N = 1 is the first delivery). 12 attempts over ~3 days.
RETRY_SCHEDULE = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=12),
    timedelta(hours=24),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
JITTER = 0.2  # a delay is shortened by up to 20%: never later than the schedule says


def retry_delay(attempt: int, *, random: Callable[[], float] = _random.random) -> timedelta | None:
    """How long to wait after failed attempt number `attempt` (1 = the first delivery) before the next
    one, or None to give up.

    The schedule: 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 12 h, 24 h, 24 h: 12 attempts in
    all, the last one about 75.7 hours (3.2 days) after the first; after the 12th failure, None. Each
    delay is shortened by a random 0-20% (`random()` in [0, 1): pass a constant in tests), so that
    deliveries failing together (a receiver's outage) do not all come back in the same second; the first
    retry is therefore always within 30 s and the whole run spans 60.6 to 75.7 hours."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    if attempt > len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[attempt - 1] * (1 - JITTER * random())


# --- Sending ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt. `latency_ms` covers the whole attempt, DNS included; `error` (None when
    delivered) is short and holds no secret, nor the URL (its path can be the receiver's secret)."""

    status_code: int | None
    latency_ms: float
    error: str | None
    outcome: Outcome


def outcome_of_status(status_code: int) -> Outcome:
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "disable"
    return "retry"


class WebhookSender:
    """Sends webhook attempts; thread-safe, one connection pool for all (reuse across sends to a host).
    How many requests go to one host at once is the caller's to limit.

    `allow_private` lets URLs reach private and loopback addresses (development, tests; see
    app/core/webhook_urls.py); `require_https` refuses http:// URLs (production). `ssl_context` replaces
    the default trust store (certifi's), for a test CA."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        allow_private: bool = False,
        user_agent: str = "Drumbeat-Webhooks/1",
        *,
        require_https: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.timeout = timeout
        self.allow_private = allow_private
        self.require_https = require_https
        self.user_agent = user_agent
        # Mozilla's trust store (certifi), not the machine's: the same answer on every host.
        context = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._pool = PinnedPool(context)
        # getaddrinfo has no timeout of its own; lookups run here so that a hung resolver costs a send
        # its deadline, not its thread.
        self._resolver = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="webhook-dns"
        )

    def close(self) -> None:
        self._pool.close()
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, url: str, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> Attempt:
        """POST `body` (JSON bytes) to `url`, signed with every secret, as message `msg_id` (pass the same
        id on every retry) at `timestamp` (unix seconds of this attempt). Never raises for what the
        receiver or the network does; raises ValueError for a malformed secret (the caller's bug)."""
        started = time.monotonic()
        deadline = started + self.timeout
        headers = {
            "user-agent": self.user_agent,
            "content-type": "application/json",
            "accept-encoding": "identity",  # the answer is read raw, a few KB at most: no decompressing
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": sign(secrets, msg_id, timestamp, body),
        }

        def attempt(outcome: Outcome, error: str | None, status_code: int | None = None) -> Attempt:
            latency_ms = (time.monotonic() - started) * 1000
            return Attempt(status_code, latency_ms, _clip(error), outcome)

        try:
            target = parse_webhook_url(url, require_https=self.require_https)
        except WebhookUrlError as error:
            return attempt("refused", str(error))
        try:
            addresses = self._resolve(target, deadline)
        except ForbiddenAddress as error:
            return attempt("refused", str(error))
        except UnresolvableHost as error:
            return attempt("retry", str(error))
        except TimeoutError:
            return attempt("retry", f"DNS lookup of {target.host} timed out")
        route = Route(target.host, target.port, addresses, deadline)
        try:
            answer = self._pool.post(target.scheme, route, target.path, headers, body, MAX_RESPONSE_BYTES)
        except (DeadlineReached, TimeoutError):
            return attempt("retry", f"timed out after {self.timeout:g} s")
        except (OSError, http.client.HTTPException) as error:
            return attempt("retry", _transport_error(error))
        outcome = outcome_of_status(answer.status)
        return attempt(outcome, _status_error(answer.status, answer.location, answer.excerpt), answer.status)

    def _resolve(self, target: WebhookTarget, deadline: float) -> list[IPAddress]:
        if literal_address(target.host) is not None:  # nothing to look up: checked here, at once
            return resolve_public(target.host, target.port, allow_private=self.allow_private)
        lookup = self._resolver.submit(
            resolve_public, target.host, target.port, allow_private=self.allow_private
        )
        return lookup.result(timeout=max(deadline - time.monotonic(), 0.001))


def _status_error(status_code: int, location: str | None, excerpt: bytes) -> str | None:
    if 200 <= status_code < 300:
        return None
    if 300 <= status_code < 400:
        return f"HTTP {status_code} redirect to {location or '(no Location)'}: redirects are not followed"
    if status_code == 410:
        return "HTTP 410 Gone: the receiver asks to stop sending"
    text = _printable(excerpt)
    return f"HTTP {status_code}" + (f": {text}" if text else "")


def _transport_error(error: OSError | http.client.HTTPException) -> str:
    message = str(error)
    if isinstance(error, ssl.SSLError):  # "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed..."
        return f"TLS failed: {message}"
    kind = "connection failed" if isinstance(error, ConnectFailed) else type(error).__name__
    return f"{kind}: {message}" if message else kind


def _printable(raw: bytes) -> str:
    text = raw[:200].decode("utf-8", errors="replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 1] + "…"
