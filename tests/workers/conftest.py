"""Fixtures of the worker tests: an HTTP server standing in for Twilio's REST API (tests/support/twilio.py),
real SMTP servers (tests/support/smtp.py) and a real Dovecot IMAP server (tests/support/imap.py)."""

from __future__ import annotations

import threading

import pytest

from tests.support.imap import dovecot, dovecot_certificate, dovecot_without_idle  # noqa: F401 (fixtures)
from tests.support.smtp import smtp_server  # noqa: F401  (pytest fixture)
from tests.support.twilio import TwilioStandIn


@pytest.fixture
def twilio():
    server = TwilioStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
