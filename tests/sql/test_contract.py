"""The drumbeat_api contract: each function's happy path and its bad input (named SQLSTATE + field)."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, date, datetime

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.support import act_as, call, call_one, sql_error

MONDAY_9AM_NEW_YORK = "2026-11-23 14:00Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def enrollment_row(conn, enrollment_id):
    conn.execute("RESET ROLE")
    return conn.execute(
        "SELECT status, next_action_at, current_step_id, exit_reason FROM drumbeat.enrollments WHERE id = %s",
        (enrollment_id,),
    ).fetchone()


def step_ids(conn, sequence_id):
    conn.execute("RESET ROLE")
    rows = conn.execute(
        "SELECT id FROM drumbeat.sequence_steps WHERE sequence_id = %s AND removed_at IS NULL ORDER BY position",
        (sequence_id,),
    ).fetchall()
    return [r[0] for r in rows]


# --- workspaces, holidays, senders -------------------------------------------------------------


def test_create_workspace_makes_the_caller_owner(conn):
    user = uuid.uuid4()
    act_as(conn, user)
    workspace_id = call_one(conn, "create_workspace", "Acme", "Europe/Paris")
    assert conn.execute(
        "SELECT role FROM drumbeat.workspace_members WHERE workspace_id = %s AND user_id = %s",
        (workspace_id, user),
    ).fetchone() == ("owner",)
    assert conn.execute(
        "SELECT timezone FROM drumbeat.workspaces WHERE id = %s", (workspace_id,)
    ).fetchone() == ("Europe/Paris",)


@pytest.mark.parametrize(
    ("name", "timezone", "field"),
    [
        ("", "UTC", "p_name"),
        ("  ", "UTC", "p_name"),
        ("x" * 201, "UTC", "p_name"),
        ("Acme", "Mars/Base", "p_timezone"),
    ],
)
def test_create_workspace_rejects_bad_input(conn, name, timezone, field):
    act_as(conn, uuid.uuid4())
    with sql_error(conn, "PT422", field=field):
        call(conn, "create_workspace", name, timezone)


def test_set_holidays_replaces_the_list(tenant):
    call(
        tenant.conn,
        "set_holidays",
        tenant.workspace_id,
        [date(2026, 12, 25), date(2026, 12, 25), date(2027, 1, 1)],
    )
    call(tenant.conn, "set_holidays", tenant.workspace_id, [date(2026, 11, 26)])
    days = tenant.conn.execute(
        "SELECT day FROM drumbeat.holidays WHERE workspace_id = %s", (tenant.workspace_id,)
    ).fetchall()
    assert days == [(date(2026, 11, 26),)]


@pytest.mark.parametrize("dates", [None, [date(2026, 1, 1), None]])
def test_set_holidays_rejects_nulls(tenant, dates):
    with sql_error(tenant.conn, "PT422", field="p_dates"):
        call(tenant.conn, "set_holidays", tenant.workspace_id, dates)


def test_create_sender_stores_settings(tenant):
    sender_id = call_one(
        tenant.conn,
        "create_sender",
        tenant.workspace_id,
        "email",
        " Sales@Example.com ",
        Jsonb({"name": "Sales", "rate_per_second": 5, "daily_cap": 500}),
    )
    row = tenant.conn.execute(
        "SELECT address, name, rate_per_second, daily_cap FROM drumbeat.senders WHERE id = %s", (sender_id,)
    ).fetchone()
    assert row == ("sales@example.com", "Sales", 5, 500)


@pytest.mark.parametrize(
    ("channel", "address", "settings", "field"),
    [
        ("fax", "+15550001111", {}, "p_channel"),
        ("sms", "5550001111", {}, "p_address"),
        ("sms", "+0123", {}, "p_address"),
        ("email", "not-an-email", {}, "p_address"),
        ("sms", "+15550001111", {"colour": "red"}, "p_settings.colour"),
        ("sms", "+15550001111", {"rate_per_second": 0}, "p_settings.rate_per_second"),
        ("sms", "+15550001111", {"daily_cap": 1.5}, "p_settings.daily_cap"),
    ],
)
def test_create_sender_rejects_bad_input(tenant, channel, address, settings, field):
    with sql_error(tenant.conn, "PT422", field=field):
        call(tenant.conn, "create_sender", tenant.workspace_id, channel, address, Jsonb(settings))


def test_create_sender_twice_is_a_conflict(tenant):
    tenant.sender("sms", "+15550001111")
    with sql_error(tenant.conn, "PT409", field="p_address"):
        tenant.sender("sms", "+15550001111")


# --- contacts ----------------------------------------------------------------------------------


def test_upsert_contacts_creates_then_matches_on_phone_then_email(tenant):
    first = tenant.conn.execute(
        "SELECT * FROM drumbeat_api.upsert_contacts(%s, %s)",
        (
            tenant.workspace_id,
            Jsonb(
                [
                    {
                        "phone": "+15551110001",
                        "first_name": "Ada",
                        "fields": {"plan": "pro"},
                        "tags": ["vip", "vip", "new"],
                    },
                    {"email": "Grace@Example.com", "last_name": "Hopper"},
                ]
            ),
        ),
    ).fetchall()
    assert [created for _, created in first] == [True, True]
    again = tenant.conn.execute(
        "SELECT * FROM drumbeat_api.upsert_contacts(%s, %s)",
        (
            tenant.workspace_id,
            Jsonb(
                [
                    {"email": "grace@example.com", "phone": "+15551110002"},
                    {"phone": "+15551110001", "company": "Analytical", "fields": {"seats": 3}},
                ]
            ),
        ),
    ).fetchall()
    assert again == [(first[1][0], False), (first[0][0], False)]
    ada = tenant.conn.execute(
        "SELECT first_name, company, fields, tags FROM drumbeat.contacts WHERE id = %s", (first[0][0],)
    ).fetchone()
    assert ada == ("Ada", "Analytical", {"plan": "pro", "seats": 3}, ["vip", "new"])
    grace = tenant.conn.execute(
        "SELECT phone, email, last_name FROM drumbeat.contacts WHERE id = %s", (first[1][0],)
    ).fetchone()
    assert grace == ("+15551110002", "grace@example.com", "Hopper")


def test_upsert_contacts_never_touches_opt_outs(tenant):
    [contact] = tenant.contacts({"phone": "+15551110003"})
    call(tenant.conn, "record_event", contact, "unsubscribed", Jsonb({"channel": "sms"}))
    tenant.contacts({"phone": "+15551110003", "first_name": "Back"})
    assert tenant.conn.execute(
        "SELECT sms_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s", (contact,)
    ).fetchone() == (True,)


@pytest.mark.parametrize(
    ("rows", "field", "message"),
    [
        ([{"phone": "5551234567"}], "p_contacts[0].phone", "E.164"),
        ([{"phone": "+15551230000"}, {"phone": "+1 555 123"}], "p_contacts[1].phone", "E.164"),
        ([{"email": "nobody"}], "p_contacts[0].email", "email address"),
        ([{"phone": "+15551230000", "timezone": "Eastern"}], "p_contacts[0].timezone", "IANA"),
        ([{"phone": "+15551230000", "fax": "1"}], "p_contacts[0].fax", "unknown field"),
        ([{"first_name": "Nobody"}], "p_contacts[0]", "phone or an email"),
        (["+15551230000"], "p_contacts[0]", "JSON object"),
        ([{"phone": "+15551230000", "fields": [1]}], "p_contacts[0].fields", "JSON object"),
        ([{"phone": "+15551230000", "tags": [1]}], "p_contacts[0].tags", "strings"),
        ([{"phone": "+15551230000", "first_name": 7}], "p_contacts[0].first_name", "string"),
        ([{"phone": "+15551230000"}, {"phone": "+15551230000"}], "p_contacts[1]", "p_contacts[0]"),
    ],
)
def test_upsert_contacts_rejects_bad_rows_and_writes_nothing(tenant, rows, field, message):
    with sql_error(tenant.conn, "PT422", field=field, match=message):
        call(tenant.conn, "upsert_contacts", tenant.workspace_id, Jsonb(rows))
    assert tenant.conn.execute("SELECT count(*) FROM drumbeat.contacts").fetchone() == (0,)


def test_upsert_contacts_rejects_phone_and_email_of_different_contacts(tenant):
    tenant.contacts({"phone": "+15551110004"}, {"email": "b@example.com"})
    with sql_error(tenant.conn, "PT422", field="p_contacts[0].email", match="another contact"):
        tenant.contacts({"phone": "+15551110004", "email": "b@example.com"})


def test_upsert_contacts_wants_an_array(tenant):
    with sql_error(tenant.conn, "PT422", field="p_contacts"):
        call(tenant.conn, "upsert_contacts", tenant.workspace_id, Jsonb({"phone": "+15551110004"}))


# --- sequence definitions ------------------------------------------------------------------------


def test_create_sequence_stores_steps_in_order(tenant):
    sequence = tenant.sequence(activate=False)
    rows = tenant.conn.execute(
        "SELECT position, kind, delay::text, send_at::text FROM drumbeat.sequence_steps WHERE sequence_id = %s "
        "ORDER BY position",
        (sequence,),
    ).fetchall()
    assert rows == [
        (1, "sms", "00:00:00", None),
        (2, "sms", "2 days", "10:00:00"),
        (3, "call", "1 day", None),
    ]
    assert tenant.conn.execute(
        "SELECT status, version, exit_conditions->>'on_reply' FROM drumbeat.sequences WHERE id = %s",
        (sequence,),
    ).fetchone() == ("draft", 1, "true")


def _mutated(path: str, value):
    """SMS_SEQUENCE with the value at a dotted/indexed path replaced (value None deletes the key)."""
    definition = copy.deepcopy(SMS_SEQUENCE)
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node = definition
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return definition


def _with_step(step: dict, channel: str = "sms") -> dict:
    return sms_sequence(channel=channel, steps=[*SMS_SEQUENCE["steps"], step])


BAD_DEFINITIONS = [
    (_mutated("name", None), "name", "required"),
    (_mutated("name", ""), "name", "empty"),
    (_mutated("channel", "fax"), "channel", "sms, email or multi"),
    (_mutated("steps", []), "steps", "1 to 100"),
    (_mutated("colour", "red"), "definition.colour", "unknown field"),
    (_mutated("steps[0].kind", "fax"), "steps[0].kind", "unknown step kind"),
    (_mutated("steps[1].delay.unit", "fortnights"), "steps[1].delay.unit", "minutes, hours, days or weeks"),
    (_mutated("steps[1].delay.value", 2.5), "steps[1].delay.value", "whole number"),
    (_mutated("steps[1].delay.value", -1), "steps[1].delay.value", "between"),
    (_mutated("steps[1].send_at", "25:00"), "steps[1].send_at", "HH:MM"),
    (_mutated("steps[1].send_At", "10:00"), "steps[1].send_At", "unknown field"),
    (_mutated("steps[0].body", None), "steps[0].body", "required"),
    (_mutated("steps[0].body", "Hi {{ contact.first_name"), "steps[0].body", "unclosed"),
    (_mutated("steps[0].body", "Hi {{ password }}"), "steps[0].body", "unknown template variable"),
    (
        _mutated("steps[0].body", "{% for t in contact.tags %}{{ tg }}{% endfor %}"),
        "steps[0].body",
        "{{ tg }}",
    ),
    (_mutated("settings.timezone", "Mars/Base"), "settings.timezone", "IANA"),
    (
        _mutated("settings.business_hours", {"funday": {"start": "09:00", "end": "17:00"}}),
        "settings.business_hours.funday",
        "unknown field",
    ),
    (
        _mutated("settings.business_hours", {"monday": {"start": "17:00", "end": "09:00"}}),
        "settings.business_hours.monday.end",
        "after start",
    ),
    (
        _mutated("settings.quiet_hours", {"start": "08:00", "end": "24:01"}),
        "settings.quiet_hours.end",
        "HH:MM",
    ),
    (_mutated("settings.max_per_day", 0), "settings.max_per_day", "between"),
    (_mutated("settings.exclude_weekends", "yes"), "settings.exclude_weekends", "true or false"),
    (_mutated("settings.sms_sender_id", str(uuid.uuid4())), "settings.sms_sender_id", "no sms sender"),
    (_mutated("exit_conditions", {"on_reply": "sometimes"}), "exit_conditions.on_reply", "true or false"),
    (_with_step({"kind": "email", "subject": "Hi", "body": "Hello"}), "steps[3].kind", 'use channel "multi"'),
    (
        _with_step({"kind": "email", "body": "Hello"}, "multi"),
        "steps[3].subject",
        "first email step needs a subject",
    ),
    (
        _with_step(
            {
                "kind": "condition",
                "condition": {"if": "replied", "step": 1},
                "then": "exit",
                "else": {"goto": 2},
            }
        ),
        "steps[3].else.goto",
        "between 5 and 4",
    ),
    (
        _with_step({"kind": "condition", "condition": {"if": "replied", "step": 3}}),
        "steps[3].condition.step",
        "call step",
    ),
    (
        _with_step({"kind": "condition", "condition": {"if": "opened", "step": 1}}),
        "steps[3].condition.step",
        "an email step",
    ),
    (
        _with_step({"kind": "condition", "condition": {"if": "bought", "step": 1}}),
        "steps[3].condition.if",
        "must be one of",
    ),
    (
        _with_step({"kind": "condition", "condition": {"if": "replied", "step": 1}, "then": "maybe"}),
        "steps[3].then",
        "continue",
    ),
    (_with_step({"kind": "action", "action": {"type": "launch"}}), "steps[3].action.type", "must be one of"),
    (_with_step({"kind": "action", "action": {"type": "tag"}}), "steps[3].action.tag", "required"),
    (
        _with_step({"kind": "action", "action": {"type": "enroll", "sequence_id": str(uuid.uuid4())}}),
        "steps[3].action.sequence_id",
        "another sequence",
    ),
    (
        _with_step(
            {"kind": "sms", "body": "x", "variants": [{"key": "A", "weight": 1}, {"key": "A", "weight": 1}]}
        ),
        "steps[3].variants[0].key",
        "duplicate",
    ),
    (
        _with_step({"kind": "sms", "body": "x", "variants": [{"key": "A", "weight": 0}]}),
        "steps[3].variants[0].weight",
        "between",
    ),
    (_with_step({"kind": "call", "body": "x"}), "steps[3]", "message content"),
    (
        sms_sequence(steps=[{"kind": "condition", "condition": {"if": "replied", "step": 1}}]),
        "steps[0].kind",
        "first step",
    ),
    # No allowed window: business hours outside the default SMS quiet hours (08:00-21:00).
    (
        _mutated(
            "settings.business_hours", {d: {"start": "21:30", "end": "23:00"} for d in ("monday", "friday")}
        ),
        "steps[0]",
        "no allowed window",
    ),
    (
        _mutated("settings.business_hours", {"saturday": {"start": "09:00", "end": "17:00"}})
        | {
            "settings": {
                "business_hours": {"saturday": {"start": "09:00", "end": "17:00"}},
                "exclude_weekends": True,
            }
        },
        "steps[0]",
        "no allowed window",
    ),
]


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    BAD_DEFINITIONS,
    ids=[f"{field}:{message}" for _, field, message in BAD_DEFINITIONS],
)
def test_create_sequence_rejects_bad_definitions(tenant, definition, field, message):
    with sql_error(tenant.conn, "PT422", field=field, match=message):
        call(tenant.conn, "create_sequence", tenant.workspace_id, Jsonb(definition))
    assert tenant.conn.execute("SELECT count(*) FROM drumbeat.sequences").fetchone() == (0,)


@pytest.mark.parametrize(
    "body",
    [
        "{% for tag in contact.tags %}#{{ tag }}{% if not loop.last %} {% endif %}{% endfor %}",
        "{% set name = contact.first_name | default('there') %}Hi {{ name }}",
        "{% for key, value in contact.fields.items() %}{{ key }}={{ value }}{% endfor %}",
        "Re: {{ enrollment.metadata.deal }} {{ 'x' | upper }} {{ range(2) | list }}",
        "{% with n = contact.first_name, m = 2 %}{{ n }}{{ m }}{% endwith %}",
        "{% macro hi(name, greeting='Hi') %}{{ greeting }} {{ name }}{% endmacro %}{{ hi(contact.first_name) }}",
        "{% for (k, v) in contact.fields.items() %}{{ k }}{% endfor %}{{ not contact.first_name }}",
    ],
)
def test_create_sequence_accepts_loops_sets_and_the_enrollment_over_rpc(tenant, body):
    """The RPC path's own check (no Jinja in SQL) knows what a template declares itself."""
    definition = sms_sequence(steps=[{"kind": "sms", "body": body}])
    assert call(tenant.conn, "create_sequence", tenant.workspace_id, Jsonb(definition))


