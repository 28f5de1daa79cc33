"""SMS credits count segments, which only the rendered text tells (issue 21, item 9b): the dispatcher hands
every SMS text to start_sending, which holds the ones the workspace's credits cannot pay."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.factories import new_tenant, sms_sequence
from workers.dispatcher import Dispatcher
from workers.transports import OutboxTransport

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York
PITCH = "x" * 400  # three segments once rendered; the template itself is one


@pytest.fixture
def dispatcher(db_url):
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
    outbox = OutboxTransport(db_url)
    yield Dispatcher(conn, {"sms": outbox, "email": outbox})
    outbox.close()
    conn.close()


def _enroll(db_url: str, credits: int) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        steps = [{"kind": "sms", "body": "{{ contact.fields.pitch }}"}]
        sequence = tenant.sequence(sms_sequence(steps=steps))
        tenant.enroll(sequence, [tenant.contact(fields={"pitch": PITCH})])
        conn.execute("RESET ROLE")
        conn.execute("UPDATE drumbeat.workspaces SET sms_credits = %s", (credits,))
        conn.commit()


def _rows(db_url: str, query: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize(("credits", "sent", "left"), [(2, [], 2), (3, [(PITCH,)], 0)])
def test_a_text_goes_out_only_when_the_credits_pay_its_segments(db_url, dispatcher, credits, sent, left):
    _enroll(db_url, credits)
    dispatcher.run_once()
    assert _rows(db_url, "SELECT text_body FROM drumbeat.outbox") == sent
    assert _rows(db_url, "SELECT sms_credits FROM drumbeat.workspaces") == [(left,)]
    held = _rows(db_url, "SELECT payload ->> 'reason' FROM drumbeat.events WHERE kind = 'held'")
    assert held == ([] if sent else [("no_sms_credits",)])
