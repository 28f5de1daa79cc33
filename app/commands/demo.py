"""`drumbeat demo`: a guided tour on a throwaway database. It creates a demo workspace with outbox senders,
a three-step sequence (a text, an email two days later, a call task the day after) kept to business hours,
and twenty contacts in nine time zones; prints the planned timeline (drumbeat_api.preview_schedule); then
runs the real worker against a fast-forwarded SQL clock, so that days of outreach play out in well under a
minute, printing each send as it happens, two contacts replying (the sequence stops for them) and a rep completing the call tasks; it ends
with the sequence's stats.

No scheduling rule is bypassed: the clock is the only thing that differs (drumbeat.clock_now(), which every
scheduling decision reads, runs --speed times faster than real time). The start is chosen so that the
sequence crosses the next daylight-saving change in the contacts' time zones.

The demo has its own database, drumbeat_demo, on the same server (dropped and created afresh on each run);
the drumbeat database (or DATABASE_URL's) is not touched. Nothing is sent: messages go to the outbox."""

from __future__ import annotations

import argparse
import re
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from itertools import groupby
from uuid import UUID
from zoneinfo import ZoneInfo

from app.commands import EXIT_OK, EXIT_USAGE, CommandError, fail, settings_for

HELP = "a guided tour: twenty contacts, a three-step sequence (text, email, call) played out in a minute (outbox)"

DEMO_DATABASE = "drumbeat_demo"
WORKSPACE = "Drumbeat Demo Co."
WORKSPACE_ZONE = "America/New_York"
OPENS, CLOSES = time_of_day(9), time_of_day(17)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
SMS_NUMBER = "+12125550100"
EMAIL_ADDRESS = "riley@example.com"

SPEED_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Why an upper bound: the worker picks a due step up within a fraction of a real second, which the fast clock
# turns into clock time (0.2 s at 6 h/s is over an hour); much faster, and a text planned for the afternoon
# could go out after closing time. Why a lower one: slower than a minute a second, the tour takes hours.
MIN_SPEED, MAX_SPEED = 60.0, 6 * 3600.0
PLAY_SECONDS = 35  # how long the planned timeline plays when --speed is not given
# Real seconds of clock time before the first planned step: the worker is up and polling when it comes due.
LEAD_SECONDS = 2.0
GRACE_SECONDS = 30  # beyond the planned play time, before the demo gives up
POLL_SECONDS = 0.2
SET_UP_AHEAD = timedelta(days=1)  # the workspace is set up (and the contacts enrolled) the day before
REPLY_AFTER = timedelta(minutes=90)  # clock time between a replier's text arriving and their answer
CALL_OUTCOMES = ("demo booked", "left a voicemail", "call back in May", "no answer")
LINE_WIDTH = 108


@dataclass(frozen=True)
class Persona:
    """A demo contact; `reply` is what they text back to the intro, if they answer it."""

    first_name: str
    last_name: str
    timezone: str
    phone: str
    reply: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def email(self) -> str:
        return f"{self.first_name}.{self.last_name}@example.com".lower()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def city(self) -> str:
        return self.timezone.rsplit("/", 1)[-1].replace("_", " ")

    def as_contact(self) -> dict:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "email": self.email,
            "timezone": self.timezone,
        }