def test_call_step_accepts_business_hours_that_exclude_sms(tenant):
    """The window rule is per kind: a call step outside SMS quiet hours is fine."""
    definition = sms_sequence(
        settings={"business_hours": {"monday": {"start": "21:30", "end": "23:00"}}},
        steps=[{"kind": "call", "task_description": "Late call"}],
    )
    assert tenant.sequence(definition, activate=False)


def test_step_delay_under_a_minute_is_refused_by_the_table(tenant):
    sequence = tenant.sequence(activate=False)
    act_as(tenant.conn, tenant.owner, role="drumbeat_contract")  # the role contract functions write as
    with sql_error(tenant.conn, "23514", match="sequence_steps_delay_zero_or_minute"):
        tenant.conn.execute(
            "UPDATE drumbeat.sequence_steps SET delay = '30 seconds' WHERE sequence_id = %s", (sequence,)
        )


# --- sequence lifecycle ----------------------------------------------------------------------------


def test_activate_needs_a_sender_for_each_message_step(conn):
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (MONDAY_9AM_NEW_YORK,))
    tenant = new_tenant(conn, with_sender=False)
    sequence = tenant.sequence(activate=False)
    with sql_error(conn, "PT422", field="steps[0]", match="no sms sender"):
        call(conn, "activate_sequence", sequence, None)


