"""The sequence endpoints on the real app and database: create from a definition, list (status filter,
pages, totals), read, replace (PUT) and change (PATCH) through update_sequence, archive (DELETE),
activate / pause / resume / archive / duplicate (409 on illegal transitions), steps added, edited,
deleted and reordered with stable ids (live enrollments keep their place, conditions follow the steps
they look at), stats and preview shapes; 422 naming the field (templates compiled in the worker's
sandbox); 404 with nothing changed for another tenant's ids on every endpoint."""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support import act_as
from tests.support.api import ApiTenant, dispatch

DEFINITION = {
    "name": "Cold outreach",
    "description": "First touch",
    "channel": "sms",
    "settings": {"timezone": "America/New_York", "exclude_weekends": True},
    "exit_conditions": {"on_reply": True, "on_bounce": False},
    "steps": [
        {"kind": "sms", "name": "Intro", "body": "Hi {{ contact.first_name }}"},
        {
            "kind": "sms",
            "name": "Nudge",
            "delay": {"value": 2, "unit": "days"},
            "send_at": "10:00",
            "body": "Still there?",
        },
        {"kind": "call", "name": "Call", "delay": {"value": 3, "unit": "hours"}, "task_description": "Ring"},
    ],
}
# step 3 looks back at step 1 and jumps to step 5 when there was no reply
BRANCHING = {
    "name": "Branching",
    "channel": "multi",
    "steps": [
        {"kind": "sms", "name": "A", "body": "a"},
        {"kind": "task", "name": "B", "delay": {"value": 1, "unit": "days"}, "task_description": "b"},
        {
            "kind": "condition",
            "name": "C",
            "delay": {"value": 1, "unit": "weeks"},
            "condition": {"if": "replied", "step": 1},
            "then": "exit",
            "else": {"goto": 5},
        },
        {"kind": "call", "name": "D", "task_description": "d"},
        {"kind": "email", "name": "E", "subject": "Hi", "body": "e"},
    ],
}


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """The test database as its owner (RLS bypassed), autocommit: to look at what the API wrote."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def definition(**changes) -> dict:
    result = copy.deepcopy(DEFINITION)
    result.update(changes)
    return result


def error_of(response, status: int, field: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if field is not None:
        assert error["field"] == field or names(error, field), error
    if code is not None:
        assert error["code"] == code, error
    return error


def names(error: dict, field: str) -> bool:
    """Request validation of an unknown or missing member names the object that holds it ("data" for the
    body itself, None for a missing query parameter) and the member in its message."""
    parent, _, member = field.rpartition(".")
    return (error["field"] in (parent or "data", None) and f"`{member}`" in error["message"]) or (
        error["field"] is None and f"'{member}'" in error["message"]
    )


def create(tenant: ApiTenant, body: dict | None = None) -> dict:
    response = tenant.post("/sequences", copy.deepcopy(body or DEFINITION))
    assert response.status_code == 201, response.text
    return response.json()


def contact(db_url: str, tenant: ApiTenant, **fields) -> str:
    """A contact made through the SQL contract as the tenant's owner (the contacts API is someone else's)."""
    fields.setdefault("phone", f"+1555{uuid.uuid4().int % 10_000_000:07d}")
    with psycopg.connect(db_url) as conn:
        act_as(conn, tenant.user_id)
        [(contact_id, *_)] = conn.execute(
            "SELECT * FROM drumbeat_api.upsert_contacts(%s, %s)", (tenant.workspace_id, Jsonb([fields]))
        ).fetchall()
        conn.commit()
    return str(contact_id)


def enroll(db_url: str, tenant: ApiTenant, sequence_id: str, contact_id: str) -> str:
    with psycopg.connect(db_url) as conn:
        act_as(conn, tenant.user_id)
        [row] = conn.execute(
            "SELECT r.enrollment_id, r.outcome FROM drumbeat_api.enroll_contacts(%s, %s) AS r",
            (sequence_id, [contact_id]),
        ).fetchall()
        conn.commit()
    assert row[1] == "enrolled", row
    return str(row[0])


def snapshot(db: psycopg.Connection, sequence_id: str) -> dict:
    """Everything an edit could change: the sequence row and its steps (removed ones included)."""
    sequence = db.execute("SELECT * FROM drumbeat.sequences WHERE id = %s", (sequence_id,)).fetchone()
    steps = db.execute(
        "SELECT * FROM drumbeat.sequence_steps WHERE sequence_id = %s ORDER BY id", (sequence_id,)
    ).fetchall()
    events = db.execute(
        "SELECT count(*) AS n FROM drumbeat.events WHERE sequence_id = %s", (sequence_id,)
    ).fetchone()
    return {"sequence": sequence, "steps": steps, "events": events["n"]}


def live_steps(db: psycopg.Connection, sequence_id: str) -> list[dict]:
    return db.execute(
        "SELECT id, position, kind, name, condition FROM drumbeat.sequence_steps"
        " WHERE sequence_id = %s AND removed_at IS NULL ORDER BY position",
        (sequence_id,),
    ).fetchall()


def sequence_count(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) AS n FROM drumbeat.sequences").fetchone()["n"]


# ---------------------------------------------------------------------------------------------- CRUD


def test_create_returns_the_sequence_with_its_steps_in_the_definitions_shape(
    tenant: ApiTenant, db: psycopg.Connection
) -> None:
    body = create(tenant)
    assert body["name"] == "Cold outreach" and body["description"] == "First touch"
    assert body["status"] == "draft" and body["channel"] == "sms" and body["version"] == 1
    assert body["workspace_id"] == tenant.workspace_id and body["step_count"] == 3
    assert body["settings"] == {"timezone": "America/New_York", "exclude_weekends": True}
    assert body["exit_conditions"] == {
        "on_reply": True,
        "on_bounce": False,
        "on_unsubscribe": True,
        "on_meeting_booked": True,
    }
    steps = body["steps"]
    assert [s["position"] for s in steps] == [1, 2, 3]
    assert [s["name"] for s in steps] == ["Intro", "Nudge", "Call"]
    assert steps[0]["delay"] == {"value": 0, "unit": "minutes"}
    assert steps[1]["delay"] == {"value": 2, "unit": "days"} and steps[1]["send_at"] == "10:00"
    assert steps[2]["delay"] == {"value": 3, "unit": "hours"} and steps[2]["task_description"] == "Ring"
    assert steps[0]["body"] == "Hi {{ contact.first_name }}" and steps[0]["variants"] == []

    row = db.execute("SELECT * FROM drumbeat.sequences WHERE id = %s", (body["id"],)).fetchone()
    assert str(row["workspace_id"]) == tenant.workspace_id and row["status"] == "draft"
    assert [str(s["id"]) for s in live_steps(db, body["id"])] == [s["id"] for s in steps]
    delays = db.execute(
        "SELECT delay FROM drumbeat.sequence_steps WHERE sequence_id = %s ORDER BY position", (body["id"],)
    ).fetchall()
    assert [d["delay"] for d in delays] == [dt.timedelta(0), dt.timedelta(days=2), dt.timedelta(hours=3)]

    assert tenant.get(f"/sequences/{body['id']}").json() == body


def test_conditions_variants_and_weeks_read_back_as_they_were_written(tenant: ApiTenant) -> None:
    body = copy.deepcopy(BRANCHING)
    body["steps"][4]["variants"] = [
        {"key": "A", "weight": 50, "subject": "Hi {{ contact.first_name }}"},
        {"key": "B", "weight": 50, "html_body": "<b>{{ contact.company }}</b>"},
    ]
    created = create(tenant, body)
    condition = created["steps"][2]
    assert condition["condition"] == {"if": "replied", "step": 1}
    assert condition["then"] == "exit" and condition["else"] == {"goto": 5}
    assert condition["delay"] == {"value": 1, "unit": "weeks"}
    assert created["steps"][4]["variants"] == body["steps"][4]["variants"]
    assert created["steps"][1]["then"] is None and created["steps"][1]["condition"] is None


def test_list_filters_by_status_pages_and_counts(tenant: ApiTenant, other_tenant: ApiTenant) -> None:
    ids = [create(tenant, definition(name=f"Seq {i}"))["id"] for i in range(3)]
    create(other_tenant)
    tenant.sender("sms")
    assert tenant.post(f"/sequences/{ids[0]}/activate").status_code == 200

    listed = tenant.get("/sequences")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 3 and page["page"] == 1 and page["page_size"] == 50
    assert [s["id"] for s in page["items"]] == ids[::-1]  # newest first
    assert "steps" not in page["items"][0] and page["items"][0]["step_count"] == 3

    active = tenant.get("/sequences", params={"status": "active"}).json()
    assert [s["id"] for s in active["items"]] == [ids[0]] and active["total"] == 1
    drafts = tenant.get("/sequences", params={"status": "draft", "page_size": 1, "page": 2}).json()
    assert [s["id"] for s in drafts["items"]] == [ids[1]] and drafts["total"] == 2
    past_the_end = tenant.get("/sequences", params={"page": 5, "page_size": 2}).json()
    assert past_the_end["items"] == [] and past_the_end["total"] == 3

    error_of(tenant.get("/sequences", params={"status": "done"}), 422, "status")
    error_of(tenant.get("/sequences", params={"page_size": 501}), 422, "page_size")


def test_put_keeps_steps_sent_with_their_ids_and_removes_the_others(
    tenant: ApiTenant, db: psycopg.Connection
) -> None:
    created = create(tenant)
    first, second, third = created["steps"]
    body = definition(name="Renamed")
    body["steps"] = [
        {"id": third["id"], "kind": "call", "name": "Call first", "task_description": "Ring"},
        {"id": first["id"], "kind": "sms", "name": "Intro", "body": "Hello"},
        {"kind": "sms", "name": "New", "delay": {"value": 30, "unit": "minutes"}, "body": "New one"},
    ]
    response = tenant.put(f"/sequences/{created['id']}", body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Renamed" and updated["version"] == 2
    assert [s["id"] for s in updated["steps"][:2]] == [third["id"], first["id"]]
    assert updated["steps"][1]["body"] == "Hello" and updated["steps"][2]["delay"] == {
        "value": 30,
        "unit": "minutes",
    }
    removed = db.execute(
        "SELECT removed_at FROM drumbeat.sequence_steps WHERE id = %s", (second["id"],)
    ).fetchone()
    assert removed["removed_at"] is not None

    # what GET returns can be PUT back as it is (ids, delays and all)
    again = {k: updated[k] for k in ("name", "description", "channel", "settings", "exit_conditions")}
    again["steps"] = [
        {k: v for k, v in s.items() if k not in ("position", "created_at", "updated_at") and v is not None}
        for s in updated["steps"]
    ]
    round_trip = tenant.put(f"/sequences/{created['id']}", again)
    assert round_trip.status_code == 200, round_trip.text
    assert [s["id"] for s in round_trip.json()["steps"]] == [s["id"] for s in updated["steps"]]
    assert round_trip.json()["version"] == 3


def test_patch_changes_only_the_fields_given(tenant: ApiTenant, db: psycopg.Connection) -> None:
    created = create(tenant)
    response = tenant.patch(
        f"/sequences/{created['id']}",
        {"name": "Warm outreach", "description": None, "settings": {"timezone": "Europe/Paris"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Warm outreach" and body["description"] is None
    assert body["settings"] == {"timezone": "Europe/Paris"} and body["version"] == 2
    assert body["exit_conditions"] == created["exit_conditions"]
    assert [s["id"] for s in body["steps"]] == [s["id"] for s in created["steps"]]
    row = db.execute(
        "SELECT name, description, version FROM drumbeat.sequences WHERE id = %s", (created["id"],)
    )
    assert row.fetchone() == {"name": "Warm outreach", "description": None, "version": 2}
    event = db.execute(
        "SELECT payload FROM drumbeat.events WHERE sequence_id = %s AND kind = 'sequence_updated'",
        (created["id"],),
    ).fetchone()
    assert event["payload"]["version"] == 2

    error_of(tenant.patch(f"/sequences/{created['id']}", {"colour": "red"}), 422, "colour")
    error_of(tenant.patch(f"/sequences/{created['id']}", {"channel": "email"}), 422, "steps[0].kind")
    assert db.execute(
        "SELECT version FROM drumbeat.sequences WHERE id = %s", (created["id"],)
    ).fetchone() == {"version": 2}


# ---------------------------------------------------------------------------------------------- transitions


def test_activate_pause_resume_archive_and_illegal_transitions(
    tenant: ApiTenant, db: psycopg.Connection
) -> None:
    sequence_id = create(tenant)["id"]
    error_of(tenant.post(f"/sequences/{sequence_id}/activate"), 422, "steps[0]")  # no SMS sender yet
    tenant.sender("sms")
    error_of(tenant.post(f"/sequences/{sequence_id}/pause"), 409, "status", "conflict")
    error_of(tenant.post(f"/sequences/{sequence_id}/resume"), 409, "status")

    activated = tenant.post(f"/sequences/{sequence_id}/activate")
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "active" and activated.json()["activated_at"]
    error_of(tenant.post(f"/sequences/{sequence_id}/activate"), 409, "status")
    error_of(tenant.post(f"/sequences/{sequence_id}/resume"), 409, "status")

    paused = tenant.post(f"/sequences/{sequence_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = tenant.post(f"/sequences/{sequence_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"

    archived = tenant.post(f"/sequences/{sequence_id}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert archived.json()["archived_at"]
    before = snapshot(db, sequence_id)
    error_of(tenant.post(f"/sequences/{sequence_id}/activate"), 409, "status", "conflict")
    error_of(tenant.post(f"/sequences/{sequence_id}/archive"), 409, "status")
    error_of(tenant.post(f"/sequences/{sequence_id}/pause"), 409, "status")
    error_of(tenant.put(f"/sequences/{sequence_id}", definition()), 409, "status")
    error_of(tenant.patch(f"/sequences/{sequence_id}", {"name": "x"}), 409, "status")
    error_of(
        tenant.post(f"/sequences/{sequence_id}/steps", {"kind": "task", "task_description": "t"}),
        409,
        "status",
    )
    assert snapshot(db, sequence_id) == before
    kinds = db.execute(
        "SELECT kind FROM drumbeat.events WHERE sequence_id = %s AND kind LIKE 'sequence_%%' ORDER BY id",
        (sequence_id,),
    ).fetchall()
    assert [k["kind"] for k in kinds] == [
        "sequence_created",
        "sequence_activated",
        "sequence_paused",
        "sequence_resumed",
        "sequence_archived",
    ]


def test_activate_with_a_start_time_and_body_validation(tenant: ApiTenant, db: psycopg.Connection) -> None:
    tenant.sender("sms")
    sequence_id = create(tenant)["id"]
    error_of(
        tenant.post(f"/sequences/{sequence_id}/activate", {"scheduled_start_at": "2030-01-01T09:00:00"}),
        422,
        "scheduled_start_at",
    )
    error_of(
        tenant.post(f"/sequences/{sequence_id}/activate", {"start": "2030-01-01T09:00:00Z"}), 422, "start"
    )
    start = "2030-01-01T14:00:00+00:00"
    response = tenant.post(f"/sequences/{sequence_id}/activate", {"scheduled_start_at": start})
    assert response.status_code == 200, response.text
    assert dt.datetime.fromisoformat(response.json()["scheduled_start_at"]) == dt.datetime.fromisoformat(
        start
    )
    row = db.execute(
        "SELECT status, scheduled_start_at FROM drumbeat.sequences WHERE id = %s", (sequence_id,)
    )
    assert row.fetchone() == {"status": "active", "scheduled_start_at": dt.datetime.fromisoformat(start)}


def test_delete_archives_cancels_live_enrollments_and_is_idempotent(
    tenant: ApiTenant, db: psycopg.Connection, db_url: str
) -> None:
    tenant.sender("sms")
    sequence_id = create(tenant)["id"]
    assert tenant.post(f"/sequences/{sequence_id}/activate").status_code == 200
    enrollment_id = enroll(db_url, tenant, sequence_id, contact(db_url, tenant, first_name="Ann"))

    assert tenant.delete(f"/sequences/{sequence_id}").status_code == 204
    row = db.execute(
        "SELECT status, archived_at FROM drumbeat.sequences WHERE id = %s", (sequence_id,)
    ).fetchone()
    assert row["status"] == "archived" and row["archived_at"] is not None
    enrollment = db.execute(
        "SELECT status, exit_reason FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
    )
    assert enrollment.fetchone() == {"status": "cancelled", "exit_reason": "sequence_archived"}
    assert tenant.delete(f"/sequences/{sequence_id}").status_code == 204
    assert tenant.get(f"/sequences/{sequence_id}").json()["status"] == "archived"


def test_duplicate_copies_as_a_draft_with_new_step_ids(tenant: ApiTenant, db: psycopg.Connection) -> None:
    tenant.sender("sms")
    original = create(tenant)
    tenant.post(f"/sequences/{original['id']}/activate")

    copied = tenant.post(f"/sequences/{original['id']}/duplicate")
    assert copied.status_code == 201, copied.text
    body = copied.json()
    assert (
        body["id"] != original["id"] and body["name"] == "Cold outreach (copy)" and body["status"] == "draft"
    )
    assert [s["name"] for s in body["steps"]] == ["Intro", "Nudge", "Call"]
    assert not {s["id"] for s in body["steps"]} & {s["id"] for s in original["steps"]}
    assert body["settings"] == original["settings"]

    named = tenant.post(f"/sequences/{original['id']}/duplicate", {"name": "Variant B"})
    assert named.status_code == 201 and named.json()["name"] == "Variant B"
    error_of(tenant.post(f"/sequences/{original['id']}/duplicate", {"name": ""}), 422, "name")
    assert sequence_count(db) == 3


# ---------------------------------------------------------------------------------------------- steps


def test_steps_add_edit_delete_and_reorder(tenant: ApiTenant, db: psycopg.Connection) -> None:
    created = create(tenant)
    sequence_id = created["id"]
    path = f"/sequences/{sequence_id}/steps"
    listed = tenant.get(path)
    assert listed.status_code == 200 and listed.json() == created["steps"]
    one = tenant.get(f"{path}/{created['steps'][1]['id']}")
    assert one.status_code == 200 and one.json() == created["steps"][1]

    added = tenant.post(
        path, {"kind": "sms", "name": "Last", "delay": {"value": 1, "unit": "weeks"}, "body": "Bye"}
    )
    assert added.status_code == 201, added.text
    last = added.json()
    assert last["position"] == 4 and last["name"] == "Last" and last["delay"] == {"value": 1, "unit": "weeks"}
    first = tenant.post(
        path, {"kind": "task", "name": "Prepare", "task_description": "Research", "position": 1}
    )
    assert first.status_code == 201 and first.json()["position"] == 1
    assert [s["name"] for s in tenant.get(path).json()] == ["Prepare", "Intro", "Nudge", "Call", "Last"]
    error_of(tenant.post(path, {"kind": "task", "task_description": "x", "position": 7}), 422, "position")

    nudge_id = created["steps"][1]["id"]
    edited = tenant.patch(f"{path}/{nudge_id}", {"body": "Any news?", "send_at": None, "name": "Nudge 2"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["body"] == "Any news?" and edited.json()["send_at"] is None
    assert edited.json()["id"] == nudge_id and edited.json()["delay"] == {"value": 2, "unit": "days"}
    row = db.execute(
        "SELECT body, send_at FROM drumbeat.sequence_steps WHERE id = %s", (nudge_id,)
    ).fetchone()
    assert row == {"body": "Any news?", "send_at": None}

    assert tenant.delete(f"{path}/{created['steps'][2]['id']}").status_code == 204
    removed = db.execute(
        "SELECT removed_at FROM drumbeat.sequence_steps WHERE id = %s", (created["steps"][2]["id"],)
    ).fetchone()
    assert removed["removed_at"] is not None
    error_of(tenant.get(f"{path}/{created['steps'][2]['id']}"), 404, "step_id")

    current = [s["id"] for s in tenant.get(path).json()]
    reordered = tenant.post(f"{path}/reorder", {"step_ids": current[::-1]})
    assert reordered.status_code == 200, reordered.text
    assert [s["id"] for s in reordered.json()] == current[::-1]
    assert [str(s["id"]) for s in live_steps(db, sequence_id)] == current[::-1]
    assert tenant.get(f"/sequences/{sequence_id}").json()["version"] == 6

    error_of(tenant.post(f"{path}/reorder", {"step_ids": current[:-1]}), 422, "step_ids")
    error_of(tenant.post(f"{path}/reorder", {"step_ids": [*current[:-1], current[0]]}), 422, "step_ids")
    error_of(
        tenant.post(f"{path}/reorder", {"step_ids": [*current[:-1], str(uuid.uuid4())]}), 422, "step_ids"
    )
    error_of(tenant.delete(f"{path}/{uuid.uuid4()}"), 404, "step_id")
    error_of(tenant.patch(f"{path}/{uuid.uuid4()}", {"name": "x"}), 404, "step_id")


def test_step_edits_keep_live_enrollments_in_their_place(
    tenant: ApiTenant, db: psycopg.Connection, db_url: str
) -> None:
    tenant.sender("sms")
    created = create(tenant)
    sequence_id = created["id"]
    tenant.post(f"/sequences/{sequence_id}/activate")
    enrollment_id = enroll(db_url, tenant, sequence_id, contact(db_url, tenant, first_name="Ann"))
    waiting_on = db.execute(
        "SELECT current_step_id FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
    )
    assert str(waiting_on.fetchone()["current_step_id"]) == created["steps"][0]["id"]

    ids = [s["id"] for s in created["steps"]]
    assert (
        tenant.post(
            f"/sequences/{sequence_id}/steps/reorder", {"step_ids": [ids[2], ids[1], ids[0]]}
        ).status_code
        == 200
    )
    assert (
        tenant.post(
            f"/sequences/{sequence_id}/steps", {"kind": "task", "task_description": "t", "position": 1}
        ).status_code
        == 201
    )
    row = db.execute(
        "SELECT current_step_id, status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)
    )
    assert row.fetchone() == {"current_step_id": uuid.UUID(ids[0]), "status": "active"}

    # removing the step it waits on moves it to the step that now follows (none here: it ends)
    assert tenant.delete(f"/sequences/{sequence_id}/steps/{ids[0]}").status_code == 204
    row = db.execute("SELECT status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)).fetchone()
    assert row["status"] in ("completed", "cancelled")


def test_conditions_follow_the_steps_they_look_at(tenant: ApiTenant, db: psycopg.Connection) -> None:
    created = create(tenant, BRANCHING)
    sequence_id, ids = created["id"], [s["id"] for s in created["steps"]]
    path = f"/sequences/{sequence_id}/steps"

    assert (
        tenant.post(path, {"kind": "task", "name": "Z", "task_description": "z", "position": 1}).status_code
        == 201
    )
    condition = tenant.get(f"{path}/{ids[2]}").json()
    assert condition["position"] == 4
    assert condition["condition"]["step"] == 2 and condition["else"] == {"goto": 6}

    # the step a goto jumps to is removed: the goto lands on the step that now follows it (here: none, so exit)
    assert tenant.delete(f"{path}/{ids[4]}").status_code == 204
    condition = tenant.get(f"{path}/{ids[2]}").json()
    assert condition["else"] == "exit" and condition["condition"]["step"] == 2

    # the step a condition looks at cannot go; nothing changes
    before = snapshot(db, sequence_id)
    error_of(tenant.delete(f"{path}/{ids[0]}"), 409, "step_id", "conflict")
    assert snapshot(db, sequence_id) == before

    # a reorder that makes the condition look forward is refused by the contract
    current = [s["id"] for s in tenant.get(path).json()]
    moved = [current[0], ids[2], *[i for i in current[1:] if i != ids[2]]]
    error_of(tenant.post(f"{path}/reorder", {"step_ids": moved}), 422, "steps[1].condition.step")
    assert snapshot(db, sequence_id) == before


def test_step_validation_names_the_field_and_changes_nothing(
    tenant: ApiTenant, db: psycopg.Connection
) -> None:
    created = create(tenant)
    sequence_id = created["id"]
    path = f"/sequences/{sequence_id}/steps"
    before = snapshot(db, sequence_id)
    error_of(tenant.post(path, {"kind": "fax", "body": "x"}), 422, "kind")
    error_of(tenant.post(path, {"kind": "sms", "body": "{{ contact.first_name "}), 422, "steps[3].body")
    error_of(tenant.post(path, {"kind": "sms", "body": "ok", "position": 1, "colour": 1}), 422, "colour")
    error_of(tenant.post(path, {"kind": "email", "subject": "s", "body": "b"}), 422, "steps[3].kind")
    error_of(tenant.patch(f"{path}/{created['steps'][1]['id']}", {"body": "{% if %}"}), 422, "steps[1].body")
    error_of(
        tenant.patch(f"{path}/{created['steps'][1]['id']}", {"delay": {"value": 30, "unit": "seconds"}}),
        422,
        "delay.unit",
    )
    error_of(
        tenant.patch(f"{path}/{created['steps'][1]['id']}", {"send_at": "25:00"}), 422, "steps[1].send_at"
    )
    error_of(tenant.patch(f"{path}/{created['steps'][1]['id']}", {"position": 1}), 422, "position")
    error_of(tenant.post(f"{path}/reorder", {"step_ids": "all"}), 422, "step_ids")
    assert snapshot(db, sequence_id) == before

    only = create(tenant, definition(steps=[{"kind": "sms", "body": "only"}]))
    error_of(tenant.delete(f"/sequences/{only['id']}/steps/{only['steps'][0]['id']}"), 409, "step_id")


# ---------------------------------------------------------------------------------------------- 422 at create


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["steps"][1].update(kind="fax"), "steps[1].kind"),
        (lambda d: d["steps"][1].update(delay={"value": 30, "unit": "seconds"}), "steps[1].delay.unit"),
        (lambda d: d["steps"][1].update(delay={"value": 0.5, "unit": "minutes"}), "steps[1].delay.value"),
        (lambda d: d["settings"].update(timezone="Mars/Olympus_Mons"), "settings.timezone"),
        (lambda d: d["steps"][1].update(body="Hi {{ contact.first_name }"), "steps[1].body"),
        (lambda d: d["steps"][0].update(body="{% for x in contact %}no end"), "steps[0].body"),
        (
            lambda d: d["steps"][0].update(body="Hi {{ contakt.first_name }}"),
            "steps[0].body",
        ),  # SQL: unknown variable
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["steps"][2].update(colour="red"), "steps[2].colour"),
        (lambda d: d["settings"].update(send_on_sundays=True), "settings.send_on_sundays"),
        (lambda d: d.update(channel="fax"), "channel"),
        (lambda d: d.update(steps=[]), "steps"),
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(name="   "), "name"),
        (lambda d: d["steps"][1].update(send_at="10am"), "steps[1].send_at"),
        (
            lambda d: d["settings"].update(quiet_hours={"start": "21:00", "end": "08:00"}),
            "settings.quiet_hours.end",
        ),
        (lambda d: d["steps"][0].update(kind="email", subject="Hi"), "steps[0].kind"),
    ],
)
def test_create_rejects_bad_input_naming_the_field(
    tenant: ApiTenant, db: psycopg.Connection, change, field
) -> None:
    body = definition()
    change(body)
    error = error_of(tenant.post("/sequences", body), 422, code="invalid")
    assert error["field"] == field or names(error, field), error
    assert sequence_count(db) == 0


def test_broken_template_in_a_variant_and_html_are_named(tenant: ApiTenant, db: psycopg.Connection) -> None:
    body = copy.deepcopy(BRANCHING)
    body["steps"][4]["variants"] = [
        {"key": "A", "weight": 1, "subject": "ok"},
        {"key": "B", "weight": 1, "body": "{{ x"},
    ]
    error = error_of(tenant.post("/sequences", body), 422, "steps[4].variants[1].body")
    assert "template" in error["message"]
    body["steps"][4]["variants"] = []
    body["steps"][4]["html_body"] = "<p>{% endif %}</p>"
    error_of(tenant.post("/sequences", body), 422, "steps[4].html_body")
    body["steps"][4]["html_body"] = (
        "<p>{{ contact.first_name * 100000 }}</p>"  # compiles; the worker's limits apply when rendering
    )
    assert tenant.post("/sequences", body).status_code == 201
    assert sequence_count(db) == 1


# ---------------------------------------------------------------------------------------------- stats and preview


def test_stats_shape(tenant: ApiTenant, db_url: str) -> None:
    tenant.sender("sms")
    created = create(tenant)
    tenant.post(f"/sequences/{created['id']}/activate")
    enroll(db_url, tenant, created["id"], contact(db_url, tenant))
    response = tenant.get(f"/sequences/{created['id']}/stats")
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["sequence_id"] == created["id"] and stats["replied"] == 0
    assert stats["enrollments"]["total"] == 1
    assert sum(v for k, v in stats["enrollments"].items() if k != "total") == 1
    assert set(stats["enrollments"]) == {
        "scheduled", "active", "paused", "completed", "replied", "bounced", "unsubscribed", "cancelled", "failed", "total"
    }  # fmt: skip
    assert [s["step_id"] for s in stats["steps"]] == [s["id"] for s in created["steps"]]
    assert stats["steps"][0] == {
        "step_id": created["steps"][0]["id"],
        "position": 1,
        "kind": "sms",
        "name": "Intro",
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "unknown": 0,
        "opened": 0,
        "clicked": 0,
        "replied": 0,
        "delivery_rate": None,
        "open_rate": None,
        "click_rate": None,
        "reply_rate": None,
        "variants": [],
        "tasks": None,
    }


def test_preview_shape(tenant: ApiTenant, other_tenant: ApiTenant, db_url: str) -> None:
    created = create(tenant)
    contact_id = contact(db_url, tenant, first_name="Ann", timezone="America/New_York")
    start = "2030-01-07T15:00:00Z"  # a Monday, 10:00 in New York
    response = tenant.get(
        f"/sequences/{created['id']}/preview", params={"contact_id": contact_id, "start_at": start}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["sequence_id"] == created["id"] and preview["contact_id"] == contact_id
    steps = preview["steps"]
    assert [(s["position"], s["step_id"], s["kind"]) for s in steps] == [
        (s["position"], s["id"], s["kind"]) for s in created["steps"]
    ]
    planned = [dt.datetime.fromisoformat(s["planned_at"]) for s in steps]
    assert planned == sorted(planned) and planned[0] >= dt.datetime.fromisoformat(start)
    assert planned[1].astimezone(dt.timezone(dt.timedelta(hours=-5))).strftime("%H:%M") == "10:00"  # send_at

    without_offset = tenant.get(
        f"/sequences/{created['id']}/preview",
        params={"contact_id": contact_id, "start_at": "2030-01-07T15:00:00"},
    )
    assert without_offset.json() == preview  # read as UTC
    error_of(tenant.get(f"/sequences/{created['id']}/preview"), 422, "contact_id")
    error_of(
        tenant.get(f"/sequences/{created['id']}/preview", params={"contact_id": "nope"}), 422, "contact_id"
    )
    theirs = contact(db_url, other_tenant)
    error_of(
        tenant.get(f"/sequences/{created['id']}/preview", params={"contact_id": theirs}), 404, "contact_id"
    )
    error_of(tenant.get(f"/sequences/{created['id']}/preview", params={"contact_id": str(uuid.uuid4())}), 404)


# ---------------------------------------------------------------------------------------------- tenancy


def test_another_tenants_sequence_is_a_404_on_every_endpoint_and_nothing_changes(
    tenant: ApiTenant, other_tenant: ApiTenant, db: psycopg.Connection, db_url: str
) -> None:
    other_tenant.sender("sms")
    theirs = create(other_tenant)
    sid, step_id = theirs["id"], theirs["steps"][0]["id"]
    my_contact = contact(db_url, tenant)
    before = snapshot(db, sid)

    calls = [
        ("get", f"/sequences/{sid}", None),
        ("put", f"/sequences/{sid}", definition()),
        ("patch", f"/sequences/{sid}", {"name": "Mine now"}),
        ("delete", f"/sequences/{sid}", None),
        ("post", f"/sequences/{sid}/activate", None),
        ("post", f"/sequences/{sid}/pause", None),
        ("post", f"/sequences/{sid}/resume", None),
        ("post", f"/sequences/{sid}/archive", None),
        ("post", f"/sequences/{sid}/duplicate", {"name": "Stolen"}),
        ("get", f"/sequences/{sid}/stats", None),
        ("get", f"/sequences/{sid}/preview?contact_id={my_contact}", None),
        ("get", f"/sequences/{sid}/steps", None),
        ("post", f"/sequences/{sid}/steps", {"kind": "task", "task_description": "t"}),
        ("get", f"/sequences/{sid}/steps/{step_id}", None),
        ("patch", f"/sequences/{sid}/steps/{step_id}", {"name": "x"}),
        ("delete", f"/sequences/{sid}/steps/{step_id}", None),
        ("post", f"/sequences/{sid}/steps/reorder", {"step_ids": [s["id"] for s in theirs["steps"]]}),
    ]
    for method, path, body in calls:
        kwargs = {} if body is None else {"json": body}
        response = getattr(tenant.client, method)(f"/api/v1{path}", headers=tenant.headers, **kwargs)
        error_of(response, 404, "sequence_id", "not_found")
    # with a broken template too: the id is looked at first
    broken = definition()
    broken["steps"][0]["body"] = "{{ x"
    error_of(tenant.put(f"/sequences/{sid}", broken), 404, "sequence_id")
    # their step under my sequence
    mine = create(tenant)
    error_of(tenant.patch(f"/sequences/{mine['id']}/steps/{step_id}", {"name": "x"}), 404, "step_id")
    error_of(tenant.delete(f"/sequences/{mine['id']}/steps/{step_id}"), 404, "step_id")
    error_of(
        tenant.post(
            f"/sequences/{mine['id']}/steps/reorder",
            {"step_ids": [step_id, *[s["id"] for s in mine["steps"][1:]]]},
        ),
        422,
        "step_ids",
    )
    put_theirs = definition()
    put_theirs["steps"][0]["id"] = step_id
    error_of(tenant.put(f"/sequences/{mine['id']}", put_theirs), 422, "steps[0].id")

    assert snapshot(db, sid) == before
    assert tenant.get("/sequences").json()["total"] == 1
    assert sequence_count(db) == 2
    error_of(
        tenant.get("/sequences", params={"workspace_id": other_tenant.workspace_id}), 404, "workspace_id"
    )
    error_of(tenant.post("/sequences", definition(), params={"workspace_id": other_tenant.workspace_id}), 404)


def test_concurrent_step_edits_serialize_on_the_sequence_row(tenant: ApiTenant, db_url: str) -> None:
    """Two step additions racing: each reads the definition only once it holds the sequence's row lock, so
    neither write drops the other's step (without the lock both would read 3 steps and the second
    update_sequence would remove the first's new step as "left out")."""
    sequence_id = create(tenant)["id"]
    results: list[int] = []

    def add(name: str) -> None:
        response = tenant.post(
            f"/sequences/{sequence_id}/steps", {"kind": "task", "name": name, "task_description": name}
        )
        results.append(response.status_code)

    with psycopg.connect(db_url) as holder:  # holds the row lock while both requests start
        holder.execute("SELECT 1 FROM drumbeat.sequences WHERE id = %s FOR UPDATE", (sequence_id,))
        threads = [threading.Thread(target=add, args=(name,)) for name in ("X", "Y")]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert results == []  # both are waiting for the lock
        holder.commit()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [201, 201]
    names = [s["name"] for s in tenant.get(f"/sequences/{sequence_id}/steps").json()]
    assert names[:3] == ["Intro", "Nudge", "Call"] and sorted(names[3:]) == ["X", "Y"]