# East to west, so that the preview reads in the order the first texts go out.
PERSONAS = (
    Persona("Charlotte", "Wilson", "Australia/Sydney", "+61412345678"),
    Persona("Jack", "Murphy", "Australia/Sydney", "+61491570156"),
    Persona("Haruto", "Sato", "Asia/Tokyo", "+819012345678"),
    Persona("Yui", "Tanaka", "Asia/Tokyo", "+819087654321"),
    Persona("Priya", "Sharma", "Asia/Kolkata", "+919812345678", reply="Yes! Thursday works"),
    Persona("Arjun", "Mehta", "Asia/Kolkata", "+919876543210"),
    Persona("Lukas", "Schneider", "Europe/Berlin", "+4915123456789"),
    Persona("Hannah", "Weber", "Europe/Berlin", "+4930901820"),
    Persona("Oliver", "Bennett", "Europe/London", "+447400123456", reply="Not now, thanks"),
    Persona("Amelia", "Clarke", "Europe/London", "+447400123457"),
    Persona("Lucas", "Oliveira", "America/Sao_Paulo", "+5511912345678"),
    Persona("Maya", "Thompson", "America/New_York", "+12125550123"),
    Persona("Daniel", "Brooks", "America/New_York", "+16465550142"),
    Persona("Olivia", "Reyes", "America/New_York", "+12125550198"),
    Persona("Marcus", "Johnson", "America/Chicago", "+13125550187"),
    Persona("Emily", "Novak", "America/Chicago", "+17735550123"),
    Persona("Carlos", "Medina", "America/Chicago", "+13125550164"),
    Persona("Sophie", "Nguyen", "America/Los_Angeles", "+12135550164"),
    Persona("Jordan", "Park", "America/Los_Angeles", "+13105550123"),
    Persona("Isabella", "Cruz", "America/Los_Angeles", "+13235550178"),
)
ZONES = tuple(dict.fromkeys(p.timezone for p in PERSONAS))


def sequence_definition() -> dict:
    """The demo's sequence (docs/ARCHITECTURE.md, "Sequence definition"), kept to Mon-Fri business hours."""
    hours = {day: {"start": f"{OPENS:%H:%M}", "end": f"{CLOSES:%H:%M}"} for day in WEEKDAYS}
    return {
        "name": "Demo: text, wait, email, call",
        "description": "drumbeat demo: a text at once, an email two days later, a call the day after",
        "channel": "multi",
        "settings": {"timezone": WORKSPACE_ZONE, "business_hours": hours},
        "exit_conditions": {"on_reply": True},
        "steps": [
            {
                "kind": "sms",
                "name": "Intro text",
                "delay": {"value": 0, "unit": "minutes"},
                "body": "Hi {{ contact.first_name }}, Riley from Drumbeat Demo Co. here. "
                "Got 15 minutes this week for a quick call?",
            },
            {
                "kind": "email",
                "name": "Follow-up email",
                "delay": {"value": 2, "unit": "days"},
                "subject": "{{ contact.first_name }}, following up on my text",
                "body": "Hi {{ contact.first_name }},\n\nfollowing up on my text from a couple of days ago: "
                "would a 15-minute call this week work for you?\n\nRiley",
            },
            {
                "kind": "call",
                "name": "Call",
                "delay": {"value": 1, "unit": "days"},
                "task_description": "Call to follow up on the text and the email",
            },
        ],
    }


# --- --speed ------------------------------------------------------------------------------------------------

_SPEED = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")


def parse_speed(text: str) -> float:
    """--speed: clock seconds per real second, as a number (3600) or a duration (1h, 30m, 90s, 1.5h)."""
    match = _SPEED.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected clock time per real second, such as 3600, 1h, 30m or 90s; got {text!r}"
        )
    speed = float(match[1]) * SPEED_UNITS[match[2] or "s"]
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"must be between 1m and 6h of clock time per real second (60 to 21600), got {text!r}"
        )
    return speed


def speed_in_words(speed: float) -> str:
    """1 s = 4.5 h"""
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if speed >= seconds:
            return f"1 s = {_number(speed / seconds)} {unit}"
    return f"1 s = {_number(speed)} s"


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed",
        type=parse_speed,
        default=None,
        metavar="RATE",
        help="clock time per real second: a number of seconds (3600) or a duration (1h, 30m, 90s); "
        f"between 1m and 6h (default: the planned timeline plays out in about {PLAY_SECONDS} s)",
    )


# --- when the clock starts: a few days before a daylight-saving change ------------------------------------


@dataclass(frozen=True)
class Transition:
    """A change of a zone's UTC offset (daylight saving time starting or ending) at the instant `at`."""

    zone: str
    at: datetime

    def describe(self) -> str:
        zone = ZoneInfo(self.zone)
        before, after = (self.at - timedelta(minutes=1)).astimezone(zone), self.at.astimezone(zone)
        what = "starts" if after.utcoffset() > before.utcoffset() else "ends"
        return (
            f"daylight saving time {what} in {self.zone} on {after:%a %Y-%m-%d}, "
            f"{before + timedelta(minutes=1):%H:%M} {before:%Z} -> {after:%H:%M} {after:%Z}"
        )