def test_sequence_transitions_and_conflicts(tenant):
    sequence = tenant.sequence(activate=False)
    for function, expected in [
        ("activate_sequence", "active"),
        ("pause_sequence", "paused"),
        ("resume_sequence", "active"),
        ("archive_sequence", "archived"),
    ]:
        args = (sequence, None) if function == "activate_sequence" else (sequence,)
        call(tenant.conn, function, *args)
        assert tenant.conn.execute(
            "SELECT status FROM drumbeat.sequences WHERE id = %s", (sequence,)
        ).fetchone() == (expected,)
    for function in ["pause_sequence", "resume_sequence", "archive_sequence"]:
        with sql_error(tenant.conn, "PT409", field="status", match="cannot go from archived"):
            call(tenant.conn, function, sequence)
    kinds = [
        k
        for (k,) in tenant.conn.execute(
            "SELECT kind FROM drumbeat.events WHERE sequence_id = %s ORDER BY id", (sequence,)
        )
    ]
    assert kinds == [
        "sequence_created",
        "sequence_activated",
        "sequence_paused",
        "sequence_resumed",
        "sequence_archived",
    ]


def test_archive_cancels_live_enrollments_and_keeps_them(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    call(tenant.conn, "archive_sequence", sequence)
    assert enrollment_row(tenant.conn, enrollment)[::3] == ("cancelled", "sequence_archived")


def test_activate_with_a_future_start_schedules_enrollments(tenant):
    sequence = tenant.sequence(activate=False)
    call(tenant.conn, "activate_sequence", sequence, at("2026-11-30 14:00Z"))
    [(_, enrollment, outcome)] = tenant.enroll(sequence, [tenant.contact()])
    assert outcome == "enrolled"
    assert enrollment_row(tenant.conn, enrollment)[:2] == ("scheduled", at("2026-11-30 14:00Z"))


def test_reactivating_with_a_future_start_holds_the_enrollments_already_in(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])  # its first text is due now
    call(tenant.conn, "pause_sequence", sequence)
    tenant.as_owner()
    call(tenant.conn, "activate_sequence", sequence, at("2026-11-30 14:00Z"))
    assert enrollment_row(tenant.conn, enrollment)[:2] == ("active", at("2026-11-30 14:00Z"))


