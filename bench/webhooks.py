"""Outgoing webhooks benchmark (issue target: >= 1,000 events/s delivered to three endpoints). Figures
printed, never asserted.

A real `drumbeat worker` process runs against a scratch database with three endpoints (every type) on
three local receivers: a minimal asyncio HTTP server in a process of its own, answering 200 at once with
keep-alive, so that what is measured is Drumbeat's side. N published events (default 10,000
`message.opened`) are written in one transaction; the worker fans each out to the three endpoints and
sends 3N signed POSTs. Measured from the commit of the events to the last message marked delivered:

- events/s: N over that span (each event delivered to all three endpoints);
- deliveries/s: 3N over it;
- the raw ceiling of the same run: plain keep-alive POSTs of the same body to the same receivers with
  http.client (the sender's own HTTP), from the same number of threads, no database, no signing; and the
  ratio of the two.

    .venv/bin/python -m bench.webhooks [--events 10000] [--per-endpoint 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from bench.enroll import act_as
from bench.scratch import scratch_database

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")
ENDPOINTS = 3
SENDERS = 32  # workers/webhooks.py: sender threads of one worker process


# --- The receivers ---------------------------------------------------------------------------------


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter) -> None:
    """HTTP/1.1 with keep-alive: read each request's head and body, answer 200 with no body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            with counter.get_lock():
                counter.value += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(ports, counter, ready) -> None:
    async def main() -> None:
        servers = [
            await asyncio.start_server(lambda r, w: _answer(r, w, counter), "127.0.0.1", 0)
            for _ in range(ENDPOINTS)
        ]
        for index, server in enumerate(servers):
            ports[index] = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- Setup and measurement -------------------------------------------------------------------------


def setup(url: str, ports: list[int], events: int) -> uuid.UUID:
    """A workspace with three endpoints on the receivers; returns the workspace (no events yet)."""
    owner = uuid.uuid4()
    with psycopg.connect(url) as conn:
        act_as(conn, owner)
        workspace = conn.execute("SELECT drumbeat_api.create_workspace('Bench', 'UTC')").fetchone()[0]
        conn.execute("SELECT set_config('drumbeat.webhook_allow_private', 'on', true)")
        for port in ports:
            conn.execute(
                "SELECT drumbeat_api.create_webhook_endpoint(%s, %s)",
                (workspace, Jsonb({"url": f"http://127.0.0.1:{port}/hook"})),
            )
        conn.commit()
    return workspace


def write_events(url: str, workspace: uuid.UUID, events: int) -> float:
    """N message.opened events in one transaction; returns the wall-clock time of its commit."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO drumbeat.events (workspace_id, kind, contact_id, payload) "
            "SELECT %s, 'opened', gen_random_uuid(), '{}' FROM generate_series(1, %s)",
            (workspace, events),
        )
        conn.commit()
        return time.time()


def delivered(url: str) -> tuple[int, float | None]:
    with psycopg.connect(url) as conn:
        count, last = conn.execute(
            "SELECT count(*), extract(epoch FROM max(delivered_at)) FROM drumbeat.webhook_messages "
            "WHERE status = 'delivered'"
        ).fetchone()
    return count, float(last) if last is not None else None


def raw_ceiling(ports: list[int], requests: int) -> float:
    """POSTs per second of plain http.client keep-alive connections (one per thread and receiver) from
    SENDERS threads, no database, no signing."""
    body = json.dumps({"type": "message.opened", "timestamp": "2026-01-01T00:00:00Z", "data": {}}).encode()
    local = threading.local()

    def post(index: int) -> None:
        if not hasattr(local, "connections"):
            local.connections = [http.client.HTTPConnection("127.0.0.1", port) for port in ports]
        connection = local.connections[index % len(ports)]
        connection.request("POST", "/hook", body=body, headers={"content-type": "application/json"})
        connection.getresponse().read()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(post, range(requests)))
    return requests / (time.monotonic() - started)


def run(events: int, per_endpoint: int, workers: int, worker_log: Path) -> None:
    ports = multiprocessing.Array("i", ENDPOINTS)
    counter = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    receivers = multiprocessing.Process(target=_serve, args=(ports, counter, ready), daemon=True)
    receivers.start()
    ready.wait(10)
    port_list = list(ports)
    with scratch_database() as url:
        workspace = setup(url, port_list, events)
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("DRUMBEAT_", "TWILIO_", "SMTP_"))
        }
        environment |= {
            "DATABASE_URL": url,
            "DRUMBEAT_TRANSPORT": "outbox",
            "DRUMBEAT_WEBHOOK_ALLOW_PRIVATE": "true",
            "DRUMBEAT_WEBHOOK_CONCURRENCY": str(per_endpoint),
            "DRUMBEAT_LOG_FORMAT": "json",
        }
        with worker_log.open("w") as log:
            started = [
                subprocess.Popen([DRUMBEAT, "worker"], env=environment, stdout=log, stderr=log)
                for _ in range(workers)
            ]
            try:
                time.sleep(3)  # the worker is up and polling
                committed = write_events(url, workspace, events)
                expected = events * ENDPOINTS
                deadline = time.monotonic() + 600
                while (done := delivered(url))[0] < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
            finally:
                for worker in started:
                    worker.terminate()
                for worker in started:
                    worker.wait(30)
        count, last = done
        span = (last or time.time()) - committed
        ceiling = raw_ceiling(port_list, min(expected, 20_000))
    receivers.terminate()
    print(f"events written at once:            {events:,} (3 endpoints: {expected:,} deliveries)")
    print(
        f"worker processes:                  {workers} (at most {per_endpoint} in flight per endpoint in all)"
    )
    print(f"delivered:                         {count:,} in {span:.1f} s")
    print(f"events delivered/s (to all three): {count / ENDPOINTS / span:,.0f}   (target >= 1,000)")
    print(f"deliveries/s:                      {count / span:,.0f}")
    print(f"raw ceiling (http.client POSTs/s): {ceiling:,.0f}   ratio {count / span / ceiling:.2f}")
    print(f"receiver saw:                      {counter.value - min(expected, 20_000):,} webhook requests")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--per-endpoint", type=int, default=8, help="DRUMBEAT_WEBHOOK_CONCURRENCY")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (the cap is across all)")
    parser.add_argument(
        "--worker-log", type=Path, default=Path(tempfile.gettempdir()) / "bench-webhooks-worker.log"
    )
    arguments = parser.parse_args()
    run(arguments.events, arguments.per_endpoint, arguments.workers, arguments.worker_log)


if __name__ == "__main__":
    main()