def next_transition(zone_name: str, after: datetime, within_days: int = 400) -> Transition | None:
    """The first change of the zone's UTC offset after `after` (a whole minute), to the minute."""
    zone = ZoneInfo(zone_name)

    def offset(minutes: int) -> timedelta:
        return (after + timedelta(minutes=minutes)).astimezone(zone).utcoffset()

    day = 24 * 60
    for low, high in ((start, start + day) for start in range(0, within_days * day, day)):
        if offset(low) == offset(high):
            continue
        while high - low > 1:  # bisect: offset(low) is still the old offset, offset(high) the new one
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
        return Transition(zone_name, after + timedelta(minutes=high))
    return None


def first_transition(after: datetime) -> Transition:
    found = [t for t in (next_transition(zone, after) for zone in ZONES) if t is not None]
    if not found:
        raise CommandError("none of the demo's time zones changes its UTC offset within a year")
    return min(found, key=lambda t: t.at)


def transitions_during(start: datetime, end: datetime) -> list[Transition]:
    """The offset changes of the demo's zones between start and end (at most one per zone: the demo spans
    days), in order."""
    days = (end - start).days + 1
    found = (next_transition(zone, start, within_days=days) for zone in ZONES)
    return sorted((t for t in found if t is not None and t.at <= end), key=lambda t: t.at)


def thursday_before(day: date) -> date:
    return day - timedelta(days=(day.weekday() - 3) % 7 or 7)


def in_business_hours(local: datetime) -> bool:
    """Is this local time inside the sequence's business hours (Mon-Fri, OPENS to CLOSES)?"""
    return local.weekday() < len(WEEKDAYS) and OPENS <= local.time() < CLOSES


def open_window_left(zone_name: str, at: datetime) -> timedelta:
    """How long the zone's business window stays open after `at`; a whole window when it is closed."""
    local = at.astimezone(ZoneInfo(zone_name))
    if not in_business_hours(local):
        return datetime.combine(local.date(), CLOSES) - datetime.combine(local.date(), OPENS)
    return datetime.combine(local.date(), CLOSES, tzinfo=local.tzinfo).astimezone(UTC) - at


def clock_start(day: date) -> datetime:
    """The whole hour of `day` (UTC) at which the business windows already open have the most time left.
    Why: contacts whose window is open at the start get their text at once, and the fast clock turns the
    worker's fraction of a second of pick-up time into clock minutes: a start late in someone's afternoon
    could push their text past closing time."""
    hours = [datetime.combine(day, time_of_day(hour), tzinfo=UTC) for hour in range(24)]
    return max(hours, key=lambda at: (min(open_window_left(zone, at) for zone in ZONES), -at.hour))


def demo_start(today: date) -> tuple[datetime, Transition]:
    """When the clock starts: the Thursday before the next daylight-saving change in the demo's zones (the
    two-day wait then crosses it); and that change."""
    transition = first_transition(datetime.combine(today, time_of_day(0), tzinfo=UTC))
    local_day = transition.at.astimezone(ZoneInfo(transition.zone)).date()
    return clock_start(thursday_before(local_day)), transition


# --- setting up -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedStep:
    persona: Persona
    position: int
    kind: str
    at: datetime


@dataclass
class Demo:
    url: str
    workspace_id: UUID
    sequence_id: UUID
    start: datetime
    personas: dict[UUID, Persona]  # by contact id
    enrolled: dict[str, int]  # enroll_contacts' outcomes, counted
    plan: list[PlannedStep]

    @property
    def plan_end(self) -> datetime:
        return max(step.at for step in self.plan)

    def dst_crossers(self) -> list[Persona]:
        """The contacts whose planned steps straddle a change of their zone's UTC offset."""
        return [
            persona
            for persona, steps in groupby(self.plan, key=lambda s: s.persona)
            if len({step.at.astimezone(persona.zone).utcoffset() for step in steps}) > 1
        ]