def test_nul_characters_and_far_future_instants_are_not_server_errors(
    tenant: ApiTenant, db: psycopg.Connection, db_url: str
) -> None:
    body = definition()
    body["steps"][1]["body"] = "a\x00b"
    error_of(tenant.post("/sequences", body), 422, "steps[1].body")
    assert sequence_count(db) == 0
    created = create(tenant)
    error_of(tenant.patch(f"/sequences/{created['id']}", {"name": "a\x00b"}), 422, "name")
    error_of(tenant.post(f"/sequences/{created['id']}/duplicate", {"name": "a\x00b"}), 422, "name")
    error_of(
        tenant.patch(f"/sequences/{created['id']}/steps/{created['steps'][0]['id']}", {"name": "\x00"}),
        422,
        "steps[0].name",
    )
    contact_id = contact(db_url, tenant)
    far = tenant.get(
        f"/sequences/{created['id']}/preview",
        params={"contact_id": contact_id, "start_at": "9999-12-31T23:00:00Z"},
    )
    assert far.status_code == 200, far.text
    assert far.json()["steps"][-1]["planned_at"] is None  # past the year 9999
    assert tenant.get(f"/sequences/{created['id']}").json()["version"] == 1


def test_an_ab_test_and_a_link_condition_over_http(tenant: ApiTenant, db_url: str) -> None:
    tenant.sender("sms")
    opener = {
        "kind": "sms",
        "name": "Opener",
        "body": "Hi",
        "variants": [{"key": "A", "weight": 1, "body": "Hi"}, {"key": "B", "weight": 1, "body": "Hey"}],
    }
    clicked = {"if": "clicked", "step": 1, "link": "https://acme.example/pricing"}
    body = {
        "name": "AB",
        "channel": "sms",
        "steps": [opener, {"kind": "condition", "condition": clicked, "then": "exit", "else": "continue"}],
    }
    bad = copy.deepcopy(body)
    bad["steps"][1]["condition"]["link"] = "pricing"
    error = tenant.post("/sequences", bad)
    assert (error.status_code, error.json()["error"]["field"]) == (422, "steps[1].condition.link"), error.text
    by_name = copy.deepcopy(body)
    by_name["steps"][1]["condition"] = {"if": "clicked", "step": 1, "link_name": "pricing page"}
    assert create(tenant, by_name)["steps"][1]["condition"]["link_name"] == "pricing page"
    by_name["steps"][1]["condition"]["link_name"] = "pricing/page"
    error = tenant.post("/sequences", by_name)
    assert (error.status_code, error.json()["error"]["field"]) == (422, "steps[1].condition.link_name"), (
        error.text
    )
    created = create(tenant, body)
    assert created["steps"][1]["condition"]["link"] == "https://acme.example/pricing"
    tenant.post(f"/sequences/{created['id']}/activate")
    for _ in range(24):  # variants are drawn by weight: 24 make a run without a B a one-in-8-million event
        enroll(db_url, tenant, created["id"], contact(db_url, tenant))
    dispatch(db_url)
    stats = tenant.get(f"/sequences/{created['id']}/stats").json()
    variants = stats["steps"][0]["variants"]
    assert [v["key"] for v in variants] == ["A", "B"] and sum(v["sent"] for v in variants) == 24
    assert variants[0]["versus_control"] is None and variants[1]["versus_control"]["control"] == "A"