def test_skipping_ahead_before_a_scheduled_start_waits_for_the_start(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()], start_at=at("2026-11-30 14:00Z"))
    tenant.as_owner()
    call(tenant.conn, "skip_to_step", enrollment, 2)
    status, next_action_at, current, _ = enrollment_row(tenant.conn, enrollment)
    assert (status, current) == ("scheduled", step_ids(tenant.conn, sequence)[1])
    assert next_action_at == at(
        "2026-11-30 14:00Z"
    )  # the start (a skipped-to step ignores delay and send_at)


def test_duplicate_sequence_copies_steps_as_a_draft(tenant):
    sequence = tenant.sequence()
    copy_id = call_one(tenant.conn, "duplicate_sequence", sequence, None)
    assert tenant.conn.execute(
        "SELECT name, status FROM drumbeat.sequences WHERE id = %s", (copy_id,)
    ).fetchone() == ("Cold outreach (copy)", "draft")
    assert len(step_ids(tenant.conn, copy_id)) == 3
    tenant.as_owner()
    with sql_error(tenant.conn, "PT422", field="p_name"):
        call(tenant.conn, "duplicate_sequence", sequence, " ")


def test_update_sequence_replans_live_enrollments(tenant):
    sequence = tenant.sequence()
    contact = tenant.contact()
    [(_, enrollment, _)] = tenant.enroll(sequence, [contact], start_at_step=2)
    assert enrollment_row(tenant.conn, enrollment)[1] == at("2026-11-25 15:00Z")  # Wed 10:00 New York
    first, second, third = step_ids(tenant.conn, sequence)
    edited = sms_sequence(
        steps=[
            {**step, "id": str(step_id)}
            for step, step_id in zip(SMS_SEQUENCE["steps"], (first, second, third), strict=True)
        ]
    )
    edited["steps"][1]["send_at"] = "14:00"
    tenant.as_owner()
    call(tenant.conn, "update_sequence", sequence, Jsonb(edited))
    assert enrollment_row(tenant.conn, enrollment)[1] == at("2026-11-25 19:00Z")  # Wed 14:00 New York
    version, payload = tenant.conn.execute(
        "SELECT s.version, e.payload FROM drumbeat.sequences s JOIN drumbeat.events e ON e.sequence_id = s.id "
        "WHERE s.id = %s AND e.kind = 'sequence_updated'",
        (sequence,),
    ).fetchone()
    assert version == 2 and payload["enrollments_replanned"] == 1


