"""The webhook worker loop (workers/webhooks.py) in this process against a real Postgres and real HTTP
receivers: events become signed deliveries a `standardwebhooks` receiver accepts, a failed attempt is
retried with the same webhook-id, a slow endpoint never holds up another, a 410 or a URL refused at send
time switches the endpoint off, and a stopped loop records what it had in flight."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb
from standardwebhooks.webhooks import Webhook

from tests.sql.factories import new_tenant
from tests.support import call_one
from tests.support.webhook_receiver import Answer, Receiver, serve
from workers.webhook_sender import WebhookSender
from workers.webhooks import Webhooks


def quick_retry(attempt: int) -> dt.timedelta | None:
    """Retries half a second apart, three attempts in all (the real schedule starts at 30 s)."""
    return dt.timedelta(seconds=0.5) if attempt < 3 else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def slow_receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def tenant(db_url):
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        conn.commit()
    return tenant


def endpoint(db_url, tenant, url: str, **fields) -> dict:
    with psycopg.connect(db_url) as conn:
        tenant.conn = conn
        tenant.as_owner()
        conn.execute("SELECT set_config('drumbeat.webhook_allow_private', 'on', true)")
        created = call_one(conn, "create_webhook_endpoint", tenant.workspace_id, Jsonb({"url": url} | fields))
        conn.commit()
    return created


def ping(db_url, tenant, endpoint_id, times: int = 1) -> None:
    with psycopg.connect(db_url) as conn:
        tenant.conn = conn
        tenant.as_owner()
        for _ in range(times):
            call_one(conn, "test_webhook_endpoint", endpoint_id)
        conn.commit()


def endpoint_state(db_url, endpoint_id) -> dict:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT enabled, disabled_reason FROM drumbeat.webhook_endpoints WHERE id = %s", (endpoint_id,)
        ).fetchone()
    return {"enabled": row[0], "disabled_reason": row[1]}


def wait_until(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def run_webhooks(db_url):
    started: list[Webhooks] = []

    def start(*, allow_private: bool = True, per_endpoint: int = 8, timeout: float = 5.0) -> Webhooks:
        sender = WebhookSender(timeout=timeout, allow_private=allow_private)
        loop = Webhooks(db_url, sender, per_endpoint=per_endpoint, poll_seconds=0.05, retry=quick_retry)
        loop.start()
        started.append(loop)
        return loop

    yield start
    for loop in started:
        loop.stop()
        loop.join(15)
        loop.sender.close()


def test_an_enrollment_becomes_a_signed_delivery_retried_with_the_same_id(
    db_url, tenant, receiver, run_webhooks
):
    created = endpoint(db_url, tenant, receiver.url(), event_types=["sequence.enrollment.created"])
    receiver.answer(Answer(status=503))
    with psycopg.connect(db_url) as conn:
        tenant.conn = conn
        contact = tenant.contact(first_name="Ada")
        tenant.enroll(tenant.sequence(), [contact])
        conn.commit()
    run_webhooks()
    wait_until(lambda: len(receiver.received) >= 2)
    first, retry = receiver.received[:2]
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert int(retry.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    body = Webhook(created["secret"]).verify(retry.body, retry.headers)  # what a receiver does
    assert body["type"] == "sequence.enrollment.created"
    assert body["data"]["contact_id"] == str(contact) and body["data"]["workspace_id"] == str(
        tenant.workspace_id
    )
    with psycopg.connect(db_url, autocommit=True) as conn:

        def log() -> list[tuple]:
            return conn.execute(
                "SELECT attempt, status_code, outcome FROM drumbeat.webhook_attempts ORDER BY id"
            ).fetchall()

        wait_until(lambda: len(log()) == 2)  # the answer arrived; its record follows within milliseconds
        attempts = log()
        status = conn.execute("SELECT status FROM drumbeat.webhook_messages").fetchall()
    assert attempts == [(1, 503, "retry"), (2, 200, "delivered")] and status == [("delivered",)]


def test_a_slow_endpoint_never_holds_up_another(db_url, tenant, receiver, slow_receiver, run_webhooks):
    slow = endpoint(db_url, tenant, slow_receiver.url())
    fast = endpoint(db_url, tenant, receiver.url())
    slow_receiver.answer(*[Answer(delay=3.0) for _ in range(6)])
    ping(db_url, tenant, slow["id"], times=6)
    ping(db_url, tenant, fast["id"], times=5)
    run_webhooks(per_endpoint=2)
    started = time.monotonic()
    wait_until(lambda: len(receiver.received) == 5, timeout=10)
    assert time.monotonic() - started < 2.5  # the fast endpoint's five, while the slow one holds two senders
    assert len(slow_receiver.received) == 2  # never more than two in flight to the slow endpoint


def test_a_410_switches_the_endpoint_off(db_url, tenant, receiver, run_webhooks):
    gone = endpoint(db_url, tenant, receiver.url())
    receiver.answer(Answer(status=410))
    ping(db_url, tenant, gone["id"], times=2)
    run_webhooks(per_endpoint=1)
    wait_until(lambda: not endpoint_state(db_url, gone["id"])["enabled"])
    assert "410" in endpoint_state(db_url, gone["id"])["disabled_reason"]
    time.sleep(0.3)
    assert len(receiver.received) == 1  # the second ping waits for the endpoint to be switched back on


def test_a_url_refused_at_send_time_switches_the_endpoint_off(db_url, tenant, receiver, run_webhooks):
    inside = endpoint(db_url, tenant, receiver.url())  # saved while private targets were allowed
    ping(db_url, tenant, inside["id"])
    run_webhooks(allow_private=False)
    wait_until(lambda: not endpoint_state(db_url, inside["id"])["enabled"])
    assert "refused" in endpoint_state(db_url, inside["id"])["disabled_reason"]
    assert receiver.received == []  # no request ever left


def test_a_stopped_loop_records_what_it_had_in_flight(db_url, tenant, slow_receiver, run_webhooks):
    slow = endpoint(db_url, tenant, slow_receiver.url())
    slow_receiver.answer(Answer(delay=1.0))
    ping(db_url, tenant, slow["id"])
    loop = run_webhooks()
    wait_until(lambda: len(slow_receiver.received) == 1)
    loop.stop()
    loop.join(10)
    assert not loop.is_alive()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status FROM drumbeat.webhook_messages").fetchall() == [("delivered",)]


def test_the_loop_survives_its_database_connection_being_terminated(db_url, tenant, receiver, run_webhooks):
    created = endpoint(db_url, tenant, receiver.url())
    ping(db_url, tenant, created["id"])
    run_webhooks()
    wait_until(lambda: len(receiver.received) == 1)
    with psycopg.connect(db_url, autocommit=True) as admin:
        terminated = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert terminated >= 1
    ping(db_url, tenant, created["id"])
    wait_until(lambda: len(receiver.received) == 2)
    with psycopg.connect(db_url) as conn:
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM drumbeat.webhook_messages WHERE status = 'delivered'"
                ).fetchone()[0]
                == 2
            )
        )
