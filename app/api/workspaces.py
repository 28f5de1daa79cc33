"""Workspaces, their senders, API keys and holidays: what a newcomer sets up before the first sequence."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import FromPath
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import Db, WorkspaceId, example_body, example_response, provide_workspace_id
from app.api.errors import contract_fields
from app.api.idempotency import SHOWS_SECRET
from app.core.db import fetch_all, fetch_one, fetch_value, require_row
from app.core.errors import NotConfigured
from app.core.queries import queries
from app.core.secret_box import SecretBox
from app.core.settings import ConfigError

Q = queries("api_workspaces")
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class WorkspaceCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    timezone: str = "UTC"


class WorkspaceChange(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; a field left out stays as it is."""

    name: Name | None = None
    timezone: Annotated[
        str | None, msgspec.Meta(description="IANA zone for contacts and sequences that name none")
    ] = None


class Workspace(msgspec.Struct):
    id: UUID
    name: str
    timezone: str
    role: str
    sms_credits: int | None
    created_at: dt.datetime


class SenderCreate(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["sms", "email"]
    address: Annotated[
        str, msgspec.Meta(description="E.164 number or Messaging Service SID (sms); from address (email)")
    ]
    name: str | None = None
    rate_per_second: float | None = None
    daily_cap: int | None = None
    user_id: Annotated[
        UUID | None,
        msgspec.Meta(
            description="A member whose own sender this is: enrollments assigned to them go out from it"
        ),
    ] = None


class Sender(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    channel: str
    address: str
    name: str | None
    rate_per_second: float
    daily_cap: int | None
    user_id: UUID | None
    created_at: dt.datetime


class SenderPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields to change (the contract checks each: rate_per_second 1-1000, daily_cap 1-10,000,000)."""

    name: str | msgspec.UnsetType | None = msgspec.UNSET
    rate_per_second: float | msgspec.UnsetType = msgspec.UNSET
    daily_cap: int | msgspec.UnsetType | None = msgspec.UNSET
    user_id: UUID | msgspec.UnsetType | None = msgspec.UNSET


async def visible_sender(db: Db, sender_id: UUID) -> Sender:
    row = require_row(await fetch_one(db, Q["get_sender"], {"id": sender_id}), "sender", "sender_id")
    return msgspec.convert(row, Sender)


class MailboxSet(msgspec.Struct, forbid_unknown_fields=True):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255, examples=["imap.gmail.com"])]
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    password: Annotated[
        str, msgspec.Meta(min_length=1, max_length=1000, description="Stored encrypted; never shown")
    ]
    security: Literal["ssl", "starttls", "none"] = "ssl"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    folder: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] = "INBOX"


class Mailbox(msgspec.Struct):
    """An email sender's inbox, watched over IMAP for replies: when the worker last read it and what
    stopped it, if anything (a refused login, an unreachable server)."""

    sender_id: UUID
    host: str
    port: int
    security: str
    username: str
    folder: str
    checked_at: dt.datetime | None
    error: str | None
    updated_at: dt.datetime


class ChannelHold(msgspec.Struct):
    """A channel (sender_id null: every sender of it) or one sender whose sends wait: the provider refused
    the credentials (auth), could not be reached (unreachable), kept failing (outage) or rate-limited the
    sender (rate_limited). The worker probes it at next_probe_at and lifts the hold once a send goes through."""

    channel: str
    sender_id: UUID | None
    sender_address: str | None
    reason: str
    error_code: str | None
    held_since: dt.datetime
    next_probe_at: dt.datetime


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    role: Role = "member"


class ApiKey(msgspec.Struct):
    id: UUID
    workspace_id: UUID
    name: str
    prefix: str
    role: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreated(msgspec.Struct):
    key: ApiKey
    token: Annotated[str, msgspec.Meta(description="The secret: shown this once, never stored in clear")]


Role = Literal["owner", "admin", "member"]


class MemberAdd(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[
        UUID, msgspec.Meta(description="The user id the person signs in with (their JWT `sub`)")
    ]
    role: Role = "member"


class MemberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


class Member(msgspec.Struct):
    user_id: UUID
    role: str
    api_key: bool
    created_at: dt.datetime


class InboundSecret(msgspec.Struct):
    """Shown once: the credentials an inbound-parse service posts inbound email with (HTTP basic auth)."""

    username: UUID
    secret: str
    url: str | None  # the webhook URL with the credentials in it, when DRUMBEAT_PUBLIC_URL is set


class HolidaysSet(msgspec.Struct, forbid_unknown_fields=True):
    dates: list[dt.date]


WorkspaceCreateBody = Annotated[
    WorkspaceCreate, msgspec.Meta(examples=[{"name": "Acme Sales", "timezone": "America/New_York"}])
]
WorkspaceChangeBody = Annotated[
    WorkspaceChange,
    msgspec.Meta(
        examples=[{"timezone": "America/Chicago"}, {"name": "Acme Sales EMEA", "timezone": "Europe/London"}]
    ),
]
HolidaysSetBody = Annotated[HolidaysSet, msgspec.Meta(examples=[{"dates": ["2026-12-25", "2027-01-01"]}])]
SenderCreateBody = Annotated[
    SenderCreate,
    msgspec.Meta(
        examples=[
            {"channel": "sms", "address": "+12025550100", "name": "Main line", "rate_per_second": 10},
            {"channel": "email", "address": "sales@acme.example", "name": "Acme Sales", "daily_cap": 500},
        ]
    ),
]

SenderPatchBody = Annotated[
    SenderPatch,
    msgspec.Meta(
        examples=[
            {"name": "Acme Sales", "rate_per_second": 1, "daily_cap": 300},
            {"user_id": ex.USER_ID},
        ]
    ),
]
MailboxSetBody = Annotated[
    MailboxSet,
    msgspec.Meta(
        examples=[
            {
                "host": "imap.gmail.com",
                "port": 993,
                "security": "ssl",
                "username": "sales@acme.example",
                "password": "an app password",
                "folder": "INBOX",
            }
        ]
    ),
]
ApiKeyCreateBody = Annotated[ApiKeyCreate, msgspec.Meta(examples=[{"name": "CRM sync", "role": "member"}])]
MemberAddBody = Annotated[MemberAdd, msgspec.Meta(examples=[{"user_id": ex.USER_ID, "role": "member"}])]
MemberUpdateBody = Annotated[MemberUpdate, msgspec.Meta(examples=[{"role": "admin"}])]


class WorkspaceController(Controller):
    path = "/workspaces"
    tags = ["workspaces"]

    @example_response(ex.WORKSPACE)
    @post("/", summary="Create a workspace (the caller becomes its owner)")
    async def create(self, db: Db, data: example_body(WorkspaceCreateBody)) -> Workspace:
        workspace_id = await fetch_value(
            db, Q["create_workspace"], {"name": data.name, "timezone": data.timezone}
        )
        return msgspec.convert(await fetch_one(db, Q["get_workspace"], {"id": workspace_id}), Workspace)

    @example_response(ex.listed(ex.WORKSPACE))
    @get("/", summary="The caller's workspaces")
    async def index(self, db: Db) -> list[Workspace]:
        return msgspec.convert(await fetch_all(db, Q["list_workspaces"]), list[Workspace])

    @example_response(ex.WORKSPACE)
    @get("/{workspace_id:uuid}", summary="One workspace")
    async def detail(self, db: Db, workspace_id: FromPath[UUID]) -> Workspace:
        row = require_row(
            await fetch_one(db, Q["get_workspace"], {"id": workspace_id}), "workspace", "workspace_id"
        )
        return msgspec.convert(row, Workspace)

    @example_response(ex.MOVED_WORKSPACE)
    @patch(
        "/{workspace_id:uuid}",
        summary="Rename the workspace or change its time zone (admins)",
        description="The time zone applies to steps planned from then on; a step already planned keeps its instant.",
    )
    async def change(
        self, db: Db, workspace_id: FromPath[UUID], data: example_body(WorkspaceChangeBody)
    ) -> Workspace:
        params = {"id": workspace_id, "name": data.name, "timezone": data.timezone}
        async with contract_fields():
            await fetch_one(db, Q["update_workspace"], params)
        return msgspec.convert(await fetch_one(db, Q["get_workspace"], {"id": workspace_id}), Workspace)

    @delete(
        "/{workspace_id:uuid}",
        summary="Delete the workspace and everything in it (owners only; irreversible)",
        description="Members, keys, senders, contacts, sequences, enrollments and their history all go.",
    )
    async def remove(self, db: Db, workspace_id: FromPath[UUID]) -> None:
        await fetch_one(db, Q["delete_workspace"], {"id": workspace_id})

    @example_response(ex.INBOUND_SECRET)
    @post(
        "/{workspace_id:uuid}/inbound-secret",
        summary="Create the workspace's inbound secret for inbound-parse services (admins; shown once)",
        description="Replaces the previous one, which stops working at once. Paste `url` into the provider "
        "(SendGrid Inbound Parse with raw MIME, Mailgun's store/forward to a /mime URL): it can post inbound "
        "email for this workspace and do nothing else.",
        opt=SHOWS_SECRET,
    )
    async def inbound_secret(self, request: Request, db: Db, workspace_id: FromPath[UUID]) -> InboundSecret:
        secret = await fetch_value(db, Q["rotate_inbound_secret"], {"id": workspace_id})
        public_url = request.app.state.settings.public_url
        url = None
        if public_url:
            scheme, _, host = public_url.rstrip("/").partition("://")
            url = f"{scheme}://{workspace_id}:{secret}@{host}/api/v1/webhooks/email/inbound"
        return InboundSecret(username=workspace_id, secret=secret, url=url)

    @example_response(ex.HOLIDAYS_SET)
    @put("/{workspace_id:uuid}/holidays", summary="Replace the workspace's holiday list", status_code=200)
    async def holidays(
        self, db: Db, workspace_id: FromPath[UUID], data: example_body(HolidaysSetBody)
    ) -> dict[str, int]:
        await fetch_one(db, Q["set_holidays"], {"workspace_id": workspace_id, "dates": data.dates})
        return {"count": len(set(data.dates))}


class SenderController(Controller):
    path = "/senders"
    tags = ["senders"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.SMS_SENDER, ex.EMAIL_SENDER)
    @post("/", summary="Add a sender (an SMS number or Messaging Service, or a from address)")
    async def create(self, db: Db, workspace: WorkspaceId, data: example_body(SenderCreateBody)) -> Sender:
        settings = {
            k: v
            for k, v in msgspec.to_builtins(data).items()
            if k in ("name", "rate_per_second", "daily_cap", "user_id") and v is not None
        }
        params = {
            "workspace_id": workspace,
            "channel": data.channel,
            "address": data.address,
            "settings": Jsonb(settings),
        }
        async with contract_fields(body="settings"):
            sender_id = await fetch_value(db, Q["create_sender"], params)
        return msgspec.convert(await fetch_one(db, Q["get_sender"], {"id": sender_id}), Sender)

    @example_response([ex.SMS_SENDER, ex.EMAIL_SENDER])
    @get("/", summary="The workspace's senders")
    async def index(self, db: Db, workspace: WorkspaceId) -> list[Sender]:
        return msgspec.convert(
            await fetch_all(db, Q["list_senders"], {"workspace_id": workspace}), list[Sender]
        )

    @example_response(ex.SMS_SENDER)
    @get("/{sender_id:uuid}", summary="One sender")
    async def detail(self, db: Db, sender_id: FromPath[UUID]) -> Sender:
        return await visible_sender(db, sender_id)

    @example_response(ex.PACED_SENDER)
    @patch(
        "/{sender_id:uuid}",
        summary="Change a sender (admins): name, pace, whose own it is",
        description="The fields given change; `daily_cap` and `user_id` take null (no cap; a shared sender). "
        "Channel and address stay: another number or address is another sender.",
    )
    async def change(self, db: Db, sender_id: FromPath[UUID], data: example_body(SenderPatchBody)) -> Sender:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        async with contract_fields(body="changes"):
            await fetch_one(
                db, Q["update_sender"], {"id": sender_id, "changes": Jsonb(msgspec.to_builtins(changes))}
            )
        return await visible_sender(db, sender_id)

    @delete(
        "/{sender_id:uuid}",
        summary="Remove a sender nothing depends on (admins)",
        description="409 when it has sent messages (they keep pointing at it), when a sequence's settings name "
        "it, or when it is the last sender of its channel and an active sequence has steps on that channel.",
    )
    async def remove(self, db: Db, sender_id: FromPath[UUID]) -> None:
        async with contract_fields():
            await fetch_one(db, Q["delete_sender"], {"id": sender_id})

    @example_response(ex.NEW_MAILBOX)
    @put(
        "/{sender_id:uuid}/mailbox",
        summary="Watch an email sender's inbox over IMAP for replies (admins)",
        description="The alternative to the inbound email webhook: the worker reads the inbox (IDLE, else polling) "
        "and handles replies, auto-replies and bounces as they arrive, from the next message on. The password is "
        "stored encrypted with DRUMBEAT_SECRET_KEY and never shown again.",
        status_code=200,
    )
    async def set_mailbox(
        self, request: Request, db: Db, sender_id: FromPath[UUID], data: example_body(MailboxSetBody)
    ) -> Mailbox:
        try:
            box = SecretBox.from_settings(request.app.state.settings)
        except ConfigError as error:
            raise NotConfigured(str(error)) from error
        mailbox = msgspec.to_builtins(data) | {"password_sealed": box.seal(data.password)}
        del mailbox["password"]
        if data.port is None:
            del mailbox["port"]
        async with contract_fields(body="mailbox"):
            await fetch_one(db, Q["set_sender_mailbox"], {"sender_id": sender_id, "mailbox": Jsonb(mailbox)})
        return await sender_mailbox(db, sender_id)

    @example_response(ex.MAILBOX)
    @get("/{sender_id:uuid}/mailbox", summary="The sender's watched inbox and how its last check went")
    async def mailbox(self, db: Db, sender_id: FromPath[UUID]) -> Mailbox:
        return await sender_mailbox(db, sender_id)

    @delete("/{sender_id:uuid}/mailbox", summary="Stop watching the sender's inbox (admins)")
    async def remove_mailbox(self, db: Db, sender_id: FromPath[UUID]) -> None:
        async with contract_fields():
            await fetch_one(db, Q["set_sender_mailbox"], {"sender_id": sender_id, "mailbox": None})


class ChannelHoldController(Controller):
    path = "/channel-holds"
    tags = ["senders"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.listed(ex.CHANNEL_HOLD))
    @get(
        "/",
        summary="Held channels and senders (circuit breaker)",
        description="Sends waiting because the provider refused the credentials, could not be reached, kept "
        "failing or rate-limited a sender: whole channels (shared by every workspace) and this workspace's "
        "senders. Empty while every provider answers. Nothing fails while held; the worker probes about once "
        "a minute (a 429 for its Retry-After) and resumes by itself.",
    )
    async def index(self, db: Db, workspace: WorkspaceId) -> list[ChannelHold]:
        return msgspec.convert(
            await fetch_all(db, Q["list_channel_holds"], {"workspace_id": workspace}), list[ChannelHold]
        )


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["api keys"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.API_KEY_CREATED)
    @post("/", summary="Create an API key (admins and owners); the token is shown once", opt=SHOWS_SECRET)
    async def create(
        self, db: Db, workspace: WorkspaceId, data: example_body(ApiKeyCreateBody)
    ) -> ApiKeyCreated:
        created = await fetch_one(
            db, Q["create_api_key"], {"workspace_id": workspace, "name": data.name, "role": data.role}
        )
        key = await fetch_one(db, Q["get_api_key"], {"id": created["key_id"]})
        return ApiKeyCreated(key=msgspec.convert(key, ApiKey), token=created["token"])

    @example_response(ex.listed(ex.API_KEY))
    @get("/", summary="The workspace's API keys (prefixes only, never secrets)")
    async def index(self, db: Db, workspace: WorkspaceId) -> list[ApiKey]:
        return msgspec.convert(
            await fetch_all(db, Q["list_api_keys"], {"workspace_id": workspace}), list[ApiKey]
        )

    @delete("/{key_id:uuid}", summary="Revoke an API key (it stops working at once)")
    async def revoke(self, db: Db, key_id: FromPath[UUID]) -> None:
        await fetch_one(db, Q["revoke_api_key"], {"id": key_id})


class MemberController(Controller):
    """Who belongs to the workspace (README, "Roles"): admins add, change and remove members and admins,
    only owners grant or take away the owner role, anyone may leave, and the last owner stays."""

    path = "/members"
    tags = ["members"]
    dependencies = {"workspace": Provide(provide_workspace_id)}

    @example_response(ex.MEMBERS)
    @get("/", summary="The workspace's members (people, and API keys as members)")
    async def index(self, db: Db, workspace: WorkspaceId) -> list[Member]:
        return msgspec.convert(
            await fetch_all(db, Q["list_members"], {"workspace_id": workspace}), list[Member]
        )

    @example_response(ex.MEMBER)
    @post("/", summary="Add a member (admins: members and admins; owners: any role)")
    async def create(self, db: Db, workspace: WorkspaceId, data: example_body(MemberAddBody)) -> Member:
        params = {"workspace_id": workspace, "user_id": data.user_id, "role": data.role}
        async with contract_fields():
            await fetch_one(db, Q["add_member"], params)
        return await member(db, workspace, data.user_id)

    @example_response(ex.ADMIN)
    @patch("/{user_id:uuid}", summary="Change a member's role (only owners grant or take away owner)")
    async def update(
        self, db: Db, workspace: WorkspaceId, user_id: FromPath[UUID], data: example_body(MemberUpdateBody)
    ) -> Member:
        params = {"workspace_id": workspace, "user_id": user_id, "role": data.role}
        async with contract_fields():
            await fetch_one(db, Q["update_member_role"], params)
        return await member(db, workspace, user_id)

    @delete("/{user_id:uuid}", summary="Remove a member, or leave (your own user id)")
    async def remove(self, db: Db, workspace: WorkspaceId, user_id: FromPath[UUID]) -> None:
        async with contract_fields():
            await fetch_one(db, Q["remove_member"], {"workspace_id": workspace, "user_id": user_id})


async def sender_mailbox(db: Db, sender_id: UUID) -> Mailbox:
    row = await fetch_one(db, Q["get_sender_mailbox"], {"sender_id": sender_id})
    return msgspec.convert(require_row(row, "mailbox", "sender_id"), Mailbox)


async def member(db: Db, workspace: UUID, user_id: UUID) -> Member:
    row = await fetch_one(db, Q["get_member"], {"workspace_id": workspace, "user_id": user_id})
    return msgspec.convert(require_row(row, "member", "user_id"), Member)


route_handlers = [
    WorkspaceController,
    SenderController,
    ChannelHoldController,
    ApiKeyController,
    MemberController,
]