def test_update_sequence_moves_enrollments_off_a_removed_step(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()], start_at_step=2)
    first, _, third = step_ids(tenant.conn, sequence)
    steps = SMS_SEQUENCE["steps"]
    edited = sms_sequence(steps=[{**steps[0], "id": str(first)}, {**steps[2], "id": str(third)}])
    tenant.as_owner()
    call(tenant.conn, "update_sequence", sequence, Jsonb(edited))
    status, next_action_at, current, _ = enrollment_row(tenant.conn, enrollment)
    assert (status, current) == ("active", third)
    assert next_action_at == at("2026-11-24 14:00Z")  # one day after the enrollment's start
    payload = tenant.conn.execute(
        "SELECT payload FROM drumbeat.events WHERE kind = 'sequence_updated'"
    ).fetchone()[0]
    assert payload["enrollments_moved"] == 1


def test_switching_off_the_step_an_enrollment_waits_on_moves_it_to_the_next_live_step(tenant):
    """The step is not sent to those already waiting on it, and switching it back on brings nobody back."""
    sequence = tenant.sequence()
    [(_, waiting, _)] = tenant.enroll(sequence, [tenant.contact()], start_at_step=2)
    [(_, paused, _)] = tenant.enroll(sequence, [tenant.contact()], start_at_step=2)
    call(tenant.conn, "pause_enrollment", paused)
    first, second, third = step_ids(tenant.conn, sequence)
    steps = SMS_SEQUENCE["steps"]
    with_second_off = sms_sequence(
        steps=[
            {**steps[0], "id": str(first)},
            {**steps[1], "id": str(second), "is_active": False},
            {**steps[2], "id": str(third)},
        ]
    )
    tenant.as_owner()
    call(tenant.conn, "update_sequence", sequence, Jsonb(with_second_off))
    status, next_action_at, current, _ = enrollment_row(tenant.conn, waiting)
    assert (status, current) == ("active", third)
    assert next_action_at == at("2026-11-24 14:00Z")  # the call step, a day after the enrollment's start
    assert enrollment_row(tenant.conn, paused)[:3] == ("paused", None, third)
    with_second_on = sms_sequence(
        steps=[{**step, "id": str(i)} for step, i in zip(steps, (first, second, third), strict=True)]
    )
    tenant.as_owner()
    call(tenant.conn, "update_sequence", sequence, Jsonb(with_second_on))
    assert enrollment_row(tenant.conn, waiting)[2] == third


