"""The real API (create_app) on a real, private database per test, through Litestar's TestClient; callers
authenticate with JWTs signed with the test secret or with API keys created through the API itself. Its
fixtures (`api_settings`, `client`, and the two tenants `tenant` and `other_tenant`) are imported by the
conftest.py files that use them: the API tests' and the end-to-end tests'."""

from __future__ import annotations

import copy
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import jwt
import psycopg
import pytest
from litestar.testing import TestClient
from psycopg.types.json import Jsonb

from app.api.app import create_app
from app.core.settings import Settings
from tests.sql.factories import SMS_SEQUENCE
from tests.support import act_as
from workers.dispatcher import Dispatcher
from workers.transports import OutboxTransport

JWT_SECRET = "test-jwt-secret-with-at-least-32-characters!"
LINK_SECRET = b"test-link-secret-with-at-least-32-characters"
PUBLIC_URL = "http://testserver.local"
TWILIO_TOKEN = "test-twilio-auth-token"


def make_jwt(
    sub: str, *, audience: str = "authenticated", expires_in: int = 600, secret: str = JWT_SECRET
) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": audience, "role": "authenticated", "iat": now, "exp": now + expires_in}
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        jwt_secret=JWT_SECRET.encode(),
        secret_key=LINK_SECRET,
        public_url=PUBLIC_URL,
        twilio_auth_token=TWILIO_TOKEN,
    )


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


@dataclass
class ApiTenant:
    """A user (JWT) who owns a workspace, plus an owner API key for it; `headers` use the key."""

    client: TestClient
    user_id: str
    workspace_id: str
    key: str
    extra: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)

    @property
    def user_headers(self) -> dict[str, str]:
        return bearer(make_jwt(self.user_id))

    def post(self, path: str, json=None, **kwargs):
        return self.client.post(f"/api/v1{path}", json=json, headers=self.headers, **kwargs)

    def get(self, path: str, **kwargs):
        return self.client.get(f"/api/v1{path}", headers=self.headers, **kwargs)

    def put(self, path: str, json=None, **kwargs):
        return self.client.put(f"/api/v1{path}", json=json, headers=self.headers, **kwargs)

    def patch(self, path: str, json=None, **kwargs):
        return self.client.patch(f"/api/v1{path}", json=json, headers=self.headers, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.client.delete(f"/api/v1{path}", headers=self.headers, **kwargs)

    def sender(self, channel: str = "sms", address: str | None = None) -> str:
        address = address or (
            f"+1555{uuid.uuid4().int % 10_000_000:07d}"
            if channel == "sms"
            else f"team-{uuid.uuid4().hex[:8]}@example.com"
        )
        response = self.post("/senders", {"channel": channel, "address": address, "rate_per_second": 100})
        assert response.status_code == 201, response.text
        return response.json()["id"]


def new_api_tenant(client: TestClient, name: str = "Acme") -> ApiTenant:
    user_id = str(uuid.uuid4())
    created = client.post(
        "/api/v1/workspaces",
        json={"name": name, "timezone": "America/New_York"},
        headers=bearer(make_jwt(user_id)),
    )
    assert created.status_code == 201, created.text
    workspace_id = created.json()["id"]
    key = client.post(
        "/api/v1/api-keys",
        json={"name": "tests", "role": "owner"},
        params={"workspace_id": workspace_id},
        headers=bearer(make_jwt(user_id)),
    )
    assert key.status_code == 201, key.text
    return ApiTenant(client, user_id, workspace_id, key.json()["token"])


class Contract:
    """The SQL contract called directly as a tenant's owner (the contacts and sequences endpoints are
    someone else's): one committed transaction per call."""

    def __init__(self, db_url: str, tenant: ApiTenant):
        self.db_url = db_url
        self.tenant = tenant

    def _call(self, sql: str, params: tuple) -> list[tuple]:
        with psycopg.connect(self.db_url) as conn:
            act_as(conn, self.tenant.user_id)
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows

    def sender(self, channel: str, address: str) -> None:
        self._call(
            "SELECT drumbeat_api.create_sender(%s, %s, %s, %s)",
            (self.tenant.workspace_id, channel, address, Jsonb({"rate_per_second": 1000})),
        )

    def contacts(self, *rows: dict) -> list[str]:
        result = self._call(
            "SELECT u.contact_id FROM drumbeat_api.upsert_contacts(%s, %s) AS u",
            (self.tenant.workspace_id, Jsonb(list(rows))),
        )
        return [str(r[0]) for r in result]

    def contact(self, **fields) -> str:
        fields.setdefault("phone", f"+1555{uuid.uuid4().int % 10_000_000:07d}")
        return self.contacts(fields)[0]

    def sequence(self, definition: dict | None = None, *, activate: bool = True) -> str:
        definition = copy.deepcopy(definition or SMS_SEQUENCE)
        [(sequence_id,)] = self._call(
            "SELECT drumbeat_api.create_sequence(%s, %s)", (self.tenant.workspace_id, Jsonb(definition))
        )
        if activate:
            self._call("SELECT drumbeat_api.activate_sequence(%s, NULL)", (sequence_id,))
        return str(sequence_id)


@pytest.fixture
def tenant(client: TestClient) -> ApiTenant:
    return new_api_tenant(client, "Acme")


@pytest.fixture
def other_tenant(client: TestClient) -> ApiTenant:
    return new_api_tenant(client, "Globex")


def dispatch(db_url: str, rounds: int = 3) -> None:
    """A real dispatcher run to the outbox, its clock at the latest due step (so quiet hours never get in
    the way)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        due = conn.execute(
            "SELECT max(next_action_at) FROM drumbeat.enrollments WHERE status IN ('scheduled', 'active')"
        ).fetchone()[0]
        clock = max(due or dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC))
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (clock.isoformat(),))
        outbox = OutboxTransport(db_url)
        try:
            dispatcher = Dispatcher(conn, {"sms": outbox, "email": outbox})
            for _ in range(rounds):
                dispatcher.run_once()
        finally:
            outbox.close()
