"""Transports: one small interface in front of every way a message leaves (Twilio, SMTP, the outbox)."""

from __future__ import annotations

import functools
import logging
import smtplib
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import psycopg
from psycopg.types.json import Jsonb

from app.core.queries import queries
from workers import reconnect

log = logging.getLogger("drumbeat.transports")


@dataclass(frozen=True)
class Message:
    """A fully rendered message, ready for a provider."""

    delivery_id: str
    workspace_id: str
    idempotency_key: str
    channel: str
    to_address: str
    from_address: str
    text: str
    subject: str | None = None
    html: str | None = None
    from_name: str | None = None  # email: the sender's display name ("Riley Rep" <rep@acme.example>)
    headers: dict[str, str] = field(default_factory=dict)


# How long a channel is held after its provider refused our credentials or could not be reached: the
# circuit breaker probes it about once a minute (drumbeat.hold_probe_interval() is the same minute).
HOLD_SECONDS = 60.0
# A 429's Retry-After is honoured up to this (a provider asking for more is treated as an outage: probed).
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class Hold:
    """The provider, not the message, is the problem (README, "Circuit breaker"): hold the whole channel,
    or only this message's sender (`sender_only`: a 429 rate-limits one number), for `seconds`. The
    message is given back unsent (no attempt used) unless the outcome was ambiguous."""

    reason: str  # auth | unreachable | outage | rate_limited
    seconds: float = HOLD_SECONDS
    sender_only: bool = False


@dataclass(frozen=True)
class SendResult:
    """What the provider said (README, "Send outcomes").

    - `sent`: accepted.
    - `ambiguous`: the provider may have accepted it: a read timeout or a connection lost after the request
      was written, a 5xx from an API that may have acted, an SMTP connection lost once DATA began. It is
      recorded `unknown` and never sent again: at most once.
    - otherwise certainly not accepted: `transient` ones (connection refused, DNS or TLS failure before the
      request, 429, SMTP 4xx) are retried; the others (4xx validation refusals, SMTP 5xx) are not.
    - `hold`: the provider is the problem (credentials refused, unreachable, an outage, 429): the circuit
      breaker holds the channel or sender; a `held` message is given back unsent, no attempt used.
    """

    sent: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False
    ambiguous: bool = False
    hold: Hold | None = None

    @property
    def held(self) -> bool:
        """Given back unsent: the provider certainly did not take it, and it is the provider that failed."""
        return self.hold is not None and not self.sent and not self.ambiguous


@dataclass(frozen=True)
class Lookup:
    """What reconciliation asks a provider about an unknown delivery: is there a message to `to_address`
    from `from_address` with this text, created once the send began (`since`)?"""

    to_address: str
    from_address: str | None
    text: str
    since: datetime


class Transport(Protocol):
    name: str
    # Worth sending several messages at once: each send mostly waits on a provider's round trip. A local
    # transport gains nothing from threads and only pays their switching (measured: bench/lateness.py).
    concurrent: bool

    def send(self, message: Message) -> SendResult: ...


