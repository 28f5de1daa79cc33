"""The README's run command on a machine with no database: `scripts/run` (no DATABASE_URL) starts an
embedded Postgres in DRUMBEAT_DATA_DIR, migrates, serves the API and runs a worker; the first run prints an
API key that works; Ctrl-C stops it cleanly; the second run reuses the data (same workspace, same key)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.e2e import fresh_laptop
from tests.e2e.fresh_laptop import RUN_COMMAND
from tests.support.processes import DRUMBEAT, committed_tenant, drumbeat, drumbeat_environment, free_port


class Running:
    """`scripts/run` (or another command line) in the background; its banner read line by line from stdout."""

    def __init__(
        self, environment: dict[str, str], cwd: Path, command: tuple[str, ...] = (RUN_COMMAND,)
    ) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            list(command),
            env=environment,
            cwd=cwd,  # no stray .env from the repository
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.banner: list[str] = []

    def wait_for_banner(self, timeout: float = 120) -> float:
        """Read stdout until the banner's last line; returns seconds from start to serving."""
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.banner.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops everything"):
                return time.monotonic() - self.started
            assert time.monotonic() < deadline, "no banner in time"
        raise AssertionError(f"scripts/run exited ({self.process.wait()}) before serving: {self.banner}")

    def field(self, name: str) -> str | None:
        """The last word of the banner line labelled `name`."""
        for line in self.banner:
            if re.match(rf"\s+{name}\s", line):
                return line.split()[-1]
        return None

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_run_command_serves_an_api_key_on_an_embedded_database_and_reuses_it(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = fresh_laptop.environment(tmp_path / "data", DRUMBEAT_PORT=str(port))

    first = Running(environment, tmp_path)
    try:
        cold = first.wait_for_banner()
        assert any(
            f"drumbeat on the embedded Postgres in {tmp_path / 'data' / 'pgdata'}" in line
            for line in first.banner
        )
        token, workspace_id = first.field("API key"), first.field("workspace")
        assert token and token.startswith("dbk_")
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        workspaces = httpx.get(f"{base}/api/v1/workspaces", headers={"Authorization": f"Bearer {token}"})
        assert workspaces.status_code == 200
        assert [(w["name"], w["role"]) for w in workspaces.json()] == [("Default workspace", "owner")]
        assert httpx.get(f"{base}/api/v1/workspaces").status_code == 401
        assert first.interrupt() == 0
    finally:
        first.kill()

    second = Running(environment, tmp_path)
    try:
        warm = second.wait_for_banner()
        assert second.field("workspace") == workspace_id
        assert not any("dbk_" in line for line in second.banner)  # a key is shown once, on the first run
        again = httpx.get(f"{base}/api/v1/workspaces", headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 200 and again.json()[0]["id"] == workspace_id
        assert second.interrupt() == 0
    finally:
        second.kill()
    print(f"drumbeat up: cold start {cold:.1f} s, warm start {warm:.1f} s")  # shown with pytest -s


def test_up_against_database_url_migrates_it_and_mints_the_first_key(db_url, tmp_path):
    """With DATABASE_URL the same happens on that database: no embedded server is started."""
    port = free_port()
    environment = drumbeat_environment(DATABASE_URL=db_url, DRUMBEAT_DATA_DIR=str(tmp_path / "unused"))
    running = Running(environment, tmp_path, (DRUMBEAT, "up", "--port", str(port)))
    try:
        running.wait_for_banner()
        assert any(f"{conninfo_to_dict(db_url)['dbname']} on " in line for line in running.banner)
        token = running.field("API key")
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/workspaces", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200 and answer.json()[0]["name"] == "Default workspace"
        assert running.interrupt() == 0
    finally:
        running.kill()
    assert not (tmp_path / "unused" / "pgdata").exists()  # no embedded server (the dev key may live there)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(marker: str) -> str:
    """The shell block of the README that follows the comment `<!-- marker ... -->`."""
    after = README.read_text().split(f"<!-- {marker}", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readmes_first_sequence_runs_as_written(db_url, tmp_path):
    """Sender, contact, sequence, activation, an enrollment with an Idempotency-Key, then GET /messages: the
    README's own commands, with curl, against `drumbeat up` and its worker."""
    port = free_port()
    environment = drumbeat_environment(DATABASE_URL=db_url, DRUMBEAT_DATA_DIR=str(tmp_path / "data"))
    running = Running(environment, tmp_path, (DRUMBEAT, "up", "--port", str(port)))
    try:
        running.wait_for_banner()
        shell = os.environ | {"API": f"http://127.0.0.1:{port}/api/v1", "KEY": running.field("API key")}
        done = subprocess.run(
            ["bash", "-eu", "-c", readme_block("first-sequence")],
            env=shell,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        [message] = answer["items"]
        assert (message["status"], message["subject"]) == ("sent", "Welcome, Ada")
        assert message["body"] == "Hi Ada, glad you are here. Sam at Acme"
        assert (message["to_address"], message["in_outbox"]) == ("ada@example.com", True)
        assert running.interrupt() == 0
    finally:
        running.kill()


def test_up_on_a_port_in_use_exits_1_saying_so_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = drumbeat("up", "--port", str(port), cwd=tmp_path, DRUMBEAT_DATA_DIR=str(tmp_path / "data"))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert not (tmp_path / "data").exists()  # no embedded server was started


def search_path(*, with_venv: bool) -> str:
    """This machine's PATH without the virtualenv that holds `drumbeat` (as in a shell after scripts/run),
    or with it first (an activated virtualenv, a pip install into the system)."""
    venv_bin = os.path.dirname(DRUMBEAT)
    rest = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and entry != venv_bin]
    return os.pathsep.join([venv_bin, *rest] if with_venv else rest)


@pytest.mark.parametrize("on_path", [False, True], ids=["drumbeat-not-on-path", "drumbeat-on-path"])
def test_the_banner_prints_a_key_command_that_runs_as_printed(db_url, tmp_path, on_path):
    """Once the first run's key has been shown, the banner says how to make another: a command that works
    when pasted into the operator's shell, wherever it is, `drumbeat` on PATH or not."""
    tenant = committed_tenant(db_url)  # an existing workspace: no key is minted, the command is printed
    path = search_path(with_venv=on_path)
    environment = drumbeat_environment(
        DATABASE_URL=db_url, DRUMBEAT_DATA_DIR=str(tmp_path / "data"), PATH=path
    )
    running = Running(environment, tmp_path, (DRUMBEAT, "up", "--port", str(free_port())))
    try:
        running.wait_for_banner()
        [line] = [line for line in running.banner if re.match(r"\s+API key\s", line)]
        assert running.interrupt() == 0
    finally:
        running.kill()
    command = line.split("API key", 1)[1].strip()
    assert command.startswith("drumbeat keys create " if on_path else f"{DRUMBEAT} keys create ")
    assert f"--workspace {tenant.workspace_id}" in command
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        command, shell=True, cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^token:  dbk_", result.stdout, re.MULTILINE)
