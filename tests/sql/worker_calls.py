"""Calling the worker-side SQL functions the way the dispatcher does: as drumbeat_worker, with the SQL clock."""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg.types.json import Jsonb

MONDAY_9AM_NEW_YORK = "2026-11-23 14:00Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def set_clock(conn, instant: str) -> None:
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (instant,))


def as_worker(conn) -> None:
    conn.execute("RESET ROLE")
    conn.execute("SET LOCAL ROLE drumbeat_worker")


def claim(conn, limit: int = 100) -> list[dict]:
    """Claim due steps and start every delivery claimed (reserved -> sending), as the dispatcher does
    right before the provider calls; reserve() stops after the claim."""
    claimed = reserve(conn, limit)
    conn.execute("SELECT drumbeat.start_sending(%s)", ([row["delivery_id"] for row in claimed],))
    return claimed


def reserve(conn, limit: int = 100) -> list[dict]:
    """Only claim: the deliveries stay 'reserved'."""
    as_worker(conn)
    cursor = conn.execute("SELECT * FROM drumbeat.claim_due(%s)", (limit,))
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def record(conn, *results: dict) -> int:
    as_worker(conn)
    return conn.execute("SELECT drumbeat.record_deliveries(%s)", (Jsonb(list(results)),)).fetchone()[0]


def enrollment(conn, enrollment_id):
    conn.execute("RESET ROLE")
    row = conn.execute(
        """SELECT e.status, e.next_action_at, st.position, e.step_attempt, e.exit_reason
           FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
           WHERE e.id = %s""",
        (enrollment_id,),
    ).fetchone()
    return dict(zip(["status", "next_action_at", "position", "attempt", "exit_reason"], row, strict=True))
