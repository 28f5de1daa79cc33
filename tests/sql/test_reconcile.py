"""Reconciliation in SQL (workers/reconcile.py asks, these functions decide): an unknown SMS whose provider
can be asked waits for its answer; found means sent (SID kept, enrollment moves on), not found means a
failed attempt (retried), no answer means asked again with backoff, and after reconcile_give_up it stays
unknown and the enrollment moves on. Never sent twice: a message the provider has is never retried."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.sql.worker_calls import as_worker, at, claim, enrollment, record, reserve, set_clock

DUE = "2026-11-23 14:00:00Z"


@pytest.fixture
def in_doubt(conn, tenant):
    """Ada's first SMS was sent and its answer lost (unknown, to be reconciled); returns its delivery row."""
    contact = tenant.contact(first_name="Ada", phone="+15550101010")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    [row] = claim(conn)
    result = {
        "delivery_id": str(row["delivery_id"]),
        "outcome": "unknown",
        "reconcile": True,
        "body": "Hi Ada",
    }
    assert record(conn, result | {"error_code": "network_ambiguous"}) == 1
    return row | {"enrollment_id": enrollment_id}


def due(conn, channels=("sms",)) -> list[dict]:
    as_worker(conn)
    cursor = conn.execute("SELECT * FROM drumbeat.due_reconciliations(%s, 50)", (list(channels),))
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def settle(conn, delivery_id, candidates) -> int:
    as_worker(conn)
    results = [{"delivery_id": str(delivery_id), "candidates": candidates}]
    return conn.execute("SELECT drumbeat.settle_reconciliations(%s)", (Jsonb(results),)).fetchone()[0]


def delivery(conn, delivery_id) -> dict:
    conn.execute("RESET ROLE")
    cursor = conn.execute(
        """SELECT status, provider_message_id, reconcile_after, sent_at, attempt, error_message
           FROM drumbeat.deliveries WHERE id = %s""",
        (delivery_id,),
    )
    return dict(zip([c.name for c in cursor.description], cursor.fetchone(), strict=True))


def reasons(conn, delivery_id) -> list[tuple[str, str | None]]:
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT kind, payload->>'reason' FROM drumbeat.events WHERE delivery_id = %s ORDER BY id",
        (delivery_id,),
    ).fetchall()


def test_an_unknown_sms_waits_for_reconciliation(conn, tenant, in_doubt):
    assert enrollment(conn, in_doubt["enrollment_id"]) == {
        "status": "active",
        "next_action_at": None,  # waiting: neither moved on nor due again
        "position": 1,
        "attempt": 1,
        "exit_reason": None,
    }
    assert delivery(conn, in_doubt["delivery_id"])["reconcile_after"] == at("2026-11-23 14:00:30Z")
    assert due(conn) == []  # the provider's list needs a moment to show the message
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert due(conn, ("email",)) == []  # only the channels the worker can ask about
    [row] = due(conn)
    assert row["delivery_id"] == in_doubt["delivery_id"]
    assert (row["to_address"], row["body"]) == ("+15550101010", "Hi Ada")
    assert row["from_address"] == in_doubt["from_address"]
    assert row["started_at"] == at(DUE)
    assert due(conn) == []  # leased: a second worker does not ask about it at the same time
    set_clock(conn, "2026-11-23 14:02:32Z")
    assert [r["delivery_id"] for r in due(conn)] == [in_doubt["delivery_id"]]  # the asker died: asked again


def test_found_at_the_provider_is_sent_and_the_enrollment_moves_on(conn, tenant, in_doubt):
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert settle(conn, in_doubt["delivery_id"], ["SMfound"]) == 1
    settled = delivery(conn, in_doubt["delivery_id"])
    assert (settled["status"], settled["provider_message_id"], settled["reconcile_after"]) == (
        "sent",
        "SMfound",
        None,
    )
    assert settled["sent_at"] == at("2026-11-23 14:00:31Z")
    assert enrollment(conn, in_doubt["enrollment_id"])["position"] == 2
    assert reasons(conn, in_doubt["delivery_id"])[-1] == ("sent", "reconciled_sent")
    assert settle(conn, in_doubt["delivery_id"], ["SMother"]) == 0  # settled once; a repeat changes nothing
    assert delivery(conn, in_doubt["delivery_id"])["provider_message_id"] == "SMfound"


def test_not_at_the_provider_is_a_failed_attempt_that_is_retried(conn, tenant, in_doubt):
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert settle(conn, in_doubt["delivery_id"], []) == 1
    failed = delivery(conn, in_doubt["delivery_id"])
    assert (failed["status"], failed["reconcile_after"]) == ("failed", None)
    assert failed["error_message"].startswith("not at the provider")
    assert reasons(conn, in_doubt["delivery_id"])[-1] == ("failed", "reconciled_not_sent")
    waiting = enrollment(conn, in_doubt["enrollment_id"])
    assert (waiting["status"], waiting["position"], waiting["attempt"]) == ("active", 1, 2)
    # Retried at once: the reconcile delay already spaced it from the attempt.
    assert waiting["next_action_at"] == at("2026-11-23 14:00:31Z")
    [again] = claim(conn)
    assert (again["enrollment_id"], again["attempt"]) == (in_doubt["enrollment_id"], 2)


