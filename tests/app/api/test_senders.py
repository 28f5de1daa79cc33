"""A sender over its life, as an admin manages numbers and mailboxes: read one, change its name, pace and
owner (never its address), remove one nothing depends on, and a clear 409 for one that something does
(messages it sent, a sequence that names it, the last sender of a channel an active sequence uses)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.api import ApiTenant, bearer, dispatch, make_jwt


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def add_sender(tenant: ApiTenant, channel: str, address: str, **settings) -> dict:
    return created(tenant.post("/senders", {"channel": channel, "address": address, **settings}))


def error_of(response, status: int, field: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    return error["message"]


def test_a_sender_is_read_and_changed_but_keeps_its_address(tenant: ApiTenant):
    sender = add_sender(tenant, "sms", "+12125550161", name="Front desk", rate_per_second=5, daily_cap=100)
    assert tenant.get(f"/senders/{sender['id']}").json() == sender
    changed = tenant.patch(
        f"/senders/{sender['id']}", {"name": "Sales line", "rate_per_second": 20, "daily_cap": None}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["rate_per_second"], body["daily_cap"]) == ("Sales line", 20, None)
    assert body["address"] == sender["address"] and body["channel"] == "sms"
    assert tenant.get(f"/senders/{sender['id']}").json() == body
    assert "unknown field" in error_of(
        tenant.patch(f"/senders/{sender['id']}", {"address": "+12125550162"}), 422, "address"
    )


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"rate_per_second": 0}, "rate_per_second", "between 1 and 1000"),
        ({"rate_per_second": 1.5}, "rate_per_second", "whole number"),
        ({"daily_cap": 0}, "daily_cap", "between 1 and 10000000"),
        ({"user_id": str(uuid.uuid4())}, "user_id", "member of this workspace"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field(tenant: ApiTenant, changes, field, message):
    sender = add_sender(tenant, "sms", "+12125550163")
    assert message in error_of(tenant.patch(f"/senders/{sender['id']}", changes), 422, field)
    assert tenant.get(f"/senders/{sender['id']}").json() == sender


def test_a_sender_becomes_a_members_own_and_shared_again(tenant: ApiTenant):
    rep = str(uuid.uuid4())
    assert tenant.post("/members", {"user_id": rep, "role": "member"}).status_code == 201
    sender = add_sender(tenant, "email", "rep@acme.example")
    assert tenant.patch(f"/senders/{sender['id']}", {"user_id": rep}).json()["user_id"] == rep
    assert tenant.patch(f"/senders/{sender['id']}", {"user_id": None}).json()["user_id"] is None
    # The rep, a plain member, may not change senders.
    as_rep = tenant.client.patch(
        f"/api/v1/senders/{sender['id']}", json={"name": "Mine"}, headers=bearer(make_jwt(rep))
    )
    assert as_rep.status_code == 403


def test_an_unused_sender_is_removed(tenant: ApiTenant):
    add_sender(tenant, "sms", "+12125550164")
    spare = add_sender(tenant, "sms", "+12125550165")
    removed = tenant.delete(f"/senders/{spare['id']}")
    assert removed.status_code == 204, removed.text
    assert tenant.get(f"/senders/{spare['id']}").status_code == 404
    assert spare["id"] not in {s["id"] for s in tenant.get("/senders").json()}


def sms_sequence(tenant: ApiTenant, **settings) -> str:
    definition = {
        "name": "Texts",
        "channel": "sms",
        "settings": settings,
        "steps": [{"kind": "sms", "body": "Hi"}],
    }
    sequence = created(tenant.post("/sequences", definition))["id"]
    assert tenant.post(f"/sequences/{sequence}/activate").status_code == 200
    return sequence


def test_a_sender_something_depends_on_stays_with_a_409_saying_what(tenant: ApiTenant, db_url):
    first = add_sender(tenant, "sms", "+12125550166")
    named = add_sender(tenant, "sms", "+12125550167")
    sms_sequence(tenant, sms_sender_id=named["id"])
    assert "sequence 'Texts' sends from this sender" in error_of(
        tenant.delete(f"/senders/{named['id']}"), 409, "sender_id"
    )
    # The default one (the oldest) sends a message, and keeps it.
    contact = created(tenant.post("/contacts", {"phone": "+12125550168"}))
    other = created(
        tenant.post(
            "/sequences", {"name": "Default", "channel": "sms", "steps": [{"kind": "sms", "body": "Yo"}]}
        )
    )
    assert tenant.post(f"/sequences/{other['id']}/activate").status_code == 200
    created(tenant.post("/enrollments", {"sequence_id": other["id"], "contact_id": contact["id"]}))
    dispatch(db_url)
    assert "has sent messages" in error_of(tenant.delete(f"/senders/{first['id']}"), 409, "sender_id")
    assert {s["id"] for s in tenant.get("/senders").json()} == {first["id"], named["id"]}


def test_the_last_sender_of_a_channel_an_active_sequence_uses_stays(tenant: ApiTenant):
    only = add_sender(tenant, "sms", "+12125550169")
    sms_sequence(tenant)
    message = error_of(tenant.delete(f"/senders/{only['id']}"), 409, "sender_id")
    assert "last sms sender" in message and "'Texts'" in message
    add_sender(tenant, "sms", "+12125550170")
    assert tenant.delete(f"/senders/{only['id']}").status_code == 204