def _fresh_database(server_url: str) -> str:
    """drumbeat_demo on the server of server_url, dropped, created afresh and migrated; returns its URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from app.core.embedded import ensure_database
    from app.core.migrate import MigrationError, migrate
    from app.core.queries import queries

    if conninfo_to_dict(server_url).get("dbname") == DEMO_DATABASE:
        raise CommandError(
            f"DATABASE_URL names {DEMO_DATABASE}, which the demo drops and creates afresh: "
            "point it at another database on that server",
            EXIT_USAGE,
        )
    demo_url = make_conninfo(server_url, dbname=DEMO_DATABASE)
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(queries("demo")["drop_database"])
        ensure_database(server_url, DEMO_DATABASE)
        migrate(demo_url)
    except (psycopg.Error, MigrationError) as error:
        raise CommandError(f"could not prepare the {DEMO_DATABASE} database: {error}") from error
    return demo_url


def _set_up(demo_url: str, start: datetime) -> Demo:
    """The workspace, its senders, the contacts and the sequence, through the contract functions, on a clock
    frozen the day before `start`; the sequence starts at `start`, so the contacts enroll as 'scheduled'."""
    import psycopg

    with psycopg.connect(demo_url, autocommit=True) as conn:
        sql = _Statements(conn)
        sql.run("freeze_clock", clock=(start - SET_UP_AHEAD).isoformat())
        workspace_id = _create_workspace(sql)
        personas, sequence_id, enrolled = _enroll_everyone(sql, workspace_id, start)
        plan = [
            PlannedStep(personas[contact_id], position, kind, at)
            for contact_id, position, kind, at in sql.rows(
                "preview", sequence_id=sequence_id, contact_ids=list(personas)
            )
        ]
    return Demo(demo_url, workspace_id, sequence_id, start, personas, enrolled, plan)


def _create_workspace(sql: _Statements) -> UUID:
    """The demo workspace and its two senders. Why 10 a second: the contacts of one zone come due at the
    same instant, and a sender's rate holds the extra ones back a clock second or two, which the fast clock
    turns into the worker's next poll, many clock minutes later."""
    from psycopg.types.json import Jsonb

    workspace_id = sql.value("create_workspace", name=WORKSPACE, timezone=WORKSPACE_ZONE)
    for channel, address, name in (("sms", SMS_NUMBER, "Riley"), ("email", EMAIL_ADDRESS, "Riley Chen")):
        settings = Jsonb({"name": name, "rate_per_second": 10})
        sql.run(
            "create_sender", workspace_id=workspace_id, channel=channel, address=address, settings=settings
        )
    return workspace_id


def _enroll_everyone(sql: _Statements, workspace_id: UUID, start: datetime):
    """The contacts and the sequence, active from `start`, everyone enrolled: (personas by contact id, the
    sequence's id, enroll_contacts' outcomes counted)."""
    from psycopg.types.json import Jsonb

    contacts = Jsonb([persona.as_contact() for persona in PERSONAS])
    contact_ids = [
        row[0] for row in sql.rows("upsert_contacts", workspace_id=workspace_id, contacts=contacts)
    ]
    definition = Jsonb(sequence_definition())
    sequence_id = sql.value("create_sequence", workspace_id=workspace_id, definition=definition)
    sql.run("activate_sequence", sequence_id=sequence_id, start_at=start)
    enrolled = dict(sql.rows("enroll_contacts", sequence_id=sequence_id, contact_ids=contact_ids))
    return dict(zip(contact_ids, PERSONAS, strict=True)), sequence_id, enrolled


class _Statements:
    """The named statements of sql/queries/demo.sql on one connection."""

    def __init__(self, conn) -> None:
        from app.core.queries import queries

        self.conn, self.statements = conn, queries("demo")

    def rows(self, statement: str, /, **params) -> list[tuple]:
        return self.conn.execute(self.statements[statement], params).fetchall()

    def value(self, statement: str, /, **params):
        return self.rows(statement, **params)[0][0]

    def run(self, statement: str, /, **params) -> None:
        self.conn.execute(self.statements[statement], params)


