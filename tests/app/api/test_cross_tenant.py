"""The cross-tenant matrix: every /api/v1 route that takes an id, called by one tenant with another
tenant's ids, answers 404 (never 403: it must not confirm the id exists) and changes nothing of the
other tenant's. Routes are enumerated from the app itself, so a new route is covered (or fails here
until it is given a body below)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from tests.sql.factories import SMS_SEQUENCE, new_tenant, sms_sequence
from tests.support.api import dispatch

TABLES = [
    "workspaces",
    "workspace_members",
    "api_keys",
    "senders",
    "contacts",
    "sequences",
    "sequence_steps",
    "enrollments",
    "deliveries",
    "tasks",
    "events",
    "holidays",
    "webhook_endpoints",
    "webhook_messages",
    "webhook_attempts",
]

# Request bodies valid in shape, so that the request reaches the handler (which must then say 404).
BODIES: dict[tuple[str, str], dict] = {
    ("PUT", "/api/v1/workspaces/{workspace_id}/holidays"): {"dates": ["2026-12-25"]},
    ("PATCH", "/api/v1/workspaces/{workspace_id}"): {"name": "Renamed", "timezone": "Europe/Paris"},
    ("POST", "/api/v1/enrollments/{enrollment_id}/skip"): {"position": 2},
    ("POST", "/api/v1/enrollments/{enrollment_id}/cancel"): {"reason": "test"},
    ("POST", "/api/v1/tasks/{task_id}/complete"): {"outcome": "done"},
    ("POST", "/api/v1/enrollments/{enrollment_id}/reassign"): {"user_id": None},
    ("POST", "/api/v1/tasks/{task_id}/reassign"): {"user_id": None},
    ("PUT", "/api/v1/sequences/{sequence_id}"): SMS_SEQUENCE,
    ("PATCH", "/api/v1/sequences/{sequence_id}"): {"name": "Renamed"},
    ("POST", "/api/v1/sequences/{sequence_id}/steps"): {"kind": "sms", "body": "Hi"},
    ("PATCH", "/api/v1/sequences/{sequence_id}/steps/{step_id}"): {"name": "Renamed"},
    ("POST", "/api/v1/sequences/{sequence_id}/steps/reorder"): {"step_ids": [str(uuid.uuid4())]},
    ("POST", "/api/v1/sequences/{sequence_id}/steps/{step_id}/preview"): {"contact_id": str(uuid.uuid4())},
    ("PATCH", "/api/v1/contacts/{contact_id}"): {"first_name": "Renamed"},
    ("POST", "/api/v1/contacts/{contact_id}/resubscribe"): {"channel": "sms", "reason": "test"},
    ("PATCH", "/api/v1/members/{user_id}"): {"role": "member"},
    ("PATCH", "/api/v1/webhook-endpoints/{endpoint_id}"): {"description": "Renamed"},
    ("PATCH", "/api/v1/senders/{sender_id}"): {"name": "Renamed"},
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/resend"): {"since": "2026-01-01T00:00:00Z"},
    ("PUT", "/api/v1/senders/{sender_id}/mailbox"): {
        "host": "imap.example.com",
        "username": "u",
        "password": "p",
    },
}
# Query parameters a route requires: {collection} takes the other tenant's id of that collection.
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/api/v1/sequences/{sequence_id}/preview"): {"contact_id": "{contacts}"},
}


@dataclass
class Others:
    workspace_id: str
    ids: dict[str, str]


def _other_tenant(db_url: str) -> Others:
    """Another workspace with one of everything: sender, key, contact, sequence (with steps), a live
    enrollment and a pending task (from a real claim of a call step)."""
    with psycopg.connect(db_url) as conn:
        other = new_tenant(conn, "Globex")
        contact = other.contact(first_name="Gina", email="gina@example.com")
        sequence = other.sequence()
        ((_, enrollment, _),) = other.enroll(sequence, [contact])
        calls = other.sequence(
            sms_sequence(name="Calls", steps=[{"kind": "call", "task_description": "Call"}])
        )
        other.enroll(calls, [other.contact(first_name="Cal")])
        conn.execute("RESET ROLE")
        key = conn.execute(
            "SELECT key_id FROM drumbeat.issue_api_key(%s, 'other', 'owner', NULL)", (other.workspace_id,)
        ).fetchone()[0]
        step = conn.execute(
            "SELECT id FROM drumbeat.sequence_steps WHERE sequence_id = %s ORDER BY position LIMIT 1",
            (sequence,),
        ).fetchone()[0]
        sender = conn.execute(
            "SELECT id FROM drumbeat.senders WHERE workspace_id = %s LIMIT 1", (other.workspace_id,)
        ).fetchone()[0]
        other.as_owner()
        endpoint = conn.execute(
            'SELECT drumbeat_api.create_webhook_endpoint(%s, \'{"url": "https://hooks.globex.example/"}\')',
            (other.workspace_id,),
        ).fetchone()[0]["id"]
        message = conn.execute("SELECT drumbeat_api.test_webhook_endpoint(%s)", (endpoint,)).fetchone()[0]
        conn.commit()
    # At the time its steps are due (an SMS waits out the contact's quiet hours at night), as a worker would.
    dispatch(db_url, rounds=1)
    with psycopg.connect(db_url) as conn:
        task = conn.execute(
            "SELECT id FROM drumbeat.tasks WHERE workspace_id = %s", (other.workspace_id,)
        ).fetchone()[0]
        delivery = conn.execute(
            "SELECT id FROM drumbeat.deliveries WHERE workspace_id = %s LIMIT 1", (other.workspace_id,)
        ).fetchone()[0]
    ids = {
        "workspaces": other.workspace_id,
        "contacts": contact,
        "sequences": sequence,
        "steps": step,
        "enrollments": enrollment,
        "tasks": task,
        "api-keys": key,
        "senders": sender,
        "members": other.owner,
        "webhook-endpoints": endpoint,
        "messages": message["message_id"],  # a webhook message, under /webhook-endpoints/{id}/messages
        "/api/v1/messages": delivery,  # a message sent: GET /api/v1/messages/{id}
    }
    return Others(str(other.workspace_id), {k: str(v) for k, v in ids.items()})


def _snapshot(db_url: str, workspace_id: str) -> dict[str, str]:
    """A digest of every row of the workspace, table by table (superuser: RLS does not hide anything)."""
    with psycopg.connect(db_url) as conn:
        digests = {}
        for table in TABLES:
            column = "id" if table == "workspaces" else "workspace_id"
            digests[table] = conn.execute(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                f"FROM drumbeat.{table} t WHERE t.{column} = %s",
                (workspace_id,),
            ).fetchone()[0]
        return digests


def _routes_with_ids(app) -> list[tuple[str, str]]:
    routes = []
    for route in app.routes:
        if not route.path.startswith("/api/v1/") or "{" not in route.path:
            continue
        for method in sorted(getattr(route, "methods", [])):
            if method not in ("HEAD", "OPTIONS"):
                routes.append((method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)))
    return routes


def _concrete(path: str, ids: dict[str, str]) -> str:
    """Each {param} takes the other tenant's id of the collection named just before it (or of the whole
    path before it, where two collections share a name)."""
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if segment.startswith("{"):
            segments[index] = ids.get("/".join(segments[:index])) or ids[segments[index - 1]]
    return "/".join(segments)


def test_every_route_with_an_id_is_404_for_another_tenant_and_changes_nothing(client, tenant, db_url):
    others = _other_tenant(db_url)
    routes = _routes_with_ids(client.app)
    assert len(routes) >= 20, routes
    before = _snapshot(db_url, others.workspace_id)
    answers = {}
    for method, template in routes:
        response = client.request(
            method,
            _concrete(template, others.ids),
            json=BODIES.get((method, template)) if method in ("POST", "PUT", "PATCH") else None,
            params={k: others.ids[v.strip("{}")] for k, v in QUERIES.get((method, template), {}).items()},
            headers=tenant.headers,
        )
        answers[(method, template)] = (response.status_code, response.text[:200])
    wrong = {route: answer for route, answer in answers.items() if answer[0] != 404}
    assert not wrong, "\n".join(f"{m} {p}: {a}" for (m, p), a in wrong.items())
    assert _snapshot(db_url, others.workspace_id) == before


@pytest.mark.parametrize("collection", ["sequences", "contacts", "enrollments", "tasks"])
def test_an_unknown_id_is_the_same_404(client, tenant, collection):
    response = tenant.get(f"/{collection}/{uuid.uuid4()}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
