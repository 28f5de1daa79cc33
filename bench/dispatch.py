"""Dispatch benchmarks (docs/ARCHITECTURE.md targets), figures printed, never asserted:

1. throughput: N due SMS steps (default 100k) through a null transport, end to end (claim + render +
   send + record + advance), batches of 500 — target >= 10k deliveries/s;
2. the naive design over a sample: one procrastinate job per message, each claiming, sending and
   recording its own step — target: the batch design >= 20x faster;
3. claim cost with 10k and with 1M waiting (not yet due) enrollments — target: flat.

    .venv/bin/python bench/dispatch.py [--due 100000] [--naive-sample 2000] [--waiting 1000000] [--streams 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid

import procrastinate
import psycopg
from psycopg.types.json import Jsonb

from bench.enroll import act_as, build_tenant
from bench.scratch import scratch_database
from workers.dispatcher import Dispatcher
from workers.transports import Message, SendResult

SEQUENCE = {
    "name": "Bench SMS",
    "channel": "sms",
    "settings": {"timezone": "UTC", "quiet_hours": {"start": "00:00", "end": "24:00"}},
    "steps": [
        {"kind": "sms", "body": "Hi {{ contact.first_name }}"},
        {"kind": "sms", "delay": {"value": 1, "unit": "days"}, "body": "Again"},
    ],
}


class NullTransport:
    """Accepts everything instantly: the benchmark measures Drumbeat, not a provider."""

    name = "null"
    concurrent = False

    def send(self, message: Message) -> SendResult:
        return SendResult(sent=True, provider_message_id=f"null:{message.delivery_id}")


def enroll_due(
    conn: psycopg.Connection, owner: uuid.UUID, workspace: uuid.UUID, contact_ids: list
) -> uuid.UUID:
    """A fast sender and an active sequence whose first step is due now for every contact given."""
    with conn.transaction():
        act_as(conn, owner)
        conn.execute(
            "SELECT drumbeat_api.create_sender(%s, 'sms', %s, '{\"rate_per_second\": 1000}')",
            (workspace, f"+1555{uuid.uuid4().int % 10_000_000:07d}"),
        )
        sequence = conn.execute(
            "SELECT drumbeat_api.create_sequence(%s, %s)", (workspace, Jsonb(SEQUENCE))
        ).fetchone()[0]
        conn.execute("SELECT drumbeat_api.activate_sequence(%s)", (sequence,))
        conn.execute("SELECT count(*) FROM drumbeat_api.enroll_contacts(%s, %s)", (sequence, contact_ids))
    # rate_per_second caps at 1000/s per sender by design; the benchmark measures the engine, so lift it.
    conn.execute(
        "UPDATE drumbeat.senders SET rate_per_second = 1000000 WHERE workspace_id = %s", (workspace,)
    )
    # Steady state, as autovacuum leaves a live table: statistics and a visibility map for the fresh rows.
    conn.execute("VACUUM ANALYZE drumbeat.enrollments")
    conn.execute("VACUUM ANALYZE drumbeat.contacts")
    return sequence


def batch_throughput(url: str, streams: int) -> tuple[int, float]:
    """Dispatchers in `streams` threads (each its own connection, as `drumbeat worker --concurrency`
    runs them) until nothing is due; psycopg releases the GIL while Postgres works."""
    handled_by_stream = [0] * streams

    def drain(stream: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            dispatcher = Dispatcher(conn, {"sms": NullTransport()}, batch_size=500)
            while handled := dispatcher.run_once():
                handled_by_stream[stream] += handled

    started = time.perf_counter()
    threads = [threading.Thread(target=drain, args=(stream,)) for stream in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(handled_by_stream), time.perf_counter() - started


def naive_throughput(url: str, enrollment_ids: list[str]) -> float:
    """One procrastinate job per message: defer them all, then let a worker run until the queue is empty."""
    connector = procrastinate.PsycopgConnector(
        conninfo=url, kwargs={"options": "-c search_path=procrastinate"}
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="bench.send_one", queue="naive")
    def send_one(enrollment_id: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET ROLE drumbeat_worker")
            rows = conn.execute(
                "SELECT delivery_id FROM drumbeat.claim_messages(ARRAY[%s]::uuid[], drumbeat.clock_now())",
                (enrollment_id,),
            ).fetchall()
            results = [{"delivery_id": str(r[0]), "outcome": "sent", "segments": 1} for r in rows]
            conn.execute("SELECT drumbeat.record_deliveries(%s)", (Jsonb(results),))

    async def run() -> float:
        async with app.open_async():
            started = time.perf_counter()
            await send_one.batch_defer_async(*({"enrollment_id": e} for e in enrollment_ids))
            await app.run_worker_async(
                queues=["naive"], concurrency=4, wait=False, install_signal_handlers=False
            )
            return time.perf_counter() - started

    return len(enrollment_ids) / asyncio.run(run())


def claim_cost(url: str, owner, workspace, contact_ids: list, waiting: int, samples: int = 20) -> float:
    """Median time of one claim of a 500-step batch while `waiting` enrollments wait (not yet due)."""
    with psycopg.connect(url, autocommit=True) as conn:
        sequence = enroll_due(conn, owner, workspace, contact_ids[: samples * 500])
        waiting_ids = contact_ids[samples * 500 : samples * 500 + waiting]
        conn.execute(
            """INSERT INTO drumbeat.enrollments (workspace_id, sequence_id, contact_id, status, current_step_id,
                                                step_done_at, next_action_at, started_at)
               SELECT e.workspace_id, e.sequence_id, w.id, 'active', e.current_step_id, now(), now() + interval '30 days', now()
               FROM (SELECT * FROM drumbeat.enrollments WHERE sequence_id = %s LIMIT 1) AS e
               CROSS JOIN unnest(%s::uuid[]) AS w(id)""",
            (sequence, waiting_ids),
        )
        conn.execute("VACUUM ANALYZE drumbeat.enrollments")
        conn.execute("SET ROLE drumbeat_worker")
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT count(*) FROM drumbeat.lock_due(500, drumbeat.clock_now())").fetchone()
            timings.append(time.perf_counter() - started)
        conn.execute("RESET ROLE")
        # The sample's due steps must not stay due: the next measurement would claim among twice as many.
        conn.execute(
            "UPDATE drumbeat.enrollments SET next_action_at = NULL WHERE sequence_id = %s", (sequence,)
        )
        conn.execute("VACUUM drumbeat.enrollments")  # and their old entries must not linger in the due index
        return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=2, help="concurrent dispatchers (worker concurrency)")
    args = parser.parse_args()
    with scratch_database() as url:
        report(url, args)


def report(url: str, args: argparse.Namespace) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        owner, workspace, contacts = build_tenant(conn, args.due + args.naive_sample)
        enroll_due(conn, owner, workspace, contacts[: args.due])
    total, seconds = batch_throughput(url, args.streams)
    batch_rate = total / seconds
    print(
        f"batch dispatch:    {total} deliveries in {seconds:.1f} s = {batch_rate:,.0f}/s with {args.streams} "
        "concurrent dispatchers   (target >= 10,000/s)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        sample = contacts[args.due :]
        sequence = enroll_due(conn, owner, workspace, sample)
        enrollment_ids = [
            str(r[0])
            for r in conn.execute("SELECT id FROM drumbeat.enrollments WHERE sequence_id = %s", (sequence,))
        ]
    naive_rate = naive_throughput(url, enrollment_ids)
    print(f"one job/message:   {naive_rate:,.0f}/s over {len(enrollment_ids)} messages")
    print(f"batch vs naive:    {batch_rate / naive_rate:.0f}x   (target >= 20x)")
    with psycopg.connect(url, autocommit=True) as conn:
        owner2, workspace2, contacts2 = build_tenant(conn, args.waiting + 10_000)
    small = claim_cost(url, owner2, workspace2, contacts2, 10_000)
    large = claim_cost(url, owner2, workspace2, contacts2, args.waiting)
    print(
        f"claim of 500 due:  {small * 1000:.1f} ms with 10k waiting, {large * 1000:.1f} ms with "
        f"{args.waiting:,} waiting (ratio {large / small:.2f}; target: flat)"
    )


if __name__ == "__main__":
    main()
