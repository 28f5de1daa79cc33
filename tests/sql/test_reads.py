"""The reads a Supabase client makes over RPC (sql/functions/reads.sql): a sequence with its steps, an
enrollment with its messages and timeline, and the lists of enrollments, tasks and messages, each one
call under the caller's RLS; another tenant's ids are PT404 and bad pages a PT422 naming the argument."""

from __future__ import annotations

import pytest
from psycopg.rows import dict_row

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, record, set_clock
from tests.support import call, call_one, sql_error


def rows(conn, function: str, *args) -> list[dict]:
    """A drumbeat_api list function's rows, as dicts."""
    placeholders = ", ".join(["%s"] * len(args))
    return (
        conn.cursor(row_factory=dict_row)
        .execute(f"SELECT * FROM drumbeat_api.{function}({placeholders})", args)
        .fetchall()
    )


STEPS = [
    {"kind": "sms", "name": "Hello", "body": "Hi {{ contact.first_name }}"},
    {"kind": "call", "name": "Ring", "task_description": "Call {{ contact.first_name }}"},
]


@pytest.fixture
def world(conn):
    """A tenant whose contact Ada got the SMS (a real claim and record) and now has the call task; another
    tenant beside it."""
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    tenant, other = new_tenant(conn, "Acme"), new_tenant(conn, "Globex")
    sequence = tenant.sequence(sms_sequence(name="Reads", steps=STEPS))
    ada = tenant.contact(first_name="Ada", phone="+15550103030", email="ada@example.com")
    [(_, enrollment, _)] = tenant.enroll(sequence, [ada])
    [delivery] = claim(conn)
    record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent"})
    as_worker(conn)
    assert claim(conn) == []  # the call step became a task
    tenant.as_owner()
    return {
        "conn": conn,
        "tenant": tenant,
        "other": other,
        "sequence": sequence,
        "ada": ada,
        "enrollment": enrollment,
    }


def test_a_sequence_comes_with_its_steps(world):
    sequence = call_one(world["conn"], "get_sequence", world["sequence"])
    assert (sequence["name"], sequence["status"]) == ("Reads", "active")
    assert [(s["kind"], s["name"]) for s in sequence["steps"]] == [("sms", "Hello"), ("call", "Ring")]
    assert sequence["steps"][0]["body"] == "Hi {{ contact.first_name }}"  # as written


def test_an_enrollment_comes_with_its_messages_and_timeline(world):
    enrollment = call_one(world["conn"], "get_enrollment", world["enrollment"])
    assert enrollment["status"] == "active" and enrollment["contact_id"] == str(world["ada"])
    [message] = enrollment["messages"]
    assert (message["status"], message["to_address"], message["step_id"]) == (
        "sent",
        "+15550103030",
        message["step_id"],
    )
    assert message["sent_at"] is not None
    kinds = [event["kind"] for event in enrollment["events"]]
    assert kinds[0] == "enrolled" and "sent" in kinds


def test_the_lists_answer_with_what_a_screen_shows(world):
    conn, workspace = world["conn"], world["tenant"].workspace_id
    [listed] = rows(conn, "list_enrollments", workspace)
    assert (listed["sequence_name"], listed["status"], listed["current_step_position"]) == (
        "Reads",
        "active",
        2,
    )
    assert rows(conn, "list_enrollments", workspace, "completed") == []
    [task] = rows(conn, "list_tasks", workspace)
    assert (task["kind"], task["sequence_name"], task["step_name"], task["status"]) == (
        "call",
        "Reads",
        "Ring",
        "pending",
    )
    assert task["description"] == "Call {{ contact.first_name }}"  # as written: rendering is the API's
    assert (task["contact"]["first_name"], task["contact"]["email"]) == ("Ada", "ada@example.com")
    [message] = rows(conn, "list_messages", workspace)
    assert (message["status"], message["to_address"], message["contact_id"]) == (
        "sent",
        "+15550103030",
        world["ada"],
    )
    assert rows(conn, "list_messages", workspace, None, None, "failed") == []


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("get_sequence", lambda w: (w["sequence"],)),
        ("get_enrollment", lambda w: (w["enrollment"],)),
        ("list_tasks", lambda w: (w["tenant"].workspace_id,)),
    ],
)
def test_another_tenants_reads_are_not_found(world, function, args):
    world["other"].as_owner()
    with sql_error(world["conn"], "PT404", match="not found"):
        call(world["conn"], function, *args(world))


@pytest.mark.parametrize(
    ("limit", "offset", "field"), [(0, 0, "p_limit"), (501, 0, "p_limit"), (10, -1, "p_offset")]
)
def test_a_bad_page_is_refused_naming_the_argument(world, limit, offset, field):
    with sql_error(world["conn"], "PT422", field=field):
        call(world["conn"], "list_messages", world["tenant"].workspace_id, None, None, None, limit, offset)