class OutboxTransport:
    """Records each rendered message in drumbeat.outbox instead of sending it (development default
    when no provider credentials are configured, demos, tests).

    Postgres faults: the insert is idempotent (one outbox row per delivery, ON CONFLICT DO NOTHING), so a
    connection that dies under it is replaced (with backoff, for up to `retry_seconds`) and the insert
    made again: once it succeeds the message is certainly in the outbox (sent). When Postgres stays out of
    reach, the outcome says what is known: no insert ever reached a connection, so certainly not
    recorded (transient, retried later); or an insert was cut off and may have committed (ambiguous,
    never resent)."""

    name = "outbox"
    concurrent = False

    def __init__(self, conninfo: str, retry_seconds: float = 30.0):
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None
        self.retry_seconds = retry_seconds
        # A batch's sending threads share the connection (psycopg serializes its statements, each its own
        # autocommit transaction); the lock keeps them from opening one each.
        self._opening = threading.Lock()

    def _connection(self, budget: float = 0.0) -> psycopg.Connection:
        with self._opening:
            if self._conn is None or self._conn.closed:
                self._conn = reconnect.connect(
                    self._conninfo,
                    budget=budget,
                    prepare=lambda conn: conn.execute(queries("dispatch")["become_worker"]),
                    purpose="outbox",
                )
            return self._conn

    def send(self, message: Message) -> SendResult:
        params = {
            "workspace_id": message.workspace_id,
            "delivery_id": message.delivery_id,
            "channel": message.channel,
            "to_address": message.to_address,
            "from_address": message.from_address,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": Jsonb(message.headers),
        }
        deadline = time.monotonic() + self.retry_seconds
        cut_off = False  # an insert was sent on a connection that then died: it may have committed
        while True:
            try:
                conn = self._connection(budget=max(0.0, deadline - time.monotonic()))
            except psycopg.OperationalError as error:
                return _outbox_unreachable(error, cut_off)
            try:
                conn.execute(queries("dispatch")["outbox_insert"], params)
            except psycopg.OperationalError as error:
                if not conn.closed:
                    raise  # the statement failed, not the connection: as any other fault
                cut_off = True
                if time.monotonic() >= deadline:
                    return _outbox_unreachable(error, cut_off)
                continue  # a new connection, and the (idempotent) insert again
            return SendResult(sent=True, provider_message_id=f"outbox:{message.delivery_id}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _outbox_unreachable(error: psycopg.OperationalError, cut_off: bool) -> SendResult:
    return SendResult(
        sent=False,
        error_code="outbox_unreachable",
        error_message=str(error),
        transient=not cut_off,
        ambiguous=cut_off,
    )


class TwilioTransport:
    """SMS through Twilio's REST API with the official SDK. `base_url` points it at any
    Twilio-compatible API (SignalWire, a local stand-in); `status_callback` is where Twilio reports
    delivery status (DRUMBEAT_PUBLIC_URL + /webhooks/twilio/status)."""

    name = "twilio"
    concurrent = True
    # 429 is a refusal (nothing was created): retried. A 5xx comes from an API that may have created the
    # message before failing: ambiguous. Other 4xx are refusals that a retry would repeat (21610: the
    # recipient replied STOP; record_deliveries opts the contact out).
    RETRIED_HTTP = frozenset({429})
    # Twilio's codes for credentials it refuses (20003: authentication failed, 20005: account suspended).
    AUTH_ERRORS = frozenset({20003, 20005})
    # Twilio can be asked whether it has a message (its Messages list): an unknown SMS waits for that
    # answer (workers/reconcile.py) instead of counting as sent.
    reconciles = True
    # How far Twilio's clock may trail ours when a message's creation is compared with when the send began,
    # and how many of a recipient's newest messages a look-up reads at most.
    CLOCK_SKEW = timedelta(minutes=5)
    LOOKUP_LIMIT = 200

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        status_callback: str | None = None,
        timeout: float = 10.0,
    ):
        self._credentials = (account_sid, auth_token)
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._status_callback = status_callback
        # Why one client per thread: a batch's messages are sent from several threads at once, and the
        # SDK's HTTP client (a requests Session, plus last_request/last_response attributes) is not
        # documented as thread-safe.
        self._local = threading.local()
        self._outages = OutageCounter()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            from twilio.rest import Client

            client = Client(*self._credentials, http_client=_retry_after_http_client()(timeout=self._timeout))
            client.api.base_url = self._base_url
            self._local.client = client
        return client

    def send(self, message: Message) -> SendResult:
        from twilio.base.exceptions import TwilioRestException

        sender = (
            {"messaging_service_sid": message.from_address}
            if message.from_address.startswith("MG")
            else {"from_": message.from_address}
        )
        client = self._client()
        try:
            created = client.messages.create(
                to=message.to_address, body=message.text, status_callback=self._status_callback, **sender
            )
        except TwilioRestException as error:
            return self._outages.count(self._refusal(error, client.http_client.retry_after))
        except OSError as error:  # requests' errors are OSErrors
            return self._outages.count(network_outcome(error))
        return self._outages.count(SendResult(sent=True, provider_message_id=created.sid))

    def _refusal(self, error, retry_after: str | None) -> SendResult:
        """An error answer: 401 / 20003 (credentials refused) holds the channel; 429 holds the sender for
        its Retry-After; a 5xx is ambiguous; other 4xx are refusals of this message."""
        outcome = SendResult(
            sent=False,
            error_code=str(error.code or error.status),
            error_message=error.msg,
            transient=error.status in self.RETRIED_HTTP,
            ambiguous=error.status >= 500,
        )
        if error.status == 401 or error.code in self.AUTH_ERRORS:
            return replace(outcome, hold=Hold("auth"))
        if error.status == 429:
            return replace(
                outcome, hold=Hold("rate_limited", _retry_after_seconds(retry_after), sender_only=True)
            )
        return outcome

    def find(self, lookup: Lookup) -> list[str] | None:
        """The SIDs of Twilio's messages matching `lookup` (recipient, sender, text, created since the send
        began), newest first; None when Twilio could not be asked. Why To and From but not DateSent, the
        list's other filter: Twilio sets DateSent only once a message leaves its queue, so a message still
        queued (the likeliest case right after a lost answer) would be missed, and then sent twice."""
        from twilio.base.exceptions import TwilioException

        service = lookup.from_address if (lookup.from_address or "").startswith("MG") else None
        filters = {"to": lookup.to_address} | (
            {"from_": lookup.from_address} if lookup.from_address and not service else {}
        )
        oldest = lookup.since - self.CLOCK_SKEW
        found = []
        try:
            for message in self._client().messages.stream(limit=self.LOOKUP_LIMIT, page_size=50, **filters):
                if message.date_created is not None and message.date_created < oldest:
                    break  # newest first: the rest is older than the send
                if message.body == lookup.text and (
                    service is None or message.messaging_service_sid == service
                ):
                    found.append(message.sid)
        except (TwilioException, OSError) as error:  # an error answer, or no answer
            log.warning(
                "reconcile_lookup_failed", extra={"transport": self.name, "error": type(error).__name__}
            )
            return None
        return found


