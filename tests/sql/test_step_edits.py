"""The contract's step functions (add_step, update_step, remove_step, reorder_steps) called as a Supabase
client would: conditions that look at or jump to steps that move follow them, a step a condition looks
at cannot be removed, bad input names its field, and another tenant's sequence is a 404. The HTTP step
endpoints call the same functions (tests/app/api/test_sequences.py), so both get the same edits."""

from __future__ import annotations

import uuid

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.support import act_as, call, call_one, sql_error

# 1 Intro, 2 Nudge, 3 condition on step 1 (replied: exit, else goto 5), 4 Call, 5 Last
BRANCHING = sms_sequence(
    steps=[
        {"kind": "sms", "name": "Intro", "delay": {"value": 0, "unit": "minutes"}, "body": "Hi"},
        {"kind": "sms", "name": "Nudge", "delay": {"value": 1, "unit": "days"}, "body": "Still there?"},
        {
            "kind": "condition",
            "name": "Replied?",
            "condition": {"if": "replied", "step": 1},
            "then": "exit",
            "else": {"goto": 5},
        },
        {"kind": "call", "name": "Call", "delay": {"value": 1, "unit": "days"}, "task_description": "Ring"},
        {"kind": "sms", "name": "Last", "delay": {"value": 1, "unit": "days"}, "body": "Bye"},
    ]
)


@pytest.fixture
def tenant(conn):
    return new_tenant(conn)


def steps(tenant, sequence_id) -> list[dict]:
    """The live steps as the contract reads them back (definition shape, with ids)."""
    tenant.as_owner()
    return tenant.conn.execute("SELECT drumbeat.step_definitions(%s)", (sequence_id,)).fetchone()[0]


def condition_of(tenant, sequence_id) -> dict:
    return next(step for step in steps(tenant, sequence_id) if step["kind"] == "condition")


def test_an_added_step_moves_the_conditions_that_look_past_it(tenant):
    sequence_id = tenant.sequence(BRANCHING)

    added = call_one(
        tenant.conn, "add_step", sequence_id, Jsonb({"kind": "task", "task_description": "Prep"}), 1
    )

    listed = steps(tenant, sequence_id)
    assert [s["name"] for s in listed[1:]] == ["Intro", "Nudge", "Replied?", "Call", "Last"]
    assert listed[0]["id"] == str(added)
    condition = condition_of(tenant, sequence_id)
    assert condition["condition"]["step"] == 2 and condition["else"] == {"goto": 6}


