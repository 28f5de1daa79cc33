"""Transports: one small interface in front of every way a message leaves (Twilio, SMTP, the outbox)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from psycopg.types.json import Jsonb

from app.queries import queries


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
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What the provider said. `transient` failures are retried (429, 5xx, timeouts); others are not."""

    sent: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False


class Transport(Protocol):
    name: str

    def send(self, message: Message) -> SendResult: ...


class OutboxTransport:
    """Records each rendered message in drumbeat.outbox instead of sending it (development default
    when no provider credentials are configured, demos, tests)."""

    name = "outbox"

    def __init__(self, conninfo: str):
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(queries("dispatch")["become_worker"])
        return self._conn

    def send(self, message: Message) -> SendResult:
        self._connection().execute(
            queries("dispatch")["outbox_insert"],
            {
                "workspace_id": message.workspace_id,
                "delivery_id": message.delivery_id,
                "channel": message.channel,
                "to_address": message.to_address,
                "from_address": message.from_address,
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
                "headers": Jsonb(message.headers),
            },
        )
        return SendResult(sent=True, provider_message_id=f"outbox:{message.delivery_id}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
