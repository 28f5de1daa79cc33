"""Reassigning an enrollment (its pending task goes along) or one task, as a Supabase client calls it: the
new assignee must be a member, nothing changes when it is the same one, and every change is logged and
published (sequence.enrollment.reassigned, task.reassigned)."""

from __future__ import annotations

import uuid

import pytest

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import claim, set_clock
from tests.support import act_as_owner, call, call_one, sql_error

CALL_FIRST = sms_sequence(
    steps=[
        {"kind": "call", "name": "Intro call", "task_description": "Ask about the pilot"},
        {"kind": "sms", "name": "Follow-up", "delay": {"value": 1, "unit": "days"}, "body": "Hi"},
    ]
)


@pytest.fixture
def team(conn):
    """A workspace with two reps, and an enrollment assigned to the first, waiting on its call task."""
    set_clock(conn, "2026-03-02T14:00:00Z")
    tenant = new_tenant(conn)
    ana, ben = uuid.uuid4(), uuid.uuid4()
    for rep in (ana, ben):
        call(conn, "add_member", tenant.workspace_id, rep, "member")
    [(_, enrollment_id, _)] = tenant.enroll(tenant.sequence(CALL_FIRST), [tenant.contact()], assigned_to=ana)
    claim(conn)  # the worker opens the call task
    act_as_owner(conn)
    [task_id] = conn.execute(
        "SELECT id FROM drumbeat.tasks WHERE enrollment_id = %s", (enrollment_id,)
    ).fetchone()
    tenant.as_owner()
    return tenant, ana, ben, enrollment_id, task_id


def assignees(conn, enrollment_id) -> tuple:
    act_as_owner(conn)
    return conn.execute(
        """SELECT e.assigned_to, (SELECT t.assigned_to FROM drumbeat.tasks t WHERE t.enrollment_id = e.id)
           FROM drumbeat.enrollments e WHERE e.id = %s""",
        (enrollment_id,),
    ).fetchone()


def published(conn, kind) -> list[tuple]:
    act_as_owner(conn)
    return conn.execute(
        """SELECT et.type, drumbeat.event_data(ev) ->> 'previous_assigned_to', drumbeat.event_data(ev) ->> 'assigned_to'
           FROM drumbeat.events ev JOIN drumbeat.event_types et ON et.kind = ev.kind
           WHERE ev.kind = %s ORDER BY ev.id""",
        (kind,),
    ).fetchall()


def test_reassigning_an_enrollment_moves_its_pending_task_and_logs_both(conn, team):
    _, ana, ben, enrollment_id, _ = team
    assert call_one(conn, "reassign_enrollment", enrollment_id, ben) is True
    assert assignees(conn, enrollment_id) == (ben, ben)
    assert published(conn, "enrollment_reassigned") == [
        ("sequence.enrollment.reassigned", str(ana), str(ben))
    ]
    assert published(conn, "task_reassigned") == [("task.reassigned", str(ana), str(ben))]


def test_the_same_assignee_changes_and_logs_nothing(conn, team):
    _, ana, _, enrollment_id, task_id = team
    assert call_one(conn, "reassign_enrollment", enrollment_id, ana) is False
    assert call_one(conn, "reassign_task", task_id, ana) is False
    assert published(conn, "enrollment_reassigned") == published(conn, "task_reassigned") == []


def test_a_task_alone_moves_and_the_enrollment_stays(conn, team):
    tenant, ana, ben, enrollment_id, task_id = team
    assert call_one(conn, "reassign_task", task_id, ben) is True
    assert assignees(conn, enrollment_id) == (ana, ben)
    tenant.as_owner()
    assert call_one(conn, "reassign_task", task_id, None) is True  # unassigned: anyone's to pick up
    assert assignees(conn, enrollment_id) == (ana, None)


def test_only_members_and_pending_tasks(conn, team):
    _, _, ben, enrollment_id, task_id = team
    stranger = uuid.uuid4()
    with sql_error(conn, "PT422", field="p_user_id", match="not a member"):
        call(conn, "reassign_enrollment", enrollment_id, stranger)
    call(conn, "complete_task", task_id, "connected", None)
    with sql_error(conn, "PT409", match="only a pending task"):
        call(conn, "reassign_task", task_id, ben)


def test_another_tenant_s_enrollment_and_task_are_not_found(conn, team):
    _, _, _, enrollment_id, task_id = team
    other = new_tenant(conn, "Other")
    other.as_owner()
    with sql_error(conn, "PT404", field="p_enrollment_id"):
        call(conn, "reassign_enrollment", enrollment_id, other.owner)
    with sql_error(conn, "PT404", field="p_task_id"):
        call(conn, "reassign_task", task_id, other.owner)
