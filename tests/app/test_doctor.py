"""`drumbeat doctor` as a real process: exit 1 with a FAIL line naming the problem on broken
configurations, exit 0 on a good one, and never a secret in its output."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.commands.doctor import connection_mode
from app.core.migrate import drumbeat_functions, drumbeat_migrations
from tests.support.processes import committed_tenant, drumbeat

TWILIO = {"TWILIO_ACCOUNT_SID": "AC" + "0123456789abcdef" * 2, "TWILIO_AUTH_TOKEN": "fedcba9876543210" * 2}
SMTP = {"SMTP_HOST": "smtp.example.com", "SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "smtp-password-1234"}
LINKS = {"DRUMBEAT_PUBLIC_URL": "https://drumbeat.example.com", "DRUMBEAT_SECRET_KEY": "s3cret" * 8}
SECRETS = (TWILIO["TWILIO_AUTH_TOKEN"], SMTP["SMTP_PASSWORD"], LINKS["DRUMBEAT_SECRET_KEY"])


def doctor(tmp_path, **variables: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """The exit code and {check: (status, detail)} of one run, after checking that no secret was printed."""
    result = drumbeat("doctor", cwd=tmp_path, **variables)
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret[:8] not in output  # not even in part
    findings = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        check, _, detail = rest.strip().partition(": ")
        if status.strip() in ("ok", "warn", "FAIL", "skip"):
            findings[check] = (status.strip(), detail)
    return result.returncode, findings


def failures(findings: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {check: detail for check, (status, detail) in findings.items() if status == "FAIL"}


@pytest.fixture
def empty_db_url(cluster) -> Iterator[str]:
    """A database nothing was ever applied to."""
    name = f"drumbeat_empty_{os.getpid()}"
    janitor = cluster.janitor(name)
    janitor.init()
    try:
        yield cluster.url(name)
    finally:
        janitor.drop()


def test_passes_in_production_with_everything_configured(db_url, tmp_path):
    committed_tenant(db_url, active_sequence=True)
    code, findings = doctor(
        tmp_path, DATABASE_URL=db_url, DRUMBEAT_ENV="production", **TWILIO, **SMTP, **LINKS
    )
    assert code == 0, findings
    assert {status for status, _ in findings.values()} == {"ok"}
    assert list(findings) == [
        "configuration",
        "database",
        "connection mode",
        "schema",
        "procrastinate schema",
        "database role",
        "database linter",
        "sms credentials",
        "email credentials",
        "held channels",
        "senders",
        "public url",
        "secret key",
    ]
    assert findings["configuration"][1] == "valid (production)"
    server = conninfo_to_dict(db_url)
    database = f"{server['user']}@{server['host']}:{server['port']}/{server['dbname']} (DATABASE_URL)"
    assert re.fullmatch(re.escape(database) + r", PostgreSQL \d+\.\d+", findings["database"][1])
    assert findings["senders"][1] == "1 workspace with active sequences, each with the senders its steps need"


def test_an_unreachable_database_fails_and_its_checks_are_skipped(tmp_path):
    code, findings = doctor(tmp_path, DATABASE_URL="postgresql://postgres:hunter2@127.0.0.1:1/x")
    assert code == 1
    assert failures(findings).keys() == {"database"}
    assert findings["database"][1].startswith("cannot connect to postgres@127.0.0.1:1/x (DATABASE_URL): ")
    assert "hunter2" not in findings["database"][1]
    assert findings["schema"] == ("skip", "needs the database")
    assert findings["sms credentials"][0] == "warn"  # development: the outbox stands in


def test_a_held_channel_fails_naming_why_and_a_held_sender_is_reported(db_url, tmp_path):
    """The circuit breaker's holds (README, "Circuit breaker"): a whole channel held fails the check."""
    tenant = committed_tenant(db_url, active_sequence=True)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """INSERT INTO drumbeat.channel_holds (channel, sender_id, reason, error_code, held_since, probe_at)
               VALUES ('sms', NULL, 'auth', '20003', now(), now() + interval '1 minute'),
                      ('sms', (SELECT id FROM drumbeat.senders WHERE workspace_id = %s AND channel = 'sms'),
                       'rate_limited', '20429', now(), now() + interval '5 seconds')""",
            (tenant.workspace_id,),
        )
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, **TWILIO, **SMTP, **LINKS)
    assert code == 1
    detail = failures(findings)["held channels"]
    assert (
        detail.startswith("sms held since") and "(auth 20003;" in detail and "1 sender rate-limited" in detail
    )


def test_a_malformed_twilio_account_sid_fails(db_url, tmp_path):
    sid = "AC" + "z" * 32  # the right length, but not hex
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, **(TWILIO | {"TWILIO_ACCOUNT_SID": sid}))
    assert code == 1
    failed = failures(findings)
    assert failed.keys() == {"configuration", "sms credentials"}
    assert all(
        reason.startswith("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        for reason in failed.values()
    )


def test_pending_migrations_fail_with_the_fix(empty_db_url, tmp_path):
    code, findings = doctor(tmp_path, DATABASE_URL=empty_db_url)
    assert code == 1
    failed = failures(findings)
    assert failed.keys() == {"schema", "procrastinate schema"}
    pending = len(drumbeat_migrations()) + 2 + len(drumbeat_functions())  # procrastinate: schema, search_path
    assert failed["schema"].startswith(f"{pending} pending (migrations/0030_baseline.sql, ")
    assert failed["schema"].endswith(f"and {pending - 5} more): run `drumbeat migrate`")
    assert findings["senders"] == ("skip", "needs a current schema")


def test_production_fails_when_an_active_sms_sequence_has_no_twilio_credentials(db_url, tmp_path):
    committed_tenant(db_url, active_sequence=True)
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, DRUMBEAT_ENV="production", **SMTP, **LINKS)
    assert code == 1
    assert failures(findings) == {
        "sms credentials": "active sequences send sms but TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not "
        "set: `drumbeat worker` refuses to start in production"
    }


