"""The circuit breaker in SQL: a held channel or sender keeps its due steps waiting (no attempt used, nothing
fails) while other channels and senders go on; when the probe time comes, one claim takes the probe and the
others keep holding; tenants see the holds that concern them and cannot write any."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import as_worker, at, reserve, set_clock
from tests.support import act_as


def hold(conn, channel: str, sender_id=None, seconds: float = 60, reason: str = "auth") -> bool:
    as_worker(conn)
    return conn.execute(
        "SELECT drumbeat.hold_deliveries('{}', %s, %s, %s, '20003', 'Authenticate', %s)",
        (channel, sender_id, reason, seconds),
    ).fetchone()[0]


def due_at(conn, enrollment_id):
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT next_action_at FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
    ).fetchone()[0]


def enroll_one(tenant, definition=None, **contact):
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(definition), [tenant.contact(**contact)])
    return enrollment_id


EMAIL = sms_sequence(channel="email", steps=[{"kind": "email", "subject": "Hi", "body": "Hello"}])


def test_a_held_channel_waits_while_another_channel_goes_on(conn, tenant):
    texted = enroll_one(tenant, first_name="Ada")
    mailed = enroll_one(tenant, EMAIL, email="bo@example.com")
    assert hold(conn, "sms") is True
    assert hold(conn, "sms") is False  # one hold per channel: a repeat extends it, logged once
    claimed = reserve(conn)
    assert [row["enrollment_id"] for row in claimed] == [mailed]
    assert due_at(conn, texted) == at("2026-11-23 14:01:00Z")  # the next probe
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT count(*) FROM drumbeat.deliveries WHERE enrollment_id = %s", (texted,)
    ).fetchone() == (0,)


def test_a_held_sender_waits_while_the_channel_goes_on(conn, tenant):
    held_sender = tenant.sender("sms", "+15550007777")
    other = tenant.sender("sms", "+15550008888")
    by_sender = {
        sender: enroll_one(
            tenant, sms_sequence(settings={"timezone": "America/New_York", "sms_sender_id": str(sender)})
        )
        for sender in (held_sender, other)
    }
    hold(conn, "sms", held_sender, seconds=5, reason="rate_limited")
    assert [row["enrollment_id"] for row in reserve(conn)] == [by_sender[other]]
    assert due_at(conn, by_sender[held_sender]) == at("2026-11-23 14:00:05Z")  # its Retry-After


def test_one_claim_takes_the_probe_the_others_keep_holding(conn, tenant):
    first, second = enroll_one(tenant, first_name="Ada"), enroll_one(tenant, first_name="Bo")
    hold(conn, "sms")
    set_clock(conn, "2026-11-23 14:01:00Z")
    as_worker(conn)
    probe = reserve(conn, limit=1)  # the probe's claim: its step goes through
    assert len(probe) == 1
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT probe_at FROM drumbeat.channel_holds").fetchone()[0] == at(
        "2026-11-23 14:02:00Z"
    )
    assert reserve(conn) == []  # a concurrent claim: still held, until the probe's answer
    waiting = second if probe[0]["enrollment_id"] == first else first
    assert due_at(conn, waiting) == at("2026-11-23 14:02:00Z")
    as_worker(conn)
    cleared = conn.execute("SELECT channel, reason FROM drumbeat.clear_holds('sms', NULL)").fetchall()
    assert cleared == [("sms", "auth")]


def test_tenants_see_the_holds_that_concern_them_and_write_none(conn, tenant):
    own = tenant.sender("sms", "+15550006666")
    stranger = new_tenant(conn, "Other")
    theirs = stranger.sender("sms", "+15550005555")
    for sender in (None, own, theirs):
        hold(conn, "sms", sender)
    conn.execute("RESET ROLE")
    act_as(conn, tenant.owner)
    seen = conn.execute(
        "SELECT sender_id FROM drumbeat.channel_holds ORDER BY sender_id NULLS FIRST"
    ).fetchall()
    assert seen == [(None,), (own,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM drumbeat.channel_holds")


def test_a_rate_limited_sender_is_probed_again_within_seconds(conn, tenant):
    enroll_one(tenant, first_name="Ada")
    enroll_one(tenant, first_name="Bo")
    sender = conn.execute("SELECT id FROM drumbeat.senders WHERE channel = 'sms'").fetchone()[0]
    hold(conn, "sms", sender, seconds=1, reason="rate_limited")
    set_clock(conn, "2026-11-23 14:00:01Z")
    assert len(reserve(conn, limit=1)) == 1  # the probe
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT probe_at FROM drumbeat.channel_holds").fetchone()[0] == at(
        "2026-11-23 14:00:06Z"
    )
