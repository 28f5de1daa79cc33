"""The examples of the OpenAPI document: one story told across its operations. Acme Sales (a workspace in
New York) texts Ada Lovelace through the three-step "Cold outreach" sequence (an SMS, a nudge two days later,
then a call task for a rep); the ids and times below are the same wherever they appear, so a response
example's ids are the ones the request examples send.

Request examples sit beside their body types (msgspec.Meta(examples=[...]) on an Annotated alias, shown by
app.api.deps.example_body); the response examples are here, shown by app.api.deps.example_response.
tests/app/api/test_openapi_examples.py sends every request example to the real app (these ids replaced by
objects it creates) and checks that every response example is what its handler's return type encodes."""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------------------------------------- ids

WORKSPACE_ID = "3f2b8c1e-9d4a-4e7b-b6c5-2a1f0e9d8c7b"
OWNER_ID = "5b7e1c2d-3f4a-4b6c-9d8e-7f6a5b4c3d2e"  # who created the workspace
USER_ID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"  # a sales rep, member of the workspace
API_KEY_ID = "2c4e6a8b-0d1f-4a3c-9e5b-7d9f1b3d5f7a"
SMS_SENDER_ID = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
EMAIL_SENDER_ID = "8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
SEQUENCE_ID = "0195f3a0-6c1e-7a4b-9d2e-1f2a3b4c5d6e"
COPY_ID = "1a7c9e2b-4d6f-4a8c-8e1b-3d5f7a9c1e3b"  # the sequence duplicated
STEP_IDS = (
    "b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",  # 1. Intro (SMS)
    "b2b3c4d5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",  # 2. Nudge (SMS, two days later at 10:00)
    "b3c4d5e6-a7b8-4c9d-8e0f-2a3b4c5d6e7f",  # 3. Call (a task, a day later)
)
NEW_STEP_ID = "b4d5e6f7-b8c9-4d0e-9f1a-3b4c5d6e7f80"  # 4. Last call, added later
COPY_STEP_IDS = (  # the steps of the copy
    "c1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    "c2b3c4d5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
    "c3c4d5e6-a7b8-4c9d-8e0f-2a3b4c5d6e7f",
)
CONTACT_ID = "4b1d2c3e-5f60-4718-9a0b-c1d2e3f40516"  # Ada Lovelace
OTHER_CONTACT_ID = "8c9d0e1f-2a3b-4c5d-8e7f-90a1b2c3d4e5"  # Grace Hopper
ENROLLMENT_ID = "019cafe0-1b2c-7d3e-8f40-5a6b7c8d9e0f"  # Ada in Cold outreach
OTHER_ENROLLMENT_ID = "019cafe0-1b2d-7e4f-9a51-6b7c8d9e0f1a"  # Grace in Cold outreach
MESSAGE_ID = "d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70"  # the Intro SMS sent to Ada
TASK_ID = "e5f6a7b8-c9d0-4e1f-9a2b-3c4d5e6f7081"  # the call to Ada
ENDPOINT_ID = "f6a7b8c9-d0e1-4f2a-8b3c-4d5e6f708192"  # the CRM's webhook endpoint

# ---------------------------------------------------------------------------------------------- times

CREATED = "2026-03-02T14:00:00Z"  # the workspace, its senders and keys
SEQUENCE_CREATED = "2026-03-02T14:10:00Z"
CONTACT_CREATED = "2026-03-02T14:15:00Z"
ACTIVATED = "2026-03-02T14:20:00Z"
ENROLLED = "2026-03-02T14:30:00Z"
SENT = "2026-03-02T14:30:02Z"
NUDGE_AT = "2026-03-04T15:00:00Z"  # 10:00 in New York, two days on
CALL_AT = "2026-03-05T15:00:00Z"
LATER = "2026-03-05T16:12:00Z"  # a rep's action, a pause, a cancellation
START_AT = "2026-03-09T13:00:00Z"  # Monday 9:00 in New York: the sequence's scheduled start
ENROLL_AT = "2026-03-03T14:00:00Z"  # 9:00 in New York, the day after: an enrollment's start_at


