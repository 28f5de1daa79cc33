"""The prune job: procrastinate keeps the jobs a killed worker left 'doing' forever (nothing else ends
them); prune aborts those whose worker stopped beating, never a live worker's, and clears them after an
hour along with the succeeded ones."""

from __future__ import annotations

import asyncio

import psycopg

from app.core.settings import Settings
from workers.app import build_app, prune

DOING = """INSERT INTO procrastinate.procrastinate_jobs (queue_name, task_name, status, args, worker_id)
           VALUES ('drumbeat', 'drumbeat:drumbeat.dispatch', 'doing', '{}', %s) RETURNING id"""


def _statuses(db_url: str) -> dict[int, str]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT id, status::text FROM procrastinate.procrastinate_jobs").fetchall())


async def _prune(db_url: str) -> int:
    app = build_app(Settings(database_url=db_url))
    async with app.open_async():
        return await prune(app.job_manager)


def test_prune_aborts_the_jobs_of_dead_workers_only(db_url):
    with psycopg.connect(db_url) as conn:
        live, dead = (
            conn.execute(
                "INSERT INTO procrastinate.procrastinate_workers (last_heartbeat) VALUES (now() - %s::interval) RETURNING id",
                (age,),
            ).fetchone()[0]
            for age in ("1 second", "5 minutes")
        )
        running = conn.execute(DOING, (live,)).fetchone()[0]
        orphaned = conn.execute(DOING, (dead,)).fetchone()[0]
        forgotten = conn.execute(DOING, (None,)).fetchone()[0]  # its worker row already pruned
    assert asyncio.run(_prune(db_url)) == 2
    assert _statuses(db_url) == {running: "doing", orphaned: "aborted", forgotten: "aborted"}
    with psycopg.connect(db_url) as conn:  # an hour on, the aborted ones go
        conn.execute(
            "UPDATE procrastinate.procrastinate_events SET at = at - interval '2 hours' WHERE job_id = ANY (%s)",
            ([orphaned, forgotten],),
        )
    assert asyncio.run(_prune(db_url)) == 0
    assert _statuses(db_url) == {running: "doing"}
