"""The enrollment state machine: every allowed and every forbidden transition, whoever issues it."""

from __future__ import annotations

import itertools

import pytest

from tests.sql.factories import new_tenant
from tests.sql.worker_calls import at, claim, set_clock
from tests.support import call, sql_error

LIVE = ["scheduled", "active", "paused"]
TERMINAL = ["completed", "replied", "bounced", "unsubscribed", "cancelled", "failed"]
STATUSES = LIVE + TERMINAL
ALLOWED = {
    ("scheduled", "active"),
    ("scheduled", "paused"),
    ("active", "completed"),
    ("active", "paused"),
    ("paused", "active"),
    ("paused", "scheduled"),  # resuming an enrollment paused before it started
} | {
    (source, target)
    for source in LIVE
    for target in ["replied", "bounced", "unsubscribed", "cancelled", "failed"]
}

# Column values that satisfy the table's CHECK constraints for each status, so that only the
# trigger can object to a transition.
COLUMNS_FOR = {
    "scheduled": "next_action_at = now() + interval '1 day', paused_at = NULL, completed_at = NULL",
    "active": "next_action_at = now(), paused_at = NULL, completed_at = NULL",
    "paused": "next_action_at = NULL, paused_at = now(), completed_at = NULL",
}
TERMINAL_COLUMNS = "next_action_at = NULL, paused_at = NULL, completed_at = now(), exit_reason = '{reason}'"


def _columns(status: str, reason: str = "test") -> str:
    return COLUMNS_FOR.get(status, TERMINAL_COLUMNS.format(reason=reason))


@pytest.fixture
def enrollment(conn):
    """An enrollment of a fresh tenant, returned with a function that forces it into any status
    (bypassing the trigger, as a fixture must, to reach states like 'replied')."""
    tenant = new_tenant(conn)
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    conn.execute("RESET ROLE")

    def force(status: str) -> None:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            f"UPDATE drumbeat.enrollments SET status = %s, {_columns(status)} WHERE id = %s",
            (status, enrollment_id),
        )
        conn.execute("SET LOCAL session_replication_role = origin")

    return enrollment_id, force


def _events(conn, enrollment_id):
    return conn.execute(
        "SELECT kind, payload FROM drumbeat.events WHERE enrollment_id = %s ORDER BY id", (enrollment_id,)
    ).fetchall()


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transition_is_applied_and_recorded(conn, enrollment, source, target):
    enrollment_id, force = enrollment
    force(source)
    before = len(_events(conn, enrollment_id))
    conn.execute(
        f"UPDATE drumbeat.enrollments SET status = %s, {_columns(target)} WHERE id = %s",
        (target, enrollment_id),
    )
    events = _events(conn, enrollment_id)
    assert len(events) == before + 1
    kind, payload = events[-1]
    assert payload["from"] == source and payload["to"] == target
    expected_kind = {
        "active": "resumed" if source == "paused" else "started",
        "scheduled": "resumed",
        "paused": "paused",
        "completed": "completed",
    }.get(target, "exited")
    assert kind == expected_kind


FORBIDDEN = sorted(
    (source, target)
    for source, target in itertools.product(STATUSES, STATUSES)
    if source != target and (source, target) not in ALLOWED
)


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_forbidden_transition_is_rejected(conn, enrollment, source, target):
    enrollment_id, force = enrollment
    force(source)
    with sql_error(
        conn, "PT409", field="status", match=f"illegal enrollment transition {source} -> {target}"
    ):
        conn.execute(
            f"UPDATE drumbeat.enrollments SET status = %s, {_columns(target)} WHERE id = %s",
            (target, enrollment_id),
        )
    assert (
        conn.execute("SELECT status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)).fetchone()[0]
        == source
    )


@pytest.mark.parametrize("source", LIVE)
def test_meeting_booked_completes_from_any_live_state(conn, enrollment, source):
    enrollment_id, force = enrollment
    force(source)
    conn.execute(
        f"UPDATE drumbeat.enrollments SET status = 'completed', {_columns('completed', 'meeting_booked')} "
        "WHERE id = %s",
        (enrollment_id,),
    )
    assert _events(conn, enrollment_id)[-1][1]["exit_reason"] == "meeting_booked"


@pytest.mark.parametrize("status", ["paused", *TERMINAL])
def test_enrollments_start_scheduled_or_active_only(conn, enrollment, status):
    enrollment_id, _ = enrollment
    with sql_error(conn, "PT409", field="status", match=f"starts as scheduled or active, not {status}"):
        conn.execute(
            f"""WITH new_contact AS (INSERT INTO drumbeat.contacts (workspace_id, phone)
                             SELECT workspace_id, '+15559990001' FROM drumbeat.enrollments WHERE id = %(id)s RETURNING id)
                         INSERT INTO drumbeat.enrollments (workspace_id, sequence_id, contact_id, status, current_step_id,
                             step_done_at, exit_reason, next_action_at, paused_at, completed_at)
                         SELECT workspace_id, sequence_id, (SELECT id FROM new_contact), %(status)s, current_step_id, now(), NULL,
                                NULL, {"now()" if status == "paused" else "NULL"}, {"NULL" if status == "paused" else "now()"}
                         FROM drumbeat.enrollments WHERE id = %(id)s""",
            {"status": status, "id": enrollment_id},
        )


def test_identity_of_an_enrollment_never_changes(conn, enrollment):
    enrollment_id, _ = enrollment
    other = conn.execute(
        "SELECT id FROM drumbeat.contacts WHERE id <> (SELECT contact_id FROM drumbeat.enrollments "
        "WHERE id = %s) LIMIT 1",
        (enrollment_id,),
    ).fetchone()
    assert other is None  # one contact only: build another in the same workspace
    conn.execute(
        """INSERT INTO drumbeat.contacts (workspace_id, phone)
                    SELECT workspace_id, '+15559990000' FROM drumbeat.enrollments WHERE id = %s""",
        (enrollment_id,),
    )
    with sql_error(conn, "PT409", match="never change"):
        conn.execute(
            """UPDATE drumbeat.enrollments SET contact_id = (SELECT id FROM drumbeat.contacts
                        WHERE phone = '+15559990000') WHERE id = %s""",
            (enrollment_id,),
        )


def test_state_machine_applies_to_every_writer(conn, enrollment):
    """The trigger guards any write of the role the contract functions run as, not only the functions'
    own checks (and would guard a tenant's direct write too, were one granted)."""
    enrollment_id, force = enrollment
    force("cancelled")
    owner = conn.execute(
        "SELECT m.user_id FROM drumbeat.workspace_members m JOIN drumbeat.enrollments e "
        "ON e.workspace_id = m.workspace_id WHERE e.id = %s",
        (enrollment_id,),
    ).fetchone()[0]
    from tests.support import act_as

    act_as(conn, owner, role="drumbeat_contract")
    with sql_error(conn, "PT409", match="cancelled -> active"):
        conn.execute(
            f"UPDATE drumbeat.enrollments SET status = 'active', {_columns('active')} WHERE id = %s",
            (enrollment_id,),
        )


def test_exit_cancels_the_pending_task(conn, enrollment):
    enrollment_id, _ = enrollment
    conn.execute(
        """INSERT INTO drumbeat.tasks (workspace_id, enrollment_id, step_id, contact_id, kind, title, due_at)
                    SELECT workspace_id, id, current_step_id, contact_id, 'call', 'Call', now()
                    FROM drumbeat.enrollments WHERE id = %s""",
        (enrollment_id,),
    )
    conn.execute(
        f"UPDATE drumbeat.enrollments SET status = 'replied', {_columns('replied', 'replied')} WHERE id = %s",
        (enrollment_id,),
    )
    assert (
        conn.execute(
            "SELECT status FROM drumbeat.tasks WHERE enrollment_id = %s", (enrollment_id,)
        ).fetchone()[0]
        == "cancelled"
    )


def test_sql_transition_table_is_the_designed_one(conn):
    """drumbeat.transition_allowed agrees with docs/ARCHITECTURE.md's state machine on every pair."""
    rows = conn.execute(
        "SELECT a, b FROM unnest(%s::text[]) a, unnest(%s::text[]) b WHERE drumbeat.transition_allowed(a, b, NULL)",
        (STATUSES, STATUSES),
    ).fetchall()
    assert set(rows) == ALLOWED


def _status_times(conn, enrollment_id):
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT status, next_action_at, started_at FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
    ).fetchone()


def test_resuming_an_enrollment_paused_before_its_start_schedules_it_again(tenant):
    """Not active before its start: it goes back to scheduled, due at its start."""
    start = at("2026-11-30 14:00Z")  # a week after the tenant's clock
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()], start_at=start)
    call(tenant.conn, "pause_enrollment", enrollment_id)
    call(tenant.conn, "resume_enrollment", enrollment_id)

    assert _status_times(tenant.conn, enrollment_id) == ("scheduled", start, None)
    kind, payload = _events(tenant.conn, enrollment_id)[-1]
    assert (kind, payload["from"], payload["to"]) == ("resumed", "paused", "scheduled")


def test_an_enrollment_resumed_after_its_start_passed_starts_when_claimed(tenant):
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()], start_at=at("2026-11-24 14:00Z"))
    call(tenant.conn, "pause_enrollment", enrollment_id)
    set_clock(tenant.conn, "2026-11-25 14:00Z")
    tenant.as_owner()
    call(tenant.conn, "resume_enrollment", enrollment_id)
    assert _status_times(tenant.conn, enrollment_id) == ("scheduled", at("2026-11-25 14:00Z"), None)

    [delivery] = claim(tenant.conn)

    assert delivery["enrollment_id"] == enrollment_id
    assert _status_times(tenant.conn, enrollment_id)[::2] == ("active", at("2026-11-25 14:00Z"))
    assert [kind for kind, _ in _events(tenant.conn, enrollment_id)][-2:] == ["resumed", "started"]