def _retry_after_seconds(header: str | None) -> float:
    """A 429's Retry-After (seconds; an HTTP date is read as a minute): how long its sender is held."""
    try:
        seconds = float(header) if header else 1.0
    except ValueError:
        seconds = HOLD_SECONDS
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_SECONDS)


@functools.cache  # one class, built on first use: the twilio SDK is imported only where it is used
def _retry_after_http_client():
    from twilio.http.http_client import TwilioHttpClient

    class RetryAfterClient(TwilioHttpClient):
        """The SDK's HTTP client, remembering the last answer's Retry-After: TwilioRestException does not
        carry the headers, and a 429 must be honoured."""

        retry_after: str | None = None

        def request(self, *args, **kwargs):
            response = super().request(*args, **kwargs)
            self.retry_after = (response.headers or {}).get("Retry-After")
            return response

    return RetryAfterClient


class OutageCounter:
    """Turns a run of ambiguous answers into an outage: after OUTAGE_AFTER in a row with no success between
    them (5xx, answers lost), the channel is held like an unreachable one. Each of those stays `unknown`
    (the provider may have taken it); the hold only stops the batch from feeding more into the outage."""

    OUTAGE_AFTER = 5

    def __init__(self):
        self._lock = threading.Lock()
        self._in_a_row = 0

    def count(self, result: SendResult) -> SendResult:
        with self._lock:
            self._in_a_row = self._in_a_row + 1 if result.ambiguous else 0 if result.sent else self._in_a_row
            outage = self._in_a_row >= self.OUTAGE_AFTER
        return replace(result, hold=Hold("outage")) if outage and result.hold is None else result


def network_outcome(error: OSError) -> SendResult:
    """A network error of an HTTP call (requests): retried when the request certainly never reached the
    server (no connection: refused, DNS, connect timeout, TLS handshake), else ambiguous (read timeout,
    connection lost while waiting for the answer): the server may have acted on it."""
    import requests.exceptions as http
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    reason = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    before_request = isinstance(error, http.ConnectTimeout | http.SSLError) or (
        isinstance(error, http.ConnectionError) and isinstance(reason, NewConnectionError)
    )
    if before_request:
        return SendResult(
            sent=False,
            error_code="network",
            error_message=str(error),
            transient=True,
            hold=Hold("unreachable"),
        )
    return SendResult(sent=False, error_code="network_ambiguous", error_message=str(error), ambiguous=True)


