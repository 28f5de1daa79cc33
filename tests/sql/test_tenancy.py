"""Tenant isolation, allow and deny, exercised the way PostgREST calls the database (SET LOCAL ROLE +
request.jwt.claims): two tenants A and B with rows in every table; A's owner reads only A and writes
nothing directly, the contract functions (which run as drumbeat_contract, for A's owner) read and write
only A, B's owner reaching for A's ids gets PT404 and changes nothing, anonymous callers get nothing."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.sql.factories import SMS_SEQUENCE, Tenant, new_tenant, sms_sequence
from tests.support import act_as, call, sql_error

# Distinct numbers within a test (random ones collided once in a few thousand tests: two contacts of one
# tenant then "match the same contact"), from a random start so that tests do not share them either.
_NUMBERS = itertools.count(uuid.uuid4().int % 5_000_000)


def phone() -> str:
    return f"+1555{next(_NUMBERS) % 10_000_000:07d}"


# --- two populated tenants ---------------------------------------------------------------------


@dataclass
class Rows:
    """One tenant and the ids of its rows, in every table."""

    tenant: Tenant
    sms_sender: uuid.UUID
    email_sender: uuid.UUID
    contacts: list[
        uuid.UUID
    ]  # [enrolled, enrolled with a task, enrolled then paused, not enrolled, opted out]
    sequence: uuid.UUID  # active, with the three enrollments
    steps: list[uuid.UUID]
    draft_sequence: uuid.UUID
    paused_sequence: uuid.UUID
    enrollment: uuid.UUID  # active, waiting on step 1
    task_enrollment: uuid.UUID  # active, waiting on the call step's pending task
    paused_enrollment: uuid.UUID
    task: uuid.UUID
    delivery: uuid.UUID
    api_key: uuid.UUID
    member: uuid.UUID  # a plain member (a person, not a key)
    webhook_endpoint: str  # with a ping message and one logged attempt
    webhook_message: str  # the ping's webhook-id (failed)

    @property
    def workspace_id(self) -> uuid.UUID:
        return self.tenant.workspace_id

    @property
    def owner(self) -> uuid.UUID:
        return self.tenant.owner


@dataclass
class World:
    conn: psycopg.Connection
    a: Rows
    b: Rows


def superuser(conn: psycopg.Connection) -> psycopg.Connection:
    """Back to the test's own role (a superuser: RLS, although forced, does not apply to it)."""
    conn.execute("RESET ROLE")
    return conn