def listed(example: dict[str, Any]) -> list[dict[str, Any]]:
    return [example]


def page(example: dict[str, Any]) -> dict[str, Any]:
    """A Page (app/api/paging.py) holding the one example."""
    return {"items": [example], "total": 1, "page": 1, "page_size": 50}


# ---------------------------------------------------------------------------------------------- workspaces

WORKSPACE = {
    "id": WORKSPACE_ID,
    "name": "Acme Sales",
    "timezone": "America/New_York",
    "role": "owner",
    "sms_credits": None,
    "created_at": CREATED,
}
INBOUND_SECRET_VALUE = "dbi_6b1f0c2e9a8d4f7b3c5e1a9d8f2b4c6e0a7d3f5b9c1e8a2d4f6b0c3e5a7d9f1b"
INBOUND_SECRET = {
    "username": WORKSPACE_ID,
    "secret": INBOUND_SECRET_VALUE,
    "url": f"https://{WORKSPACE_ID}:{INBOUND_SECRET_VALUE}@drumbeat.acme.example/api/v1/webhooks/email/inbound",
}
MOVED_WORKSPACE = WORKSPACE | {"timezone": "America/Chicago"}
HOLIDAYS_SET = {"count": 2}
SMS_SENDER = {
    "id": SMS_SENDER_ID,
    "workspace_id": WORKSPACE_ID,
    "channel": "sms",
    "address": "+12025550100",
    "name": "Main line",
    "rate_per_second": 10.0,
    "daily_cap": None,
    "user_id": None,
    "created_at": CREATED,
}
EMAIL_SENDER = {
    "id": EMAIL_SENDER_ID,
    "workspace_id": WORKSPACE_ID,
    "channel": "email",
    "address": "sales@acme.example",
    "name": "Acme Sales",
    "rate_per_second": 2.0,
    "daily_cap": 500,
    "user_id": None,
    "created_at": CREATED,
}
PACED_SENDER = EMAIL_SENDER | {"rate_per_second": 1.0, "daily_cap": 300}
MAILBOX = {
    "sender_id": EMAIL_SENDER_ID,
    "host": "imap.gmail.com",
    "port": 993,
    "security": "ssl",
    "username": "sales@acme.example",
    "folder": "INBOX",
    "checked_at": "2026-03-02T14:31:00Z",
    "error": None,
    "updated_at": CREATED,
}
NEW_MAILBOX = MAILBOX | {"checked_at": None}
CHANNEL_HOLD = {
    "channel": "sms",
    "sender_id": None,
    "sender_address": None,
    "reason": "unreachable",
    "error_code": "ConnectTimeout",
    "held_since": SENT,
    "next_probe_at": "2026-03-02T14:31:02Z",
}
API_KEY = {
    "id": API_KEY_ID,
    "workspace_id": WORKSPACE_ID,
    "name": "CRM sync",
    "prefix": "dbk_0cf1ebcfd35f",
    "role": "member",
    "created_at": CREATED,
    "last_used_at": ENROLLED,
    "revoked_at": None,
}
API_KEY_CREATED = {
    "key": API_KEY | {"last_used_at": None},
    "token": "dbk_0cf1ebcfd35f_5e897a75939640c18ab58b3aa5770a45e07ec939b43b4d6dad0eb17e6acf5d95",
}
MEMBER = {"user_id": USER_ID, "role": "member", "api_key": False, "created_at": CREATED}
ADMIN = MEMBER | {"role": "admin"}
MEMBERS = [
    {"user_id": OWNER_ID, "role": "owner", "api_key": False, "created_at": CREATED},
    {"user_id": API_KEY_ID, "role": "member", "api_key": True, "created_at": CREATED},
    MEMBER,
]

# ---------------------------------------------------------------------------------------------- sequences