def test_update_sequence_rejects_foreign_step_ids_and_archived_sequences(tenant):
    sequence = tenant.sequence()
    edited = sms_sequence()
    edited["steps"][0]["id"] = str(uuid.uuid4())
    with sql_error(tenant.conn, "PT422", field="steps[0].id"):
        call(tenant.conn, "update_sequence", sequence, Jsonb(edited))
    call(tenant.conn, "archive_sequence", sequence)
    with sql_error(tenant.conn, "PT409", match="archived"):
        call(tenant.conn, "update_sequence", sequence, Jsonb(sms_sequence()))


# --- enrollments -----------------------------------------------------------------------------------


def test_enroll_contacts_reports_an_outcome_per_contact(tenant):
    sequence = tenant.sequence()
    fresh = tenant.contact(timezone="Pacific/Auckland")
    already = tenant.contact()
    opted_out = tenant.contact()
    email_only = tenant.contacts({"email": "only@example.com"})[0]
    tenant.enroll(sequence, [already])
    call(tenant.conn, "record_event", opted_out, "unsubscribed", Jsonb({"channel": "sms"}))
    missing = uuid.uuid4()
    outcomes = tenant.enroll(sequence, [fresh, already, opted_out, email_only, missing, fresh])
    assert [(c, o) for c, _, o in outcomes] == [
        (fresh, "enrolled"),
        (already, "already_enrolled"),
        (opted_out, "opted_out"),
        (email_only, "unreachable"),
        (missing, "not_found"),
    ]
    assert outcomes[1][1] is not None and outcomes[2][1] is None
    # 14:00Z is 03:00 on Tuesday in Auckland: the first SMS waits for 08:00 there (19:00Z).
    assert enrollment_row(tenant.conn, outcomes[0][1])[:2] == ("active", at("2026-11-23 19:00Z"))


@pytest.mark.parametrize(
    ("options", "field"),
    [({"start_at_step": 9}, "p_start_at_step"), ({"assigned_to": uuid.uuid4()}, "p_assigned_to")],
)
def test_enroll_contacts_rejects_bad_arguments(tenant, options, field):
    sequence = tenant.sequence()
    with sql_error(tenant.conn, "PT422", field=field):
        tenant.enroll(sequence, [tenant.contact()], **options)


def test_enroll_contacts_rejects_bad_metadata_and_null_ids(tenant):
    sequence = tenant.sequence()
    with sql_error(tenant.conn, "PT422", field="p_metadata"):
        call(tenant.conn, "enroll_contacts", sequence, [], None, 1, None, Jsonb([1]))
    with sql_error(tenant.conn, "PT422", field="p_contact_ids"):
        call(tenant.conn, "enroll_contacts", sequence, [None], None, 1, None, Jsonb({}))


def test_enroll_into_a_draft_sequence_is_a_conflict(tenant):
    sequence = tenant.sequence(activate=False)
    with sql_error(tenant.conn, "PT409", match="draft"):
        tenant.enroll(sequence, [tenant.contact()])


