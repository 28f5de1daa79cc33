"""`drumbeat demo` as a real process on a private embedded Postgres (no DATABASE_URL): it exits 0 in under a
minute or so, prints the planned timeline and the sends, and leaves in drumbeat_demo exactly what the
sequence should have done: a text to everyone, an email to everyone who did not reply, the repliers stopped,
every call task completed, every message inside business hours in its contact's time zone, including for
the contacts whose sequence crossed a daylight-saving change. --speed is checked before anything starts."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.commands.demo import CLOSES, OPENS, PERSONAS, WEEKDAYS, parse_speed
from app.core.embedded import start_embedded
from tests.e2e import fresh_laptop
from tests.e2e.fresh_laptop import RUN_COMMAND

REPLIERS = {p.phone for p in PERSONAS if p.reply}


def _drumbeat_demo(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RUN_COMMAND, "demo", *args],  # the README's run command
        env=fresh_laptop.environment(data_dir),
        cwd=data_dir,  # no stray .env
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DemoRun:
    """One finished `drumbeat demo` and what it left on the embedded server (started again to read it)."""

    def __init__(self, result: subprocess.CompletedProcess, seconds: float, server_url: str) -> None:
        self.result, self.seconds, self.server_url = result, seconds, server_url

    def rows(self, query: str, database: str = "drumbeat_demo") -> list[tuple]:
        with psycopg.connect(make_conninfo(self.server_url, dbname=database)) as conn:
            return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoRun]:
    # Not tmp_path: pytest may clean up the numbered temp directories of this run while another test session
    # starts, under the feet of the embedded server (which runs as another user when the tests run as root).
    with tempfile.TemporaryDirectory(prefix="drumbeat-demo-") as directory:
        yield from _run_demo(Path(directory))


def _run_demo(data_dir: Path) -> Iterator[DemoRun]:
    started = time.monotonic()
    result = _drumbeat_demo(data_dir=data_dir)
    seconds = time.monotonic() - started
    # The demo's process stopped the embedded server when it exited: start it again to read what it left.
    server = start_embedded(data_dir / "pgdata")
    try:
        yield DemoRun(result, seconds, server.get_uri())
    finally:
        server.cleanup()


def test_the_demo_plays_out_in_about_a_minute_and_exits_0(demo):
    assert demo.result.returncode == 0, demo.result.stdout[-3000:] + demo.result.stderr[-3000:]
    assert demo.seconds < 90
    assert "Traceback" not in demo.result.stderr


def test_it_says_which_database_it_uses_and_prints_the_preview_then_the_sends(demo):
    out = demo.result.stdout
    assert "drumbeat_demo on the embedded Postgres" in out
    preview = out[out.index("Planned timeline") : out.index("Playing it out")].splitlines()
    assert "planned, local time" in preview[1]
    # One row per contact and step, each with its local and its UTC time; some after a DST change (*).
    steps = Counter(
        kind for line in preview for kind in ("1 sms", "2 email", "3 call") if f" {kind} " in line
    )
    assert steps == {"1 sms": 20, "2 email": 20, "3 call": 20}
    assert sum(" * " in line for line in preview) >= 4
    play = out[out.index("Playing it out") : out.index("Stats")].splitlines()
    assert sum(" sms " in line for line in play) == 20
    assert sum(" email " in line for line in play) == 18
    assert sum(" call " in line and line.endswith("-> completed") for line in play) == 18
    assert sum(" reply " in line and "exited: replied" in line for line in play) == 2
    assert "all 38 sends inside Mon-Fri 09:00-17:00" in out
    stats = out[out.index("Stats") :]
    assert "sent 20, failed 0, replied 2" in stats  # the replies answered the text (step 1)
    assert "sent 18, failed 0, replied 0" in stats
    assert 100 <= len(out.splitlines()) <= 170


def test_the_outbox_holds_a_text_for_everyone_and_an_email_for_everyone_who_did_not_reply(demo):
    outbox = demo.rows(
        """SELECT o.channel, c.phone, o.to_address, o.text_body, o.subject
           FROM drumbeat.outbox o JOIN drumbeat.deliveries d ON d.id = o.delivery_id
           JOIN drumbeat.contacts c ON c.id = d.contact_id"""
    )
    texts = [row for row in outbox if row[0] == "sms"]
    emails = [row for row in outbox if row[0] == "email"]
    assert sorted(phone for _, phone, *_ in texts) == sorted(p.phone for p in PERSONAS)
    assert sorted(phone for _, phone, *_ in emails) == sorted(p.phone for p in PERSONAS if not p.reply)
    by_phone = {p.phone: p for p in PERSONAS}
    for _, phone, to_address, body, _subject in texts:
        assert to_address == phone and body.startswith(f"Hi {by_phone[phone].first_name}, Riley")
    for _, phone, to_address, _body, subject in emails:
        assert to_address == by_phone[phone].email
        assert subject == f"{by_phone[phone].first_name}, following up on my text"
    assert demo.rows("SELECT status, count(*) FROM drumbeat.deliveries GROUP BY status") == [("sent", 38)]


def test_the_repliers_stopped_and_everyone_else_completed_with_their_call_done(demo):
    enrollments = demo.rows(
        """SELECT c.phone, e.status, e.exit_reason FROM drumbeat.enrollments e
           JOIN drumbeat.contacts c ON c.id = e.contact_id"""
    )
    assert len(enrollments) == len(PERSONAS)
    for phone, status, reason in enrollments:
        expected = ("replied", "replied") if phone in REPLIERS else ("completed", None)
        assert (status, reason) == expected, phone
    tasks = demo.rows(
        """SELECT c.phone, t.kind, t.status FROM drumbeat.tasks t JOIN drumbeat.contacts c ON c.id = t.contact_id"""
    )
    assert sorted(tasks) == sorted((p.phone, "call", "completed") for p in PERSONAS if not p.reply)
    replies = demo.rows("SELECT payload ->> 'from' FROM drumbeat.events WHERE kind = 'replied'")
    assert {phone for (phone,) in replies} == REPLIERS


def test_every_send_is_inside_business_hours_in_its_contacts_time_zone_across_the_dst_change(demo):
    sends = demo.rows(
        """SELECT c.phone, c.timezone, d.channel, d.sent_at FROM drumbeat.deliveries d
           JOIN drumbeat.contacts c ON c.id = d.contact_id"""
    )
    assert len(sends) == 38
    offsets: dict[str, set] = {}
    for phone, zone, channel, sent_at in sends:
        local = sent_at.astimezone(ZoneInfo(zone))
        assert local.weekday() < len(WEEKDAYS) and OPENS <= local.time() < CLOSES, (phone, channel, local)
        offsets.setdefault(phone, set()).add(local.utcoffset())
    # Some contacts got their text before a daylight-saving change and their email after it.
    assert sum(len(seen) > 1 for seen in offsets.values()) >= 2, offsets


def test_the_drumbeat_database_keeps_its_data_and_its_clock(demo):
    """The demo worked in drumbeat_demo only: its clock settings are on that database alone, and the
    drumbeat database (which every other command uses) was not even migrated by it."""
    clocks = demo.rows(
        """SELECT d.datname, s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"""
    )
    assert [name for name, _ in clocks] == ["drumbeat_demo"]
    assert {setting.split("=")[0] for setting in clocks[0][1]} == {
        "drumbeat.clock",
        "drumbeat.clock_since",
        "drumbeat.clock_rate",
    }
    assert demo.rows("SELECT to_regnamespace('drumbeat') IS NULL", database="drumbeat") == [(True,)]


def _country(phone: str) -> str:
    return phonenumbers.region_code_for_number(phonenumbers.parse(phone))


@pytest.mark.parametrize("speed", ["0", "-5", "fast", "30", "7h", "1w", "2 days"])
def test_a_bad_speed_is_a_usage_error_naming_the_option(speed, tmp_path):
    result = _drumbeat_demo("--speed", speed, data_dir=tmp_path, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--speed" in result.stderr
    assert not (tmp_path / "pgdata").exists()  # nothing was started


@pytest.mark.parametrize(
    ("text", "clock_seconds"),
    [("3600", 3600), ("1h", 3600), ("30m", 1800), ("90s", 90), ("1.5h", 5400), (" 2H ", 7200), ("6h", 21600)],
)
def test_speed_takes_seconds_or_a_duration(text, clock_seconds):
    assert parse_speed(text) == clock_seconds


def test_the_demo_contacts_have_valid_phone_numbers_of_their_time_zones_country():
    countries = {
        "Australia/Sydney": "AU",
        "Asia/Tokyo": "JP",
        "Asia/Kolkata": "IN",
        "Europe/Berlin": "DE",
        "Europe/London": "GB",
        "America/Sao_Paulo": "BR",
        "America/New_York": "US",
        "America/Chicago": "US",
        "America/Los_Angeles": "US",
    }
    for persona in PERSONAS:
        number = phonenumbers.parse(persona.phone)
        assert phonenumbers.is_valid_number(number), persona
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == persona.phone
        assert _country(persona.phone) == countries[persona.timezone], persona
    assert len(PERSONAS) == 20 and {p.timezone for p in PERSONAS} == set(countries)
