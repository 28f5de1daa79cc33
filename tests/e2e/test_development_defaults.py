"""Development that just works: with neither DRUMBEAT_SECRET_KEY nor DRUMBEAT_PUBLIC_URL set, a real
`drumbeat worker` sends an email whose template uses {{ unsubscribe_url }}, its link leads to the local
API, and a real `drumbeat api` started afterwards (another process) accepts it: both used the key kept in
the data directory, made once with mode 0600."""

from __future__ import annotations

import re
import stat
import subprocess

import httpx
import psycopg

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.processes import (
    DRUMBEAT,
    free_port,
    run_worker_until_sent,
    wait_until_serving,
    worker_environment,
)

UNSUBSCRIBE_STEP = {"kind": "email", "subject": "Hello", "body": "Not for you? {{ unsubscribe_url }}"}


def enroll_one_contact(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        definition = sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=[UNSUBSCRIBE_STEP])
        sequence = tenant.sequence(definition)
        tenant.enroll(sequence, tenant.contacts({"email": "ada@example.com", "first_name": "Ada"}))
        conn.commit()


def sent_text(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT text_body FROM drumbeat.outbox").fetchone()[0]


def test_unsubscribe_links_work_in_development_without_configuration(db_url, tmp_path):
    port = free_port()
    # Only where the data lives and where the API listens: no key, no public URL.
    local = {"DRUMBEAT_DATA_DIR": str(tmp_path / "data"), "DRUMBEAT_PORT": str(port)}
    enroll_one_contact(db_url)
    run_worker_until_sent(db_url, 1, **local)
    [link] = re.findall(r"http://\S+", sent_text(db_url))
    assert link.startswith(f"http://127.0.0.1:{port}/u/")
    kept = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    api = subprocess.Popen(
        [DRUMBEAT, "api"],  # listens on DRUMBEAT_PORT, as the link expects
        env=worker_environment(db_url, **local),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}")
        wait_until_serving(http, api)
        answer = httpx.post(
            link,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
    finally:
        api.terminate()
        api.wait(30)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT email_opted_out_at IS NOT NULL FROM drumbeat.contacts").fetchone()[0]
