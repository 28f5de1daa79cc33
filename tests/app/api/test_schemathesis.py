"""Property-based fuzzing of every operation in the served OpenAPI document (schemathesis): whatever
the generated input, a real `drumbeat api` process never answers 5xx, and every 4xx has the one error
shape. Requests carry a valid API key, so the fuzzing reaches the handlers and the SQL behind them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.sql.factories import new_tenant
from tests.support.processes import free_port

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")
EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def live_api(db_url, tmp_path):
    """(base URL, owner API key of a workspace with a sender, a sequence and a contact)."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        tenant.sender()
        tenant.sequence()
        tenant.contact(phone="+12025550123", first_name="Fuzz")
        conn.execute("RESET ROLE")
        token = conn.execute(
            "SELECT token FROM drumbeat.issue_api_key(%s, 'fuzz', 'owner', NULL)", (tenant.workspace_id,)
        ).fetchone()[0]
        conn.commit()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMTP_", "DRUMBEAT_"))}
    port = free_port()
    configured = {
        "DATABASE_URL": db_url,
        "DRUMBEAT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DRUMBEAT_SECRET_KEY": "fuzz-secret-key-with-at-least-32-characters",
        "TWILIO_AUTH_TOKEN": "fuzz-twilio-auth-token",
    }
    log = (tmp_path / "api.log").open("w")
    server = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)], env=environment | configured, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        # The server's log (tracebacks of any 5xx) is shown with a failure.
        print((tmp_path / "api.log").read_text()[-6000:])


def test_no_operation_answers_5xx(live_api):
    base, token = live_api
    schema = schemathesis.openapi.from_url(f"{base}/docs/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30, "the OpenAPI document should describe every endpoint"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples on every run: CI stays reproducible
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case) -> None:
            response = case.call(base_url=base, headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )
            elif response.status_code >= 400 and "json" in response.headers.get("content-type", [""])[0]:
                assert set(response.json()) == {"error"}, response.text

        exercise()
    assert not failures, "\n".join(failures[:20])
