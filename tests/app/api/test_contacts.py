"""The contact endpoints on the real app and database: create (upsert) with phone/email/time zone
normalised at the edge, list and search, read, partial update, soft delete ending live enrollments, a
contact's enrollments; 422 naming the field, 409 for a phone of another contact, 404 (nothing changed)
for another tenant's ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.sql.factories import Tenant
from tests.support.api import ApiTenant


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """The test database as its owner (RLS bypassed), autocommit: to look at what the API wrote."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def error_of(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if field is not None:
        assert error["field"] == field, error
    return error


def stored(db: psycopg.Connection, contact_id: str) -> dict | None:
    return db.execute("SELECT * FROM drumbeat.contacts WHERE id = %s", (contact_id,)).fetchone()


def count_contacts(db: psycopg.Connection, workspace_id: str) -> int:
    return db.execute(
        "SELECT count(*) AS n FROM drumbeat.contacts WHERE workspace_id = %s", (workspace_id,)
    ).fetchone()["n"]


def create(tenant: ApiTenant, **body) -> dict:
    response = tenant.post("/contacts", body)
    assert response.status_code == 201, response.text
    return response.json()


# -- create


def test_create_normalises_phone_and_email_and_infers_the_time_zone(tenant, db):
    response = tenant.post(
        "/contacts",
        {
            "phone": "(212) 555-0100",
            "email": "  Ada.Lovelace@Example.COM ",
            "first_name": " Ada ",
            "last_name": "Lovelace",
            "fields": {"plan": "pro", "seats": 3},
            "tags": ["vip", "nyc", "vip"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["phone"] == "+12125550100"
    assert body["email"] == "ada.lovelace@example.com"
    assert body["first_name"] == "Ada"
    assert body["timezone"] == "America/New_York"
    assert body["fields"] == {"plan": "pro", "seats": 3}
    assert body["tags"] == ["vip", "nyc"]
    assert body["workspace_id"] == tenant.workspace_id
    row = stored(db, body["id"])
    assert (row["phone"], row["email"], row["timezone"]) == (
        "+12125550100",
        "ada.lovelace@example.com",
        "America/New_York",
    )


def test_create_again_with_the_same_phone_updates_the_contact(tenant, db):
    first = create(tenant, phone="+1 212 555 0101", first_name="Ada", company="Old Co")
    again = tenant.post("/contacts", {"phone": "212.555.0101", "company": "New Co"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]
    assert again.json()["company"] == "New Co" and again.json()["first_name"] == "Ada"
    assert count_contacts(db, tenant.workspace_id) == 1


def test_time_zone_explicit_ambiguous_and_never_overwritten(tenant):
    explicit = create(tenant, phone="+12125550102", timezone="Europe/London")
    assert explicit["timezone"] == "Europe/London"
    toll_free = create(tenant, phone="+1 800 555 0100")  # one number for the whole continent
    assert toll_free["timezone"] is None
    email_only = create(tenant, email="grace@example.com")
    assert email_only["timezone"] is None
    london = create(tenant, phone="+44 20 7946 0000")
    assert london["timezone"] == "Europe/London"
    # A later upsert without a time zone does not replace the one the contact has.
    again = tenant.post("/contacts", {"phone": "+12125550102", "first_name": "Ada"})
    assert again.status_code == 200 and again.json()["timezone"] == "Europe/London"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"phone": "123-456-7890"}, "phone", "not a valid number for region US"),
        ({"phone": "555-0100"}, "phone", "for region US"),
        ({"phone": "call me"}, "phone", "not a phone number"),
        ({"phone": "+999 1234567"}, "phone", "unknown country calling code"),
        ({"email": "not-an-email"}, "email", "@"),
        ({"email": "ada@"}, "email", None),
        ({"phone": "+12125550100", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"phone": "+12125550100", "timezone": "EST5EDT "}, None, None),  # valid IANA link: accepted
        ({"first_name": "Ada"}, "phone", "a phone or an email"),
        ({"phone": "+12125550100", "nickname": "x"}, "nickname", "nickname"),
        ({"phone": 2125550100}, "phone", None),
        ({"phone": "+12125550100", "tags": "vip"}, "tags", None),
    ],
)
def test_bad_input_is_422_naming_the_field(tenant, db, body, field, message):
    response = tenant.post("/contacts", body)
    if field is None:
        assert response.status_code == 201, response.text
        return
    error = error_of(response, 422, field)
    assert error["code"] == "invalid"
    if message:
        assert message in error["message"], error
    assert count_contacts(db, tenant.workspace_id) == 0


