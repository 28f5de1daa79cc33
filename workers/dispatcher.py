"""One dispatch batch, as docs/ARCHITECTURE.md's protocol: claim (one SQL call reserves the batch), then
start, send and record a chunk at a time (Python sends outside any transaction; each SQL call records the
sends that finished, starts the next ones and, every few seconds, extends the reservations still waiting).
At most `send_concurrency` deliveries of a batch are 'sending' at any moment, so a worker that dies costs at
most those; its other reservations lapse within seconds and are claimed again. Nothing here changes state
except through those functions.

Logging (at INFO): each claim and record runs in its own transaction that also reads back the audit
events it wrote (app/core/event_log.py), so every step the batch executed, every send and every exit gets
a line with its ids once committed, all under the batch's correlation id; then one line per batch.
With INFO off, claim and record are single autocommit statements, exactly as without logging."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.core import event_log, logs
from app.core.links import LinkSigner
from app.core.queries import queries
from app.core.templates import Rendered, RenderError, render_message, sms_segments
from workers import reconcile
from workers.tracking import track_html
from workers.transports import Message, SendResult, Transport

log = logging.getLogger("drumbeat.dispatch")
# How often a worker extends the reservations it still holds: well inside drumbeat.reservation_lease()
# (10 s), so a slow provider never costs a live worker its reservations.
HEARTBEAT_SECONDS = 2.0
# How long the send loop waits for a send to finish before it looks again at the heartbeat and at a stop
# request (SIGTERM releases the unstarted reservations at once, not after the slowest send).
WAIT_SLICE_SECONDS = 0.25


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
    # Set when the worker is asked to stop: no new claim, no new send; the batch's unstarted reservations
    # are released at once and the sends in flight finish and are recorded.
    stopping: threading.Event = field(default_factory=threading.Event)
    # A new connection (set up as `conn` was) when `conn` dies under a record: see _record_and_start.
    reconnect: Callable[[], psycopg.Connection] | None = None

    def __post_init__(self) -> None:
        self.conn.autocommit = True
        self.conn.execute(queries("dispatch")["become_worker"])
        # Network sends always run on threads, even one at a time: the batch's own thread must stay free to
        # extend its reservations while a provider takes its time to answer.
        self._senders = (
            ThreadPoolExecutor(max(1, self.send_concurrency), thread_name_prefix="drumbeat-send")
            if any(transport.concurrent for transport in self.transports.values())
            else None
        )
        # The channels whose provider can be asked whether it has a message (Twilio): an unknown delivery
        # there waits for reconciliation instead of counting as sent.
        self.reconcile_channels = sorted(
            channel
            for channel, transport in self.transports.items()
            if getattr(transport, "reconciles", False)
        )

    def run_once(self) -> int:
        """Claim, send and record one batch; returns how many deliveries it handled. Its log lines carry
        the correlation id already bound (the worker binds the job's), else a new one."""
        if self.stopping.is_set():
            return 0
        with logs.correlation():
            started = time.perf_counter()
            claimed = self._audited("claim_due", {"limit": self.batch_size})
            if not claimed:
                return 0
            results = self._work_through(claimed)
            self._log_batch(results, started)
            return len(results)

    def _work_through(self, claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Start, send and record the claimed deliveries, at most `window` of them sending at once; the
        record entries of those it sent. Each SQL call records what finished, starts the next chunk and,
        when due, extends the reservations still waiting. A local transport (the outbox) starts the whole
        batch at once: its sends take microseconds, so there is nothing in flight worth bounding."""
        concurrent = self._senders is not None and self._any_concurrent(claimed)
        window = self.send_concurrency if concurrent else len(claimed)
        reserved, in_flight = deque(claimed), set()
        finished: list[dict[str, Any]] = []
        recorded: list[dict[str, Any]] = []
        breaker = Breaker(self._fetch(queries("dispatch")["held_scopes"]))
        extended = time.monotonic()
        while True:
            if self.stopping.is_set() and reserved:
                self._release([row["delivery_id"] for row in reserved])
                reserved.clear()
            finished, reserved = self._apply_holds(breaker, finished, reserved)
            chunk = [reserved.popleft() for _ in range(min(window - len(in_flight), len(reserved)))]
            heartbeat = bool(reserved) and time.monotonic() - extended >= HEARTBEAT_SECONDS
            if finished or chunk or heartbeat:
                started = self._record_and_start(finished, chunk, list(reserved) if heartbeat else [])
                self._clear_holds(breaker, finished)
                recorded += finished
                finished = []
                extended = time.monotonic() if heartbeat else extended
                in_flight |= {self._submit(row, concurrent) for row in chunk if row["delivery_id"] in started}
            if not in_flight and not reserved:
                return recorded
            done, in_flight = wait(in_flight, timeout=WAIT_SLICE_SECONDS, return_when=FIRST_COMPLETED)
            finished += [send.result() for send in done]

    def _apply_holds(
        self, breaker: Breaker, finished: list[dict[str, Any]], reserved: deque
    ) -> tuple[list[dict[str, Any]], deque]:
        """The circuit breaker, within a batch: a send that came back with a hold holds its channel (or
        sender) in SQL, and gives back unsent both itself (unless its outcome was ambiguous: that one is
        recorded unknown) and the batch's reservations under the same hold. Returns what is left to record
        and to send."""
        for entry in (entry for entry in finished if entry["hold"]):
            hold = entry["hold"]
            under = [row for row in reserved if breaker.covers(hold, row)]
            reserved = deque(row for row in reserved if not breaker.covers(hold, row))
            given_back = [entry["delivery_id"]] if entry["outcome"] == "held" else []
            ids = given_back + [str(row["delivery_id"]) for row in under]
            params = hold | {
                "ids": ids,
                "error_code": entry["error_code"],
                "error_message": entry["error_message"],
            }
            if self._fetch(queries("dispatch")["hold_deliveries"], params)[0]["hold_deliveries"]:
                log.log(
                    _hold_level(hold["reason"]),
                    "channel_held",
                    extra={key: hold[key] for key in ("channel", "sender_id", "reason", "seconds")}
                    | {"error_code": entry["error_code"], "given_back": len(ids)},
                )
        return [entry for entry in finished if entry["outcome"] != "held"], reserved

    def _clear_holds(self, breaker: Breaker, recorded: list[dict[str, Any]]) -> None:
        """A send went through on a channel or sender held when the batch began: the provider is back."""
        for channel, sender_id in breaker.cleared_by(recorded):
            for hold in self._fetch(
                queries("dispatch")["clear_holds"], {"channel": channel, "sender_id": sender_id}
            ):
                log.log(
                    _hold_level(hold["reason"]),
                    "channel_resumed",
                    extra={key: str(value) for key, value in hold.items()},
                )

    def _submit(self, row: dict[str, Any], concurrent: bool) -> Future:
        """Send one started delivery: on a sending thread (in a copy of this context, so its log lines keep
        the batch's correlation id), or right here when the transport is local."""
        if concurrent:
            return self._senders.submit(contextvars.copy_context().run, self._send, row)
        done: Future = Future()
        done.set_result(self._send(row))
        return done

    def _record_and_start(
        self, finished: list[dict[str, Any]], chunk: list[dict[str, Any]], keep: list[dict[str, Any]]
    ) -> set:
        """Record `finished`, start `chunk` and extend `keep`, in one call; the ids it started. A
        reservation it did not start lapsed (another worker may own the step now) or its enrollment moved
        on (a reply, a pause, an opt-out): it is not sent."""
        params = {
            "results": Jsonb(finished),
            "start": [row["delivery_id"] for row in chunk],
            "keep": [row["delivery_id"] for row in keep],
            "bodies": self._bodies_to_keep(chunk),
        }
        try:
            try:
                row = self._audited("record_and_start", params)[0]
            except psycopg.OperationalError:
                if self.reconnect is None or not self.conn.closed or self.stopping.is_set():
                    raise
                # The connection died (Postgres restarted, the backend was terminated): once more on a new
                # one. Safe: a delivery no longer 'sending' is not recorded again, nor started twice.
                log.warning(
                    "database_connection_lost", extra={"purpose": "record", "deliveries": len(finished)}
                )
                self.conn = self.reconnect()
                row = self._audited("record_and_start", params)[0]
        except Exception:
            # Sent but not recorded: these stay 'sending' until their lease expires, then become unknown;
            # the sends still in flight end the same way, and the reservations lapse within seconds.
            log.error("record_failed", extra={"deliveries": len(finished), "sent": _count(finished, "sent")})
            raise
        if row["recorded"] < len(finished):
            # Recorded meanwhile: its lease expired mid-send and recovery marked it unknown.
            log.warning("deliveries_not_recorded", extra={"count": len(finished) - row["recorded"]})
        started = set(row["started"])
        if len(started) < len(chunk):
            log.info("reservations_not_started", extra={"count": len(chunk) - len(started)})
        return started

    def _release(self, delivery_ids: list) -> None:
        released = self._fetch(queries("dispatch")["release_reservations"], {"ids": delivery_ids})
        log.info("reservations_released", extra={"count": released[0]["release_reservations"]})

    def _any_concurrent(self, claimed: list[dict[str, Any]]) -> bool:
        """Does any of these go through a transport worth calling concurrently (a network provider)?"""
        return len(claimed) > 1 and any(self.transports[row["channel"]].concurrent for row in claimed)

    def recover(self, lease: str = "10 minutes") -> int:
        """Deliveries left 'sending' past `lease` become unknown (see drumbeat.recover_deliveries)."""
        with logs.correlation():
            params = {"lease": lease, "reconcile": self.reconcile_channels}
            return self._audited("recover_deliveries", params)[0]["recover_deliveries"]

    def reconcile(self, limit: int = reconcile.BATCH) -> int:
        """Ask the providers that can be asked (Twilio) about the unknown deliveries whose turn came, and
        settle them (workers/reconcile.py); how many were settled for good."""
        if not self.reconcile_channels:
            return 0
        with logs.correlation():
            due = self._fetch(
                queries("dispatch")["due_reconciliations"],
                {"channels": self.reconcile_channels, "limit": limit},
            )
            if not due:
                return 0

            def find(row: dict[str, Any]) -> list[str] | None:
                transport = self.transports[row["channel"]]
                if row["body"] is None:
                    return None  # started by a worker that kept no text: cannot be matched, never guessed
                try:
                    return transport.find(reconcile.lookup_for(row))
                except Exception as error:  # unclassified: no answer, asked again later (never a guess)
                    log.warning("reconcile_error", extra={"transport": transport.name, "error": repr(error)})
                    return None

            results = reconcile.answers(due, find, self._senders.map if self._senders else map)
            settled = self._audited("settle_reconciliations", {"results": Jsonb(results)})
            return settled[0]["settle_reconciliations"]

    def release_lapsed(self) -> int:
        """Reservations whose worker stopped extending them go back to the queue; how many."""
        return self._fetch(queries("dispatch")["release_reservations"], {"ids": None})[0][
            "release_reservations"
        ]

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

    def _context(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.links:
            return row["context"] | {"unsubscribe_url": self.links.unsubscribe_url(str(row["delivery_id"]))}
        return row["context"]

    def _rendered(self, row: dict[str, Any]) -> Rendered | RenderError:
        """The row's message, rendered once: where the provider can be reconciled, its text is needed
        before the send starts (start_sending keeps it), and the send reuses it."""
        if "rendered" not in row:
            thread = row["context"].get("thread") or {}
            try:
                rendered = render_message(
                    row["subject"] or thread.get("subject_template"),
                    row["body"],
                    row["html_body"],
                    self._context(row),
                )
            except RenderError as error:
                row["rendered"] = error
            else:
                # A follow-up in the thread: the subject it answers, already rendered when it was sent.
                subject = reply_subject(thread["subject"]) if thread.get("subject") else rendered.subject
                row["rendered"] = replace(rendered, subject=subject)
        return row["rendered"]

    def _bodies_to_keep(self, chunk: list[dict[str, Any]]) -> list[str | None] | None:
        """start_sending's p_bodies: the text of each SMS, whose segments the workspace's credits must pay
        before it starts (credits count segments, known only once rendered), and of each message of a
        reconcilable channel (a worker killed mid-send leaves no record, and reconciliation looks the
        message up by its text); None when the chunk has neither."""
        kept = [row["channel"] == "sms" or row["channel"] in self.reconcile_channels for row in chunk]
        if not any(kept):
            return None
        texts = []
        for row, keep in zip(chunk, kept, strict=True):
            rendered = self._rendered(row) if keep else None
            texts.append(rendered.text if isinstance(rendered, Rendered) else None)
        return texts

    def _send(self, row: dict[str, Any]) -> dict[str, Any]:
        """Render and send one claimed delivery; the record entry for it, whatever happened."""
        delivery_id = str(row["delivery_id"])
        entry: dict[str, Any] = {
            "delivery_id": delivery_id,
            "channel": row["channel"],
            "sender_id": row["context"]["sender"]["id"],
            "hold": None,
        }
        rendered = self._rendered(row)
        if isinstance(rendered, RenderError):
            return entry | {
                "outcome": "failed",
                "transient": False,
                "error_code": "render_error",
                "error_message": str(rendered),
            }
        segments = sms_segments(rendered.text) if row["channel"] == "sms" else None
        html = rendered.html
        if html is not None and self.links and row["channel"] == "email":
            html = self._track(self.links, html, delivery_id, row["context"].get("sequence") or {})
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
            from_name=row["context"]["sender"].get("name") if row["channel"] == "email" else None,
            headers=self._email_headers(row) if row["channel"] == "email" else {},
        )
        result = self._call_transport(message)
        return entry | {
            "outcome": _outcome(result),
            "hold": _hold_scope(result, row),
            "transient": result.transient,
            "reconcile": result.ambiguous and message.channel in self.reconcile_channels,
            "provider_message_id": result.provider_message_id,
            "error_code": result.error_code,
            "error_message": result.error_message,
            "segments": segments,
            "subject": rendered.subject,
            "body": rendered.text,
        }

    def _email_headers(self, row: dict[str, Any]) -> dict[str, str]:
        """One-click unsubscribe (when links are configured) and, for a follow-up in the thread, the
        headers that put it there: In-Reply-To the last email, References the whole chain."""
        headers = self.links.email_headers(str(row["delivery_id"])) if self.links else {}
        thread = row["context"].get("thread") or {}
        if thread.get("message_id"):
            headers["In-Reply-To"] = thread["message_id"]
            headers["References"] = " ".join(thread.get("references") or [thread["message_id"]])
        return headers

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


def _outcome(result: SendResult) -> str:
    """The record's outcome: sent, unknown (ambiguous), held (given back unsent: circuit breaker) or failed."""
    if result.sent:
        return "sent"
    if result.ambiguous:
        return "unknown"
    return "held" if result.held else "failed"


def _hold_scope(result: SendResult, row: dict[str, Any]) -> dict[str, Any] | None:
    """What a result's hold covers: the row's channel, and its sender for a sender-only hold (a 429)."""
    if result.hold is None:
        return None
    sender_id = row["context"]["sender"]["id"] if result.hold.sender_only else None
    return {
        "channel": row["channel"],
        "sender_id": sender_id,
        "reason": result.hold.reason,
        "seconds": result.hold.seconds,
    }


def _hold_level(reason: str) -> int:
    """A 429 holding one sender for a second is routine (INFO); a channel held is an incident (WARNING)."""
    return logging.INFO if reason == "rate_limited" else logging.WARNING


class Breaker:
    """What one batch knows of the circuit breaker: the holds there were when it began (drumbeat.channel_holds
    is tiny, and empty while every provider answers), and which rows a new hold covers."""

    def __init__(self, held: list[dict[str, Any]]):
        self.held = {(row["channel"], row["sender_id"] and str(row["sender_id"])) for row in held}

    @staticmethod
    def covers(hold: dict[str, Any], row: dict[str, Any]) -> bool:
        return row["channel"] == hold["channel"] and hold["sender_id"] in (
            None,
            row["context"]["sender"]["id"],
        )

    def cleared_by(self, recorded: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """(channel, sender) of each send that went through under a hold of the batch's start; each once."""
        cleared = []
        for entry in recorded:
            scope = (entry["channel"], entry["sender_id"])
            if (
                entry["outcome"] == "sent"
                and scope not in cleared
                and ((entry["channel"], None) in self.held or scope in self.held)
            ):
                cleared.append(scope)
        self.held -= {(channel, None) for channel, _ in cleared} | set(cleared)
        return cleared


def reply_subject(subject: str) -> str:
    """ "Re: " + the subject answered, once: a thread's third email is "Re: Quick question" too."""
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def _count(results: list[dict[str, Any]], outcome: str) -> int:
    return sum(1 for result in results if result["outcome"] == outcome)
