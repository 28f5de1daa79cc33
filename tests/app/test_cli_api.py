"""`drumbeat keys` and `drumbeat api` as real processes: a key created by the operator authenticates
requests to a running API server, and stops working once revoked."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from tests.sql.factories import new_tenant
from tests.support.processes import DRUMBEAT, drumbeat, drumbeat_environment, free_port


def _drumbeat(db_url: str, *args: str) -> subprocess.CompletedProcess:
    """`drumbeat ARGS` against db_url, in a fresh directory (no stray .env), no inherited Drumbeat variables."""
    with tempfile.TemporaryDirectory() as cwd:
        return drumbeat(*args, cwd=Path(cwd), DATABASE_URL=db_url)


def _wait_until_serving(base: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/docs/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("drumbeat api did not start serving")


def test_operator_key_authenticates_against_a_running_api_until_revoked(db_url):
    with psycopg.connect(db_url) as conn:
        workspace_id = str(new_tenant(conn).workspace_id)
        conn.commit()
    created = _drumbeat(
        db_url, "keys", "create", "--workspace", workspace_id, "--role", "admin", "--name", "ops"
    )
    assert created.returncode == 0, created.stderr
    token = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("token:"))
    key_id = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("key id:"))
    listed = _drumbeat(db_url, "keys", "list", "--workspace", workspace_id)
    assert token[:16] in listed.stdout and "admin" in listed.stdout and token not in listed.stdout

    port = free_port()
    server = subprocess.Popen(
        [DRUMBEAT, "api", "--port", str(port)],
        env=drumbeat_environment(DATABASE_URL=db_url),
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(base, time.monotonic() + 30)
        headers = {"Authorization": f"Bearer {token}"}
        workspaces = httpx.get(f"{base}/api/v1/workspaces", headers=headers, timeout=5)
        assert workspaces.status_code == 200 and [w["id"] for w in workspaces.json()] == [workspace_id]
        assert _drumbeat(db_url, "keys", "revoke", key_id).returncode == 0
        refused = httpx.get(f"{base}/api/v1/workspaces", headers=headers, timeout=5)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_keys_create_names_a_bad_workspace(db_url):
    result = _drumbeat(db_url, "keys", "create", "--workspace", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1 and "drumbeat keys create:" in result.stderr


def test_workspaces_create_with_an_owner_key_then_list(db_url):
    created = _drumbeat(
        db_url, "workspaces", "create", "--name", "Acme", "--timezone", "Europe/Paris", "--owner-key"
    )
    assert created.returncode == 0, created.stderr
    workspace_id = created.stdout.split()[2]
    token = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("owner key:"))
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT drumbeat.authenticate_api_key(%s)", (token,)).fetchone()[0] is not None
        row = conn.execute(
            "SELECT w.name, w.timezone, m.role FROM drumbeat.workspaces w"
            " JOIN drumbeat.workspace_members m ON m.workspace_id = w.id WHERE w.id = %s",
            (workspace_id,),
        ).fetchone()
    assert row == ("Acme", "Europe/Paris", "owner")
    listed = _drumbeat(db_url, "workspaces", "list")
    assert listed.returncode == 0 and workspace_id in listed.stdout and "Europe/Paris" in listed.stdout


def test_workspaces_create_names_a_bad_timezone_and_writes_nothing(db_url):
    result = _drumbeat(db_url, "workspaces", "create", "--name", "Acme", "--timezone", "Mars/Base")
    assert result.returncode == 1 and "Mars/Base" in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM drumbeat.workspaces").fetchone()[0] == 0


def test_the_operator_shares_a_number_between_workspaces(db_url):
    with psycopg.connect(db_url) as conn:
        owner, agency = (
            new_tenant(conn, "Brand A", with_sender=False),
            new_tenant(conn, "Brand B", with_sender=False),
        )
        owner.sender("sms", "+15550003333")
        conn.commit()
    shared = _drumbeat(
        db_url, "senders", "share", "--address", "+15550003333", "--workspace", str(agency.workspace_id)
    )
    assert shared.returncode == 0, shared.stderr
    users = _drumbeat(db_url, "senders", "users", "--address", "+15550003333")
    lines = users.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [str(owner.workspace_id), "owner"],
        [str(agency.workspace_id), "shared"],
    ]
    unknown = _drumbeat(
        db_url, "senders", "share", "--address", "+15550004444", "--workspace", str(agency.workspace_id)
    )
    assert unknown.returncode == 1 and "no workspace uses +15550004444" in unknown.stderr
