"""/api/v1/webhook-endpoints over HTTP: an admin registers, reads, changes, tests, rotates and deletes an
endpoint; the URL is checked after resolving its name (no private targets unless the operator allows
them, https in production); members, and other tenants, get nowhere."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from tests.support.api import ApiTenant, bearer, make_jwt, new_api_tenant
from tests.support.webhook_receiver import FakeDns

PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDns(monkeypatch)
    fake.answer("hooks.example.com", [PUBLIC_ADDRESS])
    fake.answer("inside.example.com", [PUBLIC_ADDRESS, "10.1.2.3"])
    return fake


def fields_of(response) -> tuple[int, str | None]:
    return response.status_code, response.json()["error"]["field"]


def test_an_admin_manages_an_endpoint(tenant: ApiTenant, dns):
    created = tenant.post(
        "/webhook-endpoints",
        {
            "url": "https://Hooks.Example.com/drumbeat?token=abc",
            "event_types": ["message.sent"],
            "description": "CRM",
        },
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert (
        endpoint["secret"].startswith("whsec_")
        and endpoint["url"] == "https://hooks.example.com/drumbeat?token=abc"
    )
    path = f"/webhook-endpoints/{endpoint['id']}"
    shown = tenant.get(path).json()
    assert "secret" not in shown and shown["event_types"] == ["message.sent"] and shown["enabled"]
    assert [e["id"] for e in tenant.get("/webhook-endpoints").json()] == [endpoint["id"]]

    changed = tenant.patch(path, {"event_types": ["*"], "enabled": False, "include_bodies": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == ["*"] and not changed.json()["enabled"]
    assert changed.json()["disabled_reason"] == "switched off by a user"
    assert tenant.patch(path, {"enabled": True}).json()["disabled_reason"] is None

    rotated = tenant.post(f"{path}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None

    ping = tenant.post(f"{path}/test")
    assert ping.status_code == 202 and ping.json()["type"] == "ping" and ping.json()["status"] == "pending"
    assert tenant.get(f"{path}/deliveries").json() == []  # no worker runs here: nothing attempted yet
    resent = tenant.post(f"{path}/messages/{ping.json()['message_id']}/resend")
    assert resent.status_code == 202 and resent.json()["message_id"] == ping.json()["message_id"]
    since = tenant.post(f"{path}/resend", {"since": "2026-01-01T00:00:00Z"})
    assert since.status_code == 202 and since.json() == {"queued": 0, "next": None}

    assert tenant.delete(path).status_code == 204
    assert tenant.get(path).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://inside.example.com/hook"}, "url"),  # one of its addresses is private
        ({"url": "http://127.0.0.1:9000/hook"}, "url"),
        ({"url": "http://169.254.169.254/latest"}, "url"),
        ({"url": "https://nowhere.example.com/hook"}, "url"),  # does not resolve
        ({"url": "https://hooks.example.com/", "event_types": ["message.snet"]}, "event_types"),
        ({"url": "https://hooks.example.com/", "secret": "whsec_mine"}, "secret"),
    ],
)
def test_a_bad_endpoint_is_a_422_naming_the_field(tenant: ApiTenant, dns, body, field):
    assert fields_of(tenant.post("/webhook-endpoints", body)) == (422, field)
    assert tenant.get("/webhook-endpoints").json() == []


def test_private_targets_need_the_operator_and_production_needs_https(api_settings, dns):
    private = dataclasses.replace(api_settings, webhook_allow_private=True)
    with TestClient(create_app(private)) as client:
        tenant = new_api_tenant(client)
        allowed = tenant.post("/webhook-endpoints", {"url": "http://127.0.0.1:9000/hook"})
        assert allowed.status_code == 201, allowed.text
        metadata = tenant.post("/webhook-endpoints", {"url": "http://169.254.169.254/latest"})
        assert fields_of(metadata) == (422, "url")  # never, whatever the setting
    production = dataclasses.replace(api_settings, env="production")
    with TestClient(create_app(production)) as client:
        tenant = new_api_tenant(client)
        plain = tenant.post("/webhook-endpoints", {"url": "http://hooks.example.com/hook"})
        assert fields_of(plain) == (422, "url") and "https" in plain.json()["error"]["message"]
        assert tenant.post("/webhook-endpoints", {"url": "https://hooks.example.com/hook"}).status_code == 201


def test_members_and_other_tenants_get_nowhere(tenant: ApiTenant, other_tenant: ApiTenant, dns):
    endpoint = tenant.post("/webhook-endpoints", {"url": "https://hooks.example.com/"}).json()
    member = str(uuid.uuid4())
    assert tenant.post("/members", {"user_id": member, "role": "member"}).status_code == 201
    as_member = bearer(make_jwt(member))
    listed = tenant.client.get("/api/v1/webhook-endpoints", headers=as_member)
    assert listed.status_code == 403
    path = f"/webhook-endpoints/{endpoint['id']}"
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"enabled": False}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", None),
        ("POST", "/test", None),
        ("GET", "/deliveries", None),
    ]:
        response = other_tenant.client.request(
            method, f"/api/v1{path}{suffix}", json=body, headers=other_tenant.headers
        )
        assert response.status_code == 404, (method, suffix, response.text)
    assert tenant.get(path).json()["enabled"]