def test_a_message_id_another_delivery_holds_does_not_count(conn, tenant, in_doubt):
    """Two deliveries with the same text to the same number: each provider message settles one of them."""
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.deliveries SET provider_message_id = 'SMtaken' WHERE id <> %s",
        (in_doubt["delivery_id"],),
    )
    other = tenant.contact(first_name="Bo")
    tenant.enroll(tenant.sequence(), [other])
    set_clock(conn, "2026-11-23 14:00:01Z")
    [row] = claim(conn)
    record(
        conn, {"delivery_id": str(row["delivery_id"]), "outcome": "sent", "provider_message_id": "SMtaken"}
    )
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert settle(conn, in_doubt["delivery_id"], ["SMtaken"]) == 1
    assert delivery(conn, in_doubt["delivery_id"])["status"] == "failed"
    assert settle(conn, in_doubt["delivery_id"], ["SMtaken", "SMmine"]) == 0  # already settled


def test_a_second_candidate_settles_when_the_first_is_taken(conn, tenant, in_doubt):
    other = tenant.contact(first_name="Bo")
    tenant.enroll(tenant.sequence(), [other])
    [row] = claim(conn)
    record(
        conn, {"delivery_id": str(row["delivery_id"]), "outcome": "sent", "provider_message_id": "SMtaken"}
    )
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert settle(conn, in_doubt["delivery_id"], ["SMtaken", "SMmine"]) == 1
    assert delivery(conn, in_doubt["delivery_id"])["provider_message_id"] == "SMmine"


def test_no_answer_is_asked_again_with_backoff_then_given_up(conn, tenant, in_doubt):
    set_clock(conn, "2026-11-23 14:00:31Z")
    assert settle(conn, in_doubt["delivery_id"], None) == 0
    waiting = delivery(conn, in_doubt["delivery_id"])
    assert (waiting["status"], waiting["reconcile_after"]) == ("unknown", at("2026-11-23 14:01:01Z"))
    set_clock(conn, "2026-11-23 14:40:00Z")
    assert settle(conn, in_doubt["delivery_id"], None) == 0
    assert delivery(conn, in_doubt["delivery_id"])["reconcile_after"] == at("2026-11-23 14:50:00Z")  # capped
    assert enrollment(conn, in_doubt["enrollment_id"])["position"] == 1  # still waiting
    set_clock(conn, "2026-11-23 15:00:01Z")
    assert settle(conn, in_doubt["delivery_id"], None) == 1
    given_up = delivery(conn, in_doubt["delivery_id"])
    assert (given_up["status"], given_up["reconcile_after"]) == ("unknown", None)
    assert reasons(conn, in_doubt["delivery_id"])[-1] == ("delivery_unknown", "reconcile_gave_up")
    # At most once: it may have gone out, so the enrollment moves on and the step is never sent again.
    assert enrollment(conn, in_doubt["enrollment_id"])["position"] == 2
    assert due(conn) == []


def test_a_lease_expired_on_a_reconciled_channel_waits_for_reconciliation(conn, tenant):
    contact = tenant.contact(first_name="Ada")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(), [contact])
    [row] = claim(conn)  # started, then the worker died mid-send
    set_clock(conn, "2026-11-23 14:11:00Z")
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.recover_deliveries('10 minutes', '{sms}')").fetchone()[0] == 1
    assert delivery(conn, row["delivery_id"])["status"] == "unknown"
    assert enrollment(conn, enrollment_id)["position"] == 1  # waits for the provider's word
    [asked] = due(conn)
    assert asked["delivery_id"] == row["delivery_id"]
    settle(conn, row["delivery_id"], ["SMfound"])
    assert enrollment(conn, enrollment_id)["position"] == 2


def test_the_text_kept_at_start_lets_a_killed_worker_s_send_be_found(conn, tenant):
    """A worker killed mid-send records nothing: the text start_sending kept is what reconciliation
    looks the message up by (without it, the message could not be told from another: never guessed)."""
    tenant.enroll(tenant.sequence(), [tenant.contact(first_name="Ada")])
    [row] = reserve(conn)
    as_worker(conn)
    started = conn.execute(
        "SELECT drumbeat.start_sending(%s, '{}', %s)", ([row["delivery_id"]], ["Hi Ada"])
    ).fetchone()[0]
    assert started == [row["delivery_id"]]
    set_clock(conn, "2026-11-23 14:02:01Z")
    assert conn.execute("SELECT drumbeat.recover_deliveries('2 minutes', '{sms}')").fetchone()[0] == 1
    [asked] = due(conn)
    assert (asked["delivery_id"], asked["body"]) == (row["delivery_id"], "Hi Ada")
