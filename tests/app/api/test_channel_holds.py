"""GET /api/v1/channel-holds: what the circuit breaker holds, as a workspace sees it: whole channels (the
operator's shared credentials) and its own senders, never another workspace's senders."""

from __future__ import annotations

import psycopg

HOLD = """INSERT INTO drumbeat.channel_holds (channel, sender_id, reason, error_code, held_since, probe_at)
          VALUES (%s, %s, %s, %s, '2026-11-23 14:00Z', '2026-11-23 14:01Z')"""


def test_a_workspace_sees_held_channels_and_its_own_held_senders(db_url, tenant, other_tenant):
    assert tenant.get("/channel-holds").json() == []  # nothing held while every provider answers
    own = tenant.sender("sms", "+15550004444")
    theirs = other_tenant.sender("sms", "+15550003333")
    with psycopg.connect(db_url) as conn:
        conn.execute(HOLD, ("email", None, "auth", "535"))
        conn.execute(HOLD, ("sms", own, "rate_limited", "20429"))
        conn.execute(HOLD, ("sms", theirs, "rate_limited", "20429"))
    response = tenant.get("/channel-holds")
    assert response.status_code == 200, response.text
    assert [(h["channel"], h["sender_id"], h["sender_address"], h["reason"]) for h in response.json()] == [
        ("email", None, None, "auth"),
        ("sms", own, "+15550004444", "rate_limited"),
    ]
    assert response.json()[0]["next_probe_at"] == "2026-11-23T14:01:00Z"
    assert [h["sender_id"] for h in other_tenant.get("/channel-holds").json()] == [None, theirs]
