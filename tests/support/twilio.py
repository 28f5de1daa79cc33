"""An HTTP server standing in for Twilio's REST API, driven by the real twilio SDK (the worker tests'
`twilio` fixture, tests/workers/conftest.py), and the account it answers for."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "0" * 32


class TwilioStandIn(ThreadingHTTPServer):
    """Answers POST .../Messages.json with the next scripted (status, body) and records each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[tuple[int, dict]] = []
        self.delay = 0.0  # seconds each answer takes, like a real provider's round trip
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _TwilioHandler)

    def answer(self, request: dict) -> tuple[int, dict]:
        """Record a request; the next scripted reply, else a new message sid."""
        with self.lock:
            self.requests.append(request)
            if self.replies:
                return self.replies.pop(0)
            return 201, {"sid": f"SM{len(self.requests):032d}", "status": "queued"}

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


class _TwilioHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        with self.server.busy():
            status, body = self.server.answer(
                {"path": self.path, "form": form, "auth": self.headers["Authorization"]}
            )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass
