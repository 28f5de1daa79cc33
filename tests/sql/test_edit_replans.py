"""Editing a live sequence re-plans only what the edit re-timed (docs/ARCHITECTURE.md, "Editing a live
sequence"), through every edit path a Supabase client or the HTTP API has: update_sequence (settings and
steps), add_step, update_step, remove_step, reorder_steps and switching a step off. No edit makes an
enrollment due before the sequence's scheduled start, and none forgets a manual skip (skip_to_step) or
the backoff of a step being retried."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import sms_sequence
from tests.sql.worker_calls import at, claim, record
from tests.support import call

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York (the tenant fixture's clock)
START = "2026-11-30 14:00Z"  # the Monday after, 09:00 in New York
WEEKDAY_AFTERNOONS = {
    day: {"start": "13:00", "end": "17:00"}
    for day in ["monday", "tuesday", "wednesday", "thursday", "friday"]
}


def steps(tenant, sequence_id) -> list[dict]:
    """The live steps in the definition shape, with their ids (Intro, Nudge, Call)."""
    tenant.conn.execute("RESET ROLE")
    return tenant.conn.execute("SELECT drumbeat.step_definitions(%s)", (sequence_id,)).fetchone()[0]


def state(tenant, enrollment_id) -> tuple:
    """(status, next_action_at, the current step's name, attempt)."""
    tenant.conn.execute("RESET ROLE")
    return tenant.conn.execute(
        """SELECT e.status, e.next_action_at, st.name, e.step_attempt
           FROM drumbeat.enrollments e JOIN drumbeat.sequence_steps st ON st.id = e.current_step_id
           WHERE e.id = %s""",
        (enrollment_id,),
    ).fetchone()


# Each edit is applied to a sequence whose enrollments wait on the step at index `current`.


def update_sequence(tenant, sequence_id, **changes) -> None:
    """A full edit: the stored steps (with their ids), top-level keys replaced."""
    definition = sms_sequence(steps=steps(tenant, sequence_id))
    definition.update(changes)
    tenant.as_owner()
    call(tenant.conn, "update_sequence", sequence_id, Jsonb(definition))


def retime_in_definition(tenant, sequence_id, current) -> None:
    edited = steps(tenant, sequence_id)
    edited[current]["delay"] = {"value": 30, "unit": "minutes"}
    update_sequence(tenant, sequence_id, steps=edited)


def update_step(tenant, sequence_id, index, changes) -> None:
    step_id = steps(tenant, sequence_id)[index]["id"]
    tenant.as_owner()
    call(tenant.conn, "update_step", sequence_id, step_id, Jsonb(changes))


def add_step_first(tenant, sequence_id, _current) -> None:
    tenant.as_owner()
    call(tenant.conn, "add_step", sequence_id, Jsonb({"kind": "task", "task_description": "Prep"}), 1)


def remove_step(tenant, sequence_id, index) -> None:
    step_id = steps(tenant, sequence_id)[index]["id"]
    tenant.as_owner()
    call(tenant.conn, "remove_step", sequence_id, step_id)


def swap_first_two_steps(tenant, sequence_id, _current) -> None:
    ids = [step["id"] for step in steps(tenant, sequence_id)]
    tenant.as_owner()
    call(tenant.conn, "reorder_steps", sequence_id, [ids[1], ids[0], ids[2]])


def weekdays_only(tenant, sequence_id, _current) -> None:
    update_sequence(tenant, sequence_id, settings={"timezone": "America/New_York", "exclude_weekends": True})


EDIT_PATHS = {
    "update_sequence settings": weekdays_only,
    "update_sequence steps": retime_in_definition,
    "add_step": add_step_first,
    "update_step": lambda t, s, i: update_step(t, s, i, {"delay": {"value": 1, "unit": "hours"}}),
    "remove_step": remove_step,
    "reorder_steps": swap_first_two_steps,
    "switch a step off": lambda t, s, i: update_step(t, s, i, {"is_active": False}),
}


# --- a future scheduled start ---------------------------------------------------------------------


@pytest.fixture
def scheduled(tenant):
    """A sequence scheduled to start next week, holding two enrollments waiting on the first step: one
    enrolled while the sequence was paused, before the start was set (its "done" instant is today), and
    one enrolled after (scheduled for the start)."""
    sequence = tenant.sequence()
    call(tenant.conn, "pause_sequence", sequence)
    [(_, before, _)] = tenant.enroll(sequence, [tenant.contact()])
    tenant.as_owner()
    call(tenant.conn, "activate_sequence", sequence, at(START))
    [(_, after, _)] = tenant.enroll(sequence, [tenant.contact()])
    return sequence, {before: "active", after: "scheduled"}


@pytest.mark.parametrize("edit", EDIT_PATHS.values(), ids=EDIT_PATHS.keys())
def test_no_edit_makes_an_enrollment_due_before_the_scheduled_start(tenant, scheduled, edit):
    sequence, enrollments = scheduled
    for enrollment_id, status in enrollments.items():
        assert state(tenant, enrollment_id)[:2] == (status, at(START))

    edit(tenant, sequence, 0)

    for enrollment_id, status in enrollments.items():
        after_status, next_action_at, _, _ = state(tenant, enrollment_id)
        assert after_status == status
        assert next_action_at >= at(START), f"due {next_action_at}, before the start {START}"


def test_skipping_ahead_before_the_sequence_s_scheduled_start_waits_for_it(tenant, scheduled):
    _, enrollments = scheduled
    for enrollment_id in enrollments:
        tenant.as_owner()
        call(tenant.conn, "skip_to_step", enrollment_id, 2)
        # The start, not Wednesday: a skipped-to step ignores its delay and send_at.
        assert state(tenant, enrollment_id)[1:3] == (at(START), "Nudge")


def test_resuming_a_paused_sequence_keeps_its_scheduled_start(tenant, scheduled):
    sequence, _ = scheduled
    tenant.as_owner()
    call(tenant.conn, "pause_sequence", sequence)
    call(tenant.conn, "resume_sequence", sequence)
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    assert state(tenant, enrollment_id)[:2] == ("scheduled", at(START))


# --- a manual skip and a retry's backoff ------------------------------------------------------------


@pytest.fixture
def skipped(tenant):
    """An enrollment skipped from the first step to the second (2 days, 10:00): due now, not Wednesday."""
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    call(tenant.conn, "skip_to_step", enrollment_id, 2)
    assert state(tenant, enrollment_id) == ("active", at(NOW), "Nudge", 1)
    return sequence, enrollment_id, 1


@pytest.fixture
def retrying(tenant):
    """An enrollment whose first text failed with a transient error at 09:00: retried a minute later."""
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()])
    [delivery] = claim(tenant.conn)
    record(tenant.conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "failed", "transient": True})
    assert state(tenant, enrollment_id) == ("active", at("2026-11-23 14:01Z"), "Intro", 2)
    return sequence, enrollment_id, 0


