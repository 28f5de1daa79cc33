"""One dispatch batch, as DESIGN.md's protocol: claim (one SQL call), render and send (Python, outside
any transaction), record (one SQL call). Nothing here changes state except through those functions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.queries import queries
from workers.links import LinkSigner
from workers.render import RenderError, render_message, sms_segments
from workers.tracking import track_html
from workers.transports import Message, SendResult, Transport

log = logging.getLogger("drumbeat.dispatch")


@dataclass
class Dispatcher:
    """Claims due steps in batches and sends them through the transport of their channel. `conn` must be
    idle (it is switched to autocommit: each protocol call is its own transaction)."""

    conn: psycopg.Connection
    transports: dict[str, Transport]
    batch_size: int = 500
    # Unsubscribe links and headers, open pixel and click tracking; without it, {{ unsubscribe_url }}
    # fails to render and nothing is tracked.
    links: LinkSigner | None = None

    def __post_init__(self) -> None:
        self.conn.autocommit = True
        self.conn.execute(queries("dispatch")["become_worker"])

    def run_once(self) -> int:
        """Claim, send and record one batch; returns how many deliveries it handled."""
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            claimed = cursor.execute(queries("dispatch")["claim_due"], {"limit": self.batch_size}).fetchall()
        if not claimed:
            return 0
        results = [self._send(row) for row in claimed]
        self.conn.execute(queries("dispatch")["record_deliveries"], {"results": Jsonb(results)})
        return len(results)

    def recover(self, lease: str = "10 minutes") -> int:
        return self.conn.execute(queries("dispatch")["recover_deliveries"], {"lease": lease}).fetchone()[0]

    def _send(self, row: dict[str, Any]) -> dict[str, Any]:
        """Render and send one claimed delivery; the record entry for it, whatever happened."""
        delivery_id = str(row["delivery_id"])
        entry: dict[str, Any] = {"delivery_id": delivery_id}
        context = row["context"]
        if self.links:
            context = context | {"unsubscribe_url": self.links.unsubscribe_url(delivery_id)}
        try:
            rendered = render_message(row["subject"], row["body"], row["html_body"], context)
        except RenderError as error:
            return entry | {
                "outcome": "failed",
                "transient": False,
                "error_code": "render_error",
                "error_message": str(error),
            }
        segments = sms_segments(rendered.text) if row["channel"] == "sms" else None
        html = rendered.html
        if html is not None and self.links and row["channel"] == "email":
            html = self._track(self.links, html, delivery_id, context.get("sequence") or {})
        message = Message(
            delivery_id=str(row["delivery_id"]),
            workspace_id=str(row["workspace_id"]),
            idempotency_key=row["idempotency_key"],
            channel=row["channel"],
            to_address=row["to_address"],
            from_address=row["from_address"],
            text=rendered.text,
            subject=rendered.subject,
            html=html,
            headers=self.links.email_headers(delivery_id) if self.links and row["channel"] == "email" else {},
        )
        result = self._call_transport(message)
        return entry | {
            "outcome": "sent" if result.sent else "failed",
            "transient": result.transient,
            "provider_message_id": result.provider_message_id,
            "error_code": result.error_code,
            "error_message": result.error_message,
            "segments": segments,
            "subject": rendered.subject,
            "body": rendered.text,
        }

    @staticmethod
    def _track(links: LinkSigner, html: str, delivery_id: str, sequence: dict[str, Any]) -> str:
        """The HTML part as sent: open pixel and click redirects per the sequence's track_opens /
        track_clicks settings (absent or null means on). The stored body stays the text part."""
        return track_html(
            html,
            delivery_id,
            links,
            track_opens=sequence.get("track_opens") is not False,
            track_clicks=sequence.get("track_clicks") is not False,
        )

    def _call_transport(self, message: Message) -> SendResult:
        transport = self.transports[message.channel]
        try:
            return transport.send(message)
        except Exception as error:  # a provider SDK or network fault: retry later, never crash the batch
            log.warning("transport %s raised for delivery %s: %s", transport.name, message.delivery_id, error)
            return SendResult(
                sent=False, error_code="transport_error", error_message=str(error), transient=True
            )
