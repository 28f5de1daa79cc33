"""Authentication and the error shape: API keys and JWTs, 401 for bad credentials, 403 for a role that
may not act, 404 (never 403) for another tenant's ids."""

from __future__ import annotations

import uuid

from tests.support.api import bearer, make_jwt


def _error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if field is not None:
        assert error["field"] == field, error
    return error


def test_no_credentials_is_401_in_the_error_shape(client):
    _error(client.get("/api/v1/workspaces"), 401, "unauthenticated")
    _error(client.get("/api/v1/workspaces", headers={"Authorization": "Basic abc"}), 401, "unauthenticated")


def test_jwt_must_be_signed_unexpired_and_for_this_audience(client, tenant):
    assert client.get("/api/v1/workspaces", headers=tenant.user_headers).status_code == 200
    forged = make_jwt(tenant.user_id, secret="another-secret-that-is-long-enough-to-use!")
    assert (
        "invalid token"
        in _error(client.get("/api/v1/workspaces", headers=bearer(forged)), 401, "unauthenticated")["message"]
    )
    expired = make_jwt(tenant.user_id, expires_in=-60)
    assert (
        "expired"
        in _error(client.get("/api/v1/workspaces", headers=bearer(expired)), 401, "unauthenticated")[
            "message"
        ]
    )
    wrong_audience = make_jwt(tenant.user_id, audience="someone-else")
    _error(client.get("/api/v1/workspaces", headers=bearer(wrong_audience)), 401, "unauthenticated")


def test_an_api_key_acts_in_its_workspace_and_stops_when_revoked(client, tenant):
    workspaces = tenant.get("/workspaces").json()
    assert [w["id"] for w in workspaces] == [tenant.workspace_id] and workspaces[0]["role"] == "owner"
    keys = tenant.get("/api-keys").json()
    assert len(keys) == 1 and keys[0]["prefix"] == tenant.key[:16] and "token" not in keys[0]
    member = tenant.post("/api-keys", {"name": "ci", "role": "member"}).json()
    assert member["token"].startswith(member["key"]["prefix"] + "_")
    assert client.get("/api/v1/senders", headers=bearer(member["token"])).status_code == 200
    assert tenant.delete(f"/api-keys/{member['key']['id']}").status_code == 204
    _error(client.get("/api/v1/senders", headers=bearer(member["token"])), 401, "unauthenticated")
    tampered = tenant.key[:-1] + ("0" if tenant.key[-1] != "0" else "1")
    _error(client.get("/api/v1/senders", headers=bearer(tampered)), 401, "unauthenticated")


def test_a_member_key_may_not_create_keys_or_outrank_itself(client, tenant):
    member = tenant.post("/api-keys", {"name": "member", "role": "member"}).json()["token"]
    response = client.post("/api/v1/api-keys", json={"name": "x", "role": "member"}, headers=bearer(member))
    _error(response, 403, "forbidden")
    admin = tenant.post("/api-keys", {"name": "admin", "role": "admin"}).json()["token"]
    response = client.post("/api/v1/api-keys", json={"name": "x", "role": "owner"}, headers=bearer(admin))
    _error(response, 403, "forbidden", "role")


def test_another_tenants_ids_are_404_and_unchanged(client, tenant, other_tenant):
    _error(tenant.get(f"/workspaces/{other_tenant.workspace_id}"), 404, "not_found")
    _error(tenant.get("/senders", params={"workspace_id": other_tenant.workspace_id}), 404, "not_found")
    other_key = other_tenant.get("/api-keys").json()[0]["id"]
    _error(tenant.delete(f"/api-keys/{other_key}"), 404, "not_found")
    assert other_tenant.get("/senders").status_code == 200  # the other key still works
    _error(tenant.get(f"/workspaces/{uuid.uuid4()}"), 404, "not_found")


def test_bad_input_is_422_naming_the_field(tenant):
    _error(tenant.post("/senders", {"channel": "fax", "address": "x"}), 422, "invalid", "channel")
    _error(tenant.post("/senders", {"channel": "sms", "address": "12345"}), 422, "invalid")
    mars = {"name": "X", "timezone": "Mars/Olympus"}
    _error(tenant.client.post("/api/v1/workspaces", json=mars, headers=tenant.user_headers), 422, "invalid")
    _error(
        tenant.post("/senders", {"channel": "sms", "address": "+15551234567", "color": "red"}), 422, "invalid"
    )


def test_a_user_in_several_workspaces_must_say_which(client, tenant):
    client.post("/api/v1/workspaces", json={"name": "Second"}, headers=tenant.user_headers)
    _error(client.get("/api/v1/senders", headers=tenant.user_headers), 422, "invalid", "workspace_id")
    ok = client.get(
        "/api/v1/senders", params={"workspace_id": tenant.workspace_id}, headers=tenant.user_headers
    )
    assert ok.status_code == 200


def test_sender_rates_are_whole_numbers(tenant):
    assert tenant.sender("sms")  # rate_per_second 100 arrives as 100.0 from JSON encoders: accepted
    response = tenant.post("/senders", {"channel": "sms", "address": "+15557654321", "rate_per_second": 1.5})
    _error(response, 422, "invalid", "rate_per_second")  # the body's name, not the SQL argument's


def test_validation_errors_name_the_member_and_nul_text_is_422(tenant):
    unknown = tenant.post("/senders", {"channel": "sms", "address": "+15551234567", "colour": "red"})
    _error(unknown, 422, "invalid", "colour")
    missing = tenant.post("/senders", {"channel": "sms"})
    _error(missing, 422, "invalid", "address")
    _error(tenant.post("/api-keys", {"name": "nul\x00name"}), 422, "invalid")


def test_a_missing_body_is_named(tenant):
    error = _error(tenant.post("/api-keys"), 422, "invalid")
    assert error["message"] == "a JSON request body is required"


def test_values_postgres_cannot_hold_are_422_not_500(tenant, client):
    """Found by the schemathesis run: out-of-range numbers and NUL characters inside JSON."""
    sequence = tenant.post(
        "/sequences", {"name": "S", "channel": "sms", "steps": [{"kind": "sms", "body": "x"}]}
    )
    sequence_id = sequence.json()["id"]
    huge = tenant.post(
        "/enrollments/bulk", {"sequence_id": sequence_id, "contact_ids": [], "start_at_step": 2**40}
    )
    assert huge.status_code == 422, huge.text
    contact = tenant.post("/contacts", {"phone": "+12025550199"}).json()["id"]
    nul = tenant.post("/events", {"contact_id": contact, "kind": "replied", "payload": {"note": "a\x00b"}})
    assert nul.status_code == 422, nul.text


def test_an_error_keeps_the_headers_http_gives_it(client):
    """A 405 names the methods the route has (Allow), in the error shape."""
    response = client.delete("/api/v1/workspaces")
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
