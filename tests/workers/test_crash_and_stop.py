"""A real `drumbeat worker` sending through a slow stand-in Twilio, killed or stopped mid-batch: a crash
costs at most the messages in flight (the rest of its batch is claimed again within seconds, not after
the delivery lease), SIGTERM finishes what is in flight, releases the rest and exits well within 30 s,
and a second signal exits at once. Nothing is ever sent twice."""

from __future__ import annotations

import collections
import signal
import subprocess
import time

import psycopg
import pytest

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.processes import DRUMBEAT, midday_timezone, worker_environment
from tests.support.twilio import ACCOUNT_SID

CONTACTS = 30
SEND_CONCURRENCY = 2


@pytest.fixture
def enrolled(db_url):
    """CONTACTS contacts enrolled (committed) in a one-SMS sequence due at once (it is noon in their timezone)."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [{"kind": "sms", "body": "Hi {{ contact.first_name }}"}]
        sequence = tenant.sequence(sms_sequence(settings={"timezone": midday_timezone()}, steps=steps))
        contacts = tenant.contacts(
            *[{"phone": f"+1555010{i:04d}", "first_name": f"C{i}"} for i in range(CONTACTS)]
        )
        tenant.enroll(sequence, contacts)
        conn.commit()
    return db_url


def _start(db_url: str, twilio) -> subprocess.Popen:
    environment = worker_environment(
        db_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN="secret",
        DRUMBEAT_TWILIO_BASE_URL=twilio.url,
        DRUMBEAT_SEND_CONCURRENCY=str(SEND_CONCURRENCY),
        DRUMBEAT_LOG_FORMAT="json",
    )
    return subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "2"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(condition, timeout: float, what: str, worker: subprocess.Popen) -> None:
    """Wait for `condition`; on timeout, fail with the end of the worker's log."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            raise AssertionError(f"no {what}; the worker's log ends: {worker.communicate()[1][-3000:]}")
        time.sleep(0.05)


def _statuses(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1").fetchall())


def _sent_to(twilio) -> collections.Counter:
    with twilio.lock:
        return collections.Counter(request["form"]["To"] for request in twilio.requests)


def _due_again(db_url: str) -> int:
    """Active enrollments due (next_action_at set) on their first step with no delivery left."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            """SELECT count(*) FROM drumbeat.enrollments e WHERE e.status = 'active' AND e.next_action_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM drumbeat.deliveries d WHERE d.enrollment_id = e.id)"""
        ).fetchone()[0]


def _stop(worker: subprocess.Popen) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    return worker.communicate(timeout=30)[1]


def test_a_killed_worker_costs_at_most_the_messages_in_flight(enrolled, twilio):
    db_url = enrolled
    twilio.delay = 0.4  # a batch of 30, two at a time: six seconds of sending
    worker = _start(db_url, twilio)
    try:
        _wait_until(lambda: len(twilio.requests) >= 6, 60, "the first sends", worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        _stop(worker)
    killed = _statuses(db_url)
    # The claim reserved the whole batch, but only the deliveries in flight were 'sending'.
    assert killed.get("sending", 0) <= SEND_CONCURRENCY, killed
    assert killed.get("reserved", 0) >= CONTACTS - 6 - SEND_CONCURRENCY - 1, killed
    in_flight = killed.get("sending", 0)

    # The default delivery lease is two minutes: everything below happens because the reservations lapse.
    replacement = _start(db_url, twilio)
    try:
        _wait_until(
            lambda: _statuses(db_url).get("sent", 0) >= CONTACTS - in_flight, 60, "the rest", replacement
        )
    finally:
        stderr = _stop(replacement)
    assert replacement.returncode == 0, stderr
    assert '"reservations_lapsed"' in stderr
    after = _statuses(db_url)
    assert after == {"sent": CONTACTS - in_flight} | ({"sending": in_flight} if in_flight else {}), after
    sent_to = _sent_to(twilio)
    # Each number once, never twice; a send the kill cut off mid-request never reached the provider.
    assert CONTACTS - in_flight <= len(sent_to) <= CONTACTS and max(sent_to.values()) == 1, sent_to


def test_sigterm_finishes_what_is_in_flight_and_releases_the_rest(enrolled, twilio):
    db_url = enrolled
    twilio.delay = 1.0
    worker = _start(db_url, twilio)
    try:
        _wait_until(lambda: len(twilio.requests) >= 3, 60, "the first sends", worker)
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        stderr = worker.communicate(timeout=30)[1]
        took = time.monotonic() - asked
    finally:
        _stop(worker)
    assert worker.returncode == 0, stderr
    assert took < 30, took
    assert '"worker_stopping"' in stderr and '"reservations_released"' in stderr
    stopped = _statuses(db_url)
    # Every send that started was finished and recorded; nothing stays reserved or in flight.
    assert set(stopped) == {"sent"}, stopped
    assert stopped["sent"] == len(twilio.requests) < CONTACTS
    assert _due_again(db_url) == CONTACTS - stopped["sent"]

    twilio.delay = 0.0
    replacement = _start(db_url, twilio)
    try:
        _wait_until(lambda: _statuses(db_url).get("sent", 0) == CONTACTS, 60, "the rest", replacement)
    finally:
        _stop(replacement)
    sent_to = _sent_to(twilio)
    assert len(sent_to) == CONTACTS and max(sent_to.values()) == 1, sent_to


def test_a_second_signal_exits_at_once(enrolled, twilio):
    db_url = enrolled
    twilio.delay = 8.0  # the sends in flight would hold a graceful stop for 8 s (inside Twilio's timeout)
    worker = _start(db_url, twilio)
    try:
        _wait_until(lambda: twilio.in_flight == SEND_CONCURRENCY, 60, "sends in flight", worker)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        asked = time.monotonic()
        worker.send_signal(signal.SIGINT)
        stderr = worker.communicate(timeout=30)[1]
        took = time.monotonic() - asked
    finally:
        _stop(worker)
    assert worker.returncode == 1, stderr
    assert took < 5, took  # not waiting for the provider's 8 s
    assert '"second_signal"' in stderr
    stopped = _statuses(db_url)
    # Lost: only what was in flight (it stays 'sending' until its lease, then unknown, never resent);
    # the first signal already released the rest of the batch.
    assert stopped == {"sending": SEND_CONCURRENCY}, stopped
    assert _due_again(db_url) == CONTACTS - SEND_CONCURRENCY
