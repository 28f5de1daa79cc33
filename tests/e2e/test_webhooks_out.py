"""Events out, end to end, with real processes: `drumbeat api` registers two endpoints (one for every type,
one for message.sent only), contacts are enrolled over HTTP, and `drumbeat worker` sends their SMS and
their webhooks to local receivers that answer 503 to the first attempt of every message. The worker is
SIGKILLed mid-way and another one started. Every enrollment's created, message.sent and completed events
arrive, each verified with the `standardwebhooks` library, every message is retried under the webhook-id
it first came with, and the filtered endpoint gets its type only."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.processes import (
    DRUMBEAT,
    drumbeat_environment,
    free_port,
    midday_timezone,
    wait_until_serving,
)
from tests.support.webhook_receiver import Answer, Receiver, serve

CONTACTS = 12
EVERY_ENROLLMENT = {"sequence.enrollment.created", "message.sent", "sequence.enrollment.completed"}


@pytest.fixture
def everything() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def sends_only() -> Iterator[Receiver]:
    yield from serve(Receiver())


def environment(db_url: str) -> dict[str, str]:
    return drumbeat_environment(
        DATABASE_URL=db_url,
        DRUMBEAT_TRANSPORT="outbox",
        DRUMBEAT_WEBHOOK_ALLOW_PRIVATE="true",  # the receivers are on 127.0.0.1
        DRUMBEAT_LOG_FORMAT="json",
    )


def start_worker(db_url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "2"],
        env=environment(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def api(db_url) -> Iterator[httpx.Client]:
    port = free_port()
    server = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)],
        env=environment(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10) as http:
            wait_until_serving(httpx.Client(base_url=f"http://127.0.0.1:{port}"), server)
            yield http
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def workspace(db_url) -> dict:
    """A workspace with an SMS sender and a one-SMS sequence due at once, and an owner API key."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        steps = [{"kind": "sms", "body": "Hi {{ contact.first_name }}"}]
        sequence = tenant.sequence(sms_sequence(settings={"timezone": midday_timezone()}, steps=steps))
        contacts = tenant.contacts(
            *[{"phone": f"+1555020{i:04d}", "first_name": f"C{i}"} for i in range(CONTACTS)]
        )
        conn.execute("RESET ROLE")
        [(_, token)] = conn.execute(
            "SELECT * FROM drumbeat.issue_api_key(%s, 'e2e', 'owner', NULL)", (tenant.workspace_id,)
        ).fetchall()
        conn.commit()
    return {"sequence": str(sequence), "contacts": [str(c) for c in contacts], "token": token}


def register(api: httpx.Client, token: str, url: str, types: list[str]) -> str:
    created = api.post(
        "/webhook-endpoints",
        json={"url": url, "event_types": types},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    return created.json()["secret"]


def delivered(receiver: Receiver, secret: str) -> dict[str, dict]:
    """Each message the receiver accepted (its second attempt: the first got 503), by webhook-id,
    verified as a receiver would."""
    accepted = {}
    for request in list(receiver.received):
        webhook_id = request.headers["webhook-id"]
        if receiver.attempts[webhook_id] >= 2 and webhook_id not in accepted:
            later = [r for r in receiver.received if r.headers["webhook-id"] == webhook_id][1]
            accepted[webhook_id] = Webhook(secret).verify(later.body, later.headers)
    return accepted


def wait_for(condition, worker: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            _, log = worker.communicate(timeout=10)
            raise AssertionError(f"{what}; worker log tail:\n{log[-3000:]}")
        time.sleep(0.2)


def test_every_event_arrives_signed_despite_503s_and_a_killed_worker(
    db_url, api, workspace, everything, sends_only
):
    # A slow 503: when the worker is killed, some first attempts are still waiting for their answer.
    everything.first_attempt = sends_only.first_attempt = Answer(status=503, delay=1.0)
    everything_secret = register(api, workspace["token"], everything.url(), ["*"])
    sends_secret = register(api, workspace["token"], sends_only.url(), ["message.sent"])
    enrolled = api.post(
        "/enrollments/bulk",
        json={"sequence_id": workspace["sequence"], "contact_ids": workspace["contacts"]},
        headers={"Authorization": f"Bearer {workspace['token']}"},
    )
    assert enrolled.status_code in (200, 201), enrolled.text

    worker = start_worker(db_url)
    wait_for(lambda: len(everything.received) >= CONTACTS, worker, 60, "no first wave of webhooks")
    worker.send_signal(signal.SIGKILL)  # mid-way: messages in flight, retries pending
    worker.wait(10)
    with psycopg.connect(db_url) as conn:
        in_flight = conn.execute(
            "SELECT count(*) FROM drumbeat.webhook_messages WHERE status = 'sending'"
        ).fetchone()[0]
    assert in_flight > 0  # the kill lost attempts mid-request: their leases bring them back
    replacement = start_worker(db_url)
    try:
        expected = CONTACTS * len(EVERY_ENROLLMENT)
        # Why 240 s: a message the killed worker had claimed but not yet posted comes back after its lease
        # (30 s) as attempt 2, which is the first these receivers see of it: 503, and attempt 3 waits out
        # the second retry delay (96-120 s). Passing runs take about a minute; 120 s failed in CI that way.
        wait_for(
            lambda: (
                len(delivered(everything, everything_secret)) >= expected
                and len(delivered(sends_only, sends_secret)) >= CONTACTS
            ),
            replacement,
            240,
            "not every webhook was delivered",
        )
    finally:
        replacement.send_signal(signal.SIGTERM)
        replacement.communicate(timeout=30)

    by_enrollment = collections.defaultdict(set)
    for body in delivered(everything, everything_secret).values():
        by_enrollment[body["data"]["contact_id"]].add(body["type"])
    assert set(by_enrollment) == set(workspace["contacts"])
    assert all(types >= EVERY_ENROLLMENT for types in by_enrollment.values()), by_enrollment
    # Retries carry the webhook-id of the first attempt: every id was first refused (503), then accepted.
    assert all(count >= 2 for count in everything.attempts.values())
    sends = delivered(sends_only, sends_secret).values()
    assert {body["type"] for body in sends} == {"message.sent"}
    assert {body["data"]["contact_id"] for body in sends} == set(workspace["contacts"])
    assert {r.headers["webhook-id"] for r in sends_only.received} <= set(everything.attempts)