def step(
    step_id: str, position: int, kind: str, name: str, delay: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """A step as GET returns it: every field, those not given null (or their default)."""
    return {
        "id": step_id,
        "position": position,
        "kind": kind,
        "name": name,
        "delay": delay,
        "send_at": None,
        "subject": None,
        "body": None,
        "html_body": None,
        "variants": [],
        "condition": None,
        "then": None,
        "else": None,
        "action": None,
        "task_description": None,
        "is_active": True,
        "created_at": SEQUENCE_CREATED,
        "updated_at": SEQUENCE_CREATED,
    } | fields


CALL_TEMPLATE = "Call {{ contact.first_name }}: ask about a demo"
STEPS = [
    step(STEP_IDS[0], 1, "sms", "Intro", {"value": 0, "unit": "minutes"}, body="Hi {{ contact.first_name }}"),
    step(STEP_IDS[1], 2, "sms", "Nudge", {"value": 2, "unit": "days"}, send_at="10:00", body="Still there?"),
    step(STEP_IDS[2], 3, "call", "Call", {"value": 1, "unit": "days"}, task_description=CALL_TEMPLATE),
]
SEQUENCE = {
    "id": SEQUENCE_ID,
    "workspace_id": WORKSPACE_ID,
    "name": "Cold outreach",
    "description": None,
    "status": "active",
    "channel": "sms",
    "settings": {"timezone": "America/New_York", "exclude_weekends": True},
    "exit_conditions": {
        "on_reply": True,
        "on_bounce": True,
        "on_unsubscribe": True,
        "on_meeting_booked": True,
    },
    "version": 1,
    "scheduled_start_at": None,
    "created_by": OWNER_ID,
    "created_at": SEQUENCE_CREATED,
    "updated_at": ACTIVATED,
    "activated_at": ACTIVATED,
    "archived_at": None,
    "step_count": 3,
}
SEQUENCE_DETAIL = SEQUENCE | {"steps": STEPS}
DRAFT_SEQUENCE = SEQUENCE_DETAIL | {"status": "draft", "updated_at": SEQUENCE_CREATED, "activated_at": None}
REPLACED_SEQUENCE = SEQUENCE_DETAIL | {"version": 2, "updated_at": LATER}
EDITED_SEQUENCE = REPLACED_SEQUENCE | {"name": "Cold outreach (spring)"}
SCHEDULED_SEQUENCE = SEQUENCE_DETAIL | {"scheduled_start_at": START_AT}
PAUSED_SEQUENCE = SEQUENCE_DETAIL | {"status": "paused", "updated_at": LATER}
ARCHIVED_SEQUENCE = SEQUENCE_DETAIL | {"status": "archived", "updated_at": LATER, "archived_at": LATER}
SEQUENCE_COPY = DRAFT_SEQUENCE | {
    "id": COPY_ID,
    "name": "Cold outreach (EMEA)",
    "created_at": LATER,
    "updated_at": LATER,
    "steps": [
        s | {"id": copy_id, "created_at": LATER, "updated_at": LATER}
        for s, copy_id in zip(STEPS, COPY_STEP_IDS, strict=True)
    ],
}
NEW_STEP = step(NEW_STEP_ID, 4, "sms", "Last call", {"value": 3, "unit": "days"}, body="Bye for now") | {
    "created_at": LATER,
    "updated_at": LATER,
}
EDITED_INTRO = 'Hi {{ contact.first_name | default("there") }}, Sam from Acme here'
EDITED_STEP = STEPS[0] | {"body": EDITED_INTRO, "send_at": "09:30", "updated_at": LATER}
REORDERED_STEPS = [
    STEPS[1] | {"position": 1, "updated_at": LATER},
    STEPS[0] | {"position": 2, "updated_at": LATER},
    STEPS[2],
]
SEQUENCE_STATS = {
    "sequence_id": SEQUENCE_ID,
    "enrollments": {
        "scheduled": 0,
        "active": 41,
        "paused": 1,
        "completed": 12,
        "replied": 9,
        "bounced": 0,
        "unsubscribed": 2,
        "cancelled": 1,
        "failed": 0,
        "total": 66,
    },
    "replied": 9,
    "steps": [
        {
            "step_id": STEP_IDS[0],
            "position": 1,
            "kind": "sms",
            "name": "Intro",
            "sent": 66,
            "delivered": 64,
            "failed": 2,
            "unknown": 0,
            "opened": 0,
            "clicked": 0,
            "replied": 6,
            "delivery_rate": 0.97,
            "open_rate": 0.0,
            "click_rate": 0.0,
            "reply_rate": 0.09,
            "variants": [],
            "tasks": None,
        },
        {
            "step_id": STEP_IDS[2],
            "position": 3,
            "kind": "call",
            "name": "Call",
            "sent": 0,
            "delivered": 0,
            "failed": 0,
            "unknown": 0,
            "opened": 0,
            "clicked": 0,
            "replied": 0,
            "delivery_rate": None,
            "open_rate": None,
            "click_rate": None,
            "reply_rate": None,
            "variants": [],
            "tasks": {
                "created": 14,
                "completed": 12,
                "cancelled": 1,
                "pending": 1,
                "outcomes": {"connected": 7, "voicemail": 5},
            },
        },
    ],
}
SCHEDULE_PREVIEW = {
    "sequence_id": SEQUENCE_ID,
    "contact_id": CONTACT_ID,
    "steps": [
        {"position": 1, "step_id": STEP_IDS[0], "kind": "sms", "planned_at": ENROLLED},
        {"position": 2, "step_id": STEP_IDS[1], "kind": "sms", "planned_at": NUDGE_AT},
        {"position": 3, "step_id": STEP_IDS[2], "kind": "call", "planned_at": CALL_AT},
    ],
}
MESSAGE_PREVIEW = {
    "variant": None,
    "subject": None,
    "body": "Hi Ada",
    "html_body": None,
    "sms": {"encoding": "GSM-7", "segments": 1, "characters": 6},
}

# ---------------------------------------------------------------------------------------------- contacts

CONTACT = {
    "id": CONTACT_ID,
    "workspace_id": WORKSPACE_ID,
    "phone": "+12125550100",
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "company": "Analytical Engines",
    "title": None,
    "timezone": "America/New_York",
    "fields": {"plan": "pro"},
    "tags": ["vip"],
    "sms_opted_out_at": None,
    "email_opted_out_at": None,
    "bounced_at": None,
    "phone_bounced_at": None,
    "created_at": CONTACT_CREATED,
    "updated_at": CONTACT_CREATED,
}
EDITED_CONTACT = CONTACT | {"company": "Acme", "fields": {"plan": "enterprise"}, "updated_at": LATER}
ERASURE = {
    "contact_id": CONTACT_ID,
    "erased_at": LATER,
    "already_erased": False,
    "addresses_suppressed": 2,
    "messages_wiped": 2,
    "outbox_rows_deleted": 0,
    "events_wiped": 5,
    "webhook_messages_wiped": 0,
    "tasks_wiped": 1,
    "enrollments_wiped": 1,
}
CONTACT_EXPORT = {
    "exported_at": LATER,
    # The export's times are Postgres's own rendering (+00:00), and it says whether the row is deleted or erased.
    "contact": {key: value for key, value in CONTACT.items() if key != "workspace_id"}
    | {
        "created_at": "2026-03-02T14:15:00+00:00",
        "updated_at": "2026-03-02T14:15:00+00:00",
        "deleted_at": None,
        "erased_at": None,
    },
    "enrollments": [
        {
            "id": ENROLLMENT_ID,
            "sequence_id": SEQUENCE_ID,
            "sequence": "Cold outreach",
            "status": "active",
            "metadata": {"source": "crm"},
            "assigned_to": None,
            "enrolled_at": "2026-03-02T14:30:00+00:00",
            "started_at": "2026-03-02T14:30:00+00:00",
            "completed_at": None,
            "exit_reason": None,
        }
    ],
    "messages": [
        {
            "id": MESSAGE_ID,
            "enrollment_id": ENROLLMENT_ID,
            "channel": "sms",
            "to": "+12125550100",
            "subject": None,
            "body": "Hi Ada",
            "status": "delivered",
            "sent_at": "2026-03-02T14:30:02+00:00",
            "delivered_at": "2026-03-02T14:30:05+00:00",
            "error_code": None,
        }
    ],
    "tasks": [],
    "events": [
        {
            "kind": "sent",
            "payload": {"attempt": 1, "channel": "sms", "transient": False},
            "delivery_id": MESSAGE_ID,
            "occurred_at": "2026-03-02T14:30:02+00:00",
            "sequence_id": SEQUENCE_ID,
            "enrollment_id": ENROLLMENT_ID,
        }
    ],
}
CONTACT_ENROLLMENT = {
    "id": ENROLLMENT_ID,
    "sequence_id": SEQUENCE_ID,
    "sequence_name": "Cold outreach",
    "status": "active",
    "current_step_position": 2,
    "next_action_at": NUDGE_AT,
    "enrolled_at": ENROLLED,
    "started_at": ENROLLED,
    "paused_at": None,
    "completed_at": None,
    "exit_reason": None,
}
CONTACTS_CSV = (
    "phone,email,first_name,last_name,company,tags,plan\n"
    "(212) 555-0100,ada@example.com,Ada,Lovelace,Analytical Engines,vip,pro\n"
    "+12125550101,grace@example.com,Grace,Hopper,Navy,,enterprise\n"
    "not a phone,,Bob,,,,\n"
)
IMPORT_SUMMARY = {  # CONTACTS_CSV imported
    "created": 2,
    "updated": 0,
    "rejected": 1,
    "total": 3,
    "results": [
        {
            "row": 3,
            "outcome": "rejected",
            "contact_id": None,
            "field": "phone",
            "reason": "phone: not a phone number",
        }
    ],
}

# ---------------------------------------------------------------------------------------------- enrollments

ENROLLMENT = {
    "id": ENROLLMENT_ID,
    "workspace_id": WORKSPACE_ID,
    "sequence_id": SEQUENCE_ID,
    "sequence_name": "Cold outreach",
    "contact_id": CONTACT_ID,
    "status": "active",
    "current_step_id": STEP_IDS[1],
    "current_step_position": 2,
    "step_attempt": 1,
    "next_action_at": NUDGE_AT,
    "assigned_to": None,
    "metadata": {"source": "crm"},
    "enrolled_at": ENROLLED,
    "started_at": ENROLLED,
    "paused_at": None,
    "completed_at": None,
    "exit_reason": None,
    "updated_at": SENT,
}
NEW_ENROLLMENT = ENROLLMENT | {
    "status": "scheduled",
    "current_step_id": STEP_IDS[0],
    "current_step_position": 1,
    "next_action_at": ENROLL_AT,
    "started_at": None,
    "updated_at": ENROLLED,
}
CANCEL_REASON = "Booked a demo by phone"
PAUSED_ENROLLMENT = ENROLLMENT | {"status": "paused", "paused_at": LATER, "updated_at": LATER}
CANCELLED_ENROLLMENT = ENROLLMENT | {
    "status": "cancelled",
    "next_action_at": None,
    "completed_at": LATER,
    "exit_reason": CANCEL_REASON,
    "updated_at": LATER,
}
SKIPPED_ENROLLMENT = ENROLLMENT | {
    "current_step_id": STEP_IDS[2],
    "current_step_position": 3,
    "next_action_at": LATER,
    "updated_at": LATER,
}
REASSIGNED_ENROLLMENT = ENROLLMENT | {"assigned_to": USER_ID, "updated_at": LATER}
DELIVERY = {
    "id": MESSAGE_ID,
    "step_id": STEP_IDS[0],
    "step_position": 1,
    "channel": "sms",
    "status": "delivered",
    "to_address": "+12125550100",
    "sender_id": SMS_SENDER_ID,
    "variant": None,
    "attempt": 1,
    "scheduled_for": ENROLLED,
    "sent_at": SENT,
    "delivered_at": "2026-03-02T14:30:05Z",
    "provider_message_id": "SM8f3c1d2e4b5a6978c0d1e2f3a4b5c6d7",
    "error_code": None,
    "error_message": None,
    "segments": 1,
    "created_at": ENROLLED,
}
ENROLLMENT_DETAIL = ENROLLMENT | {
    "deliveries": [DELIVERY],
    "events": [
        {
            "id": 5,
            "kind": "enrolled",
            "occurred_at": ENROLLED,
            "step_id": STEP_IDS[0],
            "delivery_id": None,
            "actor_id": API_KEY_ID,
            "payload": {"status": "active", "next_action_at": "2026-03-02T14:30:00+00:00"},
        },
        {
            "id": 8,
            "kind": "sent",
            "occurred_at": SENT,
            "step_id": STEP_IDS[0],
            "delivery_id": MESSAGE_ID,
            "actor_id": None,
            "payload": {"attempt": 1, "channel": "sms", "transient": False},
        },
    ],
}
BULK_ENROLLMENT = {
    "summary": {"enrolled": 1, "already_enrolled": 1, "opted_out": 0, "unreachable": 0, "not_found": 0},
    "results": [
        {"contact_id": CONTACT_ID, "outcome": "already_enrolled", "enrollment_id": ENROLLMENT_ID},
        {"contact_id": OTHER_CONTACT_ID, "outcome": "enrolled", "enrollment_id": OTHER_ENROLLMENT_ID},
    ],
}
TASK = {
    "id": TASK_ID,
    "workspace_id": WORKSPACE_ID,
    "enrollment_id": ENROLLMENT_ID,
    "sequence_id": SEQUENCE_ID,
    "sequence_name": "Cold outreach",
    "step_id": STEP_IDS[2],
    "step_name": "Call",
    "contact_id": CONTACT_ID,
    "contact": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+12125550100",
        "email": "ada@example.com",
        "company": "Analytical Engines",
        "title": None,
        "timezone": "America/New_York",
    },
    "kind": "call",
    "title": "Call",
    "description": "Call Ada: ask about a demo",
    "description_template": CALL_TEMPLATE,
    "assigned_to": None,
    "status": "pending",
    "due_at": CALL_AT,
    "completed_at": None,
    "completed_by": None,
    "outcome": None,
    "notes": None,
    "created_at": CALL_AT,
}
REASSIGNED_TASK = TASK | {"assigned_to": USER_ID}
CALL_OUTCOME = {"outcome": "connected", "notes": "Wants a demo next Tuesday"}  # a task completed with them
COMPLETED_TASK = REASSIGNED_TASK | {
    "status": "completed",
    "completed_at": LATER,
    "completed_by": USER_ID,
    "outcome": CALL_OUTCOME["outcome"],
    "notes": CALL_OUTCOME["notes"],
}
EVENT_FEED = {
    "items": [
        {
            "cursor": "74608.7",
            "id": 7,
            "type": "message.sent",
            "occurred_at": SENT,
            "data": {
                "channel": "sms",
                "step_id": STEP_IDS[0],
                "contact_id": CONTACT_ID,
                "delivery_id": MESSAGE_ID,
                "sequence_id": SEQUENCE_ID,
                "workspace_id": WORKSPACE_ID,
                "enrollment_id": ENROLLMENT_ID,
            },
        }
    ],
    "next_cursor": "74608.7",
}
EVENT_RECORDED = {
    "contact_id": CONTACT_ID,
    "kind": "replied",
    "occurred_at": LATER,
    "logged": [
        {
            "event_id": 12,
            "enrollment_id": ENROLLMENT_ID,
            "sequence_id": SEQUENCE_ID,
            "enrollment_status": "replied",
            "exit_reason": "replied",
        }
    ],
}

