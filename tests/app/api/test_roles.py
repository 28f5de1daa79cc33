"""The role matrix over HTTP (README, "Roles"): the same rules as over RPC, because the API calls the same
contract functions as the caller. People sign in with JWTs; the owner adds them through /members."""

from __future__ import annotations

import uuid

import pytest

from tests.support.api import ApiTenant, bearer, make_jwt


def person(tenant: ApiTenant, role: str) -> dict[str, str]:
    """Headers of a new person the owner adds to the workspace with `role`."""
    user_id = str(uuid.uuid4())
    added = tenant.post("/members", {"user_id": user_id, "role": role})
    assert added.status_code == 201, added.text
    assert added.json() == {
        "user_id": user_id,
        "role": role,
        "api_key": False,
        "created_at": added.json()["created_at"],
    }
    return bearer(make_jwt(user_id)) | {"X-User": user_id}


def as_(tenant: ApiTenant, headers: dict[str, str], method: str, path: str, json=None):
    auth = {"Authorization": headers["Authorization"]}
    return tenant.client.request(method, f"/api/v1{path}", json=json, headers=auth)


def error(response) -> tuple[int, str, str | None]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["field"]


def roles(tenant: ApiTenant) -> dict[str, str]:
    listed = tenant.get("/members")
    assert listed.status_code == 200, listed.text
    return {m["user_id"]: m["role"] for m in listed.json() if not m["api_key"]}


def test_admins_manage_members_and_admins_but_not_owners(tenant):
    admin = person(tenant, "admin")
    newcomer = str(uuid.uuid4())
    assert as_(tenant, admin, "POST", "/members", {"user_id": newcomer, "role": "admin"}).status_code == 201
    changed = as_(tenant, admin, "PATCH", f"/members/{newcomer}", {"role": "member"})
    assert changed.status_code == 200 and changed.json()["role"] == "member"
    refused = [
        as_(tenant, admin, "POST", "/members", {"user_id": str(uuid.uuid4()), "role": "owner"}),
        as_(tenant, admin, "PATCH", f"/members/{admin['X-User']}", {"role": "owner"}),
        as_(tenant, admin, "PATCH", f"/members/{tenant.user_id}", {"role": "member"}),
    ]
    assert [error(r) for r in refused] == [(403, "forbidden", "role")] * 3
    assert error(as_(tenant, admin, "DELETE", f"/members/{tenant.user_id}")) == (403, "forbidden", "user_id")
    assert as_(tenant, admin, "DELETE", f"/members/{newcomer}").status_code == 204
    assert roles(tenant) == {tenant.user_id: "owner", admin["X-User"]: "admin"}


def test_a_member_manages_nobody_but_may_leave(tenant):
    member, other = person(tenant, "member"), person(tenant, "member")
    for method, path, body in [
        ("POST", "/members", {"user_id": str(uuid.uuid4())}),
        ("PATCH", f"/members/{member['X-User']}", {"role": "admin"}),
        ("DELETE", f"/members/{other['X-User']}", None),
    ]:
        assert error(as_(tenant, member, method, path, body))[:2] == (403, "forbidden"), (method, path)
    assert as_(tenant, member, "DELETE", f"/members/{member['X-User']}").status_code == 204
    assert member["X-User"] not in roles(tenant)


def test_the_last_owner_stays(tenant):
    owner = {"Authorization": tenant.user_headers["Authorization"]}
    demote = as_(tenant, owner, "PATCH", f"/members/{tenant.user_id}", {"role": "admin"})
    assert error(demote) == (409, "conflict", "user_id") and "last owner" in demote.json()["error"]["message"]
    assert error(as_(tenant, owner, "DELETE", f"/members/{tenant.user_id}")) == (409, "conflict", "user_id")
    successor = person(tenant, "owner")
    assert (
        as_(tenant, successor, "PATCH", f"/members/{tenant.user_id}", {"role": "member"}).status_code == 200
    )
    # The owner key the demoted owner made outranks them now: revoked with the demotion.
    assert tenant.get("/members").status_code == 401
    members = as_(tenant, successor, "GET", "/members").json()
    assert {m["user_id"]: m["role"] for m in members}[tenant.user_id] == "member"