def test_pause_and_resume_enrollment_never_plans_in_the_past(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    call(tenant.conn, "pause_enrollment", enrollment)
    assert enrollment_row(tenant.conn, enrollment)[:2] == ("paused", None)
    tenant.conn.execute("SET drumbeat.clock = '2026-11-24 03:00Z'")  # 22:00 in New York: quiet hours
    tenant.as_owner()
    call(tenant.conn, "resume_enrollment", enrollment)
    assert enrollment_row(tenant.conn, enrollment)[:2] == (
        "active",
        at("2026-11-24 13:00Z"),
    )  # 08:00 New York
    tenant.as_owner()
    with sql_error(tenant.conn, "PT409", match="cannot resume an enrollment that is active"):
        call(tenant.conn, "resume_enrollment", enrollment)


def test_cancel_enrollment(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    with sql_error(tenant.conn, "PT422", field="p_reason"):
        call(tenant.conn, "cancel_enrollment", enrollment, "")
    call(tenant.conn, "cancel_enrollment", enrollment, "asked by the account owner")
    assert enrollment_row(tenant.conn, enrollment)[::3] == ("cancelled", "asked by the account owner")
    tenant.as_owner()
    with sql_error(tenant.conn, "PT409", match="cancelled"):
        call(tenant.conn, "cancel_enrollment", enrollment, "again")


def test_skip_to_step_forward_only(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    call(tenant.conn, "skip_to_step", enrollment, 3)
    _, next_action_at, current, _ = enrollment_row(tenant.conn, enrollment)
    assert current == step_ids(tenant.conn, sequence)[2] and next_action_at == at(MONDAY_9AM_NEW_YORK)
    tenant.as_owner()
    for position in (2, 3, 4):
        with sql_error(tenant.conn, "PT422", field="p_position"):
            call(tenant.conn, "skip_to_step", enrollment, position)


def _pending_call_task(conn, enrollment):
    """What the dispatcher does when a call step falls due: a task, and the enrollment waits on it."""
    conn.execute("RESET ROLE")
    conn.execute(
        """UPDATE drumbeat.enrollments e SET current_step_id = st.id, next_action_at = NULL
                    FROM drumbeat.sequence_steps st WHERE e.id = %s AND st.sequence_id = e.sequence_id
                    AND st.kind = 'call'""",
        (enrollment,),
    )
    return conn.execute(
        """INSERT INTO drumbeat.tasks (workspace_id, enrollment_id, step_id, contact_id, kind, title, due_at)
                           SELECT workspace_id, id, current_step_id, contact_id, 'call', 'Call', now()
                           FROM drumbeat.enrollments WHERE id = %s RETURNING id""",
        (enrollment,),
    ).fetchone()[0]


def test_complete_task_advances_the_enrollment(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    task = _pending_call_task(tenant.conn, enrollment)
    tenant.as_owner()
    with sql_error(tenant.conn, "PT422", field="p_outcome"):
        call(tenant.conn, "complete_task", task, "x" * 201, None)
    call(tenant.conn, "complete_task", task, "connected", "Interested, call back in March")
    assert enrollment_row(tenant.conn, enrollment)[0] == "completed"  # the call was the last step
    tenant.as_owner()
    with sql_error(tenant.conn, "PT409", match="already completed"):
        call(tenant.conn, "complete_task", task, None, None)


def test_complete_task_of_a_paused_enrollment_is_a_conflict(tenant):
    sequence = tenant.sequence()
    [(_, enrollment, _)] = tenant.enroll(sequence, [tenant.contact()])
    task = _pending_call_task(tenant.conn, enrollment)
    tenant.as_owner()
    call(tenant.conn, "pause_enrollment", enrollment)
    with sql_error(tenant.conn, "PT409", match="paused"):
        call(tenant.conn, "complete_task", task, None, None)


# --- events, preview, stats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "payload", "status", "opted_out"),
    [
        ("replied", {}, "replied", None),
        ("bounced", {"channel": "sms"}, "bounced", None),
        ("bounced", {}, "active", None),  # an email bounce (the default): this sequence only texts
        ("bounced", {"channel": "all"}, "bounced", None),
        ("unsubscribed", {"channel": "sms"}, "unsubscribed", "sms"),
        ("unsubscribed", {}, "unsubscribed", "all"),
        ("meeting_booked", {}, "completed", None),
        ("opened", {}, "active", None),
        ("clicked", {}, "active", None),
    ],
)
def test_record_event_exits_per_exit_conditions(tenant, kind, payload, status, opted_out):
    sequence = tenant.sequence()
    contact = tenant.contact(email="ada@example.com")
    [(_, enrollment, _)] = tenant.enroll(sequence, [contact])
    tenant.as_owner()
    call(tenant.conn, "record_event", contact, kind, Jsonb(payload))
    assert enrollment_row(tenant.conn, enrollment)[0] == status
    sms_out, email_out = tenant.conn.execute(
        "SELECT sms_opted_out_at IS NOT NULL, email_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s",
        (contact,),
    ).fetchone()
    assert (sms_out, email_out) == {None: (False, False), "sms": (True, False), "all": (True, True)}[
        opted_out
    ]
    assert tenant.conn.execute(
        "SELECT count(*) FROM drumbeat.events WHERE kind = %s AND enrollment_id = %s", (kind, enrollment)
    ).fetchone() == (1,)


def test_record_event_respects_disabled_exit_conditions(tenant):
    sequence = tenant.sequence(sms_sequence(exit_conditions={"on_reply": False}))
    contact = tenant.contact()
    [(_, enrollment, _)] = tenant.enroll(sequence, [contact])
    call(tenant.conn, "record_event", contact, "replied", Jsonb({}))
    assert enrollment_row(tenant.conn, enrollment)[0] == "active"


@pytest.mark.parametrize(
    ("kind", "payload", "field"),
    [
        ("purchased", {}, "p_kind"),
        ("replied", [], "p_payload"),
        ("unsubscribed", {"channel": "fax"}, "p_payload.channel"),
        ("replied", {"enrollment_id": str(uuid.uuid4())}, "p_payload.enrollment_id"),
        ("opened", {"delivery_id": str(uuid.uuid4())}, "p_payload.delivery_id"),
    ],
)
def test_record_event_rejects_bad_input(tenant, kind, payload, field):
    contact = tenant.contact()
    with sql_error(tenant.conn, "PT422", field=field):
        call(tenant.conn, "record_event", contact, kind, Jsonb(payload))


def test_preview_schedule_plans_every_step_in_the_recipient_zone(tenant):
    sequence = tenant.sequence()
    contact = tenant.contact()
    rows = call(tenant.conn, "preview_schedule", sequence, contact, None)
    assert [(position, kind, planned) for position, _, kind, planned in rows] == [
        (1, "sms", at("2026-11-23 14:00Z")),  # Monday 09:00 New York, at once
        (2, "sms", at("2026-11-25 15:00Z")),  # two days later at 10:00
        (3, "call", at("2026-11-26 15:00Z")),  # one calendar day after that
    ]


def test_preview_schedule_takes_the_no_engagement_branch(tenant):
    steps = [
        *SMS_SEQUENCE["steps"][:2],
        {"kind": "condition", "condition": {"if": "replied", "step": 1}, "then": "exit", "else": {"goto": 5}},
        {"kind": "sms", "body": "skipped"},
        {"kind": "action", "action": {"type": "tag", "tag": "no-reply"}},
    ]
    sequence = tenant.sequence(sms_sequence(steps=steps))
    positions = [r[0] for r in call(tenant.conn, "preview_schedule", sequence, tenant.contact(), None)]
    assert positions == [1, 2, 3, 5]


def test_preview_schedule_rejects_another_workspace_contact(tenant, conn):
    other = new_tenant(conn, "Other")
    stranger = other.contact()
    tenant.as_owner()
    sequence = tenant.sequence()
    with sql_error(conn, "PT404", field="p_contact_id"):
        call(conn, "preview_schedule", sequence, stranger, None)


def test_sequence_stats_counts_enrollments_and_engagement(tenant):
    sequence = tenant.sequence()
    contacts = [tenant.contact() for _ in range(3)]
    enrolled = tenant.enroll(sequence, contacts)
    first_step = step_ids(tenant.conn, sequence)[0]
    tenant.as_owner()
    call(
        tenant.conn,
        "record_event",
        contacts[0],
        "replied",
        Jsonb({"enrollment_id": str(enrolled[0][1]), "step_id": str(first_step)}),
    )
    call(tenant.conn, "pause_enrollment", enrolled[1][1])
    stats = call_one(tenant.conn, "sequence_stats", sequence)
    assert {k: stats["enrollments"][k] for k in ("total", "active", "paused", "replied")} == {
        "total": 3,
        "active": 1,
        "paused": 1,
        "replied": 1,
    }
    assert stats["steps"][0]["replied"] == 1 and stats["steps"][0]["sent"] == 0
    assert stats["steps"][0]["reply_rate"] is None


def test_enrollment_ids_are_time_ordered_uuid_v7(tenant):
    """Bulk enrollment appends to the id indexes: ids are UUIDv7 (version 7, RFC 9562 variant) and the
    first 48 bits are the Unix milliseconds of creation."""
    sequence = tenant.sequence()
    enrolled = tenant.enroll(sequence, [tenant.contact() for _ in range(3)])
    for _, enrollment_id, _ in enrolled:
        assert enrollment_id.version == 7 and enrollment_id.variant == uuid.RFC_4122
        created_ms = enrollment_id.int >> 80
        assert abs(created_ms / 1000 - datetime.now(UTC).timestamp()) < 60