# After each of these the time the skip or the backoff gave still falls in the step's window, so it stays:
# a skip already ignored the step's delay and send_at, and a step being retried is past them.
KEEPING_EDITS = {
    "rename": lambda t, s, _: update_sequence(t, s, name="Renamed"),
    "update_sequence settings": weekdays_only,
    "update_sequence steps": retime_in_definition,
    "the step's delay": lambda t, s, i: update_step(t, s, i, {"delay": {"value": 5, "unit": "days"}}),
    "the step's send_at": lambda t, s, i: update_step(t, s, i, {"send_at": "14:00"}),
    "the step's text": lambda t, s, i: update_step(t, s, i, {"body": "New text"}),
    "another step's delay": lambda t, s, _: update_step(t, s, 2, {"delay": {"value": 3, "unit": "days"}}),
    "add_step": add_step_first,
    "reorder_steps": swap_first_two_steps,
    "switch another step off": lambda t, s, _: update_step(t, s, 2, {"is_active": False}),
    "remove another step": lambda t, s, _: remove_step(t, s, 2),
}


@pytest.mark.parametrize("pinned", ["skipped", "retrying"])
@pytest.mark.parametrize("edit", KEEPING_EDITS.values(), ids=KEEPING_EDITS.keys())
def test_an_edit_keeps_the_time_a_skip_or_a_backoff_gave(request, tenant, pinned, edit):
    sequence, enrollment_id, current = request.getfixturevalue(pinned)
    before = state(tenant, enrollment_id)

    edit(tenant, sequence, current)

    assert state(tenant, enrollment_id) == before


@pytest.mark.parametrize(
    ("pinned", "expected"),
    [
        ("skipped", "2026-11-23 18:00Z"),  # 13:00 the same Monday, not Wednesday's 13:00 (the step's delay)
        ("retrying", "2026-11-23 18:00Z"),  # 13:00, the first allowed instant after the backoff
    ],
)
def test_a_new_window_moves_a_skipped_or_retried_step_forward_from_its_time(
    request, tenant, pinned, expected
):
    sequence, enrollment_id, _ = request.getfixturevalue(pinned)
    status, _, step, attempt = state(tenant, enrollment_id)

    update_sequence(
        tenant, sequence, settings={"timezone": "America/New_York", "business_hours": WEEKDAY_AFTERNOONS}
    )

    assert state(tenant, enrollment_id) == (status, at(expected), step, attempt)


def test_the_edited_step_of_an_ordinary_enrollment_is_re_planned(tenant):
    """The counterpart: an enrollment that only waits on its step's delay follows the new one."""
    sequence = tenant.sequence()
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact()], start_at_step=2)
    assert state(tenant, enrollment_id)[1] == at("2026-11-25 15:00Z")  # Wednesday 10:00

    update_step(tenant, sequence, 1, {"send_at": "14:00"})

    assert state(tenant, enrollment_id)[1] == at("2026-11-25 19:00Z")  # Wednesday 14:00


def test_resuming_a_skipped_enrollment_keeps_the_skip(tenant, skipped):
    _, enrollment_id, _ = skipped
    tenant.as_owner()
    call(tenant.conn, "pause_enrollment", enrollment_id)
    call(tenant.conn, "resume_enrollment", enrollment_id)
    assert state(tenant, enrollment_id) == ("active", at(NOW), "Nudge", 1)  # not Wednesday 10:00
