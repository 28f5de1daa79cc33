"""Outgoing webhooks in SQL (sql/functions/webhooks.sql): admins manage endpoints through the contract
(validated, secrets shown once, another tenant's endpoint not found); the worker's fan-out turns the
event feed into one message per event and endpoint (filtered by type, never twice), its claim caps
the messages in flight per endpoint and brings back those whose lease lapsed, and its record moves each
message on (delivered, retried, given up) and switches off an endpoint that answers 410 or has failed
for five days, with an event the other endpoints receive."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant
from tests.sql.worker_calls import as_worker
from tests.support import act_as, call, call_one, sql_error

RECEIVER = "https://hooks.example.com/drumbeat"


def create(tenant, **fields):
    tenant.as_owner()
    return call_one(
        tenant.conn, "create_webhook_endpoint", tenant.workspace_id, Jsonb({"url": RECEIVER} | fields)
    )


def fan_out(conn, expected: int, timeout: float = 10) -> int:
    """Run the fan-out (as the worker) until it has queued `expected` messages. Events join the feed once
    every older transaction of the cluster has ended: usually at once, on a shared server a moment later."""
    conn.commit()
    queued, deadline = 0, time.monotonic() + timeout
    while queued < expected and time.monotonic() < deadline:
        as_worker(conn)
        queued += conn.execute("SELECT drumbeat.fan_out_webhooks(1000)").fetchone()[0]
        conn.commit()
        time.sleep(0.02)
    return queued


def messages(conn, endpoint_id) -> list[dict]:
    conn.execute("RESET ROLE")
    cursor = conn.execute(
        "SELECT msg_id, type, status, attempts, payload FROM drumbeat.webhook_messages WHERE endpoint_id = %s ORDER BY id",
        (endpoint_id,),
    )
    return [
        dict(zip(("msg_id", "type", "status", "attempts", "payload"), row, strict=True)) for row in cursor
    ]


def claim(conn, limit=100, per_endpoint=8, lease_seconds=30) -> list[dict]:
    as_worker(conn)
    cursor = conn.execute(
        "SELECT * FROM drumbeat.claim_webhook_messages(%s, %s, %s)", (limit, per_endpoint, lease_seconds)
    )
    names = [c.name for c in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor]
    conn.commit()
    return rows


def record(
    conn, claimed: dict, outcome: str, *, status_code=None, retry_in=None, at=None, error=None
) -> None:
    at = at or dt.datetime.now(dt.UTC)
    attempt = {
        "id": claimed["id"], "lease": str(claimed["lease"]), "attempt": claimed["attempt"], "attempted_at": at.isoformat(),
        "status_code": status_code, "latency_ms": 12, "outcome": outcome, "error": error,
        "next_attempt_at": (at + retry_in).isoformat() if retry_in else None,
    }  # fmt: skip
    as_worker(conn)
    conn.execute("SELECT drumbeat.record_webhook_attempts(%s)", (Jsonb([attempt]),))
    conn.commit()


@pytest.fixture
def acme(conn):
    tenant = new_tenant(conn)
    conn.commit()
    return tenant


def test_an_admin_creates_an_endpoint_and_sees_its_secret_once(acme):
    created = create(acme, event_types=["message.sent", "sequence.enrollment.created"], description="CRM")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) == 50
    assert created["event_types"] == ["message.sent", "sequence.enrollment.created"] and created["enabled"]
    listed = [row[0] for row in call(acme.conn, "list_webhook_endpoints", acme.workspace_id)]
    assert listed == [
        created | {"secret": None} if False else {k: v for k, v in created.items() if k != "secret"}
    ]
    assert "secret" not in call_one(acme.conn, "get_webhook_endpoint", created["id"])
    with sql_error(acme.conn, "42501"):  # no direct read, the secret least of all
        acme.conn.execute("SELECT url FROM drumbeat.webhook_endpoints")
    rotated = call_one(acme.conn, "rotate_webhook_secret", created["id"])
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_expires_at"] is not None


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"url": "ftp://files.example.com/x"}, "url", "http:// or https://"),
        ({"url": "https://user:pw@hooks.example.com/"}, "url", "user name or password"),
        ({"url": "http://127.0.0.1:8080/hook"}, "url", "private, loopback"),
        ({"url": "http://[::1]/hook"}, "url", "private, loopback"),
        ({"url": "http://[::ffff:10.0.0.1]/hook"}, "url", "private, loopback"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url", "private, loopback"),
        ({"url": "http://localhost:3000/"}, "url", "local host"),
        ({"url": "https://"}, "url", "has no host"),
        ({"url": "https://x.example.com/", "event_types": ["message.snet"]}, "event_types", "message.snet"),
        ({"url": "https://x.example.com/", "event_types": []}, "event_types", "list of 1 to 100"),
        ({"url": "https://x.example.com/", "description": "d" * 501}, "description", "500"),
        ({"url": "https://x.example.com/", "include_bodies": "yes"}, "include_bodies", "true or false"),
        ({"url": "https://x.example.com/", "secret": "whsec_mine"}, "p_endpoint.secret", "unknown field"),
        ({"description": "no url"}, "url", "required"),
    ],
)
def test_a_bad_endpoint_is_refused_naming_the_field(acme, fields, field, words):
    acme.as_owner()
    with sql_error(acme.conn, "PT422", field=field, match=words):
        call(acme.conn, "create_webhook_endpoint", acme.workspace_id, Jsonb(fields))


def test_private_addresses_are_allowed_when_the_operator_says_so(acme):
    acme.as_owner()
    acme.conn.execute("SELECT set_config('drumbeat.webhook_allow_private', 'on', true)")
    assert create(acme, url="http://127.0.0.1:8080/hook")["url"] == "http://127.0.0.1:8080/hook"


def test_only_admins_of_the_workspace_manage_its_endpoints(acme, conn):
    endpoint = create(acme)["id"]
    member = uuid.uuid4()
    acme.as_owner()
    call(conn, "add_member", acme.workspace_id, member, "member")
    act_as(conn, member)
    with sql_error(conn, "PT403"):
        call(conn, "list_webhook_endpoints", acme.workspace_id)
    with sql_error(conn, "PT403"):
        call(conn, "delete_webhook_endpoint", endpoint)
    other = new_tenant(conn, "Globex")
    for function, args in [
        ("get_webhook_endpoint", (endpoint,)),
        ("update_webhook_endpoint", (endpoint, Jsonb({"enabled": False}))),
        ("rotate_webhook_secret", (endpoint,)),
        ("test_webhook_endpoint", (endpoint,)),
        ("list_webhook_deliveries", (endpoint, None, 10)),
        ("resend_webhook_messages", (endpoint, dt.datetime.now(dt.UTC))),
        ("delete_webhook_endpoint", (endpoint,)),
    ]:
        other.as_owner()
        with sql_error(conn, "PT404", field="endpoint_id"):
            call(conn, function, *args)
    acme.as_owner()
    assert call_one(conn, "get_webhook_endpoint", endpoint)["enabled"]


def test_the_fan_out_queues_each_event_once_for_each_endpoint_that_takes_it(acme, conn):
    everything = create(acme)["id"]
    sends_only = create(acme, event_types=["message.sent"])["id"]
    contact = acme.contact(first_name="Ada")
    acme.enroll(acme.sequence(), [contact])
    assert fan_out(conn, 1) >= 1
    taken = messages(conn, everything)
    assert [m["type"] for m in taken][:1] == ["sequence.enrollment.created"]
    body = taken[0]["payload"]
    assert set(body) == {"type", "timestamp", "data"} and body["timestamp"].endswith("Z")
    assert body["data"]["contact_id"] == str(contact) and body["data"]["workspace_id"] == str(
        acme.workspace_id
    )
    assert taken[0]["msg_id"] == "msg_" + taken[0]["msg_id"][4:] and taken[0]["status"] == "pending"
    assert messages(conn, sends_only) == []
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.fan_out_webhooks(1000)").fetchone()[0] == 0  # nothing twice


def test_an_endpoint_gets_the_events_written_after_it_was_created(acme, conn):
    contact = acme.contact(first_name="Early")
    acme.enroll(acme.sequence(), [contact])
    conn.commit()
    endpoint = create(acme)["id"]
    conn.commit()
    fan_out(conn, 1, timeout=0.5)
    assert messages(conn, endpoint) == []


def test_the_claim_caps_each_endpoint_and_brings_back_lapsed_leases(acme, conn):
    slow = create(acme)["id"]
    for _ in range(3):
        call(conn, "test_webhook_endpoint", slow)
    fast = create(acme)["id"]
    call(conn, "test_webhook_endpoint", fast)
    conn.commit()
    first = claim(conn, per_endpoint=2)
    assert sorted(str(m["endpoint_id"]) for m in first) == sorted([str(slow), str(slow), str(fast)])
    assert claim(conn, per_endpoint=2) == []  # slow has two in flight already; fast has nothing left
    assert all(m["body"].startswith("{") and m["secrets"][0].startswith("whsec_") for m in first)
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.webhook_messages SET next_attempt_at = now() - interval '1 second' WHERE status = 'sending'"
    )
    conn.commit()
    again = claim(conn, per_endpoint=2)
    assert {m["msg_id"] for m in again} == {m["msg_id"] for m in first}  # the same webhook-ids, sent again
    assert {m["attempt"] for m in again} == {2}


def test_recording_moves_messages_on(acme, conn):
    endpoint = create(acme)["id"]
    for _ in range(3):
        call(conn, "test_webhook_endpoint", endpoint)
    conn.commit()
    delivered, retried, given_up = claim(conn)
    record(conn, delivered, "delivered", status_code=204)
    record(conn, retried, "retry", status_code=503, retry_in=dt.timedelta(seconds=30), error="HTTP 503")
    record(conn, given_up, "retry", status_code=500, error="HTTP 500")
    states = {m["msg_id"]: (m["status"], m["attempts"]) for m in messages(conn, endpoint)}
    assert states == {
        delivered["msg_id"]: ("delivered", 1),
        retried["msg_id"]: ("pending", 1),
        given_up["msg_id"]: ("failed", 1),
    }
    assert claim(conn) == []  # the retry is not due for 30 s
    acme.as_owner()
    log = [row[0] for row in call(conn, "list_webhook_deliveries", endpoint, None, 10)]
    assert [(e["outcome"], e["status_code"]) for e in log] == [
        ("retry", 500),
        ("retry", 503),
        ("delivered", 204),
    ]
    assert log[1]["next_retry_at"] is not None and log[0]["next_retry_at"] is None
    assert (
        call_one(conn, "get_webhook_endpoint", endpoint)["failing_since"] is not None
    )  # failing since the 503
    resent = call_one(conn, "resend_webhook_message", endpoint, given_up["msg_id"])
    assert resent["status"] == "pending" and resent["attempts"] == 0
    with sql_error(conn, "PT404", field="message_id"):
        call(conn, "resend_webhook_message", endpoint, "msg_nope")


def test_a_late_record_for_a_message_another_worker_took_over_changes_nothing(acme, conn):
    endpoint = create(acme)["id"]
    call(conn, "test_webhook_endpoint", endpoint)
    conn.commit()
    [first] = claim(conn)
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.webhook_messages SET next_attempt_at = now() - interval '1 second'")
    conn.commit()
    [second] = claim(conn)
    record(conn, first, "retry", status_code=503, retry_in=dt.timedelta(seconds=30))
    assert messages(conn, endpoint)[0]["status"] == "sending"  # still the second attempt's
    record(conn, second, "delivered", status_code=200)
    assert messages(conn, endpoint)[0]["status"] == "delivered"


def test_410_switches_the_endpoint_off_and_the_others_hear_of_it(acme, conn):
    gone = create(acme)["id"]
    watcher = create(acme, event_types=["webhook_endpoint.disabled"])["id"]
    call(conn, "test_webhook_endpoint", gone)
    conn.commit()
    [message] = claim(conn)
    record(conn, message, "disable", status_code=410, error="HTTP 410 Gone")
    acme.as_owner()
    endpoint = call_one(conn, "get_webhook_endpoint", gone)
    assert not endpoint["enabled"] and "410" in endpoint["disabled_reason"]
    assert fan_out(conn, 1) == 1
    [notice] = messages(conn, watcher)
    assert notice["type"] == "webhook_endpoint.disabled" and notice["payload"]["data"]["endpoint_id"] == str(
        gone
    )
    call(conn, "test_webhook_endpoint", gone)
    conn.commit()
    assert [str(m["endpoint_id"]) for m in claim(conn)] == [watcher]  # nothing goes to a disabled endpoint
    acme.as_owner()
    again = call_one(conn, "update_webhook_endpoint", gone, Jsonb({"enabled": True}))
    assert again["enabled"] and again["disabled_reason"] is None


def test_an_endpoint_failing_for_five_days_is_switched_off(acme, conn):
    endpoint = create(acme)["id"]
    call(conn, "test_webhook_endpoint", endpoint)
    conn.commit()
    [message] = claim(conn)
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.webhook_endpoints SET failing_since = now() - interval '5 days 1 minute'")
    conn.commit()
    record(conn, message, "retry", status_code=500, retry_in=dt.timedelta(hours=1))
    acme.as_owner()
    switched_off = call_one(conn, "get_webhook_endpoint", endpoint)
    assert not switched_off["enabled"] and "5 days" in switched_off["disabled_reason"]


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(acme, conn):
    endpoint = create(acme)
    rotated = call_one(conn, "rotate_webhook_secret", endpoint["id"])
    call(conn, "test_webhook_endpoint", endpoint["id"])
    conn.commit()
    [message] = claim(conn)
    assert message["secrets"] == [rotated["secret"], endpoint["secret"]]


def test_resend_since_a_time_queues_every_event_the_endpoint_takes(acme, conn):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    acme.enroll(acme.sequence(), [acme.contact(first_name="Before")])
    conn.commit()
    endpoint = create(acme, event_types=["sequence.enrollment.created"])["id"]
    conn.commit()
    deadline = time.monotonic() + 10
    while (answer := call_one(conn, "resend_webhook_messages", endpoint, since))["queued"] == 0:
        assert time.monotonic() < deadline
        conn.commit()
        acme.as_owner()
    assert answer == {"queued": 1, "next": None}
    [message] = messages(conn, endpoint)
    assert message["type"] == "sequence.enrollment.created" and message["status"] == "pending"


def test_a_webhook_step_goes_to_the_endpoint_it_names(acme, conn):
    named = create(acme, event_types=["sequence.step.webhook"])["id"]
    other = create(acme, event_types=["sequence.step.webhook"])["id"]
    definition = {
        "name": "Qualify",
        "channel": "sms",
        "steps": [
            {
                "kind": "action",
                "action": {"type": "webhook", "event": "lead.qualified", "endpoint_id": str(named)},
            }
        ],
    }
    sequence = acme.sequence(definition)
    acme.enroll(sequence, [acme.contact(first_name="Q")])
    conn.commit()
    as_worker(conn)
    conn.execute("SELECT * FROM drumbeat.claim_due(10)")
    assert fan_out(conn, 1) == 1
    [message] = messages(conn, named)
    assert (
        message["type"] == "sequence.step.webhook" and message["payload"]["data"]["event"] == "lead.qualified"
    )
    assert messages(conn, other) == []
    acme.as_owner()
    bad = definition | {
        "steps": [
            {"kind": "action", "action": {"type": "webhook", "event": "x", "endpoint_id": str(uuid.uuid4())}}
        ]
    }
    with sql_error(conn, "PT422", field="steps[0].action.endpoint_id"):
        call(conn, "create_sequence", acme.workspace_id, Jsonb(bad))


def test_finished_messages_older_than_the_window_are_pruned(acme, conn):
    endpoint = create(acme)["id"]
    for _ in range(3):
        call(conn, "test_webhook_endpoint", endpoint)
    conn.commit()
    old_delivered, old_pending, recent = claim(conn)
    record(conn, old_delivered, "delivered", status_code=200)
    record(conn, recent, "delivered", status_code=200)
    record(conn, old_pending, "retry", status_code=503, retry_in=dt.timedelta(hours=1))
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE drumbeat.webhook_messages SET created_at = now() - interval '31 days' WHERE msg_id = ANY(%s)",
        ([old_delivered["msg_id"], old_pending["msg_id"]],),
    )
    conn.commit()
    as_worker(conn)
    assert conn.execute("SELECT drumbeat.prune_webhook_messages('30 days', 100)").fetchone()[0] == 1
    conn.commit()
    assert {m["msg_id"] for m in messages(conn, endpoint)} == {old_pending["msg_id"], recent["msg_id"]}


def test_bodies_go_only_to_an_endpoint_that_asked_for_them(acme, conn):
    plain = create(acme, event_types=["message.sent"])["id"]
    with_bodies = create(acme, event_types=["message.sent"], include_bodies=True)["id"]
    contact = acme.contact(first_name="Ada")
    [(_, enrollment, _)] = acme.enroll(acme.sequence(), [contact])
    conn.execute("RESET ROLE")
    # What the dispatcher writes when it sends the first step: the delivery (with its text) and the event.
    conn.execute(
        """WITH sent AS (
               INSERT INTO drumbeat.deliveries (workspace_id, enrollment_id, step_id, contact_id, channel,
                                                idempotency_key, scheduled_for, body, status, sent_at)
               SELECT e.workspace_id, e.id, e.current_step_id, e.contact_id, 'sms', 'k1', now(),
                      'Hi Ada, quick question', 'sent', now()
               FROM drumbeat.enrollments e WHERE e.id = %s RETURNING *)
           INSERT INTO drumbeat.events (workspace_id, kind, contact_id, enrollment_id, delivery_id, payload)
           SELECT workspace_id, 'sent', contact_id, enrollment_id, id, '{"channel": "sms"}' FROM sent""",
        (enrollment,),
    )
    assert fan_out(conn, 2) >= 2
    [bare] = messages(conn, plain)
    [full] = messages(conn, with_bodies)
    assert bare["type"] == full["type"] == "message.sent"
    assert "message" not in bare["payload"]["data"] and "Ada" not in str(bare["payload"])
    assert full["payload"]["data"]["message"] == {"body": "Hi Ada, quick question"}


def test_resend_since_pages_through_events_of_one_instant(acme, conn):
    """A bulk write gives thousands of events one timestamp: paging goes on by id, never in a loop."""
    endpoint = create(acme, event_types=["message.opened"])["id"]
    conn.execute("RESET ROLE")
    conn.execute(
        "INSERT INTO drumbeat.events (workspace_id, kind, contact_id) "
        "SELECT %s, 'opened', gen_random_uuid() FROM generate_series(1, 10005)",
        (acme.workspace_id,),
    )
    conn.commit()
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    acme.as_owner()
    first = call_one(conn, "resend_webhook_messages", endpoint, since)
    deadline = time.monotonic() + 10
    while first["queued"] == 0 and time.monotonic() < deadline:  # the feed's horizon, on a shared server
        conn.commit()
        acme.as_owner()
        first = call_one(conn, "resend_webhook_messages", endpoint, since)
    assert first["queued"] == 10000 and first["next"] is not None
    rest = call_one(
        conn, "resend_webhook_messages", endpoint, first["next"]["since"], first["next"]["after_event_id"]
    )
    assert rest == {"queued": 5, "next": None}
    conn.commit()
    assert len(messages(conn, endpoint)) == 10005


def test_a_claim_never_revives_a_message_recorded_meanwhile(acme, conn, db_url):
    endpoint = create(acme)["id"]
    call(conn, "test_webhook_endpoint", endpoint)
    conn.commit()
    [first] = claim(conn)
    conn.execute("RESET ROLE")
    conn.execute("UPDATE drumbeat.webhook_messages SET next_attempt_at = now() - interval '1 second'")
    conn.commit()
    with psycopg.connect(db_url) as late:  # the first worker's record, not yet committed
        as_worker(late)
        late.execute("SELECT drumbeat.record_webhook_attempts(%s)", (Jsonb([{
            "id": first["id"], "lease": str(first["lease"]), "attempt": 1,
            "attempted_at": dt.datetime.now(dt.UTC).isoformat(), "status_code": 200, "latency_ms": 3,
            "outcome": "delivered", "error": None, "next_attempt_at": None}]),))  # fmt: skip
        assert claim(conn) == []  # the row is locked by the record: skipped, not taken
        late.commit()
    assert claim(conn) == []
    assert messages(conn, endpoint)[0]["status"] == "delivered"


def test_a_webhook_step_names_its_endpoint_in_any_case(acme, conn):
    named = create(acme, event_types=["sequence.step.webhook"])["id"]
    action = {"type": "webhook", "event": "lead.qualified", "endpoint_id": named.upper()}
    sequence = acme.sequence({"name": "Q", "channel": "sms", "steps": [{"kind": "action", "action": action}]})
    acme.enroll(sequence, [acme.contact(first_name="Q")])
    conn.commit()
    as_worker(conn)
    conn.execute("SELECT * FROM drumbeat.claim_due(10)")
    assert fan_out(conn, 1) == 1
    assert [m["type"] for m in messages(conn, named)] == ["sequence.step.webhook"]
