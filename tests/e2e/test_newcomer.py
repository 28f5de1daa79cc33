"""The newcomer's path, end to end, against the real API and a real worker process: an API key, a
sender, a sequence, contacts, an enrollment; the worker sends through the outbox; the stats show it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.support.api import new_api_tenant

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")
SEQUENCE = {
    "name": "Welcome",
    "channel": "sms",
    # Quiet hours over the whole day: the test sends whatever the time of day is.
    "settings": {"timezone": "UTC", "quiet_hours": {"start": "00:00", "end": "24:00"}},
    "steps": [
        {
            "kind": "sms",
            "name": "Hello",
            "delay": {"value": 0, "unit": "minutes"},
            "body": "Hi {{ contact.first_name }}!",
        },
        {"kind": "sms", "name": "Later", "delay": {"value": 2, "unit": "days"}, "body": "Still there?"},
    ],
}


def _outbox(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT to_address, text_body FROM drumbeat.outbox ORDER BY to_address"
        ).fetchall()


def _run_worker_until(db_url: str, count: int, timeout: float = 30) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMTP_", "DRUMBEAT_"))}
    worker = subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "2"],
        env=environment | {"DATABASE_URL": db_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while len(_outbox(db_url)) < count and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr


def test_key_sender_sequence_contacts_enroll_send_stats(client, db_url):
    tenant = new_api_tenant(client, "Newcomer Inc")
    tenant.sender("sms", "+15550001111")
    created = tenant.post("/sequences", SEQUENCE)
    assert created.status_code == 201, created.text
    sequence_id = created.json()["id"]
    assert tenant.post(f"/sequences/{sequence_id}/activate").status_code in (200, 204)
    contact_ids = []
    for n, name in enumerate(["Ada", "Grace", "Linus"]):
        response = tenant.post("/contacts", {"phone": f"+1202555{n:04d}", "first_name": name})
        assert response.status_code == 201, response.text
        contact_ids.append(response.json()["id"])
    enrolled = tenant.post("/enrollments/bulk", {"sequence_id": sequence_id, "contact_ids": contact_ids})
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["summary"]["enrolled"] == 3

    _run_worker_until(db_url, 3)

    assert _outbox(db_url) == [
        ("+12025550000", "Hi Ada!"),
        ("+12025550001", "Hi Grace!"),
        ("+12025550002", "Hi Linus!"),
    ]
    stats = tenant.get(f"/sequences/{sequence_id}/stats")
    assert stats.status_code == 200, stats.text
    first_step = stats.json()["steps"][0]
    assert first_step["sent"] == 3, stats.json()
    listed = tenant.get("/enrollments", params={"sequence_id": sequence_id}).json()
    assert listed["total"] == 3 and all(e["status"] == "active" for e in listed["items"])
