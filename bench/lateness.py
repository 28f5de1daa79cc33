"""Lateness benchmark (docs/ARCHITECTURE.md target: at a steady 1k due steps/s, p99 from due time to the
transport call < 1 s). Figures printed, never asserted.

A real `drumbeat worker` process (outbox transport) runs against a scratch database while N SMS steps
(default 60,000) come due at a steady R per second (default 1,000, so 60 s), starting a few seconds after
the worker is up. Lateness of one step = when the transport was called minus when the step was due:

- "transport call" is drumbeat.outbox.created_at: the outbox transport inserts each message in its own
  autocommit transaction, so now() there is the instant its INSERT began, i.e. the call;
- "due" is the next_action_at the setup gave the step, kept aside in public.bench_due (the enrollment's
  own next_action_at is cleared at claim and then moves on to the next step).

Setup, as superuser and outside the contract: enrollments are made through enroll_contacts (due at once),
parked a day ahead while the worker starts, then spread by one UPDATE of next_action_at to T0 + i/R. That is
the simplest way to get exactly R due per second; the state machine allows it (no status changes). The
sequence's quiet hours span the whole day and the sender's rate cap is lifted (as bench/dispatch.py does),
so no window or cap holds a step: what is measured is the dispatcher's pickup, claim, send and record.

    .venv/bin/python bench/lateness.py [--steps 60000] [--rate 1000] [--concurrency 4] [--lead 5]
        [--worker-log worker.log]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.dispatch import enroll_due
from bench.enroll import build_tenant
from bench.scratch import scratch_database

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")


def prepare(url: str, steps: int) -> None:
    """`steps` active enrollments whose first SMS step is parked a day ahead (the worker leaves them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        owner, workspace, contacts = build_tenant(conn, steps)
        enroll_due(conn, owner, workspace, contacts)
        conn.execute("UPDATE drumbeat.enrollments SET next_action_at = now() + interval '1 day'")
        conn.execute(
            "CREATE TABLE public.bench_due (enrollment_id uuid PRIMARY KEY, due_at timestamptz NOT NULL)"
        )


def start_worker(url: str, concurrency: int, log: Path) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMTP_", "DRUMBEAT_"))}
    environment = clean | {"DATABASE_URL": url, "DRUMBEAT_TRANSPORT": "outbox"}
    with log.open("w") as sink:
        return subprocess.Popen(
            [DRUMBEAT, "worker", "--concurrency", str(concurrency)], env=environment, stdout=sink, stderr=sink
        )


def wait_until_ticking(url: str, worker: subprocess.Popen, timeout: float = 60) -> None:
    """The worker is up once one of its ticks has run."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and worker.poll() is None:
            ran = conn.execute(
                """SELECT count(*) FROM procrastinate.procrastinate_jobs
                   WHERE task_name LIKE '%drumbeat.tick' AND status IN ('doing', 'succeeded')"""
            ).fetchone()[0]
            if ran:
                return
            time.sleep(0.2)
    raise RuntimeError("the worker did not start ticking")


def schedule(url: str, rate: int, lead: float) -> float:
    """Spread the parked steps: step i comes due at T0 + i / rate, T0 = now + lead. Returns how many
    seconds before T0 the spread was committed (negative: the first steps were due before they were
    visible)."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            t0 = conn.execute("SELECT clock_timestamp() + make_interval(secs => %s)", (lead,)).fetchone()[0]
            conn.execute(
                """WITH spread AS (
                       SELECT id, %(t0)s + make_interval(
                                  secs => (row_number() OVER (ORDER BY id) - 1)::float8 / %(rate)s) AS due_at
                       FROM drumbeat.enrollments)
                   , moved AS (
                       UPDATE drumbeat.enrollments e SET next_action_at = s.due_at
                       FROM spread s WHERE e.id = s.id
                       RETURNING e.id, s.due_at)
                   INSERT INTO public.bench_due SELECT id, due_at FROM moved""",
                {"t0": t0, "rate": rate},
            )
        committed = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("ANALYZE drumbeat.enrollments")
    return (t0 - committed).total_seconds()


def wait_until_sent(url: str, steps: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            sent = conn.execute("SELECT count(*) FROM drumbeat.outbox").fetchone()[0]
            if sent >= steps or time.monotonic() > deadline:
                return sent
            time.sleep(1)


def figures(url: str) -> tuple:
    """Lateness (transport call - due) and its claim part (claim - due), in seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            """WITH l AS (
                   SELECT extract(epoch FROM o.created_at - b.due_at)::float8 AS late,
                          extract(epoch FROM d.claimed_at - b.due_at)::float8 AS claim_late
                   FROM drumbeat.outbox o
                   JOIN drumbeat.deliveries d ON d.id = o.delivery_id
                   JOIN public.bench_due b ON b.enrollment_id = d.enrollment_id)
               SELECT count(*),
                      percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY late),
                      max(late), min(late),
                      percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY claim_late),
                      (SELECT count(*) FROM drumbeat.deliveries WHERE status <> 'sent')
               FROM l"""
        ).fetchone()


def report(row: tuple, steps: int, rate: int, concurrency: int, spare: float) -> None:
    count, (p50, p90, p99), worst, best, (claim50, claim99), unsent = row
    print(f"due steps:      {steps:,} at {rate:,}/s over {steps / rate:.0f} s")
    print(f"worker:         one `drumbeat worker --concurrency {concurrency}`, outbox transport")
    print(f"spread committed {spare:.2f} s before the first due time")
    print(f"sent:           {count:,} (deliveries not 'sent': {unsent})")
    print("lateness (due -> transport call), seconds:")
    print(f"  p50 {p50:.3f}   p90 {p90:.3f}   p99 {p99:.3f}   max {worst:.3f}   min {best:.3f}")
    print(f"  of which due -> claim: p50 {claim50:.3f}   p99 {claim99:.3f}")
    verdict = "meets" if p99 < 1 else "MISSES"
    print(f"p99 {p99:.3f} s {verdict} the target p99 < 1 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=1_000, help="due steps per second")
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's --concurrency")
    parser.add_argument(
        "--lead", type=float, default=5.0, help="seconds from scheduling to the first due step"
    )
    parser.add_argument("--worker-log", type=Path, help="keep the worker's log here (default: discarded)")
    args = parser.parse_args()
    with scratch_database() as url, tempfile.TemporaryDirectory(prefix="drumbeat-lateness-") as scratch:
        prepare(url, args.steps)
        log = args.worker_log or Path(scratch) / "worker.log"
        worker = start_worker(url, args.concurrency, log)
        try:
            wait_until_ticking(url, worker)
            spare = schedule(url, args.rate, args.lead)
            sent = wait_until_sent(url, args.steps, timeout=args.lead + args.steps / args.rate + 120)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        if sent < args.steps:
            print(f"only {sent} of {args.steps} were sent; worker log tail:\n{log.read_text()[-3000:]}")
        report(figures(url), args.steps, args.rate, args.concurrency, spare)


if __name__ == "__main__":
    main()
