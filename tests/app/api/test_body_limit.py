"""The request body limit (DRUMBEAT_MAX_BODY_BYTES, 1 MiB by default), on the real app and database: a
larger body is a 413 in the API's error shape naming the limit, whether the client announced its length
or sent it chunked, and a chunked body is read no further than the limit; the CSV import keeps its own."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from app.core.settings import Settings
from tests.support.api import PUBLIC_URL, ApiTenant, new_api_tenant

MIB = 1 << 20


def workspace_body(size: int) -> bytes:
    """A JSON workspace of exactly `size` bytes (its name pads it out)."""
    empty = json.dumps({"name": "", "timezone": "UTC"}).encode()
    return json.dumps({"name": "x" * (size - len(empty)), "timezone": "UTC"}).encode()


def chunks_of(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_too_large(response, limit_text: str) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "too_large" and limit_text in error["message"], error


def test_the_default_limit_is_one_mebibyte(api_settings):
    assert api_settings.max_body_bytes == MIB == Settings(database_url="x").max_body_bytes


def test_a_body_over_the_limit_is_413_naming_it(tenant):
    response = tenant.client.post(
        "/api/v1/workspaces", content=workspace_body(MIB + 1), headers=tenant.user_headers
    )
    assert_too_large(response, "limit of 1048576 bytes (1 MiB)")
    assert response.request.headers["content-length"] == str(MIB + 1)


def test_a_body_of_exactly_the_limit_is_read(tenant):
    response = tenant.client.post(
        "/api/v1/workspaces", content=workspace_body(MIB), headers=tenant.user_headers
    )
    assert response.status_code == 422, response.text  # read and judged: the name is too long


def test_a_chunked_body_over_the_limit_is_413(tenant):
    response = tenant.client.post(
        "/api/v1/workspaces", content=chunks_of(workspace_body(MIB + 1)), headers=tenant.user_headers
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_too_large(response, "limit of 1048576 bytes (1 MiB)")


@pytest.fixture
def small_limit(api_settings) -> Iterator[TestClient]:
    """The real app with DRUMBEAT_MAX_BODY_BYTES at 1000."""
    settings = dataclasses.replace(api_settings, max_body_bytes=1000)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


def endless_chunked_post(client: TestClient, path: str, headers: dict[str, str], chunk: int) -> dict:
    """POST a body that never ends, in `chunk`-byte request events and without Content-Length, straight
    through the ASGI app (as a server hands a chunked upload over); the response, and how many bytes the
    app asked for. Should the app read on regardless, the body ends after 1 MiB (so that the test fails)."""
    pulled = {"bytes": 0}
    response: dict = {"status": None, "body": b""}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver.local"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
        "state": {},
    }

    async def receive() -> dict:
        more = pulled["bytes"] < MIB
        pulled["bytes"] += chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": more}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    async def run() -> None:
        await client.app(scope, receive, send)

    client.blocking_portal.call(run)
    return {**response, "body": msgspec.json.decode(response["body"]), "pulled": pulled["bytes"]}


def test_a_chunked_body_is_cut_off_at_the_limit_not_read_whole(small_limit):
    tenant = new_api_tenant(small_limit)
    answer = endless_chunked_post(small_limit, "/api/v1/workspaces", tenant.user_headers, chunk=100)
    assert answer["status"] == 413, answer
    assert answer["body"]["error"]["code"] == "too_large"
    assert "limit of 1000 bytes" in answer["body"]["error"]["message"]
    assert answer["pulled"] <= 1000 + 100  # the chunk that crossed the limit, and not one more


def test_the_limit_is_the_configured_one_for_every_caller_and_route(small_limit):
    tenant = new_api_tenant(small_limit)
    response = tenant.post("/senders", {"channel": "sms", "address": "+15550000001", "pad": "x" * 1000})
    assert_too_large(response, "limit of 1000 bytes")
    # Webhooks too: the form is refused before its signature (a wrong one here) is checked.
    response = small_limit.post(
        "/webhooks/twilio/inbound", data={"Body": "x" * 1000}, headers={"X-Twilio-Signature": "wrong"}
    )
    assert_too_large(response, "limit of 1000 bytes")
    assert tenant.post("/senders", {"channel": "sms", "address": "+15550000001"}).status_code == 201


def test_the_csv_import_keeps_its_own_larger_limit(small_limit):
    tenant: ApiTenant = new_api_tenant(small_limit)
    rows = "".join(f"+1212555{i:04d},Row{i}\n" for i in range(100))
    body = ("phone,first_name\n" + rows).encode()
    assert len(body) > 1000
    response = small_limit.post(
        "/api/v1/contacts/import", content=body, headers=tenant.headers | {"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 100