def test_a_workspace_without_the_sender_its_sequence_needs_fails(db_url, tmp_path):
    tenant = committed_tenant(db_url, active_sequence=True)
    with psycopg.connect(db_url) as conn:  # as the superuser: the contract never leaves a sequence so
        conn.execute("DELETE FROM drumbeat.senders WHERE workspace_id = %s", (tenant.workspace_id,))
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, **TWILIO, **SMTP, **LINKS)
    assert code == 1
    assert failures(findings) == {
        "senders": f"1 workspace with active sequences but no sender for a channel they use: "
        f"Acme ({tenant.workspace_id}) needs sms; add one with POST /api/v1/senders"
    }


def test_development_without_a_key_or_public_url_says_what_it_uses_instead(db_url, tmp_path):
    """Development just works: the key made in the data directory, the local server as the public URL."""
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, DRUMBEAT_DATA_DIR=str(tmp_path / "data"))
    assert code == 0, findings
    kept = tmp_path / "data" / "secret_key"
    assert findings["secret key"] == (
        "ok",
        f"DRUMBEAT_SECRET_KEY is not set: development uses the key kept in {kept}",
    )
    status, detail = findings["public url"]
    assert status == "warn" and detail.startswith(
        "DRUMBEAT_PUBLIC_URL is not set: development uses http://127.0.0.1:8000"
    )
    assert kept.read_text().strip() not in detail


def test_a_configuration_error_fails_and_the_other_checks_still_run(db_url, tmp_path):
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, DRUMBEAT_LOG_LEVEL="loud", **TWILIO, **LINKS)
    assert code == 1
    assert failures(findings) == {
        "configuration": "DRUMBEAT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"
    }
    assert findings["schema"] == ("ok", "current")
    assert findings["senders"][0] == "warn"  # warnings do not fail
    assert findings["senders"][1].startswith("no workspaces yet: nothing will be sent")


def test_database_linter_findings_warn_errors_first(db_url, tmp_path):
    """What Supabase's linter would flag (sql/queries/lints.sql) is a warning, not a failure; ERRORs are
    named first, since only the first few fit."""
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE public.doctor_probe (id int)")
    code, findings = doctor(tmp_path, DATABASE_URL=db_url, **TWILIO, **SMTP, **LINKS)
    assert code == 0, failures(findings)
    status, detail = findings["database linter"]
    assert status == "warn"
    assert re.match(
        r"\d+ findings?: ERROR rls_disabled_in_public: Table public\.doctor_probe is in schema public", detail
    ), detail


@pytest.fixture
def login(db_url) -> Iterator[Callable[..., str]]:
    """A login role made for one test (roles are cluster-wide: dropped at the end); returns its db URL."""
    made: list[str] = []

    def make(*member_of: str) -> str:
        name = f"drumbeat_doctor_{os.getpid()}_{len(made)}"
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            for role in member_of:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name)))
        made.append(name)
        return make_conninfo(db_url, user=name)

    yield make
    with psycopg.connect(db_url, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_the_database_role_says_what_a_worker_login_can_run(login, tmp_path):
    _, findings = doctor(tmp_path, DATABASE_URL=login("drumbeat_worker"))
    status, detail = findings["database role"]
    assert status == "ok"
    assert detail.endswith("can run the worker; not the API or the operator commands")


def test_a_login_that_can_run_nothing_fails(login, tmp_path):
    code, findings = doctor(tmp_path, DATABASE_URL=login())
    assert code == 1
    assert failures(findings)["database role"].endswith(
        "can run nothing: make it a member of drumbeat_worker "
        "(worker) or drumbeat_authenticator (API), see README 'Database roles'"
    )


@pytest.mark.parametrize(
    ("url", "status"),
    [
        (
            "postgresql://postgres.abcdefghijklmnop:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
            "FAIL",
        ),
        ("postgresql://postgres:pw@db.abcdefghijklmnop.supabase.co:6543/postgres", "FAIL"),
        ("postgresql://postgres.abcdefghijklmnop:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres", "ok"),
        ("postgresql://postgres:pw@db.abcdefghijklmnop.supabase.co:5432/postgres", "ok"),
        ("host=db.example.com port=6543 dbname=drumbeat", "ok"),
        (None, "ok"),
        ("postgresql://[broken", "skip"),
    ],
)
def test_supabase_s_transaction_pooler_fails_the_connection_mode(url, status):
    """Its address is enough to tell (and checking it needs no network here)."""
    finding = connection_mode(url)
    assert finding.status == status
    if status == "FAIL":
        assert "transaction pooler" in finding.detail and "pw" not in finding.detail
