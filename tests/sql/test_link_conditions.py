"""A condition on one link of a message ("clicked the pricing page?"), as a Supabase client defines it:
only a click on that link (or a URL that starts with it: its UTM-tagged variants) counts, and bad
definitions are refused naming the field."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant, sms_sequence
from tests.sql.worker_calls import MONDAY_9AM_NEW_YORK, as_worker, claim, enrollment, record, set_clock
from tests.support import call_one, sql_error

PRICING = "https://acme.example/pricing"


def branching(condition: dict) -> dict:
    """1 email, 2 the condition (then: exit; else: go to 4), 3 never sent, 4 a last email a day later."""
    email = {"kind": "email", "subject": "Hi", "body": "See our pricing"}
    return sms_sequence(
        channel="email",
        exit_conditions={"on_reply": True},
        steps=[
            email,
            {"kind": "condition", "condition": condition, "then": "exit", "else": {"goto": 4}},
            {**email, "subject": "never sent"},
            {**email, "subject": "Last try", "delay": {"value": 1, "unit": "days"}},
        ],
    )


@pytest.fixture
def tenant(conn):
    set_clock(conn, MONDAY_9AM_NEW_YORK)
    return new_tenant(conn)


@pytest.mark.parametrize(
    ("clicked", "condition", "exits"),
    [
        ([PRICING + "?utm_source=drumbeat"], {"if": "clicked", "step": 1, "link": PRICING}, True),
        (["https://acme.example/blog"], {"if": "clicked", "step": 1, "link": PRICING}, False),
        (
            [PRICING + "-old", PRICING + "s"],
            {"if": "clicked", "step": 1, "link": PRICING},
            False,
        ),  # not a boundary
        ([PRICING + "/eu#plans"], {"if": "clicked", "step": 1, "link": PRICING}, True),
        (["https://acme.example/blog"], {"if": "clicked", "step": 1}, True),  # any link, as before
        ([], {"if": "not_clicked", "step": 1, "link": PRICING}, True),
        ([PRICING], {"if": "not_clicked", "step": 1, "link": PRICING}, False),
        # By the name a template gave the link (<a data-link-name="Pricing">), in any case
        ([(PRICING, "Pricing")], {"if": "clicked", "step": 1, "link_name": "pricing"}, True),
        ([(PRICING, "Pricing"), PRICING], {"if": "clicked", "step": 1, "link_name": "careers"}, False),
        ([PRICING], {"if": "not_clicked", "step": 1, "link_name": "Pricing"}, True),  # clicked unnamed
    ],
)
def test_a_condition_on_a_link_counts_clicks_on_that_link_only(conn, tenant, clicked, condition, exits):
    sequence = tenant.sequence(branching(condition))
    [(_, enrollment_id, _)] = tenant.enroll(sequence, [tenant.contact(email="ada@example.com")])
    [delivery] = claim(conn)
    record(conn, {"delivery_id": str(delivery["delivery_id"]), "outcome": "sent"})
    as_worker(conn)
    for click in clicked:
        url, name = click if isinstance(click, tuple) else (click, None)
        conn.execute(
            "SELECT drumbeat.record_delivery_engagement(%s, 'clicked', %s)",
            (delivery["delivery_id"], Jsonb({"url": url} | ({"link_name": name} if name else {}))),
        )
    assert claim(conn) == []  # the condition ran inside the claim; the last email waits a day
    state = enrollment(conn, enrollment_id)
    assert (state["status"], state["position"]) == (("completed", 2) if exits else ("active", 4))


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"if": "replied", "step": 1, "link": PRICING}, "only clicked and not_clicked look at a link"),
        ({"if": "clicked", "step": 1, "link": "acme.example/pricing"}, "must be an http(s) URL"),
        ({"if": "clicked", "step": 1, "link": 42}, "must be a string"),
    ],
)
def test_a_bad_link_condition_is_refused_naming_the_field(conn, tenant, condition, message):
    tenant.as_owner()
    with sql_error(conn, "PT422", field="steps[1].condition.link", match=message):
        call_one(conn, "create_sequence", tenant.workspace_id, Jsonb(branching(condition)))


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"if": "opened", "step": 1, "link_name": "pricing"}, "only clicked and not_clicked look at a link"),
        ({"if": "clicked", "step": 1, "link": PRICING, "link_name": "pricing"}, "not both"),
        ({"if": "clicked", "step": 1, "link_name": "pricing/eu"}, "must be a link name"),
        ({"if": "clicked", "step": 1, "link_name": "pricing "}, "must be a link name"),
        ({"if": "clicked", "step": 1, "link_name": "x" * 65}, "at most 64"),
        ({"if": "clicked", "step": 1, "link_name": ""}, "must not be empty"),
    ],
)
def test_a_bad_link_name_condition_is_refused_naming_the_field(conn, tenant, condition, message):
    tenant.as_owner()
    with sql_error(conn, "PT422", field="steps[1].condition.link_name", match=message):
        call_one(conn, "create_sequence", tenant.workspace_id, Jsonb(branching(condition)))
