"""`drumbeat doctor`: check the configuration, the database and what sending needs, one line per check:
`ok`, `warn` (works, but not as you may expect: e.g. messages go to the outbox) or `FAIL` (with the fix
when there is an obvious one); `skip` when an earlier failure leaves nothing to check. Exit 1 when a
check fails, 0 otherwise. Secrets are never printed, not even in part."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.commands import EXIT_FAILED, EXIT_OK
from app.core.settings import TWILIO_API, account_sid_problem, transaction_pooler_problem

HELP = "check the configuration, the database and the provider credentials"

CONNECT_TIMEOUT_SECONDS = 3
SHOWN_NAMES = 5  # pending migrations, workspaces lacking senders: the first few, then a count
TWILIO_AUTH_TOKEN = re.compile(r"^[0-9a-fA-F]{32}$")
CREDENTIALS = {
    "sms": "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
    "email": "SMTP_HOST (and SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD as needed)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Finding:
    status: str  # ok | warn | FAIL | skip
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.detail}"


def ok(check: str, detail: str) -> Finding:
    return Finding("ok", check, detail)


def warn(check: str, detail: str) -> Finding:
    return Finding("warn", check, detail)


def failed(check: str, detail: str) -> Finding:
    return Finding("FAIL", check, detail)


def skipped(check: str, detail: str) -> Finding:
    return Finding("skip", check, detail)


@dataclass(frozen=True)
class Usage:
    """What the database says sending needs: the channels active sequences use, and the workspaces."""

    active_channels: frozenset[str]
    workspaces: int
    with_active_sequences: int
    lacking_senders: list[tuple[object, str, list[str]]]  # (workspace id, name, channels without a sender)


class Report:
    """Prints each finding as it is made (a slow check shows where it is) and remembers the statuses."""

    def __init__(self) -> None:
        self.statuses: list[str] = []

    def add(self, finding: Finding) -> Finding:
        print(finding, flush=True)
        self.statuses.append(finding.status)
        return finding

    def finish(self) -> int:
        failures, warnings = self.statuses.count("FAIL"), _count(self.statuses.count("warn"), "warning")
        if failures:
            print(f"\n{failures} of {len(self.statuses)} checks failed, {warnings}")
            return EXIT_FAILED
        print(f"\nno check failed, {warnings}" if "warn" in self.statuses else "\nall checks passed")
        return EXIT_OK


def run(args: argparse.Namespace) -> int:
    production = os.environ.get("DRUMBEAT_ENV") == "production"
    report = Report()
    report.add(configuration())
    with connection(report) as conn:
        report.add(connection_mode(os.environ.get("DATABASE_URL")))
        current = report.add(schema(conn)).status in ("ok", "warn")  # warn: this login cannot tell
        report.add(procrastinate_schema(conn))
        report.add(database_role(conn) if current else skipped("database role", "needs a current schema"))
        report.add(database_linter(conn) if current else skipped("database linter", "needs a current schema"))
        usage = usage_of(conn, report) if current else None
        for channel in ("sms", "email"):
            report.add(credentials(channel, production, usage))
        report.add(channel_holds(conn) if usage else skipped("held channels", "needs readable contents"))
        if usage:
            report.add(senders(usage))
        else:
            needs = "the database" if conn is None else "readable contents" if current else "a current schema"
            report.add(skipped("senders", f"needs {needs}"))
    report.add(public_url(production))
    report.add(secret_key(production))
    return report.finish()


# -- configuration and database


def configuration() -> Finding:
    """Every variable app.core.settings reads (the first malformed one is named)."""
    from app.core.settings import ConfigError, load_settings

    try:
        settings = load_settings("postgresql://embedded")  # stands in for an unset DATABASE_URL
    except ConfigError as error:
        return failed("configuration", str(error))
    return ok("configuration", f"valid ({settings.env})")


class NoDatabase(Exception):
    """No database to connect to; the message says why."""


@contextmanager
def connection(report: Report) -> Iterator[object | None]:
    """A connection to the database the commands use (DATABASE_URL, else the embedded one), or None; the
    database finding says which database it is and why it cannot be reached."""
    import psycopg

    conn = None
    try:
        url, which = locate_database()
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
    except NoDatabase as error:
        report.add(failed("database", str(error)))
    except psycopg.Error as error:
        report.add(failed("database", f"cannot connect to {which}: {_first_line(error)}"))
    else:
        version = conn.info.server_version
        report.add(ok("database", f"{which}, PostgreSQL {version // 10000}.{version % 10000}"))
    try:
        yield conn
    finally:
        if conn is not None:
            conn.close()


def locate_database() -> tuple[str, str]:
    """The URL of the database the commands use, and which one it is (described without its password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from app.commands import CommandError, database_url
    from app.core.embedded import data_dir

    if url := os.environ.get("DATABASE_URL"):
        try:
            params = conninfo_to_dict(url)
        except ProgrammingError:  # its message may quote the URL, password included
            raise NoDatabase("DATABASE_URL is not a valid connection string") from None
        user = params.get("user") or "(default user)"
        where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        return url, f"{user}@{where}/{params.get('dbname') or user} (DATABASE_URL)"
    place = f"the embedded database in {data_dir()}"
    try:
        return database_url("doctor"), f"{place} (DATABASE_URL is not set)"
    except CommandError as error:
        raise NoDatabase(f"DATABASE_URL is not set and {place} could not start: {error}") from None


def connection_mode(url: str | None) -> Finding:
    """Fails on Supabase's transaction pooler, which Drumbeat cannot use (README, "Connections and
    poolers"). Other poolers cannot be told from a direct connection by their address."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if not url:
        return ok("connection mode", "direct (the embedded database)")
    try:
        conninfo_to_dict(url)
    except ProgrammingError:
        return skipped("connection mode", "needs a valid DATABASE_URL")
    if problem := transaction_pooler_problem(url):
        return failed("connection mode", problem)
    return ok("connection mode", "not a transaction pooler Drumbeat knows of (use direct or session mode)")


def schema(conn) -> Finding:
    """Drumbeat's migrations and procrastinate's schema, all applied."""
    from app.core.migrate import MigrationError, pending_migrations

    if conn is None:
        return skipped("schema", "needs the database")
    import psycopg

    try:
        # Not migrate(dry_run=True): that waits for the lock of a running `drumbeat migrate`.
        pending = [m.name for m in pending_migrations(conn)]
    except MigrationError as error:
        return failed("schema", str(error))
    except psycopg.errors.InsufficientPrivilege:
        # A least-privilege login (the worker's, the API's) may not read the migrator's bookkeeping.
        return warn(
            "schema", "this login cannot read drumbeat_meta: run doctor as the migrating role to check"
        )
    if pending:
        return failed("schema", f"{len(pending)} pending ({_some(pending)}): run `drumbeat migrate`")
    return ok("schema", "current")


def channel_holds(conn) -> Finding:
    """The circuit breaker: a channel held because its provider refused the credentials or could not be
    reached fails the check (its sends wait); held senders (a 429) are only reported."""
    import psycopg

    from app.core.queries import queries

    try:
        holds = conn.execute(queries("operator")["channel_holds"]).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        return warn(
            "held channels", "this login cannot read drumbeat.channel_holds: run doctor as the migrating role"
        )
    channels = [
        f"{channel} held since {since:%Y-%m-%d %H:%M:%S %Z} ({reason}{f' {code}' if code else ''}; "
        f"next probe {probe:%H:%M:%S})"
        for channel, sender_id, reason, code, since, probe in holds
        if sender_id is None
    ]
    senders_held = len(holds) - len(channels)
    note = f"; {_count(senders_held, 'sender')} rate-limited" if senders_held else ""
    if channels:
        return failed(
            "held channels", "; ".join(channels) + note + ": fix the credentials or wait for the provider"
        )
    return ok("held channels", "none" + note)


def procrastinate_schema(conn) -> Finding:
    from app.core.queries import queries

    if conn is None:
        return skipped("procrastinate schema", "needs the database")
    if conn.execute(queries("operator")["procrastinate_installed"]).fetchone()[0]:
        return ok("procrastinate schema", "present (schema procrastinate)")
    return failed("procrastinate schema", "schema procrastinate has no job table: run `drumbeat migrate`")


def database_role(conn) -> Finding:
    """What DATABASE_URL's login can run; a login that can run nothing of Drumbeat's fails."""
    from app.core.queries import queries

    login, trusted, worker, api = conn.execute(queries("operator")["login_capabilities"]).fetchone()
    can = {"the worker": worker, "the API": api, "the operator commands": trusted}
    able = [what for what, allowed in can.items() if allowed]
    unable = [what for what, allowed in can.items() if not allowed]
    if not able:
        return failed(
            "database role",
            f"{login} can run nothing: make it a member of drumbeat_worker (worker) or drumbeat_authenticator "
            "(API), see README 'Database roles'",
        )
    detail = f"{login} can run {_some(able, ' and ')}"
    return ok("database role", detail + (f"; not {_some(unable, ' or ')}" if unable else ""))


def database_linter(conn) -> Finding:
    """Drumbeat's equivalents of Supabase's database linter (sql/queries/lints.sql): ERROR and WARN
    findings warn, since Drumbeat works with them; they are what Supabase's dashboard would flag."""
    import psycopg

    from app.core.lints import lint, problems

    try:
        findings = lint(conn)
    except psycopg.Error as error:
        return warn("database linter", f"cannot run: {_first_line(error)}")
    found = problems(findings)
    if found:
        return warn(
            "database linter", f"{_count(len(found), 'finding')}: {_some([str(f) for f in found], '; ')}"
        )
    info = len(findings)
    return ok("database linter", "no ERROR or WARN finding" + (f" ({info} INFO)" if info else ""))


def usage_of(conn, report: Report) -> Usage | None:
    import psycopg

    from app.core.queries import queries

    operator = queries("operator")
    try:
        # The worker's own query: production fails here exactly when `drumbeat worker` would refuse to start.
        channels = frozenset(row[0] for row in conn.execute(queries("dispatch")["active_channels"]))
        workspaces, with_active = conn.execute(operator["workspace_counts"]).fetchone()
        lacking = [(w, name, list(c)) for w, name, c in conn.execute(operator["missing_senders"])]
    except psycopg.Error as error:
        report.add(failed("database contents", f"cannot be read: {_first_line(error)}"))
        return None
    return Usage(channels, workspaces, with_active, lacking)


# -- sending


def credentials(channel: str, production: bool, usage: Usage | None) -> Finding:
    """Well-formed when set; when not set, the channel's messages go to the outbox, which production
    refuses for a channel that active sequences use."""
    check = f"{channel} credentials"
    problem = sms_credential_problem() if channel == "sms" else email_credential_problem()
    if problem:
        return failed(check, problem)
    if os.environ.get("DRUMBEAT_TRANSPORT") == "outbox":
        return warn(
            check, f"DRUMBEAT_TRANSPORT=outbox: {channel} messages go to the outbox, not to recipients"
        )
    if channel == "sms" and os.environ.get("TWILIO_ACCOUNT_SID"):
        return ok(check, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN set")
    if channel == "email" and os.environ.get("SMTP_HOST"):
        login = "with a login" if os.environ.get("SMTP_USERNAME") else "without a login"
        return ok(
            check, f"SMTP server {os.environ['SMTP_HOST']}:{os.environ.get('SMTP_PORT') or 587}, {login}"
        )
    outbox = f"{channel} messages go to the outbox (drumbeat.outbox), not to recipients"
    if not production:
        return warn(check, f"not set: {outbox}; set {CREDENTIALS[channel]} to send")
    if usage is None:
        return warn(check, f"not set, and whether active sequences send {channel} is unknown: {outbox}")
    if channel in usage.active_channels:
        return failed(
            check,
            f"active sequences send {channel} but {CREDENTIALS[channel]} are not set: "
            "`drumbeat worker` refuses to start in production",
        )
    return warn(check, f"not set (no active sequence sends {channel} yet): {outbox}")


def sms_credential_problem() -> str | None:
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if bool(sid) != bool(token):
        return _only_one_of("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    base_url = os.environ.get("DRUMBEAT_TWILIO_BASE_URL") or TWILIO_API
    if sid and (problem := account_sid_problem(sid, base_url)):
        return problem
    # Only Twilio's own tokens have a known shape; a compatible provider's (SignalWire's PT…) differ.
    if token and base_url.rstrip("/") == TWILIO_API and not TWILIO_AUTH_TOKEN.match(token):
        return "TWILIO_AUTH_TOKEN is malformed: it is 32 hex characters (Twilio console, Account Info)"
    return None


def email_credential_problem() -> str | None:
    host, port = os.environ.get("SMTP_HOST"), os.environ.get("SMTP_PORT")
    username, password = os.environ.get("SMTP_USERNAME"), os.environ.get("SMTP_PASSWORD")
    if bool(username) != bool(password):
        return _only_one_of("SMTP_USERNAME", "SMTP_PASSWORD")
    if username and not host:
        return "SMTP_USERNAME and SMTP_PASSWORD are set but SMTP_HOST is not: set the server's host name"
    if host and "://" in host:
        return "SMTP_HOST is a URL: give the host name only (e.g. smtp.example.com), the port in SMTP_PORT"
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return "SMTP_PORT is not a TCP port number (587 for STARTTLS, 465 for TLS)"
    return None


def _only_one_of(first: str, second: str) -> str:
    present, absent = (first, second) if os.environ.get(first) else (second, first)
    return f"{present} is set but {absent} is not: set both, or neither"


def senders(usage: Usage) -> Finding:
    """Every workspace with an active sequence has a sender for each channel its message steps use."""
    if not usage.workspaces:
        return warn(
            "senders", "no workspaces yet: nothing will be sent (create one: POST /api/v1/workspaces)"
        )
    if usage.lacking_senders:
        lacking = [f"{name} ({w}) needs {' and '.join(c)}" for w, name, c in usage.lacking_senders]
        return failed(
            "senders",
            f"{_count(len(lacking), 'workspace')} with active sequences but no sender for a channel they use: "
            f"{_some(lacking, '; ')}; add one with POST /api/v1/senders",
        )
    if not usage.with_active_sequences:
        return ok("senders", f"{_count(usage.workspaces, 'workspace')}, none with an active sequence yet")
    active = _count(usage.with_active_sequences, "workspace")
    return ok("senders", f"{active} with active sequences, each with the senders its steps need")


# -- links and webhooks


def public_url(production: bool) -> Finding:
    url = (os.environ.get("DRUMBEAT_PUBLIC_URL") or "").rstrip("/")
    if url:
        if production and url.startswith("http://"):
            return warn("public url", f"{url} is plain http: providers and mail clients should reach https")
        return ok("public url", url)
    if production:
        return failed(
            "public url",
            "DRUMBEAT_PUBLIC_URL is not set: Twilio webhooks cannot be verified, messages with tracking or "
            "unsubscribe links fail; set it to this server's https:// address",
        )
    from app.core.settings import DEFAULT_HOST, DEFAULT_PORT, local_server_url

    local = local_server_url(
        os.environ.get("DRUMBEAT_HOST") or DEFAULT_HOST, os.environ.get("DRUMBEAT_PORT") or DEFAULT_PORT
    )
    return warn(
        "public url",
        f"DRUMBEAT_PUBLIC_URL is not set: development uses {local} (links work on this machine only, Twilio "
        "webhooks are not verified); set it to this server's https:// address",
    )


def secret_key(production: bool) -> Finding:
    secret = os.environ.get("DRUMBEAT_SECRET_KEY")
    if secret and len(secret) >= 32:
        return ok("secret key", "DRUMBEAT_SECRET_KEY set")
    generate = "generate one with `openssl rand -hex 32`"
    if secret:
        return failed("secret key", f"DRUMBEAT_SECRET_KEY is shorter than 32 characters: {generate}")
    if production:
        problem = (
            f"DRUMBEAT_SECRET_KEY is not set: links cannot be signed (unsubscribe, tracking); {generate}"
        )
        return failed("secret key", problem)
    from app.core.settings import development_key_path

    return ok(
        "secret key",
        f"DRUMBEAT_SECRET_KEY is not set: development uses the key kept in {development_key_path()}",
    )


def _some(names: list[str], separator: str = ", ") -> str:
    shown = separator.join(names[:SHOWN_NAMES])
    return f"{shown}{separator}and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else shown


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
