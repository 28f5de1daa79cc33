"""The enrollment, task and event endpoints on the real app and database: enroll one contact or many
(per-contact outcomes), list with filters, pages and totals, detail with deliveries and timeline, pause,
resume, cancel, skip (409 on illegal transitions), tasks created by a real dispatcher run and completed,
engagement events ending enrollments; 422 naming the field; 404 (nothing changed) for another tenant's
ids. Contacts and sequences are made through the SQL contract acting as the tenant's owner."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.api import ApiTenant, Contract, dispatch

CALL_FIRST = {
    "name": "Calls first",
    "channel": "sms",
    "steps": [
        {
            "kind": "call",
            "name": "Intro call",
            "delay": {"value": 0, "unit": "minutes"},
            "task_description": "Ring {{ contact.first_name }}{% if enrollment.metadata.deal is defined %}"
            " about {{ enrollment.metadata.deal }}{% endif %}",
        },
        {"kind": "sms", "name": "Thanks", "delay": {"value": 1, "unit": "days"}, "body": "Thanks!"},
    ],
}
OUTCOMES = ("enrolled", "already_enrolled", "opted_out", "unreachable", "not_found")


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """The test database as its owner (RLS bypassed), autocommit: to look at what the API wrote."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


@pytest.fixture
def mine(db_url: str, tenant: ApiTenant) -> Contract:
    contract = Contract(db_url, tenant)
    contract.sender("sms", "+15550000001")
    contract.sender("email", "team@example.com")
    return contract


@pytest.fixture
def theirs(db_url: str, other_tenant: ApiTenant) -> Contract:
    contract = Contract(db_url, other_tenant)
    contract.sender("sms", "+15550000002")
    return contract


def error_of(response, status: int, field: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if field is not None:
        assert error["field"] == field, error
    if code is not None:
        assert error["code"] == code, error
    return error


def enroll(tenant: ApiTenant, sequence_id: str, contact_id: str, **options) -> dict:
    response = tenant.post("/enrollments", {"sequence_id": sequence_id, "contact_id": contact_id, **options})
    assert response.status_code == 201, response.text
    return response.json()


def enrollment_row(db: psycopg.Connection, enrollment_id: str) -> dict | None:
    return db.execute("SELECT * FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,)).fetchone()


def count(db: psycopg.Connection, table: str, workspace_id: str) -> int:
    return db.execute(
        f"SELECT count(*) AS n FROM drumbeat.{table} WHERE workspace_id = %s", (workspace_id,)
    ).fetchone()["n"]


def snapshot(db: psycopg.Connection, workspace_id: str) -> dict:
    """What a refused request must leave untouched."""
    return {
        "enrollments": db.execute(
            "SELECT id, status, current_step_id, next_action_at, paused_at, exit_reason, updated_at"
            " FROM drumbeat.enrollments WHERE workspace_id = %s ORDER BY id",
            (workspace_id,),
        ).fetchall(),
        "tasks": db.execute(
            "SELECT id, status, outcome FROM drumbeat.tasks WHERE workspace_id = %s ORDER BY id",
            (workspace_id,),
        ).fetchall(),
        "events": count(db, "events", workspace_id),
        "contacts": db.execute(
            "SELECT id, sms_opted_out_at, email_opted_out_at FROM drumbeat.contacts WHERE workspace_id = %s"
            " ORDER BY id",
            (workspace_id,),
        ).fetchall(),
    }


# ---------------------------------------------------------------------------------------------- enroll one


def test_enroll_one_returns_201_with_the_enrollment(tenant, mine, db):
    sequence_id = mine.sequence()
    contact_id = mine.contact(first_name="Ada")
    body = enroll(
        tenant, sequence_id, contact_id, assigned_to=tenant.user_id, metadata={"source": "crm", "score": 7}
    )
    assert body["sequence_id"] == sequence_id and body["contact_id"] == contact_id
    assert body["workspace_id"] == tenant.workspace_id
    assert body["status"] == "active" and body["current_step_position"] == 1
    assert body["sequence_name"] == "Cold outreach"
    assert body["assigned_to"] == tenant.user_id and body["metadata"] == {"source": "crm", "score": 7}
    assert body["next_action_at"] is not None and body["completed_at"] is None
    row = enrollment_row(db, body["id"])
    assert (row["status"], str(row["contact_id"]), row["metadata"]) == (
        "active",
        contact_id,
        body["metadata"],
    )


def test_enroll_one_in_the_future_is_scheduled_and_can_start_at_a_later_step(tenant, mine, db):
    sequence_id = mine.sequence()
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    body = enroll(tenant, sequence_id, mine.contact(), start_at=start.isoformat(), start_at_step=2)
    assert body["status"] == "scheduled" and body["current_step_position"] == 2
    assert dt.datetime.fromisoformat(body["next_action_at"]) >= start
    assert enrollment_row(db, body["id"])["status"] == "scheduled"


def test_enroll_one_that_is_not_enrolled_says_why_and_writes_nothing(tenant, mine, theirs, db):
    sequence_id = mine.sequence()
    enrolled = enroll(tenant, sequence_id, already := mine.contact())
    opted_out = mine.contact()
    db.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (opted_out,))
    email_only = mine.contact(phone=None, email="grace@example.com")
    before = snapshot(db, tenant.workspace_id)

    error = error_of(
        tenant.post("/enrollments", {"sequence_id": sequence_id, "contact_id": already}),
        409,
        "contact_id",
        "already_enrolled",
    )
    assert enrolled["id"] in error["message"]
    for contact_id, status, code in [
        (opted_out, 422, "opted_out"),
        (email_only, 422, "unreachable"),
        (str(uuid.uuid4()), 404, "not_found"),
        (theirs.contact(), 404, "not_found"),
    ]:
        response = tenant.post("/enrollments", {"sequence_id": sequence_id, "contact_id": contact_id})
        error_of(response, status, "contact_id", code)
    assert snapshot(db, tenant.workspace_id) == before


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"contact_id": "not-a-uuid"}, 422, "contact_id"),
        ({"start_at_step": 0}, 422, "start_at_step"),
        ({"start_at_step": 9}, 422, "start_at_step"),
        ({"start_at": "2030-01-01T10:00:00"}, 422, "start_at"),  # no UTC offset
        ({"assigned_to": "00000000-0000-4000-8000-000000000000"}, 422, "assigned_to"),
        ({"metadata": ["a"]}, 422, "metadata"),
        ({"nickname": "x"}, 422, None),
        ({"sequence_id": None}, 422, "sequence_id"),
    ],
)
def test_enroll_bad_input_is_422_naming_the_field(tenant, mine, db, change, status, field):
    body = {"sequence_id": mine.sequence(), "contact_id": mine.contact(), **change}
    error_of(tenant.post("/enrollments", body), status, field, "invalid")
    assert count(db, "enrollments", tenant.workspace_id) == 0


