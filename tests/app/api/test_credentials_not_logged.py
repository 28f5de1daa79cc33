"""The Authorization header never reaches the logs, whatever becomes of the request: known secrets (API
keys valid and unknown, JWTs valid, forged and expired) are sent in requests that succeed and in requests
that fail (401, 404, 405, 413 announced and chunked, 422, 429, and 500 with its traceback), with every
logger at DEBUG; then neither a token nor its secret part appears in anything written.

Twice: in this process through the real app (the lines as app/core/logs.py writes them, and anything
else written to stdout or stderr), and as deployed, `drumbeat api` (uvicorn and its loggers, the
settings read from the environment) with all it writes read."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from tests.log_capture import captured_logs
from tests.support.api import JWT_SECRET, PUBLIC_URL, bearer, make_jwt, new_api_tenant
from tests.support.processes import DRUMBEAT, drumbeat_environment, free_port, wait_until_serving

BODY_LIMIT = 1024
RATE, BURST = 0.1, 3  # nothing refills during the test


def secret_parts(token: str) -> list[str]:
    """A token, and the part of it that is the secret: an API key's text after its public prefix
    (dbk_ and 12 characters, shown in key listings), a JWT's signature."""
    return [token, token[16:] if token.startswith("dbk_") else token.rsplit(".", 1)[1]]


def chunked(size: int) -> Iterator[bytes]:
    for _ in range(size // 512):
        yield b" " * 512


def break_the_database(db_url: str) -> None:
    """Make key authentication and the workspace listing fail as no caller can: a 500 each (this
    test's database is its own)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION drumbeat.authenticate_api_key(text) CASCADE")
        conn.execute("ALTER TABLE drumbeat.workspaces RENAME TO workspaces_gone")


def make_every_kind_of_request(http: httpx.Client, db_url: str) -> tuple[list[str], list[int]]:
    """Requests carrying known secrets, most of them failing: the tokens sent, and the statuses."""
    tenant = new_api_tenant(http)  # its user spends 2 of their BURST tokens, its key none
    key = tenant.key
    unknown_key = "dbk_Zq8unknownkey_" + "S3cr3t" * 6
    user_jwt = make_jwt(tenant.user_id)
    forged_jwt = make_jwt(tenant.user_id, secret="a-forged-secret-that-is-long-enough-to-sign!")
    expired_jwt = make_jwt(tenant.user_id, expires_in=-60)
    stranger_jwt = make_jwt(str(uuid.uuid4()))  # a bucket of its own
    too_large = b'{"name": "' + b"x" * BODY_LIMIT + b'"}'
    responses = [
        http.get("/api/v1/senders", headers=bearer(key)),  # 200
        http.post("/api/v1/senders", json={"channel": "fax"}, headers=bearer(key)),  # 422
        http.post("/api/v1/workspaces", content=too_large, headers=bearer(key)),  # 413
        http.post("/api/v1/workspaces", content=chunked(4 * BODY_LIMIT), headers=bearer(key)),  # 413
        http.get("/api/v1/no-such-thing", headers=bearer(key)),  # 404
        http.delete("/api/v1/workspaces", headers=bearer(key)),  # 405
        http.get("/api/v1/senders", headers=bearer(key)),  # 200: the last token of the key's burst
        http.get("/api/v1/senders", headers=bearer(key)),  # 429
        http.get("/api/v1/senders", headers=bearer(unknown_key)),  # 401
        http.post("/api/v1/workspaces", content=too_large, headers=bearer(unknown_key)),  # 413
        http.post("/api/v1/workspaces", json={"name": ""}, headers=bearer(user_jwt)),  # 422
        http.get("/api/v1/workspaces", headers=bearer(user_jwt)),  # 429
        http.get("/api/v1/workspaces", headers=bearer(forged_jwt)),  # 401
        http.get("/api/v1/workspaces", headers=bearer(expired_jwt)),  # 401
    ]
    break_the_database(db_url)
    responses += [
        http.get("/api/v1/senders", headers=bearer(key)),  # 500, the key in flight to the database
        http.get("/api/v1/workspaces", headers=bearer(stranger_jwt)),  # 500
    ]
    tokens = [key, unknown_key, user_jwt, forged_jwt, expired_jwt, stranger_jwt]
    return tokens, [response.status_code for response in responses]


EXPECTED = [200, 422, 413, 413, 404, 405, 200, 429, 401, 413, 422, 429, 401, 401, 500, 500]


def assert_no_secret_in(text: str, tokens: list[str]) -> None:
    for part in (part for token in tokens for part in secret_parts(token)):
        assert part not in text, f"a credential was logged: {part[:12]}..."


@pytest.fixture
def strict(api_settings) -> Iterator[TestClient]:
    settings = dataclasses.replace(
        api_settings, max_body_bytes=BODY_LIMIT, rate_limit_per_second=RATE, rate_limit_burst=BURST
    )
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


def test_no_credential_is_logged_by_the_app_whatever_the_outcome(strict, db_url, capfd):
    with captured_logs(logging.DEBUG) as captured:
        tokens, statuses = make_every_kind_of_request(strict, db_url)
    assert statuses == EXPECTED
    # Not vacuous: the failures were logged, the 500s with their tracebacks.
    assert sorted(line["status"] for line in captured.named("request")) == sorted([201, 201, *EXPECTED])
    unexpected = captured.named("unhandled_error")
    assert len(unexpected) == 2 and all("Traceback" in line["exc"] for line in unexpected)
    out, err = capfd.readouterr()
    assert_no_secret_in(captured.text + out + err, tokens)


def test_no_credential_is_logged_by_a_running_api_server(db_url):
    port = free_port()
    server = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)],
        env=drumbeat_environment(
            DATABASE_URL=db_url,
            DRUMBEAT_JWT_SECRET=JWT_SECRET,
            DRUMBEAT_LOG_LEVEL="DEBUG",
            DRUMBEAT_LOG_FORMAT="json",
            DRUMBEAT_MAX_BODY_BYTES=str(BODY_LIMIT),
            DRUMBEAT_RATE_LIMIT=f"{RATE * 60:g}/min",
            DRUMBEAT_RATE_LIMIT_BURST=str(BURST),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            wait_until_serving(http, server)
            tokens, statuses = make_every_kind_of_request(http, db_url)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert statuses == EXPECTED, output[-2000:]
    assert output.count('"msg": "request"') >= len(EXPECTED) and output.count("unhandled_error") == 2
    assert_no_secret_in(output, tokens)