def test_an_added_step_goes_last_without_a_position_and_keeps_its_own_numbering(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    own = {
        "kind": "condition",
        "condition": {"if": "not_replied", "step": 2},
        "then": "continue",
        "else": "exit",
    }

    call(tenant.conn, "add_step", sequence_id, Jsonb(own), None)

    last = steps(tenant, sequence_id)[-1]
    assert last["kind"] == "condition" and last["condition"]["step"] == 2
    assert condition_of(tenant, sequence_id)["else"] == {"goto": 5}  # the old one is untouched


def test_removing_the_goto_target_lands_on_the_step_after_it_or_exits(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    ids = [s["id"] for s in steps(tenant, sequence_id)]

    call(tenant.conn, "remove_step", sequence_id, ids[3])  # Call (4): the goto 5 is now 4
    assert condition_of(tenant, sequence_id)["else"] == {"goto": 4}
    call(tenant.conn, "remove_step", sequence_id, ids[4])  # Last, the goto target: nothing follows
    assert condition_of(tenant, sequence_id)["else"] == "exit"


def test_a_step_a_condition_looks_at_cannot_be_removed(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    intro = steps(tenant, sequence_id)[0]["id"]

    with sql_error(tenant.conn, "PT409", field="step_id", match="step 3 (a condition) looks at this step"):
        call(tenant.conn, "remove_step", sequence_id, intro)
    assert len(steps(tenant, sequence_id)) == 5


def test_reorder_follows_the_steps_and_refuses_a_condition_looking_forward(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    ids = [s["id"] for s in steps(tenant, sequence_id)]

    call(tenant.conn, "reorder_steps", sequence_id, [ids[1], ids[0], ids[2], ids[3], ids[4]])
    assert condition_of(tenant, sequence_id)["condition"]["step"] == 2  # Intro is now second

    with sql_error(tenant.conn, "PT422", field="steps[1].condition.step"):
        call(tenant.conn, "reorder_steps", sequence_id, [ids[1], ids[2], ids[0], ids[3], ids[4]])


@pytest.mark.parametrize(
    "listed",
    [
        lambda ids: ids[:-1],  # one missing
        lambda ids: [*ids[:-1], ids[0]],  # one twice
        lambda ids: [*ids[:-1], str(uuid.uuid4())],  # a stranger
        lambda ids: [],
    ],
)
def test_reorder_must_list_each_step_once(tenant, listed):
    sequence_id = tenant.sequence(BRANCHING)
    ids = [s["id"] for s in steps(tenant, sequence_id)]
    with sql_error(tenant.conn, "PT422", field="step_ids"):
        call(tenant.conn, "reorder_steps", sequence_id, listed(ids))


def test_update_step_changes_the_fields_given_and_null_clears_one(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    nudge = steps(tenant, sequence_id)[1]
    call(tenant.conn, "update_step", sequence_id, nudge["id"], Jsonb({"send_at": "10:00"}))
    assert steps(tenant, sequence_id)[1]["send_at"] == "10:00"

    call(tenant.conn, "update_step", sequence_id, nudge["id"], Jsonb({"body": "Any news?", "send_at": None}))

    changed = steps(tenant, sequence_id)[1]
    assert changed["body"] == "Any news?" and "send_at" not in changed
    assert changed["id"] == nudge["id"] and changed["delay"] == nudge["delay"]


@pytest.mark.parametrize(
    ("function", "args", "sqlstate", "field"),
    [
        (
            "add_step",
            lambda s, ids: (s, Jsonb({"kind": "task", "task_description": "x"}), 7),
            "PT422",
            "position",
        ),
        (
            "add_step",
            lambda s, ids: (s, Jsonb({"kind": "task", "task_description": "x"}), 0),
            "PT422",
            "position",
        ),
        ("add_step", lambda s, ids: (s, Jsonb({"kind": "fax"}), None), "PT422", "steps[5].kind"),
        ("add_step", lambda s, ids: (s, Jsonb(["not", "a", "step"]), None), "PT422", "step"),
        ("update_step", lambda s, ids: (s, uuid.uuid4(), Jsonb({"name": "x"})), "PT404", "step_id"),
        ("update_step", lambda s, ids: (s, ids[1], Jsonb({"send_at": "25:00"})), "PT422", "steps[1].send_at"),
        ("update_step", lambda s, ids: (s, ids[1], Jsonb("name")), "PT422", "changes"),
        ("remove_step", lambda s, ids: (s, uuid.uuid4()), "PT404", "step_id"),
    ],
)
def test_bad_step_edits_name_the_field_and_change_nothing(tenant, function, args, sqlstate, field):
    sequence_id = tenant.sequence(BRANCHING)
    before = steps(tenant, sequence_id)
    ids = [s["id"] for s in before]
    with sql_error(tenant.conn, sqlstate, field=field):
        call(tenant.conn, function, *args(sequence_id, ids))
    assert steps(tenant, sequence_id) == before


def test_the_last_step_cannot_be_removed(tenant):
    sequence_id = tenant.sequence(sms_sequence(steps=BRANCHING["steps"][:1]))
    only = steps(tenant, sequence_id)[0]["id"]
    with sql_error(tenant.conn, "PT409", field="step_id", match="archive it instead"):
        call(tenant.conn, "remove_step", sequence_id, only)


def test_another_tenants_sequence_is_a_404_for_every_step_function(conn):
    theirs = new_tenant(conn, "Theirs")
    sequence_id = theirs.sequence(BRANCHING)
    their_steps = steps(theirs, sequence_id)
    ids = [s["id"] for s in their_steps]
    mine = new_tenant(conn, "Mine")
    mine.as_owner()

    for function, args in [
        ("add_step", (sequence_id, Jsonb({"kind": "task", "task_description": "x"}), None)),
        ("update_step", (sequence_id, ids[0], Jsonb({"name": "Mine now"}))),
        ("remove_step", (sequence_id, ids[3])),
        ("reorder_steps", (sequence_id, ids[::-1])),
    ]:
        with sql_error(conn, "PT404", field="sequence_id"):
            call(conn, function, *args)
    assert steps(theirs, sequence_id) == their_steps


def test_anonymous_callers_are_refused(tenant):
    sequence_id = tenant.sequence(BRANCHING)
    act_as(tenant.conn, None)
    with sql_error(tenant.conn, "PT401"):
        call(tenant.conn, "add_step", sequence_id, Jsonb({"kind": "task", "task_description": "x"}), None)
