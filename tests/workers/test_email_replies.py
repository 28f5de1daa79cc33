"""Email replies end to end: the real worker sends step 1 through a real SMTP server, with the sender's
display name; the inbound endpoint then gets a reply (posted twice), an out-of-office and a bounce (a
DSN quoting the original Message-ID); step 2, a subject-less follow-up, goes out to the out-of-office
contact alone, threaded: "Re: <subject>", In-Reply-To and References naming the first message."""

from __future__ import annotations

import signal
import subprocess
import time
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import make_msgid, parseaddr

import psycopg
import pytest

from tests.sql.factories import new_tenant, sms_sequence
from tests.support.api import api_settings, client  # noqa: F401  (pytest fixtures)
from tests.support.processes import DRUMBEAT, worker_environment
from tests.support.smtp import reply_to

PATH = "/api/v1/webhooks/email/inbound"
STEPS = [
    {
        "kind": "email",
        "subject": "Quick question, {{ contact.first_name }}",
        "body": "Hi {{ contact.first_name }}",
    },
    {"kind": "email", "body": "Any thoughts?", "delay": {"value": 1, "unit": "minutes"}},
]
PEOPLE = {"ada": "ada@example.com", "bob": "bob@example.com", "cy": "cy@example.com"}


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn, with_sender=False)
        tenant.as_owner()
        conn.execute(
            "SELECT drumbeat_api.create_sender(%s, 'email', 'riley@acme.example', '{\"name\": \"Riley Rep\", \"rate_per_second\": 100}')",
            (tenant.workspace_id,),
        )
        [(key,)] = conn.execute(
            "SELECT token FROM drumbeat_api.create_api_key(%s, 'inbound', 'member')", (tenant.workspace_id,)
        ).fetchall()
        sequence = tenant.sequence(sms_sequence(channel="email", settings={"timezone": "UTC"}, steps=STEPS))
        contacts = tenant.contacts(
            *[{"email": email, "first_name": name.title()} for name, email in PEOPLE.items()]
        )
        enrolled = dict(zip(PEOPLE, (row[1] for row in tenant.enroll(sequence, contacts)), strict=True))
        conn.commit()
    return {"key": key, "enrollments": enrolled}


def wait_for(inbox, count: int, worker: subprocess.Popen, timeout: float = 60) -> list[Message]:
    deadline = time.monotonic() + timeout
    while len(inbox.messages) < count:
        assert worker.poll() is None, worker.stderr.read()
        assert time.monotonic() < deadline, f"{len(inbox.messages)} of {count} messages arrived"
        time.sleep(0.1)
    return inbox.messages


def statuses(db_url: str, enrollments: dict[str, str]) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        return {name: conn.execute("SELECT status FROM drumbeat.enrollments WHERE id = %s", (id_,)).fetchone()[0]
                for name, id_ in enrollments.items()}  # fmt: skip


def bounce(original: Message) -> bytes:
    """A Postfix-style DSN (RFC 3464): the failed recipient, 5.1.1, and the original's headers."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.com (Mail Delivery System)"
    report["To"] = original["From"]
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = make_msgid(domain="mx.example.com")
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not be delivered."))
    status = Message()
    status.set_payload(
        f"Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; {parseaddr(original['To'])[1]}\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n"
    )
    report.attach(MIMEMessage(status, "delivery-status"))
    headers = MIMEText("".join(f"{k}: {v}\n" for k, v in original.items()), "rfc822-headers")
    report.attach(headers)
    return report.as_bytes()


def stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=30)


def post(client, key: str, raw: bytes) -> str:  # noqa: F811
    response = client.post(
        PATH, content=raw, headers={"Authorization": f"Bearer {key}", "Content-Type": "message/rfc822"}
    )
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def test_replies_stop_a_sequence_and_the_follow_up_is_threaded(db_url, world, smtp_server, client):  # noqa: F811
    inbox, port = smtp_server()
    env = worker_environment(db_url, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_STARTTLS="false")
    worker = subprocess.Popen([DRUMBEAT, "worker", "--concurrency", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = {parseaddr(m["To"])[1]: m for m in wait_for(inbox, 3, worker)}
        assert {parseaddr(m["From"]) for m in first.values()} == {("Riley Rep", "riley@acme.example")}
        assert first[PEOPLE["ada"]]["Subject"] == "Quick question, Ada"

        ada_reply = reply_to(first[PEOPLE["ada"]], "Yes, Tuesday works.\n\n> Hi Ada")
        assert post(client, world["key"], ada_reply) == "replied"
        assert post(client, world["key"], ada_reply) == "duplicate"
        out_of_office = reply_to(first[PEOPLE["bob"]], "I am out of the office, with limited access to email.",
                               Auto_Submitted="auto-replied", Subject="Automatic reply: Quick question, Bob")  # fmt: skip
        assert post(client, world["key"], out_of_office) == "auto_replied"
        assert post(client, world["key"], bounce(first[PEOPLE["cy"]])) == "bounced"
        assert statuses(db_url, world["enrollments"]) == {"ada": "replied", "bob": "active", "cy": "bounced"}

        with psycopg.connect(db_url) as conn:  # the one-minute delay has passed
            conn.execute("UPDATE drumbeat.enrollments SET next_action_at = now() WHERE status = 'active'")
        follow_up = wait_for(inbox, 4, worker)[3]
        time.sleep(1)  # nothing else goes out
        assert len(inbox.messages) == 4
    finally:
        stop(worker)
    bob_first = first[PEOPLE["bob"]]
    assert parseaddr(follow_up["To"])[1] == PEOPLE["bob"]
    assert follow_up["Subject"] == "Re: Quick question, Bob"
    assert follow_up["In-Reply-To"] == bob_first["Message-ID"]
    assert follow_up["References"] == bob_first["Message-ID"]
    assert follow_up["Message-ID"].endswith("@acme.example>")
