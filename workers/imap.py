"""Reading an email sender's inbox over IMAP, for replies when no inbound webhook can be had (issue "Email
replies"). This module is the building block only: it knows nothing of the database or the worker's job
loop, which store the position it returns and hand the raw messages on.

    inbox = ImapInbox(settings)
    position = None  # or the one stored last time
    while running:
        position, messages = inbox.fetch_new(position)
        ...hand `messages` on, then store `position`...
        inbox.wait_for_mail(60)
    inbox.close()

Nothing is read twice or skipped: a message is named by its UID, which the server never reuses within one
UIDVALIDITY, and `MailboxPosition` (UIDVALIDITY, last UID handed out) says where reading stopped. A caller
that stores the position only after it has handled the messages gets each of them at least once, whatever
fails in between: a disconnect, a restart of the worker (another ImapInbox, same position). Messages are
fetched with BODY.PEEK[] in a read-only (EXAMINE) session, so their \\Seen flag is never touched: a person
reading the same mailbox sees them unread.

Where reading starts when the position cannot say:
- no position (the first start): from now on. Mail already in the mailbox is left alone, so connecting an
  inbox that holds years of mail does not turn old mail into replies.
- a position whose UIDVALIDITY is not the mailbox's (the mailbox was re-created, restored or migrated, and
  every UID changed): from the oldest message whose INTERNALDATE falls within the last `resync_days` days
  (default 7), and every message after it in UID order. Those may have been handed out before under their
  old UIDs: the consumer drops the ones it has already seen by Message-ID. Older mail is left alone.

Connections: one per ImapInbox, opened on first use and again whenever it was lost. A lost connection
(refused, reset, timed out, the server restarting) is retried with backoff (RECONNECT_FIRST_SECONDS
doubling up to RECONNECT_MAX_SECONDS) for up to `retry_for` seconds, after which ImapUnavailable is raised:
try again later. What no retry can fix (login refused, no such folder, a certificate that does not verify,
a server without STARTTLS when it was asked for) raises ImapSettingsError at once, naming the settings to
check. The password is never logged, and neither is the username (often an email address)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

log = logging.getLogger("drumbeat.imap")

Security = Literal["ssl", "starttls", "none"]
SECURITY_MODES: tuple[Security, ...] = ("ssl", "starttls", "none")
RECONNECT_FIRST_SECONDS = 0.5
# Why 30 s and not more: a worker resumes within that long of the server coming back; why not less: each
# attempt is a login, and providers lock out accounts that log in too often.
RECONNECT_MAX_SECONDS = 30.0
DEFAULT_RETRY_FOR_SECONDS = 60.0
DEFAULT_RESYNC_DAYS = 7
DEFAULT_POLL_SECONDS = 30.0
# RFC 2177 lets an IDLE last 29 minutes; NAT gateways forget a quiet connection sooner, and a server that
# keeps no "still here" chatter (Gmail) would leave a dead IDLE undetected until it is renewed.
IDLE_RENEW_SECONDS = 10 * 60.0
# How often a wait looks at its `stopping` event while the server is silent.
STOP_CHECK_SECONDS = 0.5
# Response codes (RFC 5530) that mean "not now" rather than "never": SELECT or LOGIN is retried.
TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")

T = TypeVar("T")


@dataclass(frozen=True)
class ImapSettings:
    """How to reach one mailbox. `timeout` bounds connecting and each command's answer, in seconds."""

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ImapSettingsError(
                f"IMAP security must be one of {', '.join(SECURITY_MODES)}, got {self.security!r}",
                ("security",),
            )
        if not 0 < self.port < 65536:
            raise ImapSettingsError(f"IMAP port must be a TCP port number, got {self.port!r}", ("port",))
        if not self.host:
            raise ImapSettingsError("IMAP host is empty", ("host",))
        if not self.timeout > 0:
            raise ImapSettingsError(f"IMAP timeout must be positive, got {self.timeout!r}", ("timeout",))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MailboxPosition:
    """Where reading stopped: every message of the mailbox with a UID up to `last_uid` was handed out,
    under that UIDVALIDITY. Store both numbers; they are all a later ImapInbox needs to go on."""

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class FetchedMessage:
    """One message as the server keeps it (RFC 5322 bytes, headers and body), and its UID."""

    uid: int
    raw: bytes = field(repr=False)


class ImapError(Exception):
    """Reading the mailbox failed."""


class ImapSettingsError(ImapError):
    """A retry cannot fix this: `settings` names the ImapSettings fields to check."""

    def __init__(self, message: str, settings: Sequence[str]):
        super().__init__(message)
        self.settings = tuple(settings)


