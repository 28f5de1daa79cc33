"""`drumbeat outbox` and `drumbeat psql` as real processes against the test database: what the outbox
transport recorded, readable without SQL; psql without knowing where the database listens (and no
password in its arguments)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from app.commands.psql import connection_environment
from tests.sql.factories import new_tenant, sms_sequence
from tests.support.api import dispatch
from tests.support.processes import drumbeat


def _drumbeat(db_url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as cwd:
        return drumbeat(*args, cwd=Path(cwd), DATABASE_URL=db_url)


def _send(db_url: str) -> str:
    """One SMS sent to the outbox by a real dispatcher run; returns the workspace id."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        body = "Hi {{ contact.first_name }}\nSecond line"
        sequence = tenant.sequence(sms_sequence(name="Launch", steps=[{"kind": "sms", "body": body}]))
        tenant.enroll(sequence, [tenant.contact(phone="+15550102020", first_name="Ada")])
        conn.commit()
    dispatch(db_url)
    return str(tenant.workspace_id)


def test_the_outbox_prints_what_was_recorded_newest_first(db_url):
    empty = _drumbeat(db_url, "outbox")
    assert empty.returncode == 0 and "The outbox is empty" in empty.stdout
    workspace = _send(db_url)
    printed = _drumbeat(db_url, "outbox", "--limit", "5")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert " sms  sent  Launch #1" in lines[0]
    assert lines[1].startswith("  from ") and lines[1].endswith(" to +15550102020")
    assert lines[2:4] == ["  | Hi Ada", "  | Second line"]
    assert _drumbeat(db_url, "outbox", "--workspace", workspace).stdout == printed.stdout
    other = _drumbeat(db_url, "outbox", "--workspace", "00000000-0000-0000-0000-000000000000")
    assert "The outbox is empty" in other.stdout


def test_a_bad_limit_or_workspace_is_a_usage_error(db_url):
    for args in (("--limit", "0"), ("--workspace", "acme")):
        result = _drumbeat(db_url, "outbox", *args)
        assert result.returncode == 2, result.stderr
        assert "limit" in result.stderr or "workspace id" in result.stderr


def test_psql_opens_on_the_drumbeat_database(db_url):
    _send(db_url)
    result = _drumbeat(db_url, "psql", "-At", "-c", "SELECT count(*) FROM drumbeat.outbox")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    failed = _drumbeat(db_url, "psql", "-c", "SELECT * FROM drumbeat.nothing_here")
    assert failed.returncode != 0 and "nothing_here" in failed.stderr


def test_psql_gets_the_connection_in_its_environment_not_its_arguments():
    environment = connection_environment("postgresql://ops:s3cret@db.example:6543/drumbeat?sslmode=require")
    assert environment == {
        "PGUSER": "ops",
        "PGPASSWORD": "s3cret",
        "PGHOST": "db.example",
        "PGPORT": "6543",
        "PGDATABASE": "drumbeat",
        "PGSSLMODE": "require",
    }


def test_psql_takes_psql_s_own_options_even_h_and_help(db_url):
    help_text = _drumbeat(db_url, "psql", "--help")
    assert help_text.returncode == 0 and "psql is the PostgreSQL interactive terminal" in help_text.stdout
    host = conninfo_to_dict(db_url).get("host") or "127.0.0.1"
    result = _drumbeat(db_url, "psql", "-h", host, "-At", "-c", "SELECT 42")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