def automatic_speed(plan_start: datetime, plan_end: datetime) -> float:
    """Whole clock minutes per real second, so that the planned timeline plays in about PLAY_SECONDS."""
    per_second = (plan_end - plan_start).total_seconds() / PLAY_SECONDS
    return min(max(round(per_second / 60) * 60, MIN_SPEED), MAX_SPEED)


# --- playing it out ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """A message the worker recorded as sent; both instants are clock instants."""

    persona: Persona
    channel: str
    position: int
    due_at: datetime
    sent_at: datetime

    @property
    def local_sent_at(self) -> datetime:
        return self.sent_at.astimezone(self.persona.zone)


@dataclass
class Watcher:
    """Follows the play on its own connection, every POLL_SECONDS: prints each send the worker records,
    texts back for the contacts who reply (through the inbound SMS path, as Twilio's webhook would), completes
    the call tasks as the rep, and notices when every enrollment has ended."""

    sql: _Statements
    demo: Demo
    transitions: list[Transition]  # those the clock has yet to pass
    sends: list[Send] = field(default_factory=list)
    shown: list[UUID] = field(default_factory=list)  # the deliveries printed already
    sampled: set[int] = field(default_factory=set)  # the steps whose text was printed in full once
    replies_due: dict[UUID, datetime] = field(default_factory=dict)  # contact id -> when they answer
    replies: int = 0
    calls: int = 0
    live: int = -1
    clock: datetime | None = None  # the clock at the last look
    finished: bool = False
    real_seconds: float = 0.0

    def watch(self, deadline: float, stop: threading.Event) -> None:
        started = time.monotonic()
        while not stop.is_set() and not self.finished and time.monotonic() < deadline:
            now = self.clock = self.sql.value("clock_now")
            events = [*self._transitions_passed(now), *self._new_sends(), *self._answers(now), *self._calls()]
            for _at, line in sorted(events, key=lambda event: event[0]):
                _say(line)
            self.live = self.sql.value("live_enrollments", sequence_id=self.demo.sequence_id)
            self.finished = self.live == 0
            self.real_seconds = time.monotonic() - started
            if not self.finished:
                time.sleep(POLL_SECONDS)

    def _transitions_passed(self, now: datetime) -> list[tuple[datetime, str]]:
        passed = [t for t in self.transitions if t.at <= now]
        self.transitions = [t for t in self.transitions if t.at > now]
        return [(t.at, f"{t.at:%a %H:%M}Z  ----- {t.describe()}") for t in passed]

    def _new_sends(self) -> list[tuple[datetime, str]]:
        events = []
        for send_id, contact_id, channel, position, step, sent_at, due_at, text in self.sql.rows(
            "new_sends", sequence_id=self.demo.sequence_id, shown=self.shown
        ):
            persona = self.demo.personas[contact_id]
            self.shown.append(send_id)
            self.sends.append(Send(persona, channel, position, due_at, sent_at))
            if persona.reply and position == 1:
                self.replies_due[contact_id] = sent_at + REPLY_AFTER
            events.append((sent_at, _event_line(sent_at, channel, persona, f"step {position} {step}")))
            if position not in self.sampled:
                self.sampled.add(position)
                events.append((sent_at, _sample(channel, text)))
        return events

    def _answers(self, now: datetime) -> list[tuple[datetime, str]]:
        """The repliers whose answer is due text back, from their phone to our number."""
        events = []
        for contact_id, due in list(self.replies_due.items()):
            if due > now:
                continue
            del self.replies_due[contact_id]
            persona = self.demo.personas[contact_id]
            with self.sql.conn.transaction():
                self.sql.run("as_sms_webhook")
                outcome, at = self.sql.rows(
                    "inbound_sms", to=SMS_NUMBER, **{"from": persona.phone, "body": persona.reply}
                )[0]
            self.replies += outcome == "replied"
            said = f'"{persona.reply}"' if outcome == "replied" else f'"{persona.reply}" ({outcome})'
            detail = f"{said} -> {self._enrollment_state(contact_id)}"
            events.append((at, _event_line(at, "reply", persona, detail)))
        return events

    def _calls(self) -> list[tuple[datetime, str]]:
        """Each call task the worker opened, done by the rep at once."""
        events = []
        for task_id, contact_id, title, due_at, position in self.sql.rows(
            "pending_tasks", workspace_id=self.demo.workspace_id
        ):
            outcome = CALL_OUTCOMES[self.calls % len(CALL_OUTCOMES)]
            self.sql.run("complete_task", task_id=task_id, outcome=outcome)
            self.calls += 1
            persona = self.demo.personas[contact_id]
            detail = f"step {position} {title}: {outcome} -> {self._enrollment_state(contact_id)}"
            events.append((due_at, _event_line(due_at, "call", persona, detail)))
        return events

    def _enrollment_state(self, contact_id: UUID) -> str:
        status, reason = self.sql.rows(
            "enrollment_state", sequence_id=self.demo.sequence_id, contact_id=contact_id
        )[0]
        return status if status == "completed" else f"exited: {reason or status}"