class ImapUnavailable(ImapError):
    """The server could not be reached, or kept dropping the connection, for `retry_for` seconds."""


# A lost or refused connection, a timeout, a TLS record cut short (ssl.SSLError is an OSError), or the
# server answering a command with NO or BAD: all worth another connection.
TRANSIENT_ERRORS = (OSError, EOFError, IMAPClientError)


@dataclass(frozen=True)
class _Mailbox:
    """What SELECT (EXAMINE) said about the folder."""

    uidvalidity: int
    uidnext: int | None


def reconnect_delays() -> Iterator[float]:
    """The waits between connection attempts: 0.5, 1, 2, 4, ... up to 30 seconds each."""
    delay = RECONNECT_FIRST_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def announces_new_mail(responses: Sequence[tuple]) -> bool:
    """Whether untagged responses (from IDLE or NOOP) announce a message: `* 12 EXISTS` or `* 1 RECENT`."""
    return any(len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT") for response in responses)


def says_goodbye(responses: Sequence[tuple]) -> bool:
    return any(response and response[0] == b"BYE" for response in responses)


class ImapInbox:
    """One mailbox, read over one connection that is opened on demand and re-opened when lost. Not
    thread-safe: one thread uses it at a time.

    resync_days: how far back to read again when the mailbox's UIDVALIDITY changed (module docstring).
    retry_for: how long a lost connection is retried before ImapUnavailable.
    poll_seconds: how often `wait_for_mail` asks (NOOP) a server that does not offer IDLE.
    ssl_context: for "ssl" and "starttls"; default: the system's trusted CAs, and the host name checked."""

    def __init__(
        self,
        settings: ImapSettings,
        *,
        resync_days: int = DEFAULT_RESYNC_DAYS,
        retry_for: float = DEFAULT_RETRY_FOR_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.settings = settings
        self.resync_days = resync_days
        self.retry_for = retry_for
        self.poll_seconds = poll_seconds
        self._ssl_context = ssl_context
        self._client: IMAPClient | None = None
        self._handed_out: MailboxPosition | None = None  # what the last fetch_new returned

    # --- the public operations --------------------------------------------------------------------------

    def fetch_new(
        self, position: MailboxPosition | None, *, limit: int = 100
    ) -> tuple[MailboxPosition, list[FetchedMessage]]:
        """The messages after `position`, oldest (lowest UID) first, at most `limit` of them, and the
        position after them: store it once they are handled, and pass it to the next call. Fewer than
        `limit` messages means there were no more; `limit` of them means call again at once. Where a
        missing or outdated position starts is in the module docstring."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        new_position, messages = self._with_connection(lambda client: self._fetch(client, position, limit))
        self._handed_out = new_position
        return new_position, messages

    def wait_for_mail(self, seconds: float, *, stopping: threading.Event | None = None) -> bool:
        """Wait up to `seconds` (less when `stopping` is set) for the server to announce new mail, with IDLE
        when it offers it, else by asking every `poll_seconds`. True when new mail may be there: announced,
        already there after the last fetch_new's position, or the connection was lost meanwhile (a server
        restart can hide an announcement). False on a quiet timeout. Fetch after every wait whatever it
        returns: True only says it ended early. Connecting first may take up to `retry_for` more, and
        raises as fetch_new does when it fails; a connection lost during the wait ends it (True), and
        the next call connects again."""
        client = self._with_connection(lambda client: client)  # connected is selected: see _connect
        try:
            if self._unread_after_handed_out(client):
                return True
            if client.has_capability("IDLE"):
                return self._idle(client, time.monotonic() + seconds, stopping)
            return self._poll(client, time.monotonic() + seconds, stopping)
        except TRANSIENT_ERRORS as error:
            self._log_lost(error)
            self._disconnect()
            return True

    def close(self) -> None:
        """Log out and close the connection, if one is open. The inbox may be used again afterwards."""
        self._disconnect(logout=True)

    def __enter__(self) -> ImapInbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------------------

    def _fetch(
        self, client: IMAPClient, position: MailboxPosition | None, limit: int
    ) -> tuple[MailboxPosition, list[FetchedMessage]]:
        mailbox = self._select(client)  # again each time: UIDVALIDITY and UIDNEXT as they are now
        start = self._starting_point(client, position, mailbox)
        uids = self._uids_after(client, start.last_uid, mailbox)[:limit]
        if not uids:
            return start, []
        bodies = client.fetch(uids, [b"BODY.PEEK[]"])
        # A UID missing from the answer was expunged meanwhile: it is gone, and reading goes on past it.
        messages = [FetchedMessage(uid, bodies[uid][b"BODY[]"]) for uid in uids if uid in bodies]
        return MailboxPosition(mailbox.uidvalidity, uids[-1]), messages

    def _starting_point(
        self, client: IMAPClient, position: MailboxPosition | None, mailbox: _Mailbox
    ) -> MailboxPosition:
        if position is not None and position.uidvalidity == mailbox.uidvalidity:
            return position
        if position is None:
            log.info("imap_reading_from_now", extra={"imap_server": self.settings.address})
            return MailboxPosition(mailbox.uidvalidity, self._last_uid(client, mailbox))
        since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.resync_days)
        recent = client.search([b"SINCE", since])
        log.warning(
            "imap_uidvalidity_changed",
            extra={
                "imap_server": self.settings.address,
                "old_uidvalidity": position.uidvalidity,
                "new_uidvalidity": mailbox.uidvalidity,
                "messages_read_again": len(recent),
            },
        )
        if recent:
            return MailboxPosition(mailbox.uidvalidity, min(recent) - 1)
        return MailboxPosition(mailbox.uidvalidity, self._last_uid(client, mailbox))

    @staticmethod
    def _last_uid(client: IMAPClient, mailbox: _Mailbox) -> int:
        """The highest UID given so far: every later message gets a higher one."""
        if mailbox.uidnext is not None:
            return mailbox.uidnext - 1
        return max(client.search([b"ALL"]), default=0)  # a server that left UIDNEXT out of its answer

    @staticmethod
    def _uids_after(client: IMAPClient, last_uid: int, mailbox: _Mailbox) -> list[int]:
        if mailbox.uidnext is not None and mailbox.uidnext <= last_uid + 1:
            return []  # nothing was added since: spare the round trip
        # `UID n:*` always matches the highest UID, even one below n (RFC 3501 6.4.8): hence the filter.
        return sorted(uid for uid in client.search([b"UID", f"{last_uid + 1}:*".encode()]) if uid > last_uid)

    def _unread_after_handed_out(self, client: IMAPClient) -> bool:
        """Whether messages arrived after what the last fetch_new handed out (or it stopped at `limit`):
        an IDLE started now would not announce them."""
        handed_out = self._handed_out
        if handed_out is None:
            return False
        mailbox = self._select(client)
        if mailbox.uidvalidity != handed_out.uidvalidity:
            return True
        return bool(self._uids_after(client, handed_out.last_uid, mailbox))

    # --- waiting ----------------------------------------------------------------------------------------

    def _idle(self, client: IMAPClient, deadline: float, stopping: threading.Event | None) -> bool:
        while True:
            announced = self._idle_once(
                client, min(deadline, time.monotonic() + IDLE_RENEW_SECONDS), stopping
            )
            if announced or time.monotonic() >= deadline or (stopping is not None and stopping.is_set()):
                return announced

    def _idle_once(self, client: IMAPClient, until: float, stopping: threading.Event | None) -> bool:
        """One IDLE command, ended (DONE) when mail is announced, at `until`, or when `stopping` is set."""
        client.idle()
        announced = False
        while not announced and (remaining := until - time.monotonic()) > 0:
            if stopping is not None and stopping.is_set():
                break
            if not readable(
                client.socket(), remaining if stopping is None else min(remaining, STOP_CHECK_SECONDS)
            ):
                continue
            responses = client.idle_check(timeout=0)
            # Readable, yet no whole line: the server closed the connection.
            if not responses or says_goodbye(responses):
                raise ConnectionError("the IMAP server closed the connection during IDLE")
            announced = announces_new_mail(responses)
        _, responses = client.idle_done()
        return announced or announces_new_mail(responses)

    def _poll(self, client: IMAPClient, deadline: float, stopping: threading.Event | None) -> bool:
        while (remaining := deadline - time.monotonic()) > 0:
            pause = min(self.poll_seconds, remaining)
            if stopping is not None:
                if stopping.wait(pause):
                    return False
            else:
                time.sleep(pause)
            _, responses = client.noop()
            if announces_new_mail(responses):
                return True
            if says_goodbye(responses):
                raise ConnectionError("the IMAP server closed the connection")
        return False

    # --- the connection ---------------------------------------------------------------------------------

    def _with_connection(self, operation: Callable[[IMAPClient], T]) -> T:
        """`operation` on a live connection, connecting (again) as needed. A connection that fails is
        dropped; a new one is tried at once when the failed one was an old one (servers close connections
        that sat quiet), else after a backoff delay, until `retry_for` seconds have passed."""
        deadline = time.monotonic() + self.retry_for
        delays = reconnect_delays()
        attempts = 0  # connections opened or tried
        while True:
            reused = self._client is not None
            attempts += 0 if reused else 1
            try:
                result = operation(self._connection())
            except ImapSettingsError:
                self._disconnect()
                raise
            except TRANSIENT_ERRORS as error:
                self._disconnect()
                if reused:
                    self._log_lost(error)
                    continue
                delay = next(delays)
                if time.monotonic() + delay > deadline:
                    raise ImapUnavailable(
                        f"IMAP server {self.settings.address} unavailable for {self.retry_for:g} s "
                        f"({attempts} attempts): {describe(error)}; check host, port and security if it lasts"
                    ) from error
                log.warning(
                    "imap_unavailable",
                    extra={
                        "imap_server": self.settings.address,
                        "attempt": attempts,
                        "retry_in_seconds": delay,
                        "error": describe(error),
                    },
                )
                time.sleep(delay)
            else:
                if attempts > 1:
                    log.info(
                        "imap_reconnected", extra={"imap_server": self.settings.address, "attempts": attempts}
                    )
                return result

    def _log_lost(self, error: BaseException) -> None:
        log.info(
            "imap_connection_lost", extra={"imap_server": self.settings.address, "error": describe(error)}
        )

    def _connection(self) -> IMAPClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> IMAPClient:
        settings = self.settings
        try:
            client = IMAPClient(
                settings.host,
                port=settings.port,
                ssl=settings.security == "ssl",
                ssl_context=self._tls_context() if settings.security == "ssl" else None,
                timeout=settings.timeout,
            )
        except ssl.SSLError as error:
            self._raise_tls_problem(error)
            raise
        try:
            if settings.security == "starttls":
                self._starttls(client)
            self._login(client)
            self._select(client)
        except BaseException:
            shut_down(client)
            raise
        return client

    def _tls_context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _starttls(self, client: IMAPClient) -> None:
        try:
            client.starttls(self._tls_context())
        except CapabilityError:
            raise ImapSettingsError(
                f"the IMAP server {self.settings.address} does not offer STARTTLS: set security to ssl "
                "(usually port 993) or, on a trusted network only, none",
                ("security", "port"),
            ) from None
        except ssl.SSLError as error:
            self._raise_tls_problem(error)
            raise

    def _raise_tls_problem(self, error: ssl.SSLError) -> None:
        """ImapSettingsError for a TLS failure that would fail the same way next time; others return."""
        if isinstance(error, ssl.SSLCertVerificationError):
            raise ImapSettingsError(
                f"the TLS certificate of the IMAP server {self.settings.address} does not verify "
                f"({error.verify_message}): check the host name",
                ("host", "security"),
            ) from error
        if error.reason == "WRONG_VERSION_NUMBER":
            raise ImapSettingsError(
                f"the IMAP server {self.settings.address} does not speak TLS on that port: "
                f"check port and security (ssl is usually port 993, starttls and none port 143)",
                ("port", "security"),
            ) from error

    def _login(self, client: IMAPClient) -> None:
        settings = self.settings
        try:
            if f"{settings.username}{settings.password}".isascii():
                client.login(settings.username, settings.password)
            else:
                client.plain_login(settings.username, settings.password)  # LOGIN sends ASCII only
        except LoginError as error:
            # imapclient turns every failure during login into LoginError, a dropped connection too.
            if isinstance(error.__context__, IMAPClientAbortError) or any(
                code in str(error) for code in TEMPORARY_CODES
            ):
                raise
            raise ImapSettingsError(
                f"the IMAP server {settings.address} refused the login ({error}): check the IMAP "
                "username and password",
                ("username", "password"),
            ) from None

    def _select(self, client: IMAPClient) -> _Mailbox:
        folder = self.settings.folder
        try:
            # Read-only (EXAMINE): nothing this inbox does can change a flag.
            answer = client.select_folder(folder, readonly=True)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as error:
            if any(code in str(error) for code in TEMPORARY_CODES):
                raise
            raise ImapSettingsError(
                f"the IMAP server {self.settings.address} cannot open the folder {folder!r} ({error}): "
                "check the IMAP folder name",
                ("folder",),
            ) from None
        return _Mailbox(uidvalidity=answer[b"UIDVALIDITY"], uidnext=answer.get(b"UIDNEXT"))

    def _disconnect(self, *, logout: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if logout:
            try:
                client.logout()
                return
            except Exception:  # already gone: nothing to log out of
                pass
        shut_down(client)


def shut_down(client: IMAPClient) -> None:
    """Close the connection without a word to the server, which may be gone already."""
    with contextlib.suppress(Exception):  # a socket already closed cannot fail any worse
        client.shutdown()


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has something to read within `timeout` seconds (a line, or the end of the stream)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted bytes wait in the TLS layer, where select() cannot see them
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(max(timeout, 0)))