def test_enroll_in_a_draft_sequence_is_409_and_in_another_tenants_is_404(tenant, mine, theirs, db):
    draft = mine.sequence(activate=False)
    contact_id = mine.contact()
    body = {"sequence_id": draft, "contact_id": contact_id}
    error_of(tenant.post("/enrollments", body), 409, "sequence_id", "conflict")
    error_of(
        tenant.post("/enrollments/bulk", {**body, "contact_ids": [contact_id]} | {"contact_id": None}), 422
    )
    their_sequence = theirs.sequence()
    error_of(
        tenant.post("/enrollments", {"sequence_id": their_sequence, "contact_id": contact_id}),
        404,
        "sequence_id",
        "not_found",
    )
    error_of(
        tenant.post("/enrollments/bulk", {"sequence_id": their_sequence, "contact_ids": [contact_id]}),
        404,
        "sequence_id",
    )
    assert count(db, "enrollments", tenant.workspace_id) == 0
    assert count(db, "enrollments", theirs.tenant.workspace_id) == 0


# ---------------------------------------------------------------------------------------------- bulk


def test_bulk_gives_an_outcome_per_contact_and_a_summary(tenant, mine, theirs, db):
    sequence_id = mine.sequence()
    fresh = [mine.contact(), mine.contact()]
    already = mine.contact()
    live = enroll(tenant, sequence_id, already)
    opted_out = mine.contact()
    db.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (opted_out,))
    email_only = mine.contact(phone=None, email="lin@example.com")
    missing, foreign = str(uuid.uuid4()), theirs.contact()
    ids = [fresh[0], already, opted_out, email_only, missing, foreign, fresh[1], fresh[0]]

    response = tenant.post(
        "/enrollments/bulk",
        {
            "sequence_id": sequence_id,
            "contact_ids": ids,
            "metadata": {"batch": 1},
            "assigned_to": tenant.user_id,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {
        "enrolled": 2,
        "already_enrolled": 1,
        "opted_out": 1,
        "unreachable": 1,
        "not_found": 2,
    }
    results = body["results"]
    assert [(r["contact_id"], r["outcome"]) for r in results] == [
        (fresh[0], "enrolled"),
        (already, "already_enrolled"),
        (opted_out, "opted_out"),
        (email_only, "unreachable"),
        (missing, "not_found"),
        (foreign, "not_found"),
        (fresh[1], "enrolled"),
    ]
    assert results[1]["enrollment_id"] == live["id"]
    assert all(r["enrollment_id"] is None for r in results[2:6])
    for result in (results[0], results[6]):
        row = enrollment_row(db, result["enrollment_id"])
        assert (str(row["contact_id"]), row["metadata"], str(row["assigned_to"])) == (
            result["contact_id"],
            {"batch": 1},
            tenant.user_id,
        )
    assert count(db, "enrollments", tenant.workspace_id) == 3
    assert count(db, "enrollments", theirs.tenant.workspace_id) == 0


def test_bulk_where_nobody_is_enrolled_is_still_200(tenant, mine):
    response = tenant.post(
        "/enrollments/bulk", {"sequence_id": mine.sequence(), "contact_ids": [str(uuid.uuid4())]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["summary"] == dict.fromkeys(OUTCOMES, 0) | {"not_found": 1}


@pytest.mark.parametrize(
    ("contact_ids", "field"),
    [([], "contact_ids"), (["nope"], "contact_ids[0]"), ("too many", "contact_ids"), (None, "contact_ids")],
)
def test_bulk_bad_input_is_422(tenant, mine, db, contact_ids, field):
    if contact_ids == "too many":
        contact_ids = [str(uuid.uuid4()) for _ in range(10_001)]
    response = tenant.post("/enrollments/bulk", {"sequence_id": mine.sequence(), "contact_ids": contact_ids})
    error_of(response, 422, field, "invalid")
    assert count(db, "enrollments", tenant.workspace_id) == 0


# ---------------------------------------------------------------------------------------------- list


def test_list_filters_pages_and_totals(tenant, other_tenant, mine, db):
    first, second = mine.sequence(), mine.sequence(CALL_FIRST)
    contacts = [mine.contact() for _ in range(5)]
    in_first = [enroll(tenant, first, c)["id"] for c in contacts]
    assigned = enroll(tenant, second, contacts[0], assigned_to=tenant.user_id)["id"]
    in_second = [assigned, enroll(tenant, second, contacts[1])["id"]]
    assert tenant.post(f"/enrollments/{in_first[2]}/pause").status_code == 200

    everything = tenant.get("/enrollments").json()
    assert (everything["total"], everything["page"], everything["page_size"]) == (7, 1, 50)
    newest_first = [*reversed(in_first + in_second)]
    assert [e["id"] for e in everything["items"]] == newest_first

    pages = [tenant.get("/enrollments", params={"page": p, "page_size": 3}).json() for p in (1, 2, 3, 4)]
    assert [len(p["items"]) for p in pages] == [3, 3, 1, 0]
    assert all(p["total"] == 7 and p["page_size"] == 3 for p in pages)
    assert [e["id"] for p in pages for e in p["items"]] == newest_first

    def ids(**params) -> tuple[int, list[str]]:
        response = tenant.get("/enrollments", params=params)
        assert response.status_code == 200, response.text
        return response.json()["total"], [e["id"] for e in response.json()["items"]]

    assert ids(sequence_id=first) == (5, [*reversed(in_first)])
    assert ids(sequence_id=second, page_size=1) == (2, [in_second[1]])
    assert ids(contact_id=contacts[0]) == (2, [assigned, in_first[0]])
    assert ids(contact_id=contacts[0], sequence_id=first) == (1, [in_first[0]])
    assert ids(status="paused") == (1, [in_first[2]])
    assert ids(status="active", sequence_id=first) == (4, [i for i in reversed(in_first) if i != in_first[2]])
    assert ids(assigned_to=tenant.user_id) == (1, [assigned])
    assert ids(assigned_to=tenant.user_id, contact_id=contacts[0], status="active") == (1, [assigned])
    assert ids(status="completed") == (0, [])
    assert ids(page=9, sequence_id=first) == (5, [])

    # Another tenant sees none of them, whatever it filters on.
    for params in ({}, {"sequence_id": first}, {"contact_id": contacts[0]}):
        page = other_tenant.get("/enrollments", params=params)
        assert page.status_code == 200 and page.json()["total"] == 0 and page.json()["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": 501}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
        ({"status": "sleeping"}, "status"),
        ({"sequence_id": "not-a-uuid"}, "sequence_id"),
        ({"contact_id": "42"}, "contact_id"),
        ({"assigned_to": "me"}, "assigned_to"),
    ],
)
def test_list_bad_query_is_422_naming_it(tenant, params, field):
    error_of(tenant.get("/enrollments", params=params), 422, field, "invalid")


# ---------------------------------------------------------------------------------------------- detail


def test_detail_has_deliveries_and_the_timeline(tenant, mine, db_url):
    sequence_id = mine.sequence()
    enrollment = enroll(tenant, sequence_id, mine.contact(first_name="Ada"))
    dispatch(db_url)

    response = tenant.get(f"/enrollments/{enrollment['id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == enrollment["id"] and body["current_step_position"] == 2
    [delivery] = body["deliveries"]
    assert delivery["status"] == "sent" and delivery["channel"] == "sms"
    assert delivery["to_address"].startswith("+1555") and delivery["sent_at"] is not None
    assert delivery["attempt"] == 1 and delivery["step_position"] == 1 and delivery["error_code"] is None
    kinds = [e["kind"] for e in body["events"]]
    assert kinds[0] == "enrolled" and "sent" in kinds, kinds
    assert all(isinstance(e["payload"], dict) for e in body["events"])

    error_of(tenant.get(f"/enrollments/{uuid.uuid4()}"), 404, "enrollment_id", "not_found")
    # A malformed id matches no route (as everywhere in the API): 404, never a 500.
    error_of(tenant.get("/enrollments/not-a-uuid"), 404, None, "not_found")
    error_of(tenant.post("/enrollments/123/pause"), 404, None, "not_found")


# ---------------------------------------------------------------------------------------------- transitions


def test_pause_resume_skip_cancel_and_409_on_illegal_transitions(tenant, mine, db):
    enrollment_id = enroll(tenant, mine.sequence(), mine.contact())["id"]

    error_of(tenant.post(f"/enrollments/{enrollment_id}/resume"), 409, "status", "conflict")
    paused = tenant.post(f"/enrollments/{enrollment_id}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused" and paused.json()["next_action_at"] is None
    assert enrollment_row(db, enrollment_id)["paused_at"] is not None
    error = error_of(tenant.post(f"/enrollments/{enrollment_id}/pause"), 409, "status", "conflict")
    assert "paused" in error["message"]

    resumed = tenant.post(f"/enrollments/{enrollment_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert resumed.json()["next_action_at"] is not None

    error_of(tenant.post(f"/enrollments/{enrollment_id}/skip", {"position": 1}), 422, "position", "invalid")
    error_of(tenant.post(f"/enrollments/{enrollment_id}/skip", {"position": 0}), 422, "position")
    error_of(tenant.post(f"/enrollments/{enrollment_id}/skip", {}), 422)
    skipped = tenant.post(f"/enrollments/{enrollment_id}/skip", {"position": 3})
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["current_step_position"] == 3 and skipped.json()["status"] == "active"

    error_of(tenant.post(f"/enrollments/{enrollment_id}/cancel", {"reason": ""}), 422, "reason")
    error_of(tenant.post(f"/enrollments/{enrollment_id}/cancel", {"why": "x"}), 422)
    cancelled = tenant.post(f"/enrollments/{enrollment_id}/cancel", {"reason": "  asked us to stop "})
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["exit_reason"]) == ("cancelled", "asked us to stop")
    row = enrollment_row(db, enrollment_id)
    assert (row["status"], row["completed_at"] is not None) == ("cancelled", True)

    for action, body in [("pause", None), ("resume", None), ("cancel", None), ("skip", {"position": 3})]:
        error_of(tenant.post(f"/enrollments/{enrollment_id}/{action}", body), 409, "status", "conflict")
    kinds = [e["kind"] for e in tenant.get(f"/enrollments/{enrollment_id}").json()["events"]]
    assert kinds == ["enrolled", "paused", "resumed", "skipped", "exited"], kinds


def test_cancel_without_a_body_uses_the_default_reason(tenant, mine):
    enrollment_id = enroll(tenant, mine.sequence(), mine.contact())["id"]
    response = tenant.post(f"/enrollments/{enrollment_id}/cancel")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["exit_reason"]) == ("cancelled", "cancelled")


def test_another_tenants_enrollment_is_404_everywhere_and_unchanged(tenant, other_tenant, mine, db):
    enrollment_id = enroll(tenant, mine.sequence(), mine.contact())["id"]
    before = snapshot(db, tenant.workspace_id)
    error_of(other_tenant.get(f"/enrollments/{enrollment_id}"), 404, "enrollment_id", "not_found")
    for action, body in [
        ("pause", None),
        ("resume", None),
        ("cancel", {"reason": "x"}),
        ("skip", {"position": 2}),
    ]:
        error_of(
            other_tenant.post(f"/enrollments/{enrollment_id}/{action}", body),
            404,
            "enrollment_id",
            "not_found",
        )
    assert snapshot(db, tenant.workspace_id) == before


# ---------------------------------------------------------------------------------------------- tasks


def test_tasks_from_a_call_step_are_listed_and_completed(tenant, mine, db, db_url):
    sequence_id = mine.sequence(CALL_FIRST)
    ada = mine.contact(first_name="Ada", last_name="Lovelace", email="ada@example.com", company="Analytical")
    bo = mine.contact(first_name="Bo")
    ada_enrollment = enroll(
        tenant, sequence_id, ada, assigned_to=tenant.user_id, metadata={"deal": "the renewal"}
    )["id"]
    bo_enrollment = enroll(tenant, sequence_id, bo)["id"]
    dispatch(db_url)

    listed = tenant.get("/tasks")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert (page["total"], page["page"], page["page_size"]) == (2, 1, 50)
    assert {t["enrollment_id"] for t in page["items"]} == {ada_enrollment, bo_enrollment}
    task = next(t for t in page["items"] if t["enrollment_id"] == ada_enrollment)
    assert (task["kind"], task["title"], task["description"], task["status"]) == (
        "call",
        "Intro call",
        "Ring Ada about the renewal",  # rendered for the contact, as a message would be
        "pending",
    )
    assert task["description_template"].startswith("Ring {{ contact.first_name }}")
    assert (task["sequence_name"], task["step_name"]) == ("Calls first", "Intro call")
    contact = task["contact"]
    assert (contact["first_name"], contact["last_name"], contact["email"], contact["company"]) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
        "Analytical",
    )
    assert contact["phone"].startswith("+1555")
    assert tenant.get(f"/tasks/{task['id']}").json() == task
    assert task["sequence_id"] == sequence_id and task["contact_id"] == ada
    assert task["assigned_to"] == tenant.user_id

    def total(**params) -> int:
        response = tenant.get("/tasks", params=params)
        assert response.status_code == 200, response.text
        return response.json()["total"]

    due = dt.datetime.fromisoformat(task["due_at"])
    assert total(assigned_to=tenant.user_id) == 1
    assert total(status="pending") == 2 and total(status="completed") == 0
    assert total(due_before=(due + dt.timedelta(seconds=1)).isoformat()) == 2
    assert total(due_before=due.isoformat()) == 0
    assert total(due_after=due.isoformat()) == 2
    assert total(due_after=(due + dt.timedelta(seconds=1)).isoformat()) == 0
    assert len(tenant.get("/tasks", params={"page_size": 1, "page": 2}).json()["items"]) == 1
    assert tenant.get("/tasks", params={"page": 3, "page_size": 1}).json() == {
        "items": [],
        "total": 2,
        "page": 3,
        "page_size": 1,
    }
    assert tenant.get(f"/tasks/{task['id']}").json() == task

    error_of(tenant.post(f"/tasks/{task['id']}/complete", {"outcome": "x" * 201}), 422, "outcome")
    done = tenant.post(f"/tasks/{task['id']}/complete", {"outcome": "connected", "notes": "Call back in May"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["outcome"], done.json()["notes"]) == (
        "completed",
        "connected",
        "Call back in May",
    )
    assert done.json()["completed_at"] is not None
    moved = enrollment_row(db, ada_enrollment)
    position = db.execute(
        "SELECT position FROM drumbeat.sequence_steps WHERE id = %s", (moved["current_step_id"],)
    ).fetchone()["position"]
    assert (moved["status"], position, moved["next_action_at"] is not None) == ("active", 2, True)
    error_of(tenant.post(f"/tasks/{task['id']}/complete"), 409, "status", "conflict")
    assert total(status="completed") == 1 and total(status="pending") == 1

    # A paused enrollment's task waits for the resume.
    bo_task = next(t for t in page["items"] if t["enrollment_id"] == bo_enrollment)
    assert tenant.post(f"/enrollments/{bo_enrollment}/pause").status_code == 200
    error_of(tenant.post(f"/tasks/{bo_task['id']}/complete", {}), 409, "status", "conflict")
    assert db.execute("SELECT status FROM drumbeat.tasks WHERE id = %s", (bo_task["id"],)).fetchone()[
        "status"
    ] == ("pending")


def test_another_tenants_task_is_404_and_unchanged(tenant, other_tenant, mine, db, db_url):
    enroll(tenant, mine.sequence(CALL_FIRST), mine.contact())
    dispatch(db_url)
    [task] = tenant.get("/tasks").json()["items"]
    before = snapshot(db, tenant.workspace_id)
    error_of(other_tenant.get(f"/tasks/{task['id']}"), 404, "task_id", "not_found")
    error_of(
        other_tenant.post(f"/tasks/{task['id']}/complete", {"outcome": "x"}), 404, "task_id", "not_found"
    )
    error_of(tenant.post(f"/tasks/{uuid.uuid4()}/complete"), 404, "task_id", "not_found")
    assert other_tenant.get("/tasks").json()["total"] == 0
    assert snapshot(db, tenant.workspace_id) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": 1000}, "page_size"),
        ({"status": "done"}, "status"),
        ({"due_before": "tomorrow"}, "due_before"),
        ({"assigned_to": "x"}, "assigned_to"),
    ],
)
def test_tasks_bad_query_is_422(tenant, params, field):
    error_of(tenant.get("/tasks", params=params), 422, field, "invalid")


# ---------------------------------------------------------------------------------------------- events


def test_a_reply_ends_the_enrollment_and_an_open_does_not(tenant, mine, db):
    sequence_id = mine.sequence()  # exit_conditions default: on_reply
    contact_id = mine.contact()
    enrollment_id = enroll(tenant, sequence_id, contact_id)["id"]

    opened = tenant.post("/events", {"contact_id": contact_id, "kind": "opened"})
    assert opened.status_code == 201, opened.text
    [logged] = opened.json()["logged"]
    assert (logged["enrollment_id"], logged["enrollment_status"]) == (enrollment_id, "active")
    assert enrollment_row(db, enrollment_id)["status"] == "active"

    replied = tenant.post(
        "/events",
        {"contact_id": contact_id, "kind": "replied", "payload": {"source": "gmail", "channel": "email"}},
    )
    assert replied.status_code == 201, replied.text
    body = replied.json()
    assert (body["contact_id"], body["kind"]) == (contact_id, "replied")
    [logged] = body["logged"]
    assert logged["enrollment_id"] == enrollment_id and logged["sequence_id"] == sequence_id
    assert (logged["enrollment_status"], logged["exit_reason"]) == ("replied", "replied")
    row = enrollment_row(db, enrollment_id)
    assert (row["status"], row["exit_reason"]) == ("replied", "replied")
    stored = db.execute(
        "SELECT payload FROM drumbeat.events WHERE id = %s", (logged["event_id"],)
    ).fetchone()["payload"]
    assert stored == {"source": "gmail", "channel": "email"}


def test_an_unsubscribe_opts_out_and_an_event_without_enrollment_is_still_logged(tenant, mine, db):
    contact_id = mine.contact()
    enrollment_id = enroll(tenant, mine.sequence(), contact_id)["id"]
    response = tenant.post(
        "/events", {"contact_id": contact_id, "kind": "unsubscribed", "payload": {"channel": "sms"}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["logged"][0]["enrollment_status"] == "unsubscribed"
    contact = db.execute("SELECT * FROM drumbeat.contacts WHERE id = %s", (contact_id,)).fetchone()
    assert contact["sms_opted_out_at"] is not None and contact["email_opted_out_at"] is None
    assert enrollment_row(db, enrollment_id)["status"] == "unsubscribed"

    loner = mine.contact()
    clicked = tenant.post(
        "/events", {"contact_id": loner, "kind": "clicked", "payload": {"url": "https://x.test"}}
    )
    assert clicked.status_code == 201, clicked.text
    [logged] = clicked.json()["logged"]
    assert logged["enrollment_id"] is None and logged["enrollment_status"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "sent"}, "kind"),
        ({"kind": None}, "kind"),
        ({"contact_id": "nope"}, "contact_id"),
        ({"payload": "text"}, "payload"),
        ({"payload": {"channel": "fax"}}, "payload.channel"),
        ({"payload": {"enrollment_id": str(uuid.uuid4())}}, "payload.enrollment_id"),
        ({"payload": {"delivery_id": "x"}}, "payload.delivery_id"),
    ],
)
def test_event_bad_input_is_422_and_changes_nothing(tenant, mine, db, change, field):
    contact_id = mine.contact()
    enroll(tenant, mine.sequence(), contact_id)
    before = snapshot(db, tenant.workspace_id)
    body = {"contact_id": contact_id, "kind": "replied", **change}
    error_of(tenant.post("/events", body), 422, field, "invalid")
    assert snapshot(db, tenant.workspace_id) == before


