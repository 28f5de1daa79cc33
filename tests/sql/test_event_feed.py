"""The events feed (drumbeat_api.list_events) and NOTIFY drumbeat_events: published types only, oldest
first, paged by cursor; never skipping an event whose transaction commits after a later one's (two real
concurrent transactions, committed in reverse order); listeners hear of each commit."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from tests.sql.factories import new_tenant
from tests.support import call, sql_error

INSERT_EVENT = "INSERT INTO drumbeat.events (workspace_id, kind, contact_id) VALUES (%s, %s, %s) RETURNING id"


@pytest.fixture
def acme(conn):
    tenant = new_tenant(conn)
    contact = tenant.contact(first_name="Ada")
    tenant.enroll(tenant.sequence(), [contact])
    conn.commit()
    return tenant, contact


def feed(tenant, after=None, types=None, limit=100) -> list[tuple]:
    tenant.as_owner()
    rows = call(tenant.conn, "list_events", tenant.workspace_id, after, types, limit)
    tenant.conn.commit()
    return rows


def settled_feed(tenant, after, count: int, timeout: float = 10) -> list[tuple]:
    """The feed after `after` once it holds `count` events. The horizon is the cluster's oldest running
    transaction (pg_snapshot_xmin): another database's transaction on a shared test server may hold it
    back for a moment, never forever."""
    deadline = time.monotonic() + timeout
    while len(rows := feed(tenant, after=after)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def test_the_feed_pages_published_events_oldest_first(acme):
    tenant, contact = acme
    events = settled_feed(tenant, None, 1)
    types = [row[2] for row in events]
    assert types[0] == "sequence.enrollment.created" and None not in types
    assert "sequence_created" not in types  # bookkeeping stays inside
    first, rest = feed(tenant, limit=1), feed(tenant, after=events[0][0])
    assert first == events[:1] and rest == events[1:]
    created = events[0][4]
    assert created["contact_id"] == str(contact) and created["workspace_id"] == str(tenant.workspace_id)
    assert created["status"] == "active" and "body" not in created
    assert feed(tenant, types=["message.sent"]) == []
    assert feed(tenant, after=events[-1][0]) == []


@pytest.mark.parametrize(("after", "limit", "field"), [("yesterday", 10, "p_after"), (None, 0, "p_limit")])
def test_bad_paging_names_the_field(acme, after, limit, field):
    tenant, _ = acme
    tenant.as_owner()
    with sql_error(tenant.conn, "PT422", field=field):
        call(tenant.conn, "list_events", tenant.workspace_id, after, None, limit)


def test_an_event_committed_late_is_never_skipped(acme, db_url):
    """T1 writes first (the smaller id) and commits last; a consumer reading in between must not move
    past T1's event: it sees T2's only once T1 has ended, then both, in order."""
    tenant, contact = acme
    cursor = settled_feed(tenant, None, 1)[-1][0]
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        [(early,)] = first.execute(INSERT_EVENT, (tenant.workspace_id, "opened", contact)).fetchall()
        [(late,)] = second.execute(INSERT_EVENT, (tenant.workspace_id, "clicked", contact)).fetchall()
        assert early < late
        second.commit()
        assert feed(tenant, after=cursor) == []  # T2 committed, but T1, older, is still running
        first.commit()
    caught_up = settled_feed(tenant, cursor, 2)
    assert [row[1] for row in caught_up] == [early, late]
    assert [row[2] for row in caught_up] == ["message.opened", "message.clicked"]


def test_listeners_hear_each_commit(acme, db_url):
    tenant, contact = acme
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN drumbeat_events")
        with psycopg.connect(db_url) as writer:
            [(event_id,)] = writer.execute(INSERT_EVENT, (tenant.workspace_id, "opened", contact)).fetchall()
            writer.execute(INSERT_EVENT, (tenant.workspace_id, "sequence_updated", contact))  # not published
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # nothing before the commit
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    assert heard == [
        {"workspace_id": str(tenant.workspace_id), "id": event_id, "type": "message.opened", "count": None}
    ]


def test_a_bulk_write_is_one_notification_per_type(acme, db_url):
    tenant, _ = acme
    contacts = tenant.contacts(*[{"phone": f"+1555{uuid.uuid4().int % 10_000_000:07d}"} for _ in range(150)])
    sequence = tenant.sequence()
    tenant.conn.commit()
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN drumbeat_events")
        tenant.enroll(sequence, contacts)
        tenant.conn.commit()
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    assert [(n["type"], n["count"]) for n in heard] == [("sequence.enrollment.created", 150)]


def test_a_reply_s_data_names_no_address_and_no_text(acme, db_url):
    """An inbound SMS's payload has from/to (phone numbers) and the body: none of it goes out."""
    tenant, contact = acme
    cursor = settled_feed(tenant, None, 1)[-1][0]
    with psycopg.connect(db_url) as worker:
        phone, number = worker.execute(
            "SELECT c.phone, se.address FROM drumbeat.contacts c JOIN drumbeat.senders se "
            "ON se.workspace_id = c.workspace_id AND se.channel = 'sms' WHERE c.id = %s",
            (contact,),
        ).fetchone()
        assert worker.execute(
            "SELECT drumbeat.inbound_sms(%s, %s, 'Yes, call me', 'SM1')", (number, phone)
        ).fetchone()
        worker.commit()
    data = [row[4] for row in settled_feed(tenant, cursor, 1) if row[2] == "sequence.enrollment.replied"]
    assert data and all(
        phone not in str(d) and number not in str(d) and "call me" not in str(d) for d in data
    )
