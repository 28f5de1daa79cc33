"""The enroll action of a sequence step enrolls exactly as drumbeat_api.enroll_contacts does (issue 21, item 2):
the target's scheduled start, the contact's opt-out of the target's channel and a paused target give the
same outcome either way, and the action logs that outcome with the step."""

from __future__ import annotations

import uuid

import pytest

from tests.sql.factories import sms_sequence
from tests.sql.worker_calls import at, claim
from tests.support import call

NEXT_MONDAY_9AM_NEW_YORK = "2026-11-30 14:00Z"


def _target(tenant, state: str) -> uuid.UUID:
    """An SMS sequence to enroll into: active, scheduled to start next week, or paused."""
    target = tenant.sequence(sms_sequence(name=f"Target {state}"), activate=False)
    start = at(NEXT_MONDAY_9AM_NEW_YORK) if state == "scheduled" else None
    call(tenant.conn, "activate_sequence", target, start)
    if state == "paused":
        call(tenant.conn, "pause_sequence", target)
    return target


def _contact(tenant, **changes) -> uuid.UUID:
    contact = tenant.contact(email=f"{uuid.uuid4().hex[:10]}@example.com")
    if changes:
        tenant.conn.execute("RESET ROLE")
        tenant.conn.execute(
            "UPDATE drumbeat.contacts SET sms_opted_out_at = %s WHERE id = %s",
            (changes["sms_opted_out_at"], contact),
        )
    return contact


def _enroll_by_action(conn, tenant, target, contact) -> str | None:
    """Enroll `contact` in a multi-channel sequence whose only step enrolls it in `target`; the claim runs
    the step. Returns the outcome logged with the step."""
    steps = [{"kind": "action", "action": {"type": "enroll", "sequence_id": str(target)}}]
    source = tenant.sequence(
        sms_sequence(name=f"Source {uuid.uuid4().hex[:6]}", channel="multi", steps=steps)
    )
    [(_, source_enrollment, outcome)] = tenant.enroll(source, [contact])
    assert outcome == "enrolled"
    assert claim(conn) == []
    conn.execute("RESET ROLE")
    return conn.execute(
        """SELECT payload ->> 'outcome' FROM drumbeat.events
           WHERE enrollment_id = %s AND kind = 'step_executed'""",
        (source_enrollment,),
    ).fetchone()[0]


def _in_target(conn, target, contact) -> tuple | None:
    """The contact's enrollment in the target as the engine sees it, and its 'enrolled' events."""
    conn.execute("RESET ROLE")
    return conn.execute(
        """SELECT e.status, e.next_action_at, st.position, e.started_at,
                  (SELECT count(*) FROM drumbeat.events ev WHERE ev.enrollment_id = e.id AND ev.kind = 'enrolled')
           FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
           WHERE e.sequence_id = %s AND e.contact_id = %s""",
        (target, contact),
    ).fetchone()


@pytest.mark.parametrize(
    ("state", "opted_out", "outcome", "status"),
    [
        ("active", False, "enrolled", "active"),
        ("scheduled", False, "enrolled", "scheduled"),
        ("active", True, "opted_out", None),
        ("paused", False, "enrolled", "active"),
    ],
)
def test_the_enroll_action_has_the_api_s_outcome(conn, tenant, state, opted_out, outcome, status):
    target = _target(tenant, state)
    opt_out = {"sms_opted_out_at": at("2026-11-01 00:00Z")} if opted_out else {}
    by_action, by_api = _contact(tenant, **opt_out), _contact(tenant, **opt_out)
    assert _enroll_by_action(conn, tenant, target, by_action) == outcome
    [(_, _, api_outcome)] = tenant.enroll(target, [by_api])
    assert api_outcome == outcome
    enrolled = _in_target(conn, target, by_action)
    assert enrolled == _in_target(conn, target, by_api)
    assert (enrolled[0] if enrolled else None) == status


def test_a_scheduled_target_starts_the_enrollment_at_its_start(conn, tenant):
    target = _target(tenant, "scheduled")
    contact = _contact(tenant)
    _enroll_by_action(conn, tenant, target, contact)
    status, next_action_at, _, started_at, _ = _in_target(conn, target, contact)
    assert (status, next_action_at, started_at) == ("scheduled", at(NEXT_MONDAY_9AM_NEW_YORK), None)
    assert claim(conn) == []  # nothing of the target goes out before its start


def test_a_paused_target_holds_the_enrollment_until_it_is_resumed(conn, tenant):
    target = _target(tenant, "paused")
    contact = _contact(tenant)
    _enroll_by_action(conn, tenant, target, contact)
    assert claim(conn) == []
    tenant.as_owner()
    call(conn, "resume_sequence", target)
    [text] = claim(conn)
    assert text["context"]["sequence"]["id"] == str(target) and text["to_address"] is not None


@pytest.mark.parametrize("status", ["draft", "archived"])
def test_a_target_the_api_refuses_is_logged_not_raised(conn, tenant, status):
    """The API answers PT409 for a draft or archived sequence; the action cannot fail the claim, so it
    logs why nothing happened."""
    target = tenant.sequence(sms_sequence(name="Not live"), activate=status != "draft")
    if status == "archived":
        call(conn, "archive_sequence", target)
    contact = _contact(tenant)
    assert _enroll_by_action(conn, tenant, target, contact) == f"sequence_{status}"
    assert _in_target(conn, target, contact) is None
