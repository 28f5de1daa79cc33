"""What GET /sequences/{id} returns can be sent back to PUT unchanged, or edited, the way edit-and-save
clients work: identity and state fields are ignored when they are the sequence's own (a 422 naming one that
differs), the server's times are ignored whatever they say, and a stale `version` is a 409 (another edit came
in between: it would be lost)."""

from __future__ import annotations

import copy

import pytest

from tests.support.api import ApiTenant

DEFINITION = {
    "name": "Round trip",
    "channel": "multi",
    "settings": {"timezone": "America/New_York", "exclude_weekends": True},
    "steps": [
        {
            "kind": "sms",
            "name": "Hi",
            "body": "Hi {{ contact.first_name }}",
            "variants": [{"key": "A", "weight": 1}, {"key": "B", "weight": 1, "body": "Yo"}],
        },
        {
            "kind": "email",
            "delay": {"value": 1, "unit": "days"},
            "send_at": "09:30",
            "subject": "S",
            "body": "B",
        },
        {
            "kind": "condition",
            "condition": {"if": "clicked", "step": 2, "link_name": "pricing"},
            "then": "exit",
            "else": "continue",
        },
        {"kind": "call", "delay": {"value": 2, "unit": "hours"}, "task_description": "Call"},
        {"kind": "action", "action": {"type": "tag", "tag": "done"}},
    ],
}


@pytest.fixture
def read(tenant: ApiTenant) -> dict:
    tenant.sender("sms")
    tenant.sender("email")
    created = tenant.post("/sequences", DEFINITION)
    assert created.status_code == 201, created.text
    return tenant.get(f"/sequences/{created.json()['id']}").json()


def put(tenant: ApiTenant, body: dict):
    return tenant.put(f"/sequences/{body['id']}", body)


def comparable(sequence: dict) -> dict:
    """What a PUT may change, and the steps' identity: not the version and times it moves on."""
    moving = ("version", "updated_at")
    return {k: v for k, v in sequence.items() if k not in moving} | {
        "steps": [{k: v for k, v in step.items() if k != "updated_at"} for step in sequence["steps"]]
    }


def test_a_get_sent_back_unchanged_changes_nothing_but_the_version(tenant: ApiTenant, read):
    saved = put(tenant, copy.deepcopy(read))
    assert saved.status_code == 200, saved.text
    assert comparable(saved.json()) == comparable(read)
    assert saved.json()["version"] == read["version"] + 1


def test_a_get_edited_is_saved(tenant: ApiTenant, read):
    edited = copy.deepcopy(read)
    edited["name"] = "Round trip, v2"
    edited["steps"][0]["body"] = "Hello {{ contact.first_name }}"
    edited["steps"][3], edited["steps"][4] = edited["steps"][4], edited["steps"][3]  # positions are the order
    saved = put(tenant, edited).json()
    assert saved["name"] == "Round trip, v2" and saved["steps"][0]["body"].startswith("Hello")
    assert [(s["id"], s["position"]) for s in saved["steps"][3:]] == [
        (read["steps"][4]["id"], 4),
        (read["steps"][3]["id"], 5),
    ]


def test_a_stale_version_is_a_409_and_changes_nothing(tenant: ApiTenant, read):
    assert put(tenant, copy.deepcopy(read)).status_code == 200  # someone else's edit
    stale = copy.deepcopy(read) | {"name": "Mine"}
    refused = put(tenant, stale)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["field"] == "version"
    assert tenant.get(f"/sequences/{read['id']}").json()["name"] == "Round trip"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s.update(status="active"), "status"),
        (lambda s: s.update(step_count=9), "step_count"),
        (lambda s: s.update(workspace_id="00000000-0000-0000-0000-000000000000"), "workspace_id"),
    ],
)
def test_a_changed_read_only_field_is_refused_naming_it(tenant: ApiTenant, read, edit, field):
    changed = copy.deepcopy(read)
    edit(changed)
    refused = put(tenant, changed)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == field and "read-only" in error["message"]
    assert tenant.get(f"/sequences/{read['id']}").json()["version"] == read["version"]


def test_times_written_otherwise_are_the_servers_and_ignored(tenant: ApiTenant, read):
    """A JavaScript client keeps milliseconds, another writes its own zone: neither is an edit."""
    rewritten = copy.deepcopy(read)
    rewritten["created_at"] = "2020-01-01T02:00:00+02:00"
    rewritten["steps"][1]["created_at"] = read["steps"][1]["created_at"][:23] + "Z"
    rewritten["steps"][1]["position"] = 9
    saved = put(tenant, rewritten)
    assert saved.status_code == 200, saved.text
    assert comparable(saved.json()) == comparable(read)
