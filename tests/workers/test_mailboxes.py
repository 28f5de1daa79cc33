"""The IMAP path end to end: an admin sets an email sender's inbox up through the API (the password sealed),
the real worker sends step 1 through a real SMTP server and watches the inbox on a real Dovecot; a reply
put in the inbox ends the enrollment, a Dovecot restart is survived, and the same message posted to the
inbound webhook afterwards is a duplicate."""

from __future__ import annotations

import signal
import subprocess
import time
from email.utils import parseaddr

import psycopg
import pytest

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.api import LINK_SECRET, api_settings, client  # noqa: F401  (pytest fixtures)
from tests.support.imap import USERS
from tests.support.processes import DRUMBEAT, worker_environment
from tests.support.smtp import reply_to

STEPS = [
    {"kind": "email", "subject": "Quick question", "body": "Hi {{ contact.first_name }}"},
    {"kind": "email", "body": "Any thoughts?", "delay": {"value": 1, "unit": "days"}},
]


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn, with_sender=False)
        tenant.as_owner()
        [(sender,)] = conn.execute(
            "SELECT drumbeat_api.create_sender(%s, 'email', 'alice@acme.example', '{\"rate_per_second\": 100}')",
            (tenant.workspace_id,),
        ).fetchall()
        [(key,)] = conn.execute(
            "SELECT token FROM drumbeat_api.create_api_key(%s, 'admin key', 'admin')", (tenant.workspace_id,)
        ).fetchall()
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=STEPS))
        contacts = tenant.contacts(
            {"email": "ada@example.com", "first_name": "Ada"}, {"email": "bob@example.com"}
        )
        enrolled = [row[1] for row in tenant.enroll(sequence, contacts)]
        conn.commit()
    return {"sender": str(sender), "key": key, "ada": enrolled[0], "bob": enrolled[1]}


def wait_until(condition, what: str, worker: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.poll() is None, worker.stderr.read()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def one(db_url: str, query: str, *params):
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_a_reply_in_the_watched_inbox_ends_the_enrollment(db_url, world, dovecot, smtp_server, client):  # noqa: F811
    mailbox = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "none",
        "username": "alice",
        "password": USERS["alice"],
    }
    headers = {"Authorization": f"Bearer {world['key']}"}
    set_up = client.put(f"/api/v1/senders/{world['sender']}/mailbox", json=mailbox, headers=headers)
    assert set_up.status_code == 200, set_up.text
    assert "password" not in set_up.json() and set_up.json()["error"] is None
    assert one(db_url, "SELECT password_sealed FROM drumbeat.sender_mailboxes") != USERS["alice"]

    inbox, port = smtp_server()
    env = worker_environment(db_url, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_STARTTLS="false",
                             DRUMBEAT_SECRET_KEY=LINK_SECRET.decode())  # fmt: skip
    worker = subprocess.Popen([DRUMBEAT, "worker", "--concurrency", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: len(inbox.messages) == 2, "step 1 to both contacts", worker)
        sent = {parseaddr(m["To"])[1]: m for m in inbox.messages}
        watched = "SELECT uidvalidity IS NOT NULL FROM drumbeat.sender_mailboxes"
        wait_until(lambda: one(db_url, watched), "the watcher's first look at the inbox", worker)

        reply = reply_to(sent["ada@example.com"], "Yes, Tuesday works.\n\n> Hi Ada")
        dovecot.append(reply)
        status = "SELECT status FROM drumbeat.enrollments WHERE id = %s"
        wait_until(lambda: one(db_url, status, world["ada"]) == "replied", "Ada's reply", worker)

        dovecot.restart()
        out_of_office = reply_to(sent["bob@example.com"], "Back on Monday.", Auto_Submitted="auto-replied")
        dovecot.append(out_of_office)
        auto_replied = "SELECT count(*) FROM drumbeat.events WHERE kind = 'auto_replied'"
        wait_until(
            lambda: one(db_url, auto_replied) == 1, "Bob's out-of-office after the restart", worker, 90
        )
        assert one(db_url, status, world["bob"]) == "active"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    again = client.post(
        "/api/v1/webhooks/email/inbound", content=reply, headers=headers | {"Content-Type": "message/rfc822"}
    )
    assert again.json() == {"outcome": "duplicate"}
    assert one(db_url, "SELECT count(*) FROM drumbeat.events WHERE kind = 'replied'") == 1
    assert one(db_url, "SELECT error FROM drumbeat.sender_mailboxes") is None


def test_a_refused_login_is_shown_on_the_mailbox(db_url, world, dovecot, client):  # noqa: F811
    mailbox = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "none",
        "username": "alice",
        "password": "wrong",
    }
    headers = {"Authorization": f"Bearer {world['key']}"}
    assert (
        client.put(f"/api/v1/senders/{world['sender']}/mailbox", json=mailbox, headers=headers).status_code
        == 200
    )
    env = worker_environment(db_url, DRUMBEAT_SECRET_KEY=LINK_SECRET.decode())
    worker = subprocess.Popen(
        [DRUMBEAT, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        shown = f"/api/v1/senders/{world['sender']}/mailbox"
        wait_until(lambda: client.get(shown, headers=headers).json()["error"], "the login error", worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    error = client.get(shown, headers=headers).json()["error"]
    assert "login" in error.lower() and "wrong" not in error