def _event_line(at: datetime, kind: str, persona: Persona, detail: str) -> str:
    """One line of the play: the clock (UTC), what happened, to whom and where, their local time, details."""
    local = at.astimezone(persona.zone)
    line = (
        f"{at:%a %H:%M}Z  {kind:<5}  {persona.name:<16}  {persona.city:<11}  "
        f"{local:%a %H:%M} {local.tzname():<4}  {detail}"
    )
    return line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 3] + "..."


def _sample(channel: str, text: str) -> str:
    """A step's message in full (the first time it goes out), as the template rendered it."""
    label = "subject" if channel == "email" else "text"
    return textwrap.fill(
        f'{label}: "{text}"', width=LINE_WIDTH, initial_indent=" " * 12, subsequent_indent=" " * 12
    )


def _say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def _worker_settings(settings, demo_url: str, speed: float):
    """The worker's settings for the demo: its database, the outbox whatever credentials are configured, and
    a lease for lost deliveries scaled to the clock. Why scaled: the lease is compared with the SQL clock (a
    delivery's claimed_at is a clock instant), so at demo speed 600 s would last a few milliseconds of real
    time, and a delivery merely being sent could be declared lost."""
    import dataclasses
    import math

    return dataclasses.replace(
        settings,
        database_url=demo_url,
        transport="outbox",
        delivery_lease_seconds=math.ceil(settings.delivery_lease_seconds * speed),
    )


def _start_clock(demo_url: str, at: datetime, speed: float) -> None:
    """From now on, every new connection to the demo database sees a clock showing `at` and running `speed`
    times real time (ALTER DATABASE reaches new connections only: call it before the worker connects)."""
    import psycopg

    with psycopg.connect(demo_url, autocommit=True) as conn:
        sql = _Statements(conn)
        since = sql.value("server_now")
        params = {"clock": at.isoformat(), "since": since.isoformat(), "rate": repr(speed)}
        psycopg.ClientCursor(conn).execute(sql.statements["run_clock"], params)


def _play(settings, demo: Demo, speed: float) -> Watcher:
    """The real worker (procrastinate, in this process) against the demo database on the running clock,
    watched until every enrollment has ended or the time is up."""
    import asyncio

    import psycopg

    worker_settings = _worker_settings(settings, demo.url, speed)
    _start_clock(demo.url, demo.start - timedelta(seconds=LEAD_SECONDS * speed), speed)
    planned = LEAD_SECONDS + (demo.plan_end - demo.start).total_seconds() / speed
    _say(
        "",
        f"Playing it out: the worker on the SQL clock at {speed_in_words(speed)} ({speed:,.0f} x real time), "
        f"about {planned:.0f} s",
    )
    with psycopg.connect(demo.url, autocommit=True) as conn:
        watcher = Watcher(_Statements(conn), demo, transitions_during(demo.start, demo.plan_end))
        asyncio.run(_work_and_watch(worker_settings, watcher, time.monotonic() + planned + GRACE_SECONDS))
    return watcher