class SmtpTransport:
    """Email over SMTP (implicit TLS on port 465, STARTTLS when asked, optional login). The Message-ID
    it generates is recorded as the provider id so that replies (In-Reply-To) can be matched.

    Each sending thread keeps its own session open between messages: a relay's connect, TLS handshake and
    login cost more round trips than the message itself, and relays throttle clients that reconnect for
    every message. A kept session is checked with NOOP before it carries the next message (relays close
    idle sessions), replaced once idle IDLE_SECONDS or after MESSAGES_PER_SESSION messages (relays cap
    messages per session), and dropped after any failure, whose leftover state the next message should
    not inherit."""

    name = "smtp"
    concurrent = True
    MESSAGES_PER_SESSION = 100
    # Longer than a batch's pause between messages, shorter than relays' and NAT gateways' idle timeouts: a
    # NOOP on a connection a NAT has silently forgotten would wait the whole timeout before failing.
    IDLE_SECONDS = 60.0

    def __init__(
        self,
        host: str,
        port: int = 587,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 30.0,
    ):
        self.host, self.port, self.username, self.password = host, port, username, password
        self.starttls, self.timeout = starttls, timeout
        self._sessions = threading.local()  # smtplib.SMTP is not thread-safe: a session per sending thread

    def send(self, message: Message) -> SendResult:
        import smtplib

        email = self._build(message)
        session = None
        try:
            session = self._session()
            session.data_started = False
            session.send_message(email)
        except smtplib.SMTPResponseException as error:
            self._drop()
            return SendResult(
                sent=False,
                error_code=str(error.smtp_code),
                error_message=error.smtp_error.decode(errors="replace"),
                transient=400 <= error.smtp_code < 500,
                hold=self._relay_hold(error, session),
            )
        except smtplib.SMTPRecipientsRefused as error:
            self._drop()
            code, text = next(iter(error.recipients.values()))
            return SendResult(
                sent=False,
                error_code=str(code),
                error_message=text.decode(errors="replace"),
                transient=400 <= code < 500,
            )
        except (OSError, smtplib.SMTPException) as error:
            self._drop()
            if session is not None and session.data_started:
                # The message (or part of it) was on the wire: the relay may have queued it.
                return SendResult(
                    sent=False, error_code="network_ambiguous", error_message=str(error), ambiguous=True
                )
            # No session at all: the relay cannot be reached, which holds the channel like an outage.
            hold = Hold("unreachable") if session is None else None
            return SendResult(
                sent=False, error_code="network", error_message=str(error), transient=True, hold=hold
            )
        self._sessions.carried += 1
        self._sessions.last_used = time.monotonic()
        return SendResult(sent=True, provider_message_id=email["Message-ID"])

    # Relay answers about us, not the message: 530/534/535 refuse our credentials, 421 means the service
    # is not available (closing the channel).
    AUTH_CODES = frozenset({530, 534, 535})

    def _relay_hold(self, error, session) -> Hold | None:
        if error.smtp_code in self.AUTH_CODES:
            return Hold("auth")
        if error.smtp_code == 421 or session is None:
            return Hold("outage" if error.smtp_code == 421 else "unreachable")
        return None

    def _session(self):
        """This thread's open session if it is still good for a message, otherwise a new one."""
        kept = getattr(self._sessions, "smtp", None)
        if kept is not None:
            retired = self._sessions.carried >= self.MESSAGES_PER_SESSION
            idle = time.monotonic() - self._sessions.last_used > self.IDLE_SECONDS
            if not (retired or idle) and self._answers(kept):
                return kept
            self._drop(politely=retired and not idle)
        self._sessions.smtp, self._sessions.carried = self._connect(), 0
        self._sessions.last_used = time.monotonic()
        return self._sessions.smtp

    @staticmethod
    def _answers(smtp) -> bool:
        import smtplib

        try:
            return smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def _drop(self, politely: bool = False) -> None:
        """Forget this thread's session: QUIT when it is healthy (retired), otherwise just close the socket."""
        import smtplib

        smtp, self._sessions.smtp = getattr(self._sessions, "smtp", None), None
        if smtp is None:
            return
        try:
            if politely:
                smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass  # QUIT is a courtesy: the socket is closed below either way
        smtp.close()

    def _connect(self):
        """A new session: connected, encrypted and logged in, or closed again on the way."""
        import ssl

        implicit_tls = self.port == 465
        if implicit_tls:
            smtp = _SmtpSslSession(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = _SmtpSession(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls and not implicit_tls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _build(message: Message):
        from email.message import EmailMessage
        from email.utils import formataddr, make_msgid

        email = EmailMessage()
        email["From"] = (
            formataddr((message.from_name, message.from_address))
            if message.from_name
            else message.from_address
        )
        email["To"] = message.to_address
        email["Subject"] = message.subject or ""
        email["Message-ID"] = make_msgid(domain=message.from_address.rpartition("@")[2] or None)
        for name, value in message.headers.items():
            email[name] = value
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email


class _DataPhase:
    """Remembers whether the current message's DATA began: a connection lost before it certainly delivered
    nothing (retried); one lost after it may have (ambiguous)."""

    data_started = False

    def data(self, msg):
        self.data_started = True
        return super().data(msg)


class _SmtpSession(_DataPhase, smtplib.SMTP):
    pass


class _SmtpSslSession(_DataPhase, smtplib.SMTP_SSL):
    pass