def test_bad_member_input_names_the_field(tenant):
    assert error(tenant.post("/members", {"user_id": "not-a-uuid"}))[::2] == (422, "user_id")
    assert error(tenant.post("/members", {"user_id": str(uuid.uuid4()), "role": "god"}))[::2] == (422, "role")
    missing = tenant.patch(f"/members/{uuid.uuid4()}", {"role": "admin"})
    assert error(missing) == (404, "not_found", "user_id")
    twice = tenant.post("/members", {"user_id": tenant.user_id})
    assert error(twice) == (409, "conflict", "user_id")


@pytest.mark.parametrize(("role", "allowed"), [("member", set()), ("admin", {"member", "admin"})])
def test_keys_up_to_the_creators_role(tenant, role, allowed):
    headers = person(tenant, role)
    for key_role in ("member", "admin", "owner"):
        created = as_(tenant, headers, "POST", "/api-keys", {"name": "k", "role": key_role})
        assert (created.status_code == 201) == (key_role in allowed), (key_role, created.text)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/senders", {"channel": "sms", "address": "+15550006666"}),
        ("PUT", "/workspaces/{workspace_id}/holidays", {"dates": ["2026-12-25"]}),
        ("DELETE", "/api-keys/{key_id}", None),
    ],
)
def test_settings_are_for_admins(tenant, method, path, body):
    key_id = tenant.post("/api-keys", {"name": "victim", "role": "member"}).json()["key"]["id"]
    path = path.format(workspace_id=tenant.workspace_id, key_id=key_id)
    member, admin = person(tenant, "member"), person(tenant, "admin")
    assert error(as_(tenant, member, method, path, body))[:2] == (403, "forbidden")
    assert as_(tenant, admin, method, path, body).status_code in (200, 201, 204)


def test_another_workspace_cannot_claim_a_number(tenant, other_tenant):
    tenant.sender("sms", "+15550007777")
    tenant.sender("email", "hello@acme.example")
    for channel, address in [("sms", "+15550007777"), ("email", "HELLO@acme.example")]:
        taken = other_tenant.post("/senders", {"channel": channel, "address": address})
        assert error(taken) == (409, "conflict", "address"), taken.text
        assert "another workspace" in taken.json()["error"]["message"]
    assert other_tenant.get("/senders").json() == []


def test_only_an_admin_resubscribes_a_contact_with_a_reason(tenant):
    contact = tenant.post("/contacts", {"phone": "+12025550123"}).json()["id"]
    assert tenant.post("/events", {"contact_id": contact, "kind": "unsubscribed"}).status_code in (200, 201)
    member, admin = person(tenant, "member"), person(tenant, "admin")
    path = f"/contacts/{contact}/resubscribe"
    assert error(as_(tenant, member, "POST", path, {"channel": "sms", "reason": "asked"}))[:2] == (
        403,
        "forbidden",
    )
    assert error(as_(tenant, admin, "POST", path, {"channel": "sms"}))[::2] == (422, "reason")
    cleared = as_(tenant, admin, "POST", path, {"channel": "sms", "reason": "Asked by phone"})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["sms_opted_out_at"] is None and cleared.json()["email_opted_out_at"] is not None
    again = as_(tenant, admin, "POST", path, {"channel": "sms", "reason": "again"})
    assert error(again) == (409, "conflict", "channel")
    # A member's edit never clears an opt-out: the field is not one a contact update takes.
    patched = as_(tenant, member, "PATCH", f"/contacts/{contact}", {"email_opted_out_at": None})
    assert patched.status_code == 422


def test_only_an_owner_deletes_the_workspace(tenant):
    admin = person(tenant, "admin")
    path = f"/workspaces/{tenant.workspace_id}"
    assert error(as_(tenant, admin, "DELETE", path))[:2] == (403, "forbidden")
    assert tenant.delete(path).status_code == 204
    owner = {"Authorization": tenant.user_headers["Authorization"]}
    assert as_(tenant, owner, "GET", path).status_code == 404


def test_an_api_key_cannot_create_a_second_workspace_for_itself(tenant):
    """A key is a member of the workspace it was made for; joining another would leave every later call
    unable to say which workspace it means (422 "you belong to several workspaces")."""
    refused = tenant.post("/workspaces", {"name": "Side project", "timezone": "UTC"})
    assert refused.status_code == 403, refused.text
    assert "API key belongs to its one workspace" in refused.json()["error"]["message"]
    assert tenant.get("/senders").status_code == 200  # still one workspace: no workspace_id needed