# -- list, search, read


def test_list_pages_searches_and_filters(tenant, db):
    ada = create(tenant, phone="+12125550110", first_name="Ada", last_name="Lovelace", tags=["vip"])
    grace = create(tenant, email="grace@navy.example", first_name="Grace", last_name="Hopper")
    alan = create(tenant, phone="+14155550111", first_name="Alan", last_name="Turing", tags=["vip", "uk"])
    db.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (alan["id"],))

    page = tenant.get("/contacts", params={"page_size": 2}).json()
    assert page["total"] == 3 and page["page"] == 1 and page["page_size"] == 2
    assert [c["id"] for c in page["items"]] == [ada["id"], grace["id"]]
    page2 = tenant.get("/contacts", params={"page_size": 2, "page": 2}).json()
    assert [c["id"] for c in page2["items"]] == [alan["id"]] and page2["total"] == 3
    past_the_end = tenant.get("/contacts", params={"page_size": 2, "page": 5}).json()
    assert past_the_end["items"] == [] and past_the_end["total"] == 3

    def ids(**params) -> list[str]:
        response = tenant.get("/contacts", params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert ids(q="ada lov") == [ada["id"]]
    assert ids(q="HOPPER") == [grace["id"]]
    assert ids(q="navy.example") == [grace["id"]]
    assert ids(q="+1415") == [alan["id"]]
    assert ids(q="%") == []  # LIKE wildcards are literal
    assert ids(tag="vip") == [ada["id"], alan["id"]]
    assert ids(tag="uk") == [alan["id"]]
    assert ids(opted_out="true") == [alan["id"]]
    assert ids(opted_out="false") == [ada["id"], grace["id"]]
    assert ids(tag="vip", opted_out="false") == [ada["id"]]
    error_of(tenant.get("/contacts", params={"page_size": 0}), 422, "page_size")
    error_of(tenant.get("/contacts", params={"opted_out": "maybe"}), 422, "opted_out")


def test_get_one_contact(tenant):
    ada = create(tenant, phone="+12125550120", first_name="Ada")
    response = tenant.get(f"/contacts/{ada['id']}")
    assert response.status_code == 200 and response.json() == ada
    error_of(tenant.get(f"/contacts/{uuid.uuid4()}"), 404, "contact_id")


# -- update


def test_patch_changes_only_what_is_sent(tenant, db):
    ada = create(
        tenant,
        phone="+12125550130",
        email="ada@example.com",
        first_name="Ada",
        company="Engines",
        fields={"plan": "pro", "seats": 3},
        tags=["vip"],
    )
    response = tenant.patch(
        f"/contacts/{ada['id']}",
        {"company": None, "title": "Countess", "fields": {"plan": "enterprise", "seats": None}, "tags": []},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["company"] is None and body["title"] == "Countess"
    assert body["first_name"] == "Ada" and body["email"] == "ada@example.com"
    assert body["fields"] == {"plan": "enterprise"}
    assert body["tags"] == []
    assert body["timezone"] == "America/New_York"
    row = stored(db, ada["id"])
    assert row["company"] is None and row["fields"] == {"plan": "enterprise"}

    response = tenant.patch(f"/contacts/{ada['id']}", {"fields": None})
    assert response.status_code == 200 and response.json()["fields"] == {}


def test_patch_normalises_phone_and_infers_a_missing_time_zone(tenant, db):
    grace = create(tenant, email="grace@example.com")
    assert grace["timezone"] is None
    response = tenant.patch(f"/contacts/{grace['id']}", {"phone": "(415) 555-0131"})
    assert response.status_code == 200, response.text
    assert response.json()["phone"] == "+14155550131"
    assert response.json()["timezone"] == "America/Los_Angeles"
    # A zone the contact has is kept when the phone changes; an explicit one replaces it.
    response = tenant.patch(f"/contacts/{grace['id']}", {"phone": "+12125550131"})
    assert response.json()["timezone"] == "America/Los_Angeles"
    response = tenant.patch(f"/contacts/{grace['id']}", {"timezone": "Europe/Paris"})
    assert response.json()["timezone"] == "Europe/Paris"
    assert stored(db, grace["id"])["timezone"] == "Europe/Paris"


def test_patch_bad_input_is_422_or_409_and_changes_nothing(tenant, db):
    ada = create(tenant, phone="+12125550140", email="ada@example.com", first_name="Ada")
    create(tenant, phone="+12125550141", email="grace@example.com")
    before = stored(db, ada["id"])
    path = f"/contacts/{ada['id']}"
    error_of(tenant.patch(path, {"phone": "12"}), 422, "phone")
    error_of(tenant.patch(path, {"email": "nope"}), 422, "email")
    error_of(tenant.patch(path, {"timezone": "Nowhere/City"}), 422, "timezone")
    error_of(tenant.patch(path, {"nickname": "A"}), 422, "nickname")
    error_of(tenant.patch(path, {"phone": None, "email": None}), 422, "phone")
    conflict = error_of(tenant.patch(path, {"phone": "(212) 555-0141"}), 409, "phone")
    assert conflict["code"] == "conflict"
    error_of(tenant.patch(path, {"email": "GRACE@example.com"}), 409, "email")
    assert stored(db, ada["id"]) == before


# -- delete and enrollments


def enroll(db_url: str, tenant: ApiTenant, contact_ids: list[str]) -> str:
    """An active SMS sequence of the tenant with these contacts enrolled (through the contract)."""
    with psycopg.connect(db_url) as conn:
        factory = Tenant(conn, uuid.UUID(tenant.user_id), uuid.UUID(tenant.workspace_id))
        factory.sender(address=f"+1555{uuid.uuid4().int % 10_000_000:07d}")
        sequence_id = factory.sequence()
        outcomes = factory.enroll(sequence_id, [uuid.UUID(c) for c in contact_ids])
        assert {o[2] for o in outcomes} == {"enrolled"}
        conn.commit()
    return str(sequence_id)


def test_contact_enrollments_are_listed(tenant, db_url):
    ada = create(tenant, phone="+12125550150")
    sequence_id = enroll(db_url, tenant, [ada["id"]])
    response = tenant.get(f"/contacts/{ada['id']}/enrollments")
    assert response.status_code == 200, response.text
    [enrollment] = response.json()
    assert enrollment["sequence_id"] == sequence_id
    assert enrollment["sequence_name"] == "Cold outreach"
    assert enrollment["status"] == "active" and enrollment["current_step_position"] == 1
    assert enrollment["exit_reason"] is None
    assert tenant.get(f"/contacts/{create(tenant, phone='+12125550151')['id']}/enrollments").json() == []


def test_delete_is_soft_and_ends_live_enrollments(tenant, db, db_url):
    ada = create(tenant, phone="+12125550160", first_name="Ada")
    grace = create(tenant, phone="+12125550161")
    sequence_id = enroll(db_url, tenant, [ada["id"], grace["id"]])
    db.execute("UPDATE drumbeat.contacts SET sms_opted_out_at = now() WHERE id = %s", (ada["id"],))

    response = tenant.delete(f"/contacts/{ada['id']}")
    assert response.status_code == 204, response.text

    row = stored(db, ada["id"])
    assert row["deleted_at"] is not None and row["sms_opted_out_at"] is not None  # kept: soft delete
    ended = db.execute(
        "SELECT contact_id, status, exit_reason, completed_at FROM drumbeat.enrollments WHERE sequence_id = %s",
        (sequence_id,),
    ).fetchall()
    by_contact = {str(e["contact_id"]): e for e in ended}
    assert by_contact[ada["id"]]["status"] == "cancelled"
    assert by_contact[ada["id"]]["exit_reason"] == "contact_deleted"
    assert by_contact[ada["id"]]["completed_at"] is not None
    assert by_contact[grace["id"]]["status"] == "active"  # others untouched
    kinds = [
        e["kind"]
        for e in db.execute(
            "SELECT kind FROM drumbeat.events WHERE contact_id = %s ORDER BY id", (ada["id"],)
        ).fetchall()
    ]
    assert kinds[-2:] == ["exited", "contact_deleted"]

    for response in (
        tenant.get(f"/contacts/{ada['id']}"),
        tenant.patch(f"/contacts/{ada['id']}", {"first_name": "X"}),
        tenant.delete(f"/contacts/{ada['id']}"),
        tenant.get(f"/contacts/{ada['id']}/enrollments"),
    ):
        error_of(response, 404, "contact_id")
    assert [c["id"] for c in tenant.get("/contacts").json()["items"]] == [grace["id"]]

    # Re-creating the contact brings the same row back, opt-out intact.
    back = tenant.post("/contacts", {"phone": "+12125550160"})
    assert back.status_code == 200 and back.json()["id"] == ada["id"]
    assert back.json()["sms_opted_out_at"] is not None and back.json()["first_name"] == "Ada"


# -- tenancy


def test_another_tenants_contact_is_404_everywhere_and_unchanged(tenant, other_tenant, db, db_url):
    theirs = create(other_tenant, phone="+12125550170", first_name="Theirs", tags=["x"])
    enroll(db_url, other_tenant, [theirs["id"]])
    before = stored(db, theirs["id"])
    path = f"/contacts/{theirs['id']}"

    error_of(tenant.get(path), 404, "contact_id")
    error_of(tenant.patch(path, {"first_name": "Mine"}), 404, "contact_id")
    error_of(tenant.delete(path), 404, "contact_id")
    error_of(tenant.get(f"{path}/enrollments"), 404, "contact_id")
    # Naming their workspace is a 404 too; listing and searching never show their rows.
    error_of(tenant.get("/contacts", params={"workspace_id": other_tenant.workspace_id}), 404, "workspace_id")
    error_of(
        tenant.post(
            "/contacts", {"phone": "+12125550170"}, params={"workspace_id": other_tenant.workspace_id}
        ),
        404,
        "workspace_id",
    )
    assert tenant.get("/contacts", params={"q": "Theirs"}).json() == {
        "items": [],
        "total": 0,
        "page": 1,
        "page_size": 50,
    }

    assert stored(db, theirs["id"]) == before
    statuses = db.execute(
        "SELECT status FROM drumbeat.enrollments WHERE contact_id = %s", (theirs["id"],)
    ).fetchall()
    assert [s["status"] for s in statuses] == ["active"]

    # The same phone in my workspace is a contact of my own.
    mine = tenant.post("/contacts", {"phone": "+12125550170"})
    assert mine.status_code == 201 and mine.json()["id"] != theirs["id"]
    assert stored(db, theirs["id"]) == before


def test_a_deleted_contact_is_exported_then_erased_and_cannot_come_back(tenant, db, db_url):
    ada = create(tenant, phone="+12125550170", email="ada@example.com", first_name="Ada")
    enroll(db_url, tenant, [ada["id"]])
    assert tenant.delete(f"/contacts/{ada['id']}").status_code == 204  # deleted first: still erasable

    export = tenant.get(f"/contacts/{ada['id']}/export")
    assert export.status_code == 200, export.text
    assert export.json()["contact"]["first_name"] == "Ada" and len(export.json()["enrollments"]) == 1

    erased = tenant.post(f"/contacts/{ada['id']}/erase")
    assert erased.status_code == 200, erased.text
    assert erased.json()["already_erased"] is False and erased.json()["addresses_suppressed"] == 2
    assert stored(db, ada["id"])["phone"] is None and stored(db, ada["id"])["first_name"] is None
    assert tenant.post(f"/contacts/{ada['id']}/erase").json()["already_erased"] is True

    back = tenant.post("/contacts", {"phone": "(212) 555-0170"})
    assert back.status_code == 422, back.text
    assert back.json()["error"]["field"] == "phone" and "erased" in back.json()["error"]["message"]
