"""One dispatch batch, as docs/ARCHITECTURE.md's protocol: claim (one SQL call), render and send (Python,
outside any transaction), record (one SQL call). Nothing here changes state except through those functions.

Logging (at INFO): each claim and record runs in its own transaction that also reads back the audit
events it wrote (app/core/event_log.py), so every step the batch executed, every send and every exit gets
a line with its ids once committed, all under the batch's correlation id; then one line per batch.
With INFO off, claim and record are single autocommit statements, exactly as without logging."""

from __future__ import annotations

import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.core import event_log, logs
from app.core.links import LinkSigner
from app.core.queries import queries
from app.core.templates import RenderError, render_message, sms_segments
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
    # Messages of one batch in flight at once. Why: a provider answers in 100-300 ms, so 500 messages sent
    # one after another take minutes (past the lateness target, and near the delivery lease); rates and
    # caps are enforced when the batch is claimed, not by sending slowly.
    send_concurrency: int = 1

    def __post_init__(self) -> None:
        self.conn.autocommit = True
        self.conn.execute(queries("dispatch")["become_worker"])
        self._senders = (
            ThreadPoolExecutor(self.send_concurrency, thread_name_prefix="drumbeat-send")
            if self.send_concurrency > 1
            else None
        )

    def run_once(self) -> int:
        """Claim, send and record one batch; returns how many deliveries it handled. Its log lines carry
        the correlation id already bound (the worker binds the job's), else a new one."""
        with logs.correlation():
            started = time.perf_counter()
            claimed = self._audited("claim_due", {"limit": self.batch_size})
            if not claimed:
                return 0
            results = self._send_all(claimed)
            self._record(results)
            self._log_batch(results, started)
            return len(results)

    def _send_all(self, claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each claimed delivery's record entry, in claim order; sent send_concurrency at a time. Each send
        runs in a copy of this context, so its log lines keep the batch's correlation id."""
        if self._senders is None or not self._any_concurrent(claimed):
            return [self._send(row) for row in claimed]
        sends = [self._senders.submit(contextvars.copy_context().run, self._send, row) for row in claimed]
        return [send.result() for send in sends]

    def _any_concurrent(self, claimed: list[dict[str, Any]]) -> bool:
        """Does any of these go through a transport worth calling concurrently (a network provider)?"""
        return len(claimed) > 1 and any(self.transports[row["channel"]].concurrent for row in claimed)

    def recover(self, lease: str = "10 minutes") -> int:
        with logs.correlation():
            return self._audited("recover_deliveries", {"lease": lease})[0]["recover_deliveries"]

    def _audited(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run one protocol statement; when INFO is on, in a transaction that also reads back the events
        it wrote, logged once it committed."""
        statement = queries("dispatch")[name]
        if not event_log.wanted(log):
            return self._fetch(statement, params)
        with self.conn.transaction():
            mark = self._fetch(event_log.MARK)[0]["mark"]
            rows = self._fetch(statement, params)
            events = self._fetch(event_log.WRITTEN, {"mark": mark})
        event_log.log_events(log, events)
        return rows

    def _fetch(self, statement: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            return cursor.execute(statement, params).fetchall()

    def _record(self, results: list[dict[str, Any]]) -> None:
        """Record the batch's outcomes. A delivery recorded meanwhile (its lease expired mid-send, and
        recovery marked it unknown) keeps that state: say so, the send took longer than the lease."""
        try:
            recorded = self._audited("record_deliveries", {"results": Jsonb(results)})[0]["record_deliveries"]
        except Exception:
            # Sent but not recorded: these stay 'sending' until their lease expires, then become unknown.
            log.error("record_failed", extra={"deliveries": len(results), "sent": _count(results, "sent")})
            raise
        if recorded < len(results):
            log.warning("deliveries_not_recorded", extra={"count": len(results) - recorded})

    @staticmethod
    def _log_batch(results: list[dict[str, Any]], started: float) -> None:
        log.info(
            "batch_dispatched",
            extra={
                "deliveries": len(results),
                "sent": _count(results, "sent"),
                "failed": _count(results, "failed"),
                "unknown": _count(results, "unknown"),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

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
            "outcome": "sent" if result.sent else "unknown" if result.ambiguous else "failed",
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
        except Exception as error:  # a fault the transport did not classify: never crash the batch
            # Whether the provider got the message is not known, so it is never sent again (unknown). The
            # error's text goes to the delivery's error_message, not here: it may quote the recipient.
            log.warning(
                "transport_error",
                extra={
                    "transport": transport.name,
                    "delivery_id": message.delivery_id,
                    "workspace_id": message.workspace_id,
                    "channel": message.channel,
                    "error_type": type(error).__name__,
                },
            )
            return SendResult(
                sent=False, error_code="transport_error", error_message=str(error), ambiguous=True
            )


def _count(results: list[dict[str, Any]], outcome: str) -> int:
    return sum(1 for result in results if result["outcome"] == outcome)
