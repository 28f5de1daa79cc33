"""Builders for a small but real tenant: a workspace, its senders, contacts and sequences, created
through the contract functions exactly as a Supabase client would (as an authenticated user)."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from tests.support import act_as, call, call_one

SMS_SEQUENCE = {
    "name": "Cold outreach",
    "channel": "sms",
    "settings": {"timezone": "America/New_York"},
    "steps": [
        {
            "kind": "sms",
            "name": "Intro",
            "delay": {"value": 0, "unit": "minutes"},
            "body": "Hi {{ contact.first_name }}",
        },
        {
            "kind": "sms",
            "name": "Nudge",
            "delay": {"value": 2, "unit": "days"},
            "send_at": "10:00",
            "body": "Still there?",
        },
        {
            "kind": "call",
            "name": "Call",
            "delay": {"value": 1, "unit": "days"},
            "task_description": "Call them",
        },
    ],
}


def sms_sequence(**changes) -> dict:
    """A copy of SMS_SEQUENCE with top-level keys replaced."""
    definition = copy.deepcopy(SMS_SEQUENCE)
    definition.update(changes)
    return definition


@dataclass
class Tenant:
    """A workspace with its owner; `as_owner()` switches the connection back to that user."""

    conn: psycopg.Connection
    owner: uuid.UUID
    workspace_id: uuid.UUID

    def as_owner(self) -> Tenant:
        act_as(self.conn, self.owner)
        return self

    def sender(self, channel: str = "sms", address: str = "+15550000001") -> uuid.UUID:
        self.as_owner()
        # A high rate, so that only the tests about rate limits meet one.
        settings = {"rate_per_second": 1000}
        return call_one(self.conn, "create_sender", self.workspace_id, channel, address, Jsonb(settings))

    def contacts(self, *rows: dict) -> list[uuid.UUID]:
        self.as_owner()
        return [r[0] for r in call(self.conn, "upsert_contacts", self.workspace_id, Jsonb(list(rows)))]

    def contact(self, **fields) -> uuid.UUID:
        fields.setdefault("phone", f"+1555{uuid.uuid4().int % 10_000_000:07d}")
        return self.contacts(fields)[0]

    def sequence(self, definition: dict | None = None, *, activate: bool = True) -> uuid.UUID:
        self.as_owner()
        sequence_id = call_one(
            self.conn, "create_sequence", self.workspace_id, Jsonb(definition or SMS_SEQUENCE)
        )
        if activate:
            call(self.conn, "activate_sequence", sequence_id, None)
        return sequence_id

    def enroll(self, sequence_id: uuid.UUID, contact_ids: list[uuid.UUID], **options) -> list[tuple]:
        self.as_owner()
        return call(
            self.conn,
            "enroll_contacts",
            sequence_id,
            contact_ids,
            options.get("start_at"),
            options.get("start_at_step", 1),
            options.get("assigned_to"),
            Jsonb(options.get("metadata", {})),
        )


def new_tenant(
    conn: psycopg.Connection, name: str = "Acme", timezone: str = "UTC", *, with_sender: bool = True
) -> Tenant:
    owner = uuid.uuid4()
    act_as(conn, owner)
    workspace_id = call_one(conn, "create_workspace", name, timezone)
    tenant = Tenant(conn, owner, workspace_id)
    if with_sender:
        tenant.sender("sms", f"+1555{uuid.uuid4().int % 10_000_000:07d}")
        tenant.sender("email", f"sales-{uuid.uuid4().hex[:6]}@example.com")
    return tenant
