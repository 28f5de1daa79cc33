"""HTTP/1.1 POSTs that connect only to addresses checked beforehand, under one overall deadline, with
connections kept alive per host. Built on the standard library's http.client.

Why pinned: a webhook URL's name is resolved and every answer checked (app/core/webhook_urls.resolve_public);
if the HTTP client then resolved the name again, an attacker's DNS could answer a public address to the
check and 127.0.0.1 to the connection (DNS rebinding). So the TCP connection goes to a checked address,
while everything else stays about the name: the Host header, TLS SNI and the certificate verified against
the name (not the IP), and the keep-alive pool keyed by the name. `PinnedPool.post` takes the `Route`
(the name, its port, its checked addresses, the deadline) and never looks a name up.

A kept-alive connection may serve a later request to the same scheme, host and port without a new
connect: its address was checked when it was opened, and the sender checks the name again before every
request anyway (refusing it, unsent, if it now points somewhere forbidden). One found closed by the
receiver while idle is dropped before use.

Why a deadline thread: socket timeouts are per operation, and a receiver dripping one byte at a time never
trips them. Every request registers its deadline with a `Reaper`, which shuts the socket down when the
deadline passes: the blocked read or write then fails at once, whatever the receiver does.

Why not httpx (which this module used to extend): on the 2-core machine the benchmarks run on, httpx
made about 1,000 POSTs a second with 32 threads, http.client about 5,500 (bench/webhooks.py prints the
raw ceiling it measures)."""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.core.webhook_urls import IPAddress


@dataclass(frozen=True)
class Route:
    """Where the current request may connect: `host`:`port` only through `addresses` (checked ones), and
    no later than `deadline` (time.monotonic())."""

    host: str
    port: int
    addresses: Sequence[IPAddress]
    deadline: float

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


class ConnectFailed(OSError):
    """No checked address accepted a TCP connection."""


class DeadlineReached(TimeoutError):
    """The request's total time limit passed."""


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    excerpt: bytes  # the first max_bytes of the body, as sent


class PinnedConnection(http.client.HTTPConnection):
    """http.client's connection, opened to the first checked address that answers; TLS for https, with SNI
    and certificate verification for the name."""

    def __init__(self, scheme: str, route: Route, ssl_context: ssl.SSLContext):
        super().__init__(route.host, route.port)
        self.scheme = scheme
        self.route = route
        self.ssl_context = ssl_context

    def connect(self) -> None:
        failure: OSError = ConnectFailed(f"{self.host} has no address")
        for address in self.route.addresses:
            left = self.route.time_left()
            if left <= 0:
                raise DeadlineReached()
            try:
                # An IP literal: the socket layer parses it, no DNS lookup happens here.
                sock = socket.create_connection((str(address), self.port), timeout=left)
            except OSError as error:
                failure = ConnectFailed(str(error) or type(error).__name__)
                continue  # the next checked address (IPv6 down, one server of several down)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock.settimeout(max(self.route.time_left(), 0.001))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            self.sock = sock
            return
        raise failure


class Reaper(threading.Thread):
    """Shuts down the socket of every request still running at its deadline."""

    def __init__(self) -> None:
        super().__init__(name="webhook-deadlines", daemon=True)
        self._heap: list[tuple[float, int, PinnedConnection]] = []
        self._active: set[int] = set()
        self._tickets = itertools.count()
        self._lock = threading.Condition()
        self._closed = False

    def watch(self, deadline: float, conn: PinnedConnection) -> int:
        with self._lock:
            ticket = next(self._tickets)
            heapq.heappush(self._heap, (deadline, ticket, conn))
            self._active.add(ticket)
            self._lock.notify()
            return ticket

    def release(self, ticket: int) -> None:
        with self._lock:
            self._active.discard(ticket)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()

    def run(self) -> None:
        with self._lock:
            while not self._closed:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, ticket, conn = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._active.discard(ticket)
                _shut(conn)


def _shut(conn: PinnedConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile
            sock.shutdown(socket.SHUT_RDWR)


class PinnedPool:
    """Kept-alive connections by (scheme, host, port), at most `idle_per_host` idle ones each."""

    def __init__(self, ssl_context: ssl.SSLContext, idle_per_host: int = 32):
        self.ssl_context = ssl_context
        self.idle_per_host = idle_per_host
        self._idle: dict[tuple[str, str, int], list[PinnedConnection]] = {}
        self._lock = threading.Lock()
        self._reaper = Reaper()
        self._reaper.start()

    def close(self) -> None:
        self._reaper.close()
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def post(
        self, scheme: str, route: Route, target: str, headers: dict[str, str], body: bytes, max_bytes: int
    ) -> Answer:
        """POST `body` to `target` (path and query) on `route`: the status, Location and the first
        `max_bytes` of the answer. Raises DeadlineReached, ConnectFailed, ssl.SSLError, OSError or
        http.client.HTTPException."""
        key = (scheme, route.host.lower(), route.port)
        conn = self._checkout(key) or PinnedConnection(scheme, route, self.ssl_context)
        conn.route = route  # a reused connection obeys this request's deadline
        ticket = self._reaper.watch(route.deadline, conn)
        reusable = False
        try:
            answer, reusable = self._exchange(conn, route, target, headers, body, max_bytes)
            return answer
        except (OSError, http.client.HTTPException):
            if route.time_left() <= 0:
                raise DeadlineReached() from None
            raise
        finally:
            self._reaper.release(ticket)
            if reusable and route.time_left() > 0:
                self._checkin(key, conn)
            else:
                conn.close()

    def _exchange(
        self,
        conn: PinnedConnection,
        route: Route,
        target: str,
        headers: dict[str, str],
        body: bytes,
        max_bytes: int,
    ) -> tuple[Answer, bool]:
        conn.timeout = max(route.time_left(), 0.001)
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        if route.time_left() <= 0:
            # Shut down mid-headers, http.client takes what it got for a whole answer: it is not one.
            raise DeadlineReached()
        excerpt = _read_at_most(response, max_bytes)
        if response.length == 0:  # the whole body (by Content-Length) was read
            response.close()
        reusable = response.isclosed() and not response.will_close
        return Answer(response.status, response.getheader("location"), excerpt), reusable

    def _checkout(self, key: tuple[str, str, int]) -> PinnedConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if _still_open(conn):
                return conn
            conn.close()  # the receiver closed it while it was idle

    def _checkin(self, key: tuple[str, str, int], conn: PinnedConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.idle_per_host:
                idle.append(conn)
                return
        conn.close()


def _still_open(conn: PinnedConnection) -> bool:
    """An idle connection with something to read has been closed by the receiver (or is out of step)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _read_at_most(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The first `limit` bytes of the body, as sent; the rest is left unread (the connection is then not
    reused). The status is the answer: a body cut short by the deadline or the receiver changes nothing."""
    kept = bytearray()
    try:
        while len(kept) < limit:
            chunk = response.read1(limit - len(kept))
            if not chunk:
                break
            kept += chunk
    except (OSError, http.client.HTTPException):
        pass
    return bytes(kept[:limit])