async def _work_and_watch(worker_settings, watcher: Watcher, deadline: float) -> None:
    """The worker in this event loop, the watcher in a thread (its psycopg calls block), until the watcher is
    done; then the worker stops gracefully (procrastinate finishes the jobs it holds on cancel)."""
    import asyncio

    from workers.app import run_beside

    stop = threading.Event()
    worker = asyncio.create_task(run_beside(worker_settings), name="worker")
    watching = asyncio.create_task(asyncio.to_thread(watcher.watch, deadline, stop), name="watcher")
    try:
        await asyncio.wait({worker, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not watching.done():
            raise CommandError(f"the worker stopped on its own: {worker.exception() or 'without an error'}")
        watching.result()  # the watcher's own error (a failed contract call), if any
    finally:
        stop.set()
        worker.cancel()
        await asyncio.gather(worker, watching, return_exceptions=True)


# --- what it prints ---------------------------------------------------------------------------------------


def _describe_database(server_url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    from app.core.embedded import describe

    untouched = conninfo_to_dict(server_url).get("dbname") or "drumbeat"
    return f"{describe(server_url, DEMO_DATABASE)}, created afresh ({untouched} is not touched)"


def _describe_steps(definition: dict) -> str:
    """text at once -> wait 2 days -> email -> ..."""
    parts = []
    for step in definition["steps"]:
        value, unit = step["delay"]["value"], step["delay"]["unit"]
        if value:
            parts.append(f"wait {value} {unit if value > 1 else unit.removesuffix('s')}")
        parts.append({"sms": "text", "call": "call task"}.get(step["kind"], step["kind"]))
    return " -> ".join(parts)


def _print_intro(server_url: str, demo: Demo, transition: Transition) -> None:
    definition = sequence_definition()
    outcomes = ", ".join(f"{outcome}: {count}" for outcome, count in demo.enrolled.items())
    repliers = " and ".join(p.name for p in PERSONAS if p.reply)
    _say(
        "Drumbeat demo: one sequence, twenty contacts in nine time zones, played out on a fast SQL clock",
        f"  database   {_describe_database(server_url)}",
        f"  workspace  {WORKSPACE} ({WORKSPACE_ZONE}), senders sms {SMS_NUMBER} and email {EMAIL_ADDRESS}",
        "  sending    to the OUTBOX (table drumbeat.outbox): nothing leaves this machine",
        f'  sequence   "{definition["name"]}": {_describe_steps(definition)}',
        f"             Mon-Fri {OPENS:%H:%M}-{CLOSES:%H:%M} in each contact's time zone; a reply stops it",
        f"  contacts   {len(demo.personas)} ({outcomes}), starting {demo.start:%a %Y-%m-%d %H:%M} UTC;",
        f"             {repliers} will answer the text",
        f"  DST        {transition.describe()}:",
        f"             {len(demo.dst_crossers())} contacts get their text before it and their email after it",
    )


def _print_preview(demo: Demo) -> None:
    _say(
        "",
        "Planned timeline (drumbeat_api.preview_schedule, the dispatcher's own calculus as a dry run)",
        f"{'contact':<16} {'time zone':<19} {'step':<8} {'planned, local time':<23} planned, UTC",
    )
    for persona, steps in groupby(demo.plan, key=lambda s: s.persona):
        steps = list(steps)
        first_offset = steps[0].at.astimezone(persona.zone).utcoffset()
        for step in steps:
            local = step.at.astimezone(persona.zone)
            who = f"{persona.name:<16} {persona.timezone:<19}" if step is steps[0] else " " * 36
            mark = "*" if local.utcoffset() != first_offset else ""
            _say(f"{who} {step.position} {step.kind:<6} {_local(local):<22}{mark:<2}{step.at:%a %d %b %H:%M}")
    _say("* after a daylight-saving change: the same local business hours, another hour in UTC")


def _local(at: datetime) -> str:
    return f"{at:%a %d %b %H:%M} {at.tzname()}"


def _print_stats(demo: Demo) -> None:
    import psycopg

    with psycopg.connect(demo.url) as conn:
        sql = _Statements(conn)
        stats = sql.value("sequence_stats", sequence_id=demo.sequence_id)
        tasks = sql.rows("tasks_by_status", workspace_id=demo.workspace_id)
    enrollments = stats["enrollments"]
    by_status = ", ".join(f"{status} {n}" for status, n in enrollments.items() if status != "total" and n)
    lines = [
        "",
        "Stats (drumbeat_api.sequence_stats)",
        f"  enrollments   {enrollments['total']}: {by_status}",
    ]
    for step in stats["steps"]:
        counts = (
            f"sent {step['sent']}, failed {step['failed']}, replied {step['replied']}"
            if step["kind"] in ("sms", "email")
            else "tasks " + (", ".join(f"{status} {n}" for status, n in tasks) or "none")
        )
        lines.append(f"  step {step['position']} {step['kind']:<6} {step['name']:<16} {counts}")
    lines.append(f"  replied       {stats['replied']}")
    _say(*lines)


def _print_summary(watcher: Watcher, speed: float, total_seconds: float) -> None:
    import statistics

    sends = watcher.sends
    texts = sum(send.channel == "sms" for send in sends)
    outside = sum(not in_business_hours(send.local_sent_at) for send in sends)
    hours = f"Mon-Fri {OPENS:%H:%M}-{CLOSES:%H:%M}, each in its contact's time zone"
    lines = [
        "",
        "Summary",
        f"  {texts} texts, {len(sends) - texts} emails and {watcher.calls} calls; "
        f"{watcher.replies} contacts replied and the sequence stopped for them",
        f"  all {len(sends)} sends inside {hours}"
        if not outside
        else f"  {outside} of {len(sends)} sends OUTSIDE {hours}: the worker fell behind (lower --speed)",
    ]
    if late := [(send.sent_at - send.due_at).total_seconds() for send in sends]:
        median, worst = statistics.median(late), max(late)
        lines.append(
            f"  lateness, due to sent: median {_duration(median)}, at most {_duration(worst)} of clock time "
            f"({median / speed:.2f} s and {worst / speed:.2f} s real)"
        )
    played = _duration((watcher.clock - watcher.demo.start).total_seconds()) if watcher.clock else "nothing"
    lines.append(
        f"  {played} of outreach in {watcher.real_seconds:.1f} s, the whole demo in {total_seconds:.1f} s; "
        f"the data stays in {DEMO_DATABASE}"
    )
    _say(*lines)


def _duration(seconds: float) -> str:
    """3 days 4 h, 5 h 20 min, 12 min, 40 s"""
    minutes = round(seconds / 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        in_days = f"{days} day{'s' if days > 1 else ''}"
        return f"{in_days} {hours} h" if hours else in_days
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{round(seconds)} s"


# --- the command ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    import psycopg

    from app.core.errors import domain_error

    started = time.monotonic()
    if not os.environ.get("DRUMBEAT_LOG_LEVEL"):
        # The tour tells each send on stdout: the worker's INFO lines (one per message, one per batch)
        # would repeat it on stderr, interleaved. Warnings and errors still show.
        for name in ("drumbeat", "procrastinate"):
            logging.getLogger(name).setLevel(logging.WARNING)
    settings = settings_for("demo")
    try:
        demo_url = _fresh_database(settings.database_url)
        start, transition = demo_start(datetime.now(UTC).date())
        demo = _set_up(demo_url, start)
        speed = args.speed or automatic_speed(demo.start, demo.plan_end)
        _print_intro(settings.database_url, demo, transition)
        _print_preview(demo)
        watcher = _play(settings, demo, speed)
        _print_stats(demo)
    except psycopg.Error as error:
        raise CommandError(str(domain_error(error) or error)) from error
    _print_summary(watcher, speed, time.monotonic() - started)
    if not watcher.finished:
        return fail(
            "demo", f"gave up after {watcher.real_seconds:.0f} s: {watcher.live} enrollments still live"
        )
    return EXIT_OK
