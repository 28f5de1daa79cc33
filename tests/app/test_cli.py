"""The command line's promises: `--help` on every command and subcommand, and exit codes scripts can rely
on (0 success, 1 failure, 2 usage or configuration error)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMANDS, build_parser, main

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and nested subcommand, as argv prefixes."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


ALL_COMMANDS = command_paths(build_parser())


def test_every_registered_command_is_reachable():
    assert {path[0] for path in ALL_COMMANDS} == set(COMMANDS)
    assert ("keys", "create") in ALL_COMMANDS and ("holidays", "load") in ALL_COMMANDS


@pytest.mark.parametrize(
    "path", [p for p in ALL_COMMANDS if p != ("psql",)], ids=" ".join
)  # (psql's --help is psql's: tests/app/test_cli_outbox.py)
def test_help_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: drumbeat {' '.join(path)}")
    assert "(being written)" not in out


def test_top_level_help_lists_commands_and_exit_codes():
    result = subprocess.run([DRUMBEAT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)
    assert "Exit codes" in result.stdout


@pytest.mark.parametrize(
    "argv", [[], ["no-such-command"], ["keys"], ["api", "--port", "eighty"], ["migrate", "--bogus"]]
)
def test_usage_errors_exit_2(argv):
    result = subprocess.run([DRUMBEAT, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "usage: drumbeat" in result.stderr


def test_a_malformed_variable_exits_2_naming_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "SMTP_PORT": "seventy"}
    result = subprocess.run(
        [DRUMBEAT, "worker"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "SMTP_PORT" in result.stderr


@pytest.mark.parametrize("command", [["migrate"], ["worker"], ["keys", "list", "--workspace", "w"]])
def test_supabase_s_transaction_pooler_is_refused_before_connecting(tmp_path, command):
    """Exit 2 with the fix, at once: the address says it all, and no connection is attempted (none is
    possible here)."""
    pooler = "postgresql://postgres.ref:hunter2@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": pooler}
    result = subprocess.run(
        [DRUMBEAT, *command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "transaction pooler" in result.stderr and "port 5432" in result.stderr
    assert "hunter2" not in result.stderr


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("SMTP_PORT=seventy\nDRUMBEAT_LOG_LEVEL=loud\n")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    from_file = subprocess.run(
        [DRUMBEAT, "worker"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert from_file.returncode == 2 and "SMTP_PORT" in from_file.stderr
    overridden = subprocess.run(
        [DRUMBEAT, "worker"],
        capture_output=True,
        text=True,
        env=env | {"SMTP_PORT": "2525"},
        cwd=tmp_path,
        timeout=60,
    )
    assert overridden.returncode == 2 and "DRUMBEAT_LOG_LEVEL" in overridden.stderr


def test_a_missing_env_file_named_by_drumbeat_env_file_exits_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DRUMBEAT_ENV_FILE": str(tmp_path / "nope.env")}
    result = subprocess.run(
        [DRUMBEAT, "migrate"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2 and "nope.env" in result.stderr
