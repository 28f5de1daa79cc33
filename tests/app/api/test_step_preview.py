"""Templates over HTTP as a sequence author meets them: checked when saved with the worker's own sandbox
(unknown variables and broken syntax are a 422 naming the field and line, loops and sets are fine), and a
step rendered for a real contact by POST /sequences/{id}/steps/{step_id}/preview: subject, text, HTML, and
an SMS's encoding and segments, with the sender and the contact's enrollment metadata."""

from __future__ import annotations

import pytest

from tests.support.api import ApiTenant

SMS_BODY = "Hi {{ contact.first_name | default('there') }}, {{ sender.name }} here.{% if enrollment.metadata.deal %} Re: {{ enrollment.metadata.deal }}{% endif %}"
SEQUENCE = {
    "name": "Previewed",
    "channel": "multi",
    "steps": [
        {
            "kind": "sms",
            "body": SMS_BODY,
            "variants": [
                {"key": "A", "weight": 1},
                {"key": "B", "weight": 1, "body": "Yo {{ contact.first_name }} 👋"},
            ],
        },
        {
            "kind": "email",
            "delay": {"value": 1, "unit": "days"},
            "subject": "{{ contact.company }} x {{ workspace.name }}",
            "body": "{% for tag in contact.tags %}#{{ tag }} {% endfor %}",
            "html_body": "<p>Hi {{ contact.first_name }}</p><a href='{{ unsubscribe_url }}'>stop</a>",
        },
        {
            "kind": "call",
            "delay": {"value": 1, "unit": "days"},
            "task_description": "Call {{ contact.first_name }}",
        },
        {"kind": "sms", "delay": {"value": 1, "unit": "days"}, "body": "Plan: {{ contact.fields.plan }}"},
    ],
}


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def setup(tenant: ApiTenant) -> dict:
    created(
        tenant.post(
            "/senders", {"channel": "sms", "address": "+12125550188", "name": "Sam", "rate_per_second": 100}
        )
    )
    tenant.sender("email", "sam@acme.example")
    ada = created(
        tenant.post(
            "/contacts",
            {
                "phone": "+12125550187",
                "email": "ada@example.com",
                "first_name": "Ada",
                "company": "Initech",
                "tags": ["vip", "q4"],
            },
        )
    )
    sequence = created(tenant.post("/sequences", SEQUENCE))
    assert tenant.post(f"/sequences/{sequence['id']}/activate").status_code == 200
    enrolled = {"sequence_id": sequence["id"], "contact_id": ada["id"], "metadata": {"deal": "Renewal 2027"}}
    created(tenant.post("/enrollments", enrolled))
    return {"sequence": sequence["id"], "steps": [s["id"] for s in sequence["steps"]], "ada": ada["id"]}


def preview(tenant: ApiTenant, setup: dict, position: int, **body):
    path = f"/sequences/{setup['sequence']}/steps/{setup['steps'][position - 1]}/preview"
    return tenant.post(path, {"contact_id": setup["ada"], **body})


def test_an_sms_step_renders_for_the_contact_with_its_cost(tenant: ApiTenant, setup):
    shown = preview(tenant, setup, 1)
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "variant": None,
        "subject": None,
        "body": "Hi Ada, Sam here. Re: Renewal 2027",
        "html_body": None,
        "sms": {"encoding": "GSM-7", "segments": 1, "characters": 34},
    }
    b = preview(tenant, setup, 1, variant="B").json()
    assert (b["variant"], b["body"], b["sms"]["encoding"]) == ("B", "Yo Ada 👋", "UCS-2")


def test_an_email_step_renders_subject_text_and_html(tenant: ApiTenant, setup):
    shown = preview(tenant, setup, 2).json()
    assert shown["subject"] == "Initech x Acme"
    assert shown["body"] == "#vip #q4 "
    assert shown["html_body"] == "<p>Hi Ada</p><a href='https://example.invalid/unsubscribe'>stop</a>"
    assert shown["sms"] is None


@pytest.mark.parametrize(
    ("position", "body", "status", "field", "message"),
    [
        (1, {"variant": "C"}, 422, "variant", "no variant 'C' (its variants: A, B)"),
        (3, {}, 422, "step_id", "a call step sends no message"),
        (4, {}, 422, "body", "has no attribute 'plan'"),  # this contact has no such field
        (1, {"contact_id": "00000000-0000-0000-0000-000000000000"}, 404, "contact_id", "not found"),
    ],
)
def test_what_cannot_be_previewed_is_refused_naming_why(
    tenant: ApiTenant, setup, position, body, status, field, message
):
    refused = preview(tenant, setup, position, **body)
    assert refused.status_code == status, refused.text
    error = refused.json()["error"]
    assert error["field"] == field and message in error["message"]


def test_another_tenants_contact_is_not_found(tenant: ApiTenant, other_tenant: ApiTenant, setup):
    theirs = created(other_tenant.post("/contacts", {"phone": "+12125550186", "first_name": "Eve"}))
    refused = preview(tenant, setup, 1, contact_id=theirs["id"])
    assert refused.status_code == 404 and refused.json()["error"]["field"] == "contact_id"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Hi {{ contact.frist_name }}", "unknown variable contact.frist_name (line 1)"),
        ("Hi\n{{ user.name }}", "unknown variable 'user' (line 2)"),
        ("{% for t in contact.tags %}{{ t }}", "template does not compile"),
    ],
)
def test_a_template_naming_what_a_message_lacks_is_refused_at_save(tenant: ApiTenant, body, message):
    definition = {"name": "Typo", "channel": "sms", "steps": [{"kind": "sms", "body": body}]}
    refused = tenant.post("/sequences", definition)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "steps[0].body" and message in error["message"]
