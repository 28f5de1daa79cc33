"""sequence_stats as a user picking an A/B winner reads it: per variant sends, bounces, engagement and
rates, each later variant tested against the first (two-proportion z-test, checked here against an
independent computation), and a manual step's task figures."""

from __future__ import annotations

import math

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, record, set_clock
from tests.support import act_as_owner, call, call_one

AB_TEST = sms_sequence(
    steps=[
        {
            "kind": "sms",
            "name": "Opener",
            "body": "Hi",
            "variants": [
                {"key": "A", "weight": 1, "body": "Hi, quick question"},
                {"key": "B", "weight": 1, "body": "Hey! 2 minutes?"},
            ],
        },
        {"kind": "sms", "name": "Nudge", "delay": {"value": 2, "unit": "days"}, "body": "Still there?"},
    ]
)


@pytest.fixture
def tenant(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    return new_tenant(conn)


def expected_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> dict:
    pooled = (hits_a + hits_b) / (n_a + n_b)
    z = (hits_b / n_b - hits_a / n_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return {
        "rate_difference": round(hits_b / n_b - hits_a / n_a, 4),
        "z": round(z, 3),
        "p_value": round(math.erfc(abs(z) / math.sqrt(2)), 4),
    }


def stats(tenant, sequence_id) -> dict:
    tenant.as_owner()
    return call_one(tenant.conn, "sequence_stats", sequence_id)


def test_variants_are_counted_rated_and_tested_against_the_control(tenant):
    conn = tenant.conn
    sequence_id = tenant.sequence(AB_TEST)
    tenant.enroll(sequence_id, [tenant.contact() for _ in range(60)])
    sent = claim(conn)
    record(
        conn,
        *[
            {"delivery_id": str(d["delivery_id"]), "outcome": "sent", "provider_message_id": f"SM{i}"}
            for i, d in enumerate(sent)
        ],
    )
    by_variant = {
        "A": [d for d in sent if d["variant"] == "A"],
        "B": [d for d in sent if d["variant"] == "B"],
    }
    assert len(by_variant["A"]) + len(by_variant["B"]) == 60 and all(by_variant.values())
    # Replies: 2 to A, 9 to B (one of B's twice: an enrollment counts once); 1 of A's bounces.
    replies = by_variant["A"][:2] + by_variant["B"][:9] + by_variant["B"][:1]
    act_as_owner(conn)
    contact_of = dict(conn.execute("SELECT id, contact_id FROM drumbeat.deliveries").fetchall())
    tenant.as_owner()
    for delivery in replies:
        payload = Jsonb({"delivery_id": str(delivery["delivery_id"])})
        call(conn, "record_event", contact_of[delivery["delivery_id"]], "replied", payload)
    for delivery in by_variant["B"][:3]:  # engaged three ways (replied, opened, clicked): still one send
        for kind in ("opened", "clicked"):
            payload = Jsonb({"delivery_id": str(delivery["delivery_id"])})
            call(conn, "record_event", contact_of[delivery["delivery_id"]], kind, payload)
    as_worker(conn)
    conn.execute(
        "SELECT drumbeat.delivery_status('SM' || %s, 'undelivered', '30005')",
        (sent.index(by_variant["A"][-1]),),
    )

    [opener, nudge] = stats(tenant, sequence_id)["steps"]
    assert nudge["variants"] == [] and nudge["tasks"] is None
    a, b = opener["variants"]
    n_a, n_b = len(by_variant["A"]), len(by_variant["B"])
    assert (a["key"], a["sent"], a["bounced"], a["replied"]) == ("A", n_a - 1, 1, 2)  # a dead number
    assert a["bounce_rate"] == round(1 / n_a, 4) and b["bounced"] == 0
    assert (b["key"], b["sent"], b["replied"], b["reply_rate"]) == ("B", n_b, 9, round(9 / n_b, 4))
    assert a["versus_control"] is None
    versus = b["versus_control"]
    assert versus["control"] == "A"
    assert versus["reply_rate"] == pytest.approx(expected_test(2, n_a - 1, 9, n_b), abs=1e-4)
    assert (b["opened"], b["clicked"], a["opened"]) == (3, 3, 0)
    assert versus["open_rate"] == pytest.approx(expected_test(0, n_a - 1, 3, n_b), abs=1e-4)
    assert opener["replied"] == 11


def test_the_p_value_matches_the_normal_distribution(tenant):
    act_as_owner(tenant.conn)
    for z in (0.0, 0.5, 1.0, 1.96, 2.576, 3.5):
        p_value = tenant.conn.execute("SELECT drumbeat.normal_p_value(%s)", (z,)).fetchone()[0]
        assert p_value == pytest.approx(math.erfc(z / math.sqrt(2)), abs=2e-7)
    tests = tenant.conn.execute(
        "SELECT drumbeat.proportion_test(0, 10, 0, 10), drumbeat.proportion_test(1, 0, 1, 10),"
        " drumbeat.proportion_test(10, 100, 20, 100)"
    ).fetchone()
    assert tests[:2] == (None, None)
    assert tests[2] == pytest.approx(expected_test(10, 100, 20, 100), abs=1e-4)


def test_a_manual_step_counts_its_tasks_and_outcomes(tenant):
    conn = tenant.conn
    sequence_id = tenant.sequence(
        sms_sequence(steps=[{"kind": "call", "name": "Call", "task_description": "Ring"}])
    )
    tenant.enroll(sequence_id, [tenant.contact() for _ in range(4)])
    claim(conn)
    act_as_owner(conn)
    tasks = [row[0] for row in conn.execute("SELECT id FROM drumbeat.tasks ORDER BY id")]
    tenant.as_owner()
    for task_id, outcome in zip(tasks, ["connected", "connected", "voicemail"], strict=False):
        call(conn, "complete_task", task_id, outcome, None)
    [step] = stats(tenant, sequence_id)["steps"]
    assert step["tasks"] == {
        "created": 4,
        "completed": 3,
        "cancelled": 0,
        "pending": 1,
        "outcomes": {"connected": 2, "voicemail": 1},
    }
