"""`POST /api/v1/webhooks/email/inbound`: inbound email (replies, auto-replies, bounces) for one workspace.

Two ways in, for two kinds of sender:

- a client of ours (a mail relay, a script) posts the raw message (RFC 5322) as the body with
  `Content-Type: message/rfc822` and one of the workspace's API keys (`Authorization: Bearer dbk_...`);
- an inbound-parse service (SendGrid Inbound Parse with "post the raw, full MIME message", Mailgun's
  `/mime` routes, ...) posts a multipart form whose `email` or `body-mime` field is the raw message, to a
  URL carrying the workspace's inbound secret as HTTP basic auth (`https://<workspace id>:<secret>@host/...`;
  app/api/workspaces.py creates it). That secret can do nothing else.

The message is read (app/core/inbound_email.py) and handed to drumbeat.inbound_email as drumbeat_worker,
in one transaction: a 200 means it was stored and handled. The same message posted again (a provider's
retry, or the message also seen by IMAP) is handled once: `duplicate`."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Any

import msgspec
from litestar import Request, post
from litestar.datastructures import UploadFile
from psycopg.types.json import Jsonb

from app.api import examples as ex
from app.api.deps import example_response
from app.api.webhooks import as_webhook
from app.core.db import fetch_value
from app.core.errors import Invalid, Unauthenticated
from app.core.inbound_email import InboundEmail, parse_inbound_email
from app.core.queries import queries

Q = queries("api_webhooks")
# Emails carry attachments: a reply with a screenshot is well over the API's 1 MiB. 25 MiB is what the
# common providers accept for a whole message.
MAX_EMAIL_BYTES = 25 * 1024 * 1024
RAW_FIELDS = ("email", "body-mime")
INBOUND_AUTH: list[dict[str, list[str]]] = [{"BearerAuth": []}, {"InboundBasicAuth": []}]


class InboundResult(msgspec.Struct):
    """What was done: replied | auto_replied | bounced | soft_bounced | unsubscribed | unknown_contact |
    duplicate."""

    outcome: str


@example_response(ex.INBOUND_RESULT)
@post(
    # Mailgun posts the raw message (field body-mime) only to a URL ending in "mime".
    ["/api/v1/webhooks/email/inbound", "/api/v1/webhooks/email/inbound/mime"],
    summary="Inbound email: replies end sequences, auto-replies and bounces are told apart",
    description="The raw message as the body (`Content-Type: message/rfc822`) with an API key of the "
    "workspace, or an inbound-parse service's multipart form (the raw MIME in field `email` or `body-mime`) "
    "with the workspace's inbound secret as HTTP basic auth (user: the workspace id). Matched by the "
    "Message-IDs Drumbeat sent (In-Reply-To, References, a bounce's original message), else by address. "
    "Answers 200 once handled; the same message again is `duplicate`.",
    tags=["webhooks"],
    security=INBOUND_AUTH,
    status_code=200,
    request_max_body_size=MAX_EMAIL_BYTES,
)
async def inbound_email(request: Request) -> InboundResult:
    credentials = request.headers.get("authorization")
    workspace_id = await authenticated_workspace(request, credentials)
    email = parse_inbound_email(await raw_message(request), today=dt.datetime.now(dt.UTC).date())
    async with as_webhook(request) as conn:
        outcome = await fetch_value(
            conn, Q["inbound_email"], {"workspace_id": workspace_id, "email": Jsonb(sql_message(email))}
        )
    return InboundResult(outcome=outcome)


async def authenticated_workspace(request: Request, authorization: str | None) -> uuid.UUID:
    """The workspace the credentials belong to: an API key's, or the one whose inbound secret they carry.
    401 otherwise, before the body is parsed."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        workspace_id, secret = basic_credentials(value)
        async with as_webhook(request) as conn:
            if await fetch_value(
                conn, Q["inbound_secret_matches"], {"workspace_id": workspace_id, "secret": secret}
            ):
                return workspace_id
        raise Unauthenticated("the inbound secret is not this workspace's current one")
    async with request.app.state.pool.connection() as conn:
        caller = await request.app.state.authenticator.caller(conn, authorization)
    if not caller.api_key:
        raise Unauthenticated(
            "inbound email takes an API key of the workspace (or its inbound secret), not a JWT"
        )
    async with as_webhook(request) as conn:
        workspace_id = await fetch_value(conn, Q["api_key_workspace"], {"key_id": caller.user_id})
    if workspace_id is None:
        raise Unauthenticated("the API key is unknown or revoked")
    return workspace_id


def basic_credentials(encoded: str) -> tuple[uuid.UUID, str]:
    """(workspace id, secret) from a basic-auth value; 401 naming what is wrong."""
    try:
        user, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        return uuid.UUID(user), secret
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise Unauthenticated("basic auth must be the workspace id and its inbound secret") from error


async def raw_message(request: Request) -> bytes:
    """The raw RFC 5322 message: the body itself, or the raw-MIME field of an inbound-parse form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        field = next((form.get(name) for name in RAW_FIELDS if form.get(name)), None)
        if field is None:
            raise Invalid(f"the form has no raw message: send it in field {' or '.join(RAW_FIELDS)}", "email")
        return await field.read() if isinstance(field, UploadFile) else str(field).encode()
    if content_type not in ("message/rfc822", "text/plain", "application/octet-stream"):
        raise Invalid("send the raw message as message/rfc822, or an inbound-parse form", "content-type")
    body = await request.body()
    if not body.strip():
        raise Invalid("the message is empty", "body")
    return body


def sql_message(email: InboundEmail) -> dict[str, Any]:
    """What drumbeat.inbound_email reads: the parsed message as JSON (dates as ISO strings)."""
    return msgspec.to_builtins(email)


route_handlers: list = [inbound_email]