def populate(conn: psycopg.Connection, name: str) -> Rows:
    """A tenant with rows in every table: through the contract where it can, as superuser for the
    tables the contract does not fill yet (api_keys, deliveries, outbox, tasks)."""
    tenant = new_tenant(conn, name, with_sender=False)
    sms_sender = tenant.sender("sms", phone())
    email_sender = tenant.sender("email", f"sales-{uuid.uuid4().hex[:8]}@example.com")
    contacts = tenant.contacts(*[{"phone": phone(), "first_name": name} for _ in range(5)])
    sequence = tenant.sequence()
    draft_sequence = tenant.sequence(activate=False)
    paused_sequence = tenant.sequence()
    enrolled = tenant.enroll(sequence, contacts[:3])
    enrollment, task_enrollment, paused_enrollment = (row[1] for row in enrolled)
    tenant.as_owner()
    call(conn, "pause_sequence", paused_sequence)
    call(conn, "pause_enrollment", paused_enrollment)
    call(conn, "set_holidays", tenant.workspace_id, [date(2026, 12, 25)])
    call(conn, "record_event", contacts[0], "opened", Jsonb({}))
    call(conn, "record_event", contacts[4], "unsubscribed", Jsonb({"channel": "sms"}))
    call(conn, "erase_contact", tenant.contacts({"phone": phone()})[0])  # a digest on the suppression list
    tenant.as_owner()
    member = uuid.uuid4()
    call(conn, "add_member", tenant.workspace_id, member, "member")
    mailbox = {"host": "imap.example.com", "username": f"{name}@example.com", "password_sealed": "v1:sealed"}
    call(conn, "set_sender_mailbox", email_sender, Jsonb(mailbox))
    webhook_endpoint = call(
        conn,
        "create_webhook_endpoint",
        tenant.workspace_id,
        Jsonb({"url": f"https://{name}.example.com/hook"}),
    )[0][0]["id"]
    call(conn, "test_webhook_endpoint", webhook_endpoint)

    act_as(conn, member)  # a key of the member's (a person in this workspace alone)
    call(conn, "begin_idempotent_request", f"{name}-retry", "f" * 64)

    superuser(conn)
    steps = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM drumbeat.sequence_steps WHERE sequence_id = %s ORDER BY position", (sequence,)
        )
    ]
    api_key = conn.execute(
        "SELECT key_id FROM drumbeat.issue_api_key(%s, %s, 'member', NULL)",
        (tenant.workspace_id, f"{name} key"),
    ).fetchone()[0]
    delivery = conn.execute(
        """INSERT INTO drumbeat.deliveries (workspace_id, enrollment_id, step_id, contact_id, sender_id, channel,
                                            idempotency_key, scheduled_for, body)
           VALUES (%s, %s, %s, %s, %s, 'sms', %s, now(), 'Hi') RETURNING id""",
        (tenant.workspace_id, enrollment, steps[0], contacts[0], sms_sender, f"{enrollment}:{steps[0]}:1"),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO drumbeat.outbox (workspace_id, delivery_id, channel, to_address, from_address, text_body)
           VALUES (%s, %s, 'sms', '+15550000000', '+15550000001', 'Hi')""",
        (tenant.workspace_id, delivery),
    )
    conn.execute(INSERT_HOLD, (sms_sender,))  # the dispatcher's circuit breaker, after a 429
    # The webhook worker sent the ping once, and gave up on it (a re-send then changes something).
    webhook_message = conn.execute(
        "UPDATE drumbeat.webhook_messages SET status = 'failed', attempts = 1, next_attempt_at = NULL "
        "WHERE endpoint_id = %s RETURNING msg_id",
        (webhook_endpoint,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO drumbeat.webhook_attempts (workspace_id, endpoint_id, message_id, attempt, attempted_at, "
        "latency_ms, outcome) SELECT workspace_id, endpoint_id, id, 1, now(), 5, 'retry' "
        "FROM drumbeat.webhook_messages WHERE endpoint_id = %s",
        (webhook_endpoint,),
    )
    # What the dispatcher does when a call step falls due: a task, and the enrollment waits on it.
    conn.execute(
        "UPDATE drumbeat.enrollments SET current_step_id = %s, next_action_at = NULL WHERE id = %s",
        (steps[2], task_enrollment),
    )
    task = conn.execute(
        """INSERT INTO drumbeat.tasks (workspace_id, enrollment_id, step_id, contact_id, kind, title, due_at)
           VALUES (%s, %s, %s, %s, 'call', 'Call', now()) RETURNING id""",
        (tenant.workspace_id, task_enrollment, steps[2], contacts[1]),
    ).fetchone()[0]
    return Rows(
        tenant, sms_sender, email_sender, contacts, sequence, steps, draft_sequence, paused_sequence,
        enrollment, task_enrollment, paused_enrollment, task, delivery, api_key, member, webhook_endpoint,
        webhook_message,
    )  # fmt: skip


@pytest.fixture
def world(conn) -> World:
    a, b = populate(conn, "Alpha"), populate(conn, "Beta")
    superuser(conn).execute("INSERT INTO drumbeat.holidays (calendar, day) VALUES ('us', '2026-07-04')")
    conn.execute(
        "INSERT INTO drumbeat.channel_holds (channel, reason, held_since, probe_at) VALUES ('email', 'auth', now(), now())"
    )
    return World(conn, a, b)


def add_member(conn: psycopg.Connection, workspace_id: uuid.UUID, role: str) -> uuid.UUID:
    user = uuid.uuid4()
    superuser(conn).execute(
        "INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (%s, %s, %s)",
        (workspace_id, user, role),
    )
    return user


# --- tables ------------------------------------------------------------------------------------


# An API key's hash is not for tenants to read, not even their own keys', nor the inbound secret's.
API_KEY_COLUMNS = "id, workspace_id, name, prefix, role, created_by, created_at, last_used_at, revoked_at"
WORKSPACE_COLUMNS = "id, name, timezone, settings, sms_credits, created_at"
MAILBOX_COLUMNS = (
    "sender_id, workspace_id, host, port, security, username, folder, uidvalidity, last_uid, checked_at, error, "
    "created_at, updated_at"
)


@dataclass(frozen=True)
class Table:
    tenant: str | None = "workspace_id"  # the column (or expression) naming a row's workspace
    shared: str | None = None  # the rows every authenticated caller reads
    writes: tuple[str, ...] = ("UPDATE", "DELETE")  # what the contract's role may do (RLS decides which rows)
    rewritten: str = "name"  # the column an UPDATE probe rewrites when `tenant` is not a column
    columns: str = "*"  # what authenticated may read of a row
    readable: bool = True  # False: authenticated reads nothing of it (only the contract's functions do)


TABLES = {
    "timezones": Table(tenant=None, shared="true", writes=()),
    "event_types": Table(tenant=None, shared="true", writes=(), rewritten="type"),
    "phone_timezones": Table(tenant=None, shared="true", writes=(), rewritten="timezone"),
    "phone_number_plans": Table(tenant=None, shared="true", writes=(), rewritten="region"),
    "workspaces": Table(tenant="id", columns=WORKSPACE_COLUMNS),
    "workspace_members": Table(),
    "api_keys": Table(columns=API_KEY_COLUMNS),
    "senders": Table(),
    "contacts": Table(),
    "sequences": Table(),
    "sequence_steps": Table(),
    "enrollments": Table(),
    "deliveries": Table(writes=()),
    "tasks": Table(),
    "events": Table(writes=()),
    "holidays": Table(shared="calendar IS NOT NULL", writes=("DELETE",)),
    "outbox": Table(writes=("DELETE",)),  # erasure deletes a person's copies
    # A sender's hold belongs to the sender's workspace; a whole channel's hold (the operator's shared
    # credentials) is seen by every tenant. Only the dispatcher writes them.
    # The IMAP password stays the API's and the worker's.
    "sender_mailboxes": Table(columns=MAILBOX_COLUMNS, rewritten="folder"),
    # Outgoing webhooks: an endpoint's URL can carry the receiver's token and its secret signs, so tenants
    # reach them only through the contract's admin-only functions.
    "webhook_endpoints": Table(readable=False, rewritten="url"),
    "webhook_messages": Table(readable=False, writes=("UPDATE",)),
    "webhook_attempts": Table(readable=False, writes=()),
    # Digests of erased contacts' addresses: the contract checks and adds them, nobody browses them.
    "erased_identities": Table(readable=False, writes=()),
    # The HTTP API's Idempotency-Key rows are their caller's (here: each workspace's plain member), read and written
    # only by its two functions.
    "idempotency_keys": Table(
        tenant="(SELECT m.workspace_id FROM drumbeat.workspace_members m WHERE m.user_id = caller_id)",
        readable=False,
        rewritten="key",
    ),
    "channel_holds": Table(
        tenant="(SELECT se.workspace_id FROM drumbeat.senders se WHERE se.id = sender_id)",
        shared="sender_id IS NULL",
        writes=(),
        rewritten="reason",
    ),
}
TENANT_TABLES = [name for name, table in TABLES.items() if table.tenant]

# Rows that point at other rows, written directly (as the contract functions never would).
INSERT_STEP = """INSERT INTO drumbeat.sequence_steps (workspace_id, sequence_id, position, kind, body)
                 VALUES (%s, %s, 50, 'sms', 'Buy now')"""
INSERT_ENROLLMENT = """INSERT INTO drumbeat.enrollments (workspace_id, sequence_id, contact_id, status,
                           current_step_id, step_done_at, next_action_at)
                       VALUES (%s, %s, %s, 'active', %s, now(), now())"""
INSERT_TASK = """INSERT INTO drumbeat.tasks (workspace_id, enrollment_id, step_id, contact_id, kind, title, due_at)
                 VALUES (%s, %s, %s, %s, 'task', 'Evil', now())"""

INSERT_MAILBOX = """INSERT INTO drumbeat.sender_mailboxes (sender_id, workspace_id, host, port, security, username,
                                                                password_sealed)
                    VALUES (%s, %s, 'imap.evil.example', 993, 'ssl', 'evil', 'v1:x')"""
INSERT_HOLD = """INSERT INTO drumbeat.channel_holds (channel, sender_id, reason, held_since, probe_at)
                 VALUES ('sms', %s, 'rate_limited', now(), now() + interval '1 second')"""

# A complete, valid row in B's workspace (pointing at B's own rows), to be inserted by A's owner.
INSERT_INTO_B: dict[str, Callable[[World], tuple[str, tuple]]] = {
    "timezones": lambda w: ("INSERT INTO drumbeat.timezones (name) VALUES ('Mars/Olympus')", ()),
    "event_types": lambda w: (
        "INSERT INTO drumbeat.event_types (kind, type) VALUES ('note', 'contact.noted')",
        (),
    ),
    "phone_timezones": lambda w: (
        "INSERT INTO drumbeat.phone_timezones (prefix, timezone) VALUES ('999999', 'Europe/Paris')",
        (),
    ),
    "phone_number_plans": lambda w: (
        "INSERT INTO drumbeat.phone_number_plans (country_code, rank, region, valid, same_mobile_and_fixed_line, "
        "mobile_is_geographic) VALUES ('999', 0, 'XX', '^.*$', false, false)",
        (),
    ),
    "workspaces": lambda w: (
        "INSERT INTO drumbeat.workspaces (id, name) VALUES (%s, 'Mine now')",
        (w.b.workspace_id,),
    ),
    "workspace_members": lambda w: (
        "INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (%s, %s, 'owner')",
        (w.b.workspace_id, w.a.owner),
    ),
    "api_keys": lambda w: (
        "INSERT INTO drumbeat.api_keys (workspace_id, prefix, hash, role) VALUES (%s, 'db_evil', %s, 'owner')",
        (w.b.workspace_id, "0" * 64),
    ),
    "senders": lambda w: (
        "INSERT INTO drumbeat.senders (workspace_id, channel, address) VALUES (%s, 'sms', %s)",
        (w.b.workspace_id, phone()),
    ),
    "contacts": lambda w: (
        "INSERT INTO drumbeat.contacts (workspace_id, phone) VALUES (%s, %s)",
        (w.b.workspace_id, phone()),
    ),
    "sequences": lambda w: (
        "INSERT INTO drumbeat.sequences (workspace_id, name, channel) VALUES (%s, 'Evil', 'sms')",
        (w.b.workspace_id,),
    ),
    "sequence_steps": lambda w: (INSERT_STEP, (w.b.workspace_id, w.b.sequence)),
    "enrollments": lambda w: (
        INSERT_ENROLLMENT,
        (w.b.workspace_id, w.b.sequence, w.b.contacts[3], w.b.steps[0]),
    ),
    "deliveries": lambda w: (
        """INSERT INTO drumbeat.deliveries (workspace_id, enrollment_id, step_id, contact_id, channel,
                                            idempotency_key, scheduled_for)
           VALUES (%s, %s, %s, %s, 'sms', 'evil', now())""",
        (w.b.workspace_id, w.b.enrollment, w.b.steps[0], w.b.contacts[0]),
    ),
    "tasks": lambda w: (INSERT_TASK, (w.b.workspace_id, w.b.enrollment, w.b.steps[0], w.b.contacts[0])),
    "events": lambda w: (
        "INSERT INTO drumbeat.events (workspace_id, kind, contact_id) VALUES (%s, 'replied', %s)",
        (w.b.workspace_id, w.b.contacts[0]),
    ),
    "holidays": lambda w: (
        "INSERT INTO drumbeat.holidays (workspace_id, day) VALUES (%s, '2026-01-01')",
        (w.b.workspace_id,),
    ),
    "outbox": lambda w: (
        """INSERT INTO drumbeat.outbox (workspace_id, delivery_id, channel, to_address, from_address, text_body)
           VALUES (%s, %s, 'sms', '+15550000000', '+15550000001', 'Evil')""",
        (w.b.workspace_id, w.b.delivery),
    ),
    "channel_holds": lambda w: (INSERT_HOLD, (w.b.sms_sender,)),
    "sender_mailboxes": lambda w: (INSERT_MAILBOX, (w.b.email_sender, w.b.workspace_id)),
    "webhook_endpoints": lambda w: (
        "INSERT INTO drumbeat.webhook_endpoints (workspace_id, url, secret) VALUES (%s, 'https://evil.example', 'whsec_x')",
        (w.b.workspace_id,),
    ),
    "webhook_messages": lambda w: (
        "INSERT INTO drumbeat.webhook_messages (workspace_id, endpoint_id, msg_id, type, payload) "
        "VALUES (%s, %s, 'msg_evil', 'ping', '{}')",
        (w.b.workspace_id, w.b.webhook_endpoint),
    ),
    "erased_identities": lambda w: (
        "INSERT INTO drumbeat.erased_identities (workspace_id, kind, digest) VALUES (%s, 'phone', repeat('a', 64))",
        (w.b.workspace_id,),
    ),
    "idempotency_keys": lambda w: (
        "INSERT INTO drumbeat.idempotency_keys (caller_id, key, fingerprint) VALUES (%s, 'evil', repeat('a', 64))",
        (w.b.member,),
    ),
    "webhook_attempts": lambda w: (
        "INSERT INTO drumbeat.webhook_attempts (workspace_id, endpoint_id, message_id, attempt, attempted_at, "
        "latency_ms, outcome) SELECT workspace_id, endpoint_id, id, 9, now(), 1, 'delivered' "
        "FROM drumbeat.webhook_messages WHERE endpoint_id = %s",
        (w.b.webhook_endpoint,),
    ),
}


def rows_as_text(conn: psycopg.Connection, table: str, where: str = "true", params: tuple = ()) -> list[str]:
    query = sql.SQL(
        "SELECT to_jsonb(r)::text FROM (SELECT {} FROM drumbeat.{} t WHERE {}) r ORDER BY 1"
    ).format(sql.SQL(TABLES[table].columns), sql.Identifier(table), sql.SQL(where))
    return [r[0] for r in conn.execute(query, params)]


def rows_of(table: str, workspace_id: uuid.UUID, *, with_shared: bool = False) -> tuple[str, tuple]:
    """A WHERE clause (and its parameters) selecting one workspace's rows of `table`, and if asked the
    rows every caller shares."""
    spec = TABLES[table]
    clauses = [f"{spec.tenant} = %s"] if spec.tenant else []
    clauses += [spec.shared] if with_shared and spec.shared else []
    return " OR ".join(clauses) or "false", (workspace_id,) if spec.tenant else ()


def snapshot(conn: psycopg.Connection, workspace_id: uuid.UUID) -> dict[str, list[str]]:
    """Every row of one workspace, read as superuser."""
    superuser(conn)
    return {table: rows_as_text(conn, table, *rows_of(table, workspace_id)) for table in TENANT_TABLES}


def snapshots(world: World) -> tuple[dict, dict]:
    return snapshot(world.conn, world.a.workspace_id), snapshot(world.conn, world.b.workspace_id)


def statement(verb: str, table: str, where: str) -> sql.Composed:
    """An UPDATE that rewrites a column with its own value, or a DELETE, of the rows `where` selects."""
    spec = TABLES[table]
    column = sql.Identifier(spec.tenant if spec.tenant and spec.tenant.isidentifier() else spec.rewritten)
    if verb == "UPDATE":
        return sql.SQL("UPDATE drumbeat.{} SET {} = {} WHERE {}").format(
            sql.Identifier(table), column, column, sql.SQL(where)
        )
    return sql.SQL("DELETE FROM drumbeat.{} WHERE {}").format(sql.Identifier(table), sql.SQL(where))


def test_the_matrix_covers_every_table(conn):
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'drumbeat' AND c.relkind IN ('r', 'p') ORDER BY 1"
    ).fetchall()
    assert sorted(r[0] for r in tables) == sorted(TABLES) == sorted(INSERT_INTO_B)


def test_every_table_has_forced_row_level_security(conn):
    flags = conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'drumbeat' AND c.relkind IN ('r', 'p')"
    ).fetchall()
    assert {name: (rls, forced) for name, rls, forced in flags} == dict.fromkeys(TABLES, (True, True))


@pytest.mark.parametrize("table", TABLES)
def test_a_sees_only_its_own_and_shared_rows(world, table):
    conn = superuser(world.conn)
    expected = rows_as_text(conn, table, *rows_of(table, world.a.workspace_id, with_shared=True))
    b_rows = rows_as_text(conn, table, *rows_of(table, world.b.workspace_id))
    assert b_rows or not TABLES[table].tenant, "the fixture gives B rows in every tenant table"
    world.a.tenant.as_owner()
    if not TABLES[table].readable:
        with sql_error(conn, "42501", match="permission denied for table"):
            rows_as_text(conn, table)
        return
    visible = rows_as_text(conn, table)
    assert visible == expected
    assert visible and not set(visible) & set(b_rows)


def as_contract(conn: psycopg.Connection, rows: Rows) -> None:
    """What a contract function runs as when A's owner calls it: drumbeat_contract, with A's claims."""
    act_as(conn, rows.owner, role="drumbeat_contract")


@pytest.mark.parametrize("verb", ["INSERT", "UPDATE", "DELETE"])
@pytest.mark.parametrize("table", TABLES)
def test_tenants_write_no_table_directly(world, table, verb):
    """Not even their own rows: authenticated changes state only through drumbeat_api."""
    before_a, before_b = snapshots(world)
    where, params = rows_of(table, world.a.workspace_id, with_shared=True)
    query, params = (
        (INSERT_INTO_B[table](world)) if verb == "INSERT" else (statement(verb, table, where), params)
    )
    world.a.tenant.as_owner()
    with sql_error(world.conn, "42501", match="permission denied for table"):
        world.conn.execute(query, params)
    assert snapshots(world) == (before_a, before_b)


@pytest.mark.parametrize(("table", "column"), [("api_keys", "hash"), ("workspaces", "inbound_secret_hash")])
def test_tenants_cannot_read_secret_hashes(world, table, column):
    world.a.tenant.as_owner()
    with sql_error(world.conn, "42501", match=f"permission denied for table {table}"):
        world.conn.execute(f"SELECT {column} FROM drumbeat.{table}")


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
@pytest.mark.parametrize("table", TABLES)
def test_a_cannot_update_or_delete_b_rows(world, table, verb):
    conn = superuser(world.conn)
    where, params = rows_of(table, world.b.workspace_id, with_shared=True)
    before = rows_as_text(conn, table, where, params)
    as_contract(conn, world.a)
    if verb in TABLES[table].writes:
        assert conn.execute(statement(verb, table, where), params).rowcount == 0
    else:
        with sql_error(conn, "42501", match="permission denied for table"):
            conn.execute(statement(verb, table, where), params)
    assert rows_as_text(superuser(conn), table, where, params) == before


@pytest.mark.parametrize(
    "table",
    [
        name
        for name in TENANT_TABLES
        if "UPDATE" in TABLES[name].writes and TABLES[name].tenant.isidentifier()
    ],
)
def test_a_updates_its_own_rows_but_cannot_move_them_to_b(world, table):
    conn = superuser(world.conn)
    where, params = rows_of(table, world.a.workspace_id)
    own = rows_as_text(conn, table, where, params)
    as_contract(conn, world.a)
    assert conn.execute(statement("UPDATE", table, where), params).rowcount == len(own) > 0
    move = sql.SQL("UPDATE drumbeat.{} SET {} = %s WHERE {}").format(
        sql.Identifier(table), sql.Identifier(TABLES[table].tenant), sql.SQL(where)
    )
    with sql_error(conn, "42501", match="row-level security"):
        conn.execute(move, (world.b.workspace_id, *params))


# How the contract's insert of a row into B, for A, is refused: no INSERT grant at all (timezones,
# deliveries), else the RLS check.
INSERT_REFUSAL = {
    "timezones": ("42501", "permission denied for table"),
    "event_types": ("42501", "permission denied for table"),
    "phone_timezones": ("42501", "permission denied for table"),
    "phone_number_plans": ("42501", "permission denied for table"),
    "deliveries": ("42501", "permission denied for table"),
    "outbox": ("42501", "permission denied for table"),
    "channel_holds": ("42501", "permission denied for table"),
    "webhook_attempts": ("42501", "permission denied for table"),
}


@pytest.mark.parametrize("table", TABLES)
def test_a_cannot_insert_into_b(world, table):
    before = snapshot(world.conn, world.b.workspace_id)
    query, params = INSERT_INTO_B[table](world)
    sqlstate, match = INSERT_REFUSAL.get(table, ("42501", "row-level security"))
    as_contract(world.conn, world.a)
    with sql_error(world.conn, sqlstate, match=match):
        world.conn.execute(query, params)
    assert snapshot(world.conn, world.b.workspace_id) == before


def test_tenants_cannot_write_shared_holiday_calendars(world):
    as_contract(world.conn, world.a)
    with sql_error(world.conn, "42501", match="row-level security"):
        world.conn.execute("INSERT INTO drumbeat.holidays (calendar, day) VALUES ('us', '2026-11-26')")


@pytest.mark.parametrize("table", TABLES)
def test_a_caller_without_sub_sees_only_shared_rows(world, table):
    conn = superuser(world.conn)
    shared = TABLES[table].shared
    expected = rows_as_text(conn, table, shared) if shared else []
    act_as(conn, None)
    if not TABLES[table].readable:
        with sql_error(conn, "42501", match="permission denied for table"):
            rows_as_text(conn, table)
        return
    assert rows_as_text(conn, table) == expected


@pytest.mark.parametrize("table", TABLES)
def test_anon_is_denied_every_table(world, table):
    conn = world.conn
    query, params = INSERT_INTO_B[table](world)
    writes = [statement(verb, table, "true") for verb in ("UPDATE", "DELETE")]
    reads = sql.SQL("SELECT * FROM drumbeat.{}").format(sql.Identifier(table))
    for schema_usage in (False, True):
        if schema_usage:  # even if someone exposed the private schema, the table grants still deny anon
            superuser(conn).execute("GRANT USAGE ON SCHEMA drumbeat TO anon")
        act_as(conn, None, role="anon")
        denied = "permission denied for " + ("table" if schema_usage else "schema")
        for query_, params_ in [(reads, ()), (query, params), *((w, ()) for w in writes)]:
            with sql_error(conn, "42501", match=denied):
                conn.execute(query_, params_)


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_events_are_append_only(world, verb):
    conn = world.conn
    before = snapshot(conn, world.a.workspace_id)["events"]
    as_contract(conn, world.a)
    with sql_error(conn, "42501", match="permission denied for table events"):
        conn.execute(statement(verb, "events", "workspace_id = %s"), (world.a.workspace_id,))
    conn.execute(
        "INSERT INTO drumbeat.events (workspace_id, kind, contact_id) VALUES (%s, 'note', %s)",
        (world.a.workspace_id, world.a.contacts[0]),
    )
    assert len(snapshot(conn, world.a.workspace_id)["events"]) == len(before) + 1


# A member of A writing a row of A's own workspace that points at B's rows: RLS checks the row's
# workspace_id only, and the plain foreign keys accept any tenant's id.
CROSS_REFERENCES: dict[str, Callable[[World], tuple[str, tuple]]] = {
    "step in B's sequence": lambda w: (INSERT_STEP, (w.a.workspace_id, w.b.sequence)),
    "enrollment in B's sequence": lambda w: (
        INSERT_ENROLLMENT,
        (w.a.workspace_id, w.b.sequence, w.a.contacts[3], w.b.steps[0]),
    ),
    "enrollment of B's contact": lambda w: (
        INSERT_ENROLLMENT,
        (w.a.workspace_id, w.a.sequence, w.b.contacts[3], w.a.steps[0]),
    ),
    "enrollment of B's contact in B's sequence": lambda w: (
        INSERT_ENROLLMENT,
        (w.a.workspace_id, w.b.sequence, w.b.contacts[3], w.b.steps[0]),
    ),
    "task on B's enrollment": lambda w: (
        INSERT_TASK,
        (w.a.workspace_id, w.b.enrollment, w.b.steps[0], w.b.contacts[0]),
    ),
    "A's step moved into B's sequence": lambda w: (
        "UPDATE drumbeat.sequence_steps SET sequence_id = %s, position = position + 50 WHERE sequence_id = %s",
        (w.b.sequence, w.a.draft_sequence),
    ),
}


@contextlib.contextmanager
def refused(conn: psycopg.Connection, *sqlstates: str):
    """The statement fails with one of these SQLSTATEs (rolled back to a savepoint)."""
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        yield
    assert caught.value.sqlstate in sqlstates, f"got {caught.value.sqlstate}: {caught.value}"


@pytest.mark.parametrize("case", CROSS_REFERENCES)
def test_a_row_of_a_cannot_point_at_b_rows(world, case):
    query, params = CROSS_REFERENCES[case](world)
    before = snapshot(world.conn, world.b.workspace_id)
    as_contract(world.conn, world.a)
    with refused(world.conn, "42501", "23503"):
        world.conn.execute(query, params)
        world.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert snapshot(world.conn, world.b.workspace_id) == before


def test_a_row_of_a_cannot_block_b_enrolling_its_own_contact(world):
    """A direct insert of an enrollment of A's workspace in B's sequence for B's contact is refused by
    the tenant-safe foreign keys, so it cannot take B's one-live-enrollment slot."""
    query, params = CROSS_REFERENCES["enrollment of B's contact in B's sequence"](world)
    as_contract(world.conn, world.a)
    with contextlib.suppress(psycopg.Error), world.conn.transaction():
        world.conn.execute(query, params)
    [(_, enrollment_id, outcome)] = world.b.tenant.enroll(world.b.sequence, [world.b.contacts[3]])
    assert outcome == "enrolled" and enrollment_id is not None


# --- functions ---------------------------------------------------------------------------------

RANK = {"member": 1, "admin": 2, "owner": 3}


@dataclass(frozen=True)
class Case:
    args: Callable[[Rows], tuple]  # arguments naming one tenant's rows
    min_role: str = "member"
    writes: bool = True  # the allowed call changes the tenant's rows (else: it returns something)
    scoped: bool = True  # it takes a tenant's id (create_workspace does not)
    # The feed shows only events of ended transactions: inside the test's own, its answer is empty.
    answers_now: bool = True


CASES = {
    "create_workspace": Case(lambda r: ("Another", "UTC"), writes=False, scoped=False),
    "set_holidays": Case(lambda r: (r.workspace_id, [date(2027, 1, 1)]), min_role="admin"),
    "update_workspace": Case(lambda r: (r.workspace_id, "Renamed", "Europe/Paris"), min_role="admin"),
    "create_sender": Case(lambda r: (r.workspace_id, "sms", phone(), Jsonb({})), min_role="admin"),
    # Reads over RPC: each answers something (writes nothing) for its own tenant, PT404 for another's ids.
    "get_sequence": Case(lambda r: (r.sequence,), writes=False),
    "get_enrollment": Case(lambda r: (r.enrollment,), writes=False),
    "list_enrollments": Case(lambda r: (r.workspace_id,), writes=False),
    "list_tasks": Case(lambda r: (r.workspace_id,), writes=False),
    "list_messages": Case(lambda r: (r.workspace_id,), writes=False),
    "update_sender": Case(
        lambda r: (r.sms_sender, Jsonb({"name": "Renamed", "daily_cap": None})), min_role="admin"
    ),
    "delete_sender": Case(
        lambda r: (r.email_sender,), min_role="admin"
    ),  # unused: no send, no sequence names it
    "upsert_contacts": Case(lambda r: (r.workspace_id, Jsonb([{"phone": phone()}]))),
    "create_sequence": Case(lambda r: (r.workspace_id, Jsonb(SMS_SEQUENCE))),
    "update_sequence": Case(lambda r: (r.sequence, Jsonb(sms_sequence(name="Renamed")))),
    "add_step": Case(lambda r: (r.sequence, Jsonb({"kind": "task", "task_description": "t"}), None)),
    "update_step": Case(lambda r: (r.sequence, r.steps[1], Jsonb({"name": "Renamed"}))),
    "remove_step": Case(lambda r: (r.sequence, r.steps[2])),
    "reorder_steps": Case(lambda r: (r.sequence, [r.steps[1], r.steps[0], r.steps[2]])),
    "activate_sequence": Case(lambda r: (r.draft_sequence, None)),
    "pause_sequence": Case(lambda r: (r.sequence,)),
    "resume_sequence": Case(lambda r: (r.paused_sequence,)),
    "archive_sequence": Case(lambda r: (r.sequence,)),
    "duplicate_sequence": Case(lambda r: (r.sequence, None)),
    "enroll_contacts": Case(lambda r: (r.sequence, [r.contacts[3]], None, 1, None, Jsonb({}))),
    "pause_enrollment": Case(lambda r: (r.enrollment,)),
    "resume_enrollment": Case(lambda r: (r.paused_enrollment,)),
    "cancel_enrollment": Case(lambda r: (r.enrollment, "not interested")),
    "skip_to_step": Case(lambda r: (r.enrollment, 2)),
    "complete_task": Case(lambda r: (r.task, "connected", None)),
    "reassign_enrollment": Case(lambda r: (r.enrollment, r.member)),
    "reassign_task": Case(lambda r: (r.task, r.member)),
    "erase_contact": Case(lambda r: (r.contacts[3],), min_role="admin"),
    "export_contact": Case(lambda r: (r.contacts[0],), min_role="admin"),
    "record_event": Case(lambda r: (r.contacts[0], "replied", Jsonb({}))),
    "preview_schedule": Case(lambda r: (r.sequence, r.contacts[0], None), writes=False),
    "sequence_stats": Case(lambda r: (r.sequence,), writes=False),
    "create_api_key": Case(lambda r: (r.workspace_id, "ci", "member"), min_role="admin"),
    "revoke_api_key": Case(lambda r: (r.api_key,), min_role="admin"),
    "check_contacts": Case(
        lambda r: (r.workspace_id, Jsonb([{"phone": phone()}, {"phone": "12"}])), writes=False
    ),
    "update_contact": Case(lambda r: (r.contacts[3], Jsonb({"first_name": "Renamed"}))),
    "delete_contact": Case(lambda r: (r.contacts[3],)),
    "resubscribe_contact": Case(lambda r: (r.contacts[4], "sms", "Asked by phone"), min_role="admin"),
    "add_member": Case(lambda r: (r.workspace_id, uuid.uuid4(), "member"), min_role="admin"),
    "update_member_role": Case(lambda r: (r.workspace_id, r.member, "admin"), min_role="admin"),
    "remove_member": Case(lambda r: (r.workspace_id, r.member), min_role="admin"),
    "delete_workspace": Case(lambda r: (r.workspace_id,), min_role="owner"),
    # It returns the new secret; what it writes (the secret's hash) is a column no snapshot reads.
    "rotate_inbound_secret": Case(lambda r: (r.workspace_id,), min_role="admin", writes=False),
    "list_events": Case(lambda r: (r.workspace_id, None, None, 100), writes=False, answers_now=False),
    "set_sender_mailbox": Case(
        lambda r: (
            r.email_sender,
            Jsonb({"host": "imap.other.example", "username": "u", "password_sealed": "v1:y"}),
        ),
        min_role="admin",
    ),
    "create_webhook_endpoint": Case(
        lambda r: (r.workspace_id, Jsonb({"url": "https://crm.example.com/hook"})), min_role="admin"
    ),
    "list_webhook_endpoints": Case(lambda r: (r.workspace_id,), min_role="admin", writes=False),
    "get_webhook_endpoint": Case(lambda r: (r.webhook_endpoint,), min_role="admin", writes=False),
    "update_webhook_endpoint": Case(
        lambda r: (r.webhook_endpoint, Jsonb({"description": "Renamed"})), min_role="admin"
    ),
    "delete_webhook_endpoint": Case(lambda r: (r.webhook_endpoint,), min_role="admin"),
    "rotate_webhook_secret": Case(lambda r: (r.webhook_endpoint,), min_role="admin"),
    "test_webhook_endpoint": Case(lambda r: (r.webhook_endpoint,), min_role="admin"),
    "list_webhook_deliveries": Case(lambda r: (r.webhook_endpoint, None, 10), min_role="admin", writes=False),
    "resend_webhook_message": Case(lambda r: (r.webhook_endpoint, r.webhook_message), min_role="admin"),
    # The HTTP API's Idempotency-Key: the caller's own keys, in no workspace's name (each test user is in A only).
    "begin_idempotent_request": Case(lambda r: (f"key-{uuid.uuid4()}", "a" * 64), scoped=False),
    "finish_idempotent_request": Case(
        lambda r: (f"key-{uuid.uuid4()}", "a" * 64, 201, "application/json", None, b"{}"), scoped=False
    ),
    # Its events are the test transaction's own, not yet in the feed: it answers {"queued": 0, ...}.
    "resend_webhook_messages": Case(
        lambda r: (r.webhook_endpoint, "2026-01-01T00:00:00Z"), min_role="admin", writes=False
    ),
}
SCOPED = [name for name, case in CASES.items() if case.scoped]


def api_functions(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT p.proname, p.prosecdef, has_function_privilege('anon', p.oid, 'EXECUTE'), "
        "has_function_privilege('authenticated', p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'drumbeat_api'"
    ).fetchall()


def test_the_matrix_covers_every_api_function(conn):
    """A new drumbeat_api function (or a second overload) fails here until it gets isolation cases."""
    assert sorted(row[0] for row in api_functions(conn)) == sorted(CASES)


def test_api_functions_run_as_the_contract_role_and_are_granted_to_authenticated(conn):
    for name, definer, _, authenticated_may in api_functions(conn):
        assert (definer, authenticated_may) == (True, True), name
    owners = conn.execute(
        "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.pronamespace = 'drumbeat_api'::regnamespace"
    ).fetchall()
    assert owners == [("drumbeat_contract",)]


def test_no_function_is_executable_by_public(conn):
    """Per-schema default privileges cannot take EXECUTE away from PUBLIC: each migration must revoke it."""
    executable = conn.execute(
        "SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname IN ('drumbeat', 'drumbeat_api') AND (has_function_privilege('anon', p.oid, 'EXECUTE') "
        "OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) ORDER BY 1"
    ).fetchall()
    assert executable == []


@pytest.mark.parametrize("function", SCOPED)
def test_b_calling_with_a_ids_is_not_found(world, function):
    conn = world.conn
    before_a, before_b = snapshots(world)
    world.b.tenant.as_owner()
    with sql_error(conn, "PT404", match="not found"):
        call(conn, function, *CASES[function].args(world.a))
    assert snapshots(world) == (before_a, before_b)


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
@pytest.mark.parametrize("function", CASES)
def test_a_calling_with_its_own_ids(world, function, role):
    """The allow path for every role strong enough, PT403 for a weaker one; B is never touched."""
    conn, case = world.conn, CASES[function]
    user = world.a.owner if role == "owner" else add_member(conn, world.a.workspace_id, role)
    before_a, before_b = snapshots(world)
    act_as(conn, user)
    if RANK[role] < RANK[case.min_role]:
        with sql_error(conn, "PT403", match=f"needs the {case.min_role} role"):
            call(conn, function, *case.args(world.a))
        assert snapshot(conn, world.a.workspace_id) == before_a
    else:
        result = call(conn, function, *case.args(world.a))
        if case.writes:
            assert snapshot(conn, world.a.workspace_id) != before_a
        else:
            assert ((result and result[0][0]) or not case.answers_now) and snapshot(
                conn, world.a.workspace_id
            ) == before_a
    assert snapshot(conn, world.b.workspace_id) == before_b


@pytest.mark.parametrize("function", CASES)
def test_a_call_without_sub_is_unauthenticated(world, function):
    before = snapshot(world.conn, world.a.workspace_id)
    act_as(world.conn, None)
    with sql_error(world.conn, "PT401", match="authentication required"):
        call(world.conn, function, *CASES[function].args(world.a))
    assert snapshot(world.conn, world.a.workspace_id) == before


@pytest.mark.parametrize("function", CASES)
def test_anon_cannot_execute(world, function):
    conn = world.conn
    act_as(conn, None, role="anon")
    with sql_error(conn, "42501", match="permission denied for"):
        call(conn, function, *CASES[function].args(world.a))
    # Exposing drumbeat_api on Supabase grants USAGE on it to anon: the function grant must still deny.
    superuser(conn).execute("GRANT USAGE ON SCHEMA drumbeat_api TO anon")
    act_as(conn, None, role="anon")
    with sql_error(conn, "42501", match=f"permission denied for function {function}"):
        call(conn, function, *CASES[function].args(world.a))


def test_anon_cannot_run_a_statement_prepared_for_authenticated(world):
    """PostgREST prepares statements and shares its connections between roles, and schema USAGE is
    checked only when a statement is parsed: the EXECUTE grant is what stops anon here."""
    conn = world.conn
    conn.prepare_threshold = 0
    act_as(conn, None)  # authenticated without sub: PT401, and PL/pgSQL caches the plan of that path
    with sql_error(conn, "PT401"):
        call(conn, "sequence_stats", world.a.sequence)
    world.a.tenant.as_owner()
    call(conn, "sequence_stats", world.a.sequence)  # prepared by the connection
    act_as(conn, None, role="anon")
    with sql_error(conn, "42501", match="permission denied for function sequence_stats"):
        call(conn, "sequence_stats", world.a.sequence)


# --- cross-tenant references inside otherwise valid input -----------------------------------------


def test_enrolling_b_contact_into_a_sequence_is_not_found(world):
    conn = world.conn
    before_a, before_b = snapshots(world)
    outcomes = world.a.tenant.enroll(world.a.sequence, [world.b.contacts[3], world.a.contacts[3]])
    assert outcomes[0] == (world.b.contacts[3], None, "not_found")
    assert outcomes[1][2] == "enrolled"
    after_a = snapshot(conn, world.a.workspace_id)
    enrolled = {row for row in after_a["enrollments"] if row not in before_a["enrollments"]}
    assert len(enrolled) == 1 and str(world.a.contacts[3]) in enrolled.pop()
    assert snapshot(conn, world.b.workspace_id) == before_b


def _definition_naming(b: Rows) -> dict[str, tuple[dict, str]]:
    enroll_step = {"kind": "action", "action": {"type": "enroll", "sequence_id": str(b.sequence)}}
    return {
        "sms sender": (sms_sequence(settings={"sms_sender_id": str(b.sms_sender)}), "settings.sms_sender_id"),
        "email sender": (
            sms_sequence(channel="multi", settings={"email_sender_id": str(b.email_sender)}),
            "settings.email_sender_id",
        ),
        "enroll action": (
            sms_sequence(steps=[*SMS_SEQUENCE["steps"], enroll_step]),
            f"steps[{len(SMS_SEQUENCE['steps'])}].action.sequence_id",
        ),
    }


@pytest.mark.parametrize("function", ["create_sequence", "update_sequence"])
@pytest.mark.parametrize("reference", ["sms sender", "email sender", "enroll action"])
def test_a_definition_naming_b_rows_is_invalid(world, function, reference):
    definition, field = _definition_naming(world.b)[reference]
    target = world.a.workspace_id if function == "create_sequence" else world.a.sequence
    before_a = snapshot(world.conn, world.a.workspace_id)
    world.a.tenant.as_owner()
    with sql_error(world.conn, "PT422", field=field):
        call(world.conn, function, target, Jsonb(definition))
    assert snapshot(world.conn, world.a.workspace_id) == before_a


def test_a_definition_reusing_b_step_ids_is_invalid(world):
    definition = sms_sequence()
    definition["steps"][0] = {**definition["steps"][0], "id": str(world.b.steps[0])}
    before_b = snapshot(world.conn, world.b.workspace_id)
    world.a.tenant.as_owner()
    with sql_error(world.conn, "PT422", field="steps[0].id"):
        call(world.conn, "update_sequence", world.a.sequence, Jsonb(definition))
    assert snapshot(world.conn, world.b.workspace_id) == before_b


@pytest.mark.parametrize(
    ("function", "args", "sqlstate", "field"),
    [
        ("preview_schedule", lambda w: (w.a.sequence, w.b.contacts[0], None), "PT404", "p_contact_id"),
        (
            "enroll_contacts",
            lambda w: (w.a.sequence, [w.a.contacts[3]], None, 1, w.b.owner, Jsonb({})),
            "PT422",
            "p_assigned_to",
        ),
        (
            "record_event",
            lambda w: (w.a.contacts[0], "replied", Jsonb({"enrollment_id": str(w.b.enrollment)})),
            "PT422",
            "p_payload.enrollment_id",
        ),
        (
            "record_event",
            lambda w: (w.a.contacts[0], "replied", Jsonb({"delivery_id": str(w.b.delivery)})),
            "PT422",
            "p_payload.delivery_id",
        ),
    ],
    ids=["preview-b-contact", "enroll-assigned-to-b-owner", "event-b-enrollment", "event-b-delivery"],
)
def test_a_call_naming_b_rows_is_refused(world, function, args, sqlstate, field):
    before_a, before_b = snapshots(world)
    world.a.tenant.as_owner()
    with sql_error(world.conn, sqlstate, field=field):
        call(world.conn, function, *args(world))
    assert snapshots(world) == (before_a, before_b)


def test_upserting_b_contact_phone_into_a_creates_a_new_contact(world):
    conn = superuser(world.conn)
    b_phone = conn.execute(
        "SELECT phone FROM drumbeat.contacts WHERE id = %s", (world.b.contacts[0],)
    ).fetchone()[0]
    before_b = snapshot(conn, world.b.workspace_id)
    world.a.tenant.as_owner()
    [(contact_id, created)] = call(conn, "upsert_contacts", world.a.workspace_id, Jsonb([{"phone": b_phone}]))
    assert created and contact_id != world.b.contacts[0]
    assert snapshot(conn, world.b.workspace_id) == before_b
