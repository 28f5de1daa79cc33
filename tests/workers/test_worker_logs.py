"""`drumbeat worker` as a real process writes JSON lines when its stderr is not a terminal: a line per
send with its ids under the dispatch job's correlation id, no per-job chatter from procrastinate, and no
recipient address or message text."""

from __future__ import annotations

import json

import psycopg

from tests.support.processes import enroll_email_contacts, run_worker_until_sent


def test_the_worker_logs_json_lines_per_send_under_its_job_id(db_url):
    enroll_email_contacts(db_url, 3)
    lines = [
        json.loads(line) for line in run_worker_until_sent(db_url, 3, DRUMBEAT_LOG_LEVEL="INFO").splitlines()
    ]
    sent = [line for line in lines if line["msg"] == "sent"]
    assert len(sent) == 3
    with psycopg.connect(db_url) as conn:
        deliveries = conn.execute(
            "SELECT id::text, enrollment_id::text, workspace_id::text FROM drumbeat.deliveries ORDER BY id"
        ).fetchall()
        jobs = {
            f"job-{job_id}"
            for (job_id,) in conn.execute(
                "SELECT id FROM procrastinate.procrastinate_jobs WHERE task_name LIKE '%drumbeat.dispatch'"
            )
        }
    assert (
        sorted((line["delivery_id"], line["enrollment_id"], line["workspace_id"]) for line in sent)
        == deliveries
    )
    assert {line["correlation_id"] for line in sent} <= jobs
    batches = [line for line in lines if line["msg"] == "batch_dispatched"]
    assert sum(line["sent"] for line in batches) == 3
    assert not [
        line for line in lines if line["logger"].startswith("procrastinate") and line["level"] == "INFO"
    ]
    assert not [line for line in lines if "@example.com" in json.dumps(line) or "Hello" in json.dumps(line)]