# ---------------------------------------------------------------------------------------------- messages

MESSAGE = {
    "id": MESSAGE_ID,
    "channel": "sms",
    "status": "delivered",
    "contact_id": CONTACT_ID,
    "enrollment_id": ENROLLMENT_ID,
    "sequence_id": SEQUENCE_ID,
    "sequence_name": "Cold outreach",
    "step_id": STEP_IDS[0],
    "step_position": 1,
    "step_name": "Intro",
    "variant": None,
    "attempt": 1,
    "sender_id": SMS_SENDER_ID,
    "from_address": "+12025550100",
    "to_address": "+12125550100",
    "subject": None,
    "body": "Hi Ada",
    "html_body": None,
    "segments": 1,
    "provider_message_id": "SM8f3c1d2e4b5a6978c0d1e2f3a4b5c6d7",
    "error_code": None,
    "error_message": None,
    "scheduled_for": ENROLLED,
    "sent_at": SENT,
    "delivered_at": "2026-03-02T14:30:05Z",
    "created_at": ENROLLED,
    "in_outbox": False,
}
MESSAGE_DETAIL = MESSAGE | {
    "history": [
        {
            "kind": "sent",
            "occurred_at": SENT,
            "payload": {"attempt": 1, "channel": "sms", "transient": False},
        },
        {"kind": "delivered", "occurred_at": "2026-03-02T14:30:05Z", "payload": {}},
    ]
}

