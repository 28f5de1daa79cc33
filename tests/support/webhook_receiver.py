"""A webhook receiver for the outgoing-webhook tests: a real HTTP server (http.server in a thread, TLS
optional) that keeps every request and answers as told; a self-signed certificate for the names a test
picks; and a fake DNS (socket.getaddrinfo) so that made-up names resolve where a test says, counted."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class Answer:
    """How the receiver answers one request: `status` with `headers` and `body` after `delay` seconds.
    `drip` > 0: announce a long body and send it one byte every `drip` seconds (with `drip_headers`, the
    headers never end instead: one more byte of a header every `drip` seconds); `endless`: announce a
    huge body and send it as fast as the client reads (all until the client leaves)."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    drip: float = 0.0
    drip_headers: bool = False
    endless: bool = False


def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Run `receiver` in a thread for as long as the generator is (a fixture's body: `yield from`)."""
    thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes
    client_port: int  # the same on two requests: one kept-alive connection


class Receiver(ThreadingHTTPServer):
    """Listens on 127.0.0.1 (a free port); `answers` are used in order, then Answer() (200)."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops the SYNs of a burst of clients (1 s retransmits)

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()  # requests per webhook-id
        # When set, the first request of every webhook-id gets this answer (and the queue is not used).
        self.first_attempt: Answer | None = None
        self.server_names: list[str | None] = []  # the SNI of each TLS handshake
        self.answers: deque[Answer] = deque()
        self.lock = threading.Lock()
        if tls is not None:
            tls.sni_callback = self._record_sni

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str = "/hooks", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        with self.lock:
            self.answers.extend(answers)

    def answer_to(self, request: Received) -> Answer:
        with self.lock:
            if self.first_attempt is not None and self.attempts[request.headers.get("webhook-id", "")] == 1:
                return self.first_attempt
            return self.answers.popleft() if self.answers else Answer()

    def record(self, request: Received) -> None:
        with self.lock:
            self.received.append(request)
            self.attempts[request.headers.get("webhook-id", "")] += 1

    def _record_sni(self, _sock: object, server_name: str | None, _context: object) -> None:
        with self.lock:
            self.server_names.append(server_name)

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake in the request's own thread: a client that fails it blocks no other.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Received("POST", self.path, headers, body, self.client_address[1])
        self.server.record(request)
        answer = self.server.answer_to(request)
        time.sleep(answer.delay)
        try:
            self._answer(answer)
        except OSError:  # the client left (a timeout, or it had read enough)
            self.close_connection = True

    def _answer(self, answer: Answer) -> None:
        if answer.drip_headers:
            self.wfile.write(f"HTTP/1.1 {answer.status} OK\r\nx-slow: ".encode())
            self._stream_forever(answer)
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.drip or answer.endless:
            self.send_header("content-length", str(1 << 30))
            self.end_headers()
            self._stream_forever(answer)
            return
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _stream_forever(self, answer: Answer) -> None:
        self.close_connection = True
        chunk = b"x" if answer.drip else b"x" * 65536
        give_up = time.monotonic() + 30  # a client that never leaves does not keep this thread forever
        while time.monotonic() < give_up:
            self.wfile.write(chunk)
            self.wfile.flush()
            time.sleep(answer.drip)


# --- Certificates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only; hostname checking on, as in production."""
        return ssl.create_default_context(cafile=str(self.cert_path))


def make_certificate(directory: Path, names: list[str]) -> Certificate:
    """A self-signed certificate (its own CA) for `names`: DNS names and IP addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # an EC key: made in milliseconds, unlike RSA
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(cert_path, key_path)


def _general_name(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# --- DNS ----------------------------------------------------------------------------------------------


class FakeDns:
    """socket.getaddrinfo, patched: names set with `answer` resolve to the addresses given, one answer per
    lookup in order (the last one repeating); an answer of [] fails the lookup. IP literals go to the real
    getaddrinfo (connecting to one calls it); any other name fails (no test depends on real DNS).
    `lookups` lists every name looked up, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self._real = socket.getaddrinfo
        self._answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self._lock = threading.Lock()
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def answer(self, name: str, *answers: list[str]) -> None:
        with self._lock:
            self._answers[name.lower()] = list(answers)

    def lookups_of(self, name: str) -> int:
        return self.lookups.count(name.lower())

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(host_text.split("%")[0])
        except ValueError:
            pass
        else:
            return self._real(host, port, family, type, proto, flags)
        with self._lock:
            self.lookups.append(host_text.lower())
            answers = self._answers.get(host_text.lower().rstrip("."))
            if not answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            current = answers.pop(0) if len(answers) > 1 else answers[0]
        if not current:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_addrinfo(address, port) for address in current]


def _addrinfo(address: str, port) -> tuple:
    port = int(port or 0)
    if ipaddress.ip_address(address).version == 6:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
