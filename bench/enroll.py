"""Bulk enrollment benchmark (docs/ARCHITECTURE.md targets: >= 50k enrollments/s with one enroll_contacts
call, and >= 25% of the rate of a raw INSERT ... SELECT of the same rows).

    .venv/bin/python bench/enroll.py [--contacts 100000] [--rounds 3]

Uses DATABASE_URL, else the server on 127.0.0.1:5432, else an embedded Postgres; works in a scratch
database it creates and drops. Both paths write under the same RLS, as drumbeat_contract for the same
user (enroll_contacts runs as that role; tenants may not INSERT themselves), and both fire the same
state-machine and NOTIFY triggers (one 'enrolled' event per row): the difference is what enroll_contacts
adds, i.e. eligibility, per-time-zone scheduling, conflict handling and outcomes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import psycopg
import psycopg.sql
from psycopg.types.json import Jsonb

from bench.scratch import scratch_database

ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Kolkata", "Australia/Sydney", None]
SEQUENCE = {
    "name": "Bench",
    "channel": "sms",
    "settings": {"timezone": "America/Chicago", "exclude_weekends": True},
    "steps": [
        {"kind": "sms", "delay": {"value": 0, "unit": "minutes"}, "body": "Hi {{ contact.first_name }}"},
        {"kind": "sms", "delay": {"value": 2, "unit": "days"}, "send_at": "10:00", "body": "Following up"},
    ],
}

RAW_INSERT = """
    INSERT INTO drumbeat.enrollments (workspace_id, sequence_id, contact_id, status, current_step_id,
                                      step_done_at, next_action_at, started_at)
    SELECT %(workspace)s, %(sequence)s, c.id, 'active', %(step)s, now(), now(), now()
    FROM drumbeat.contacts c WHERE c.workspace_id = %(workspace)s
"""


def act_as(conn: psycopg.Connection, user: uuid.UUID, role: str = "authenticated") -> None:
    conn.execute(psycopg.sql.SQL("SET LOCAL ROLE {}").format(psycopg.sql.Identifier(role)))
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": str(user)}),))


def build_tenant(conn: psycopg.Connection, contacts: int) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """A workspace with an SMS sender and `contacts` contacts spread over several time zones."""
    owner = uuid.uuid4()
    with conn.transaction():
        act_as(conn, owner)
        workspace = conn.execute("SELECT drumbeat_api.create_workspace('Bench', 'UTC')").fetchone()[0]
        conn.execute(  # a number of its own: a number belongs to one workspace
            "SELECT drumbeat_api.create_sender(%s, 'sms', %s)",
            (workspace, f"+1555{uuid.uuid4().int % 10_000_000:07d}"),
        )
        batch = 10_000
        for start in range(0, contacts, batch):
            rows = [
                {"phone": f"+1555{n:07d}", "first_name": f"C{n}", "timezone": ZONES[n % len(ZONES)]}
                for n in range(start, min(start + batch, contacts))
            ]
            conn.execute(
                "SELECT count(*) FROM drumbeat_api.upsert_contacts(%s, %s)", (workspace, Jsonb(rows))
            )
    # A live database has statistics; a table filled a second ago has none, and the planner would
    # guess "2 contacts" and pick a nested loop.
    conn.execute("ANALYZE drumbeat.contacts")
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM drumbeat.contacts WHERE workspace_id = %s ORDER BY phone", (workspace,)
        )
    ]
    return owner, workspace, ids


def new_sequence(
    conn: psycopg.Connection, owner: uuid.UUID, workspace: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    with conn.transaction():
        act_as(conn, owner)
        sequence = conn.execute(
            "SELECT drumbeat_api.create_sequence(%s, %s)", (workspace, Jsonb(SEQUENCE))
        ).fetchone()[0]
        conn.execute("SELECT drumbeat_api.activate_sequence(%s)", (sequence,))
        step = conn.execute(
            "SELECT id FROM drumbeat.sequence_steps WHERE sequence_id = %s AND position = 1", (sequence,)
        ).fetchone()[0]
    return sequence, step


def timed(
    conn: psycopg.Connection, owner: uuid.UUID, statement: str, params, role: str = "authenticated"
) -> tuple[float, int]:
    started = time.perf_counter()
    with conn.transaction():
        act_as(conn, owner, role)
        rows = conn.execute(statement, params).rowcount
    return time.perf_counter() - started, rows


def run(url: str, contacts: int, rounds: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        owner, workspace, ids = build_tenant(conn, contacts)
        api_rates, raw_rates = [], []
        for _ in range(rounds):
            sequence, _ = new_sequence(conn, owner, workspace)
            seconds, rows = timed(
                conn,
                owner,
                "SELECT * FROM drumbeat_api.enroll_contacts(%s, %s) WHERE outcome = 'enrolled'",
                (sequence, ids),
            )
            assert rows == contacts, f"enroll_contacts enrolled {rows} of {contacts}"
            api_rates.append(contacts / seconds)
            sequence, step = new_sequence(conn, owner, workspace)
            seconds, rows = timed(
                conn,
                owner,
                RAW_INSERT,
                {"workspace": workspace, "sequence": sequence, "step": step},
                role="drumbeat_contract",
            )
            assert rows == contacts
            raw_rates.append(contacts / seconds)
    api, raw = statistics.median(api_rates), statistics.median(raw_rates)
    print(f"contacts per call:            {contacts}")
    print(f"rounds:                       {rounds} (medians below)")
    print(f"enroll_contacts:              {api:,.0f} enrollments/s   (target >= 50,000)")
    print(f"raw INSERT ... SELECT:        {raw:,.0f} enrollments/s")
    print(f"enroll_contacts / raw insert: {api / raw:.0%}   (target >= 25%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with scratch_database() as url:
        run(url, args.contacts, args.rounds)


if __name__ == "__main__":
    main()
