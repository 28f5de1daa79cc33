"""A real SMTP server for tests (aiosmtpd on a free local port): what it received, and from which
client connections. `smtp_server(...)` starts one (several if asked); all stop with the test."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage, Message
from email.utils import make_msgid

import pytest
from aiosmtpd.controller import Controller

from tests.support.processes import free_port


class Inbox:
    """What the test SMTP server received, and from which client connections (session.peer)."""

    def __init__(self, rcpt_reply: str | None = None, refused: frozenset[str] = frozenset()):
        self.messages: list = []
        self.peers: list[tuple[str, int]] = []
        self.rcpt_reply = rcpt_reply
        self.refused = refused

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        if address in self.refused:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        self.peers.append(session.peer)
        return "250 Message accepted"

    def sessions(self) -> int:
        """How many connections carried the accepted messages."""
        return len(set(self.peers))


@pytest.fixture
def smtp_server():
    def start(rcpt_reply=None, refused=frozenset(), **server_parameters):
        inbox = Inbox(rcpt_reply, refused)
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **server_parameters)
        controller.start()
        started.append(controller)
        return inbox, controller.port

    started: list[Controller] = []
    yield start
    for controller in started:
        controller.stop()


def reply_to(sent: Message, text: str, **headers: str) -> bytes:
    """The raw answer to a message the SMTP server received, as a mail client writes one: To and From
    swapped, "Re:", In-Reply-To and References naming it; `headers` (Auto_Submitted="auto-replied") add
    to or replace those."""
    reply = EmailMessage()
    reply["From"], reply["To"] = sent["To"], sent["From"]
    reply["Subject"] = "Re: " + sent["Subject"]
    reply["Message-ID"] = make_msgid(domain="example.com")
    reply["In-Reply-To"] = reply["References"] = sent["Message-ID"]
    for name, value in headers.items():
        del reply[name.replace("_", "-")]
        reply[name.replace("_", "-")] = value
    reply.set_content(text)
    return reply.as_bytes()