def test_an_event_for_another_tenants_contact_is_404_and_changes_nothing(tenant, other_tenant, mine, db):
    contact_id = mine.contact()
    enroll(tenant, mine.sequence(), contact_id)
    before = snapshot(db, tenant.workspace_id)
    for kind in ("replied", "unsubscribed"):
        error_of(
            other_tenant.post("/events", {"contact_id": contact_id, "kind": kind}),
            404,
            "contact_id",
            "not_found",
        )
    error_of(tenant.post("/events", {"contact_id": str(uuid.uuid4()), "kind": "opened"}), 404, "contact_id")
    assert snapshot(db, tenant.workspace_id) == before
    assert count(db, "events", other_tenant.workspace_id) == 0


def test_the_events_feed_pages_with_a_cursor(client, tenant: ApiTenant, mine: Contract):
    contact = mine.contact(first_name="Ada")
    sequence = mine.sequence()
    assert tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact}).status_code == 201
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    while not (page := tenant.get("/events").json())["items"] and dt.datetime.now(dt.UTC) < deadline:
        time.sleep(0.05)  # the cluster's older transactions end within moments (the feed's horizon)
    assert [item["type"] for item in page["items"]][:1] == ["sequence.enrollment.created"]
    assert page["items"][0]["data"]["contact_id"] == contact
    assert page["next_cursor"] == page["items"][-1]["cursor"]
    after = tenant.get("/events", params={"after": page["next_cursor"]}).json()
    assert after == {"items": [], "next_cursor": page["next_cursor"]}
    filtered = tenant.get("/events", params={"types": "message.sent,message.opened"}).json()
    assert filtered["items"] == []
    bad = tenant.get("/events", params={"after": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "after"


def test_an_enrollment_and_a_task_are_reassigned_to_members_only(tenant, mine, db, db_url):
    rep = str(uuid.uuid4())
    added = tenant.client.post(
        "/api/v1/members",
        json={"user_id": rep, "role": "member"},
        params={"workspace_id": tenant.workspace_id},
        headers=tenant.headers,
    )
    assert added.status_code == 201, added.text
    enrollment_id = enroll(tenant, mine.sequence(CALL_FIRST), mine.contact(), assigned_to=tenant.user_id)[
        "id"
    ]
    dispatch(db_url)
    [task] = tenant.get("/tasks").json()["items"]

    moved = tenant.post(f"/enrollments/{enrollment_id}/reassign", {"user_id": rep})
    assert moved.status_code == 200, moved.text
    assert moved.json()["assigned_to"] == rep
    assert tenant.get(f"/tasks/{task['id']}").json()["assigned_to"] == rep  # the task in hand went along

    back = tenant.post(f"/tasks/{task['id']}/reassign", {"user_id": tenant.user_id})
    assert (back.status_code, back.json()["assigned_to"]) == (200, tenant.user_id)
    error_of(tenant.post(f"/tasks/{task['id']}/reassign", {"user_id": str(uuid.uuid4())}), 422, "user_id")
    kinds = [e["kind"] for e in tenant.get(f"/enrollments/{enrollment_id}").json()["events"]]
    assert kinds.count("enrollment_reassigned") == 1 and kinds.count("task_reassigned") == 2
