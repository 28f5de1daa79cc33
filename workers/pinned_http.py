"""An httpx transport that connects only to addresses checked beforehand, under one overall deadline.

Why: a webhook URL's name is resolved and every answer checked (app/core/webhook_urls.resolve_public);
if the HTTP client then resolved the name again, an attacker's DNS could answer a public address to the
check and 127.0.0.1 to the connection (DNS rebinding). So the connection must go to a checked address,
while everything else stays about the name: the Host header, TLS SNI and the certificate verified against
the name (not the IP), and the connection pool keyed by the name.

How: httpcore (under httpx) opens every TCP connection through a "network backend" (`connect_tcp(host,
port, ...)`), then starts TLS on it with the URL's host as server_hostname. `PinnedBackend.connect_tcp`
ignores DNS: it takes the addresses of the route the current request runs under (`pinned(route)`, a
context variable: httpx's sync client connects in the calling thread, so each thread sees its own
request's route) and connects to the first one that answers. No route, or a route for another host or
port: no connection at all (ConnectError), never a lookup. The URL, and so Host, SNI and certificate
verification, keep the name.

A kept-alive connection may serve a later request to the same host:port without a new connect: its
address was checked when it was opened, and the sender checks the name again before every request anyway
(refusing it, unsent, if it now points somewhere forbidden).

httpx takes no network backend yet (encode/httpx#3749 proposes one), so `PinnedTransport` is httpx's
HTTPTransport with its httpcore pool replaced by one using `PinnedBackend`; it fails at construction if
httpx ever stops keeping that pool where it does now.

(The other known way, putting the IP in the URL with a Host header and httpcore's "sni_hostname"
extension, keys the pool by IP: a TLS connection verified for one name would then be reused for another
name on the same IP.)

The same route carries a deadline. httpx's timeouts are per operation (a read may wait `read` seconds,
and a server dripping one byte a second never trips it); the streams `PinnedBackend` returns cap every
connect, TLS handshake, read and write at the time left before the route's deadline, which makes the
timeout a total one. A pooled connection reused later obeys the deadline of the request using it."""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from app.core.webhook_urls import IPAddress


@dataclass(frozen=True)
class Route:
    """Where the current request may connect: `host`:`port` only through `addresses` (checked ones), and
    no later than `deadline` (time.monotonic())."""

    host: str
    port: int
    addresses: Sequence[IPAddress]
    deadline: float

    def serves(self, host: str, port: int) -> bool:
        return port == self.port and _same_host(host, self.host)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


def _same_host(a: str, b: str) -> bool:
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


_route: ContextVar[Route | None] = ContextVar("drumbeat_pinned_route", default=None)


@contextmanager
def pinned(route: Route) -> Iterator[Route]:
    """Run the requests of this block (in this thread) under `route`."""
    token = _route.set(route)
    try:
        yield route
    finally:
        _route.reset(token)


def _capped(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to the time left before the current route's deadline; `expired` raised if none is."""
    route = _route.get()
    if route is None:
        return timeout
    left = route.time_left()
    if left <= 0:
        raise expired("the request's total time limit was reached")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the current route's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout)
        )
        return DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked addresses of the current route, never to what DNS says now."""

    def __init__(self) -> None:
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        route = _route.get()
        if route is None or not route.serves(host, port):
            raise httpcore.ConnectError(f"no checked address to connect to {host}:{port}")
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in route.addresses:
            try:
                # An IP literal: the socket layer parses it, no DNS lookup happens here.
                stream = self._sockets.connect_tcp(
                    str(address),
                    port,
                    timeout=_capped(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # the next checked address, if any (IPv6 down, one server of several down)
            else:
                return DeadlineStream(stream)
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's default transport, connecting through PinnedBackend; no proxy, no environment settings (a
    proxy would connect wherever the name points, and env-driven behaviour has no place in a guard)."""

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits | None = None):
        limits = limits or httpx.Limits()
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            # Swapping the pool relies on httpx internals (no public hook yet): fail loudly if they move.
            raise RuntimeError("httpx.HTTPTransport no longer keeps an httpcore pool in _pool")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(),
        )
