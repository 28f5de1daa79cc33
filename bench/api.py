"""HTTP API latency under load (docs/ARCHITECTURE.md / issue target: p99 < 50 ms with 50 concurrent clients),
figures printed, never asserted:

- enroll-one:        POST /api/v1/enrollments, each request a different contact;
- list-enrollments:  GET /api/v1/enrollments?page=N&page_size=50 with its total count.

A real `drumbeat api` process (uvicorn, one process) on a scratch database; the clients are asyncio
tasks in this process sharing one HTTP connection pool, each sending its next request as soon as the
previous one answered (closed loop). Latency is measured per request, client side.

    .venv/bin/python bench/api.py [--clients 50] [--requests 4000] [--contacts 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from bench.enroll import build_tenant, new_sequence
from bench.scratch import scratch_database

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api(url: str, port: int) -> subprocess.Popen:
    # No rate limit: the clients share one API key, and this measures latency, not the limiter.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRUMBEAT_")} | {
        "DATABASE_URL": url,
        "DRUMBEAT_RATE_LIMIT": "0",
    }
    server = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("drumbeat api did not start")


def owner_key(url: str, workspace: uuid.UUID) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT token FROM drumbeat.issue_api_key(%s, 'bench', 'owner', NULL)", (workspace,)
        ).fetchone()[0]


async def closed_loop(client: httpx.AsyncClient, requests: list, clients: int) -> list[float]:
    """`clients` workers take the next request from the list until it is empty; per-request latency."""
    queue: asyncio.Queue = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            method, path, body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
            except httpx.TransportError:
                # The server closed an idle keep-alive connection as we reused it: not a latency sample.
                queue.put_nowait((method, path, body))
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 400:
                raise SystemExit(f"{method} {path} -> {response.status_code}: {response.text[:200]}")

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def summary(name: str, latencies: list[float], seconds: float) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(
        f"{name:<17} {len(ordered):>6} requests  {len(ordered) / seconds:>7,.0f}/s  "
        f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms   (target p99 < 50 ms)"
    )


async def measure(base: str, token: str, sequence: uuid.UUID, contacts: list, args) -> None:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        warm = [("GET", "/api/v1/enrollments?page_size=1", None)] * args.clients
        await closed_loop(client, warm, args.clients)
        enrolls = [
            ("POST", "/api/v1/enrollments", {"sequence_id": str(sequence), "contact_id": str(contact)})
            for contact in contacts[: args.requests]
        ]
        started = time.perf_counter()
        latencies = await closed_loop(client, enrolls, args.clients)
        summary("enroll-one", latencies, time.perf_counter() - started)
        pages = max(1, len(enrolls) // 50)
        lists = [
            ("GET", f"/api/v1/enrollments?page={n % pages + 1}&page_size=50", None)
            for n in range(args.requests)
        ]
        started = time.perf_counter()
        latencies = await closed_loop(client, lists, args.clients)
        summary("list-enrollments", latencies, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--contacts", type=int, default=20_000)
    args = parser.parse_args()
    with scratch_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            owner, workspace, contacts = build_tenant(conn, max(args.contacts, args.requests))
            sequence, _ = new_sequence(conn, owner, workspace)
        port = _free_port()
        server = start_api(url, port)
        try:
            asyncio.run(
                measure(f"http://127.0.0.1:{port}", owner_key(url, workspace), sequence, contacts, args)
            )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
