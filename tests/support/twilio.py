"""An HTTP server standing in for Twilio's REST API, driven by the real twilio SDK (the worker tests'
`twilio` fixture, tests/workers/conftest.py), and the account it answers for.

It keeps the messages it accepted (created) apart from the answers it gave, as Twilio does: an answer
can be lost (a read timeout) or be a 500 after the message was created, and the Messages list (GET
Messages.json, filtered by To and From) then shows what really exists; that is what reconciliation asks."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ACCOUNT_SID = "AC" + "0" * 32


@dataclass
class Answer:
    """How the stand-in answers one POST: `status` with `body` (None: the created message's JSON), after
    `delay` more seconds; `accept` says whether the message is created (listed) whatever the answer says."""

    status: int = 201
    body: dict | None = None
    accept: bool = True
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def fault_mix(
    seed: int,
    too_many: float = 0.0,
    server_error: float = 0.0,
    late: float = 0.0,
    late_seconds: float = 35.0,
    retry_after: int = 1,
) -> Callable[[dict], Answer]:
    """A random answer per request: `too_many` of them 429 (with Retry-After), `server_error` 500 (nothing
    created), `late` accepted but answered only after `late_seconds`; the rest accepted at once."""
    chance = random.Random(seed)
    lock = threading.Lock()

    def answer(_request: dict) -> Answer:
        with lock:
            draw = chance.random()
        if draw < too_many:
            return Answer(
                429, _error(20429, "Too Many Requests", 429), False, headers={"Retry-After": str(retry_after)}
            )
        if draw < too_many + server_error:
            return Answer(500, _error(20500, "Internal Server Error", 500), False)
        if draw < too_many + server_error + late:
            return Answer(delay=late_seconds)
        return Answer()

    return answer


def _error(code: int, message: str, status: int) -> dict:
    return {"code": code, "message": message, "status": status}


class TwilioStandIn(ThreadingHTTPServer):
    """Answers POST .../Messages.json with the next scripted answer (`replies`: Answers, or (status, body)
    pairs that create nothing), else `faults(request)` when set, else by creating the message; records each
    complete request. GET .../Messages.json lists the created messages, newest first."""

    daemon_threads = True  # a late answer still sleeping never holds up the test's end

    def __init__(self):
        self.requests: list[dict] = []
        self.messages: list[dict] = []
        self.replies: list[Answer | tuple[int, dict]] = []
        self.faults: Callable[[dict], Answer] | None = None
        self.delay = 0.0  # seconds each answer takes, like a real provider's round trip
        self.lookups = 0
        self.lookup_status = 200  # what GET answers (a 5xx: the list is unavailable)
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _TwilioHandler)

    def answer(self, request: dict) -> Answer:
        """Record a request and decide its answer; create the message when the answer accepts it."""
        with self.lock:
            self.requests.append(request)
            scripted = self.replies.pop(0) if self.replies else None
        if isinstance(scripted, tuple):
            scripted = Answer(scripted[0], scripted[1], accept=False)
        chosen = scripted or (self.faults(request) if self.faults else Answer())
        if chosen.accept:
            created = self._create(request["form"])
            chosen = chosen if chosen.body is not None else Answer(**(vars(chosen) | {"body": created}))
        return chosen

    def _create(self, form: dict) -> dict:
        now = datetime.now(UTC)
        with self.lock:
            message = {
                "sid": f"SM{len(self.messages) + 1:032d}",
                "to": form.get("To"),
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body"),
                "status": "queued",
                "date_created": format_datetime(now, usegmt=True),
                "date_sent": None,
                "created": now,
            }
            self.messages.append(message)
        return _public(message)

    def listed(self, query: dict[str, str]) -> list[dict]:
        """The created messages the Messages list shows for `query` (To, From), newest first."""
        with self.lock:
            found = [
                message
                for message in self.messages
                if all(message[name.lower()] == query[name] for name in ("To", "From") if name in query)
            ]
        return [_public(message) for message in sorted(found, key=lambda m: m["created"], reverse=True)]

    @contextmanager
    def busy(self):
        """Count the requests being answered at once."""
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _public(message: dict) -> dict:
    return {name: value for name, value in message.items() if name != "created"} | {
        "account_sid": ACCOUNT_SID
    }


class _TwilioHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        if len(raw) < length:
            # The client went away mid-request (a killed worker): Twilio never sees an incomplete request.
            self.close_connection = True
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        with self.server.busy():
            answer = self.server.answer(
                {"path": self.path, "form": form, "auth": self.headers["Authorization"]}
            )
            time.sleep(answer.delay)
        self._reply(answer.status, answer.body, answer.headers)

    def do_GET(self):
        url = urlsplit(self.path)
        with self.server.lock:
            self.server.lookups += 1
        if self.server.lookup_status >= 300:
            self._reply(self.server.lookup_status, _error(20500, "unavailable", self.server.lookup_status))
            return
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        messages = self.server.listed(query)
        self._reply(200, {"messages": messages, "next_page_uri": None, "page": 0, "page_size": len(messages)})

    def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped waiting (its timeout): the message, if accepted, stays accepted

    def log_message(self, *args):
        pass
