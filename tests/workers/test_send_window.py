"""The dispatcher's send window: a batch is claimed as reservations and started a few at a time, so at no
moment are more than `send_concurrency` of its deliveries 'sending'; asked to stop, it releases what it
has not started and records what was in flight."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.sql.factories import SMS_SEQUENCE, new_tenant
from tests.support.twilio import ACCOUNT_SID
from workers.dispatcher import Dispatcher
from workers.transports import TwilioTransport

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York
BATCH = 12


def _enroll(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        contacts = tenant.contacts(*[{"phone": f"+1555000400{i:02d}"} for i in range(BATCH)])
        tenant.enroll(tenant.sequence(SMS_SEQUENCE), contacts)
        conn.commit()


def _statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1").fetchall())


def _dispatcher(conn: psycopg.Connection, twilio, send_concurrency: int) -> Dispatcher:
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
    sms = TwilioTransport(ACCOUNT_SID, "secret", twilio.url)
    return Dispatcher(conn, {"sms": sms}, batch_size=BATCH, send_concurrency=send_concurrency)


@contextmanager
def _watching_statuses(db_url: str, twilio) -> Iterator[list[dict[str, int]]]:
    """The deliveries' statuses as the stand-in answers each request (its requests wait `delay` first,
    so each look happens while that request, and any sent beside it, is still in flight)."""
    seen: list[dict[str, int]] = []
    answer = twilio.answer
    with psycopg.connect(db_url, autocommit=True) as watcher:

        def answer_and_look(request: dict):
            with twilio.lock:
                seen.append(_statuses(watcher))
            return answer(request)

        twilio.answer = answer_and_look
        yield seen


def test_no_more_than_send_concurrency_deliveries_are_sending_at_once(db_url, twilio):
    _enroll(db_url)
    twilio.delay = 0.05
    with _watching_statuses(db_url, twilio) as seen, psycopg.connect(db_url, autocommit=True) as conn:
        assert _dispatcher(conn, twilio, send_concurrency=3).run_once() == BATCH
        assert _statuses(conn) == {"sent": BATCH}
    assert len(seen) == BATCH
    assert max(statuses.get("sending", 0) for statuses in seen) == 3
    # The first requests are answered while the rest of the batch is still only reserved.
    assert seen[0].get("reserved", 0) >= BATCH - 3 - 1, seen[0]


def test_a_stop_mid_batch_releases_the_unstarted_and_records_the_in_flight(db_url, twilio):
    _enroll(db_url)
    twilio.delay = 0.3
    with psycopg.connect(db_url, autocommit=True) as conn:
        dispatcher = _dispatcher(conn, twilio, send_concurrency=2)
        stop = threading.Timer(0.45, dispatcher.stopping.set)  # while the second pair is in flight
        stop.start()
        handled = dispatcher.run_once()
        stop.join()
        after = _statuses(conn)
        due_again = conn.execute(
            "SELECT count(*) FROM drumbeat.enrollments WHERE next_action_at = %s", (NOW,)
        ).fetchone()[0]
        assert dispatcher.run_once() == 0  # a stopped dispatcher claims nothing
    assert handled == after["sent"] == len(twilio.requests) == 4, (handled, after)
    assert after == {"sent": 4}
    assert due_again == BATCH - 4  # released at once, at their place in the queue