# ---------------------------------------------------------------------------------------------- webhook endpoints

ENDPOINT = {
    "id": ENDPOINT_ID,
    "workspace_id": WORKSPACE_ID,
    "url": "https://crm.example.com/drumbeat",
    "description": "CRM",
    "event_types": ["message.failed", "sequence.enrollment.replied"],
    "include_bodies": False,
    "enabled": True,
    "disabled_at": None,
    "disabled_reason": None,
    "failing_since": None,
    "previous_secret_expires_at": None,
    "created_at": CREATED,
    "updated_at": CREATED,
}
ENDPOINT_WITH_SECRET = ENDPOINT | {"secret": "whsec_esIKgdKXS6qg3+M7ZpsXTzrAoEBtxEbVggE43aCgX1I="}
ROTATED_ENDPOINT = ENDPOINT_WITH_SECRET | {
    "secret": "whsec_Q2hhbmdlZCBzZWNyZXQgZm9yIHRoZSBleGFtcGxlIG9ubHk=",
    "previous_secret_expires_at": "2026-03-06T16:12:00Z",
    "updated_at": LATER,
}
EDITED_ENDPOINT = ENDPOINT | {"include_bodies": True, "updated_at": LATER}
WEBHOOK_MESSAGE = {
    "message_id": "msg_dff1a916b8f240e0a7a45b121e2a7e05",
    "endpoint_id": ENDPOINT_ID,
    "type": "ping",
    "event_id": None,
    "status": "pending",
    "attempts": 0,
    "next_attempt_at": LATER,
    "created_at": LATER,
    "delivered_at": None,
}
WEBHOOK_DELIVERY = {
    "id": 311,
    "message_id": "msg_dff1a916b8f240e0a7a45b121e2a7e05",
    "type": "ping",
    "event_id": None,
    "attempt": 1,
    "attempted_at": LATER,
    "status_code": 200,
    "latency_ms": 84,
    "outcome": "delivered",
    "error": None,
    "next_retry_at": None,
    "message_status": "delivered",
}
RESENT_MESSAGE = WEBHOOK_MESSAGE | {
    "message_id": "msg_4c1e9b7a2d3f4e5a8b6c7d8e9f0a1b2c",
    "type": "sequence.enrollment.replied",
    "event_id": 12,
    "attempts": 3,
    "created_at": ENROLLED,
}
RESENT = {"queued": 42, "next": None}

# ---------------------------------------------------------------------------------------------- operations

HEALTH = {"status": "ok"}
READY = {"status": "ok", "migrations": 19}
INBOUND_RESULT = {"outcome": "replied"}
