"""Console page times with 10,000 enrollments in the workspace (issue target: a page renders in under
300 ms of server time), figures printed, never asserted.

A scratch database gets a workspace with `--contacts` contacts, all enrolled in one sequence (an SMS at
once, a call task at once, an SMS two days later); a real `drumbeat worker` then sends the first SMS of
each (to the outbox) and creates their call tasks, so the messages and tasks pages have as many rows. A
real `drumbeat api` serves the console; this process signs in through the form and loads every page
`--rounds` times, one request at a time. Each page's server time is its Server-Timing header (the session
check, the queries as the signed-in user, the rendering); the client time adds HTTP.

    .venv/bin/python bench/console.py [--contacts 10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import time
import uuid

import httpx
import psycopg
from psycopg.types.json import Jsonb

from bench.api import DRUMBEAT, _free_port, owner_key, start_api
from bench.enroll import act_as
from bench.scratch import scratch_database

TARGET_MS = 300
SEQUENCE = {
    "name": "Console bench",
    "channel": "sms",
    "settings": {"timezone": "UTC", "quiet_hours": {"start": "00:00", "end": "24:00"}},
    "steps": [
        {
            "kind": "sms",
            "name": "Intro",
            "delay": {"value": 0, "unit": "minutes"},
            "body": "Hi {{ contact.first_name }}",
        },
        {
            "kind": "call",
            "name": "Call",
            "delay": {"value": 0, "unit": "minutes"},
            "task_description": "Call {{ contact.first_name }}",
        },
        {"kind": "sms", "name": "Nudge", "delay": {"value": 2, "unit": "days"}, "body": "Still there?"},
    ],
}


def build(url: str, contacts: int) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """The workspace, its sequence (active, every contact enrolled) and one contact."""
    owner = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        act_as(conn, owner)
        workspace = conn.execute("SELECT drumbeat_api.create_workspace('Console bench', 'UTC')").fetchone()[0]
        conn.execute(
            "SELECT drumbeat_api.create_sender(%s, 'sms', '+15550000001', %s)",
            (workspace, Jsonb({"rate_per_second": 1000})),
        )
        rows = [
            {"phone": f"+1555{n:07d}", "first_name": f"C{n}", "email": f"c{n}@example.com"}
            for n in range(2, contacts + 2)
        ]
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT contact_id FROM drumbeat_api.upsert_contacts(%s, %s)", (workspace, Jsonb(rows))
            )
        ]
        sequence = conn.execute(
            "SELECT drumbeat_api.create_sequence(%s, %s)", (workspace, Jsonb(SEQUENCE))
        ).fetchone()[0]
        conn.execute("SELECT drumbeat_api.activate_sequence(%s)", (sequence,))
        conn.execute("SELECT count(*) FROM drumbeat_api.enroll_contacts(%s, %s)", (sequence, ids))
    return workspace, sequence, ids[0]


def run_worker_until_sent(url: str, contacts: int, timeout: float = 300) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DRUMBEAT_", "TWILIO_", "SMTP_"))}
    worker = subprocess.Popen(
        [DRUMBEAT, "worker"],
        env=environment | {"DATABASE_URL": url, "DRUMBEAT_TRANSPORT": "outbox"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                sent, tasks = conn.execute(
                    "SELECT (SELECT count(*) FROM drumbeat.outbox), (SELECT count(*) FROM drumbeat.tasks)"
                ).fetchone()
                if sent >= contacts and tasks >= contacts:
                    break
                time.sleep(1)
            print(f"worker: {sent:,} messages in the outbox, {tasks:,} tasks")
            conn.execute("ANALYZE")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def sign_in(client: httpx.Client, token: str) -> None:
    form = client.get("/console/login")
    csrf = re.search(r'name="_csrf" value="([^"]+)"', form.text).group(1)
    signed_in = client.post("/console/login", data={"_csrf": csrf, "api_key": token})
    if signed_in.status_code != 200 or "Sequences" not in signed_in.text:
        raise SystemExit(f"sign-in failed: {signed_in.status_code}")


def measure(client: httpx.Client, path: str, rounds: int) -> None:
    server, total = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        page = client.get(path)
        total.append((time.perf_counter() - started) * 1000)
        if page.status_code != 200:
            raise SystemExit(f"GET {path} -> {page.status_code}")
        server.append(float(page.headers["server-timing"].split("dur=")[1]))
    server.sort()
    p95 = server[max(0, int(len(server) * 0.95) - 1)]
    print(
        f"{path[:48]:<48} server p50 {statistics.median(server):6.1f} ms  p95 {p95:6.1f} ms  max {server[-1]:6.1f} ms"
        f"  client p50 {statistics.median(total):6.1f} ms   {p95 / TARGET_MS:4.2f}x of {TARGET_MS} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with scratch_database() as url:
        workspace, sequence, contact = build(url, args.contacts)
        run_worker_until_sent(url, args.contacts)
        port = _free_port()
        server = start_api(url, port)
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", follow_redirects=True, timeout=30
            ) as client:
                sign_in(client, owner_key(url, workspace))
                print(
                    f"{args.contacts:,} enrollments; each page {args.rounds} times (target: server time < {TARGET_MS} ms)"
                )
                for path in (
                    "/console/sequences",
                    f"/console/sequences/{sequence}",
                    f"/console/sequences/{sequence}?timeline={contact}",
                    "/console/enrollments",
                    "/console/enrollments?status=active",
                    f"/console/enrollments?sequence={sequence}&page=150",
                    "/console/tasks",
                    "/console/tasks?tab=completed",
                    "/console/messages",
                    "/console/messages?page=150",
                    "/console/contacts",
                    "/console/contacts?q=C9999",
                    f"/console/contacts/{contact}",
                    "/console/settings",
                ):
                    measure(client, path, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
