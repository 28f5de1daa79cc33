"""Webhooks: what providers and recipients call, outside /api/v1 and without an API key or JWT. Each
request is verified before anything is read or written:

- Twilio (delivery status callbacks and inbound SMS): `X-Twilio-Signature`, checked with Twilio's own
  RequestValidator and TWILIO_AUTH_TOKEN against the URL Twilio was given (DRUMBEAT_PUBLIC_URL + path).
- Email open pixel, click redirect and unsubscribe link: the token in the path, MACed with
  DRUMBEAT_SECRET_KEY by the worker when it sent the message (app/core/links.py).

No user makes these requests, so there are no request.jwt.claims: each one runs in its own transaction as
drumbeat_worker (SET LOCAL ROLE; why that role: sql/migrations/0030_baseline.sql) and changes state
only through the drumbeat.* SQL functions. What they did (replied, opted_out, exited, opened, delivered...)
is logged from the audit events they wrote (app/core/event_log.py): ids only, never the phone number, the
message body or the token."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from litestar import Request, Response, get, post
from litestar.enums import MediaType
from litestar.params import FromPath
from psycopg.types.json import Jsonb
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from app.api.errors import error_response
from app.core import event_log
from app.core.db import fetch_all, fetch_value
from app.core.errors import Forbidden, Invalid, NotConfigured
from app.core.links import LinkSigner
from app.core.queries import queries
from app.core.settings import Settings

log = logging.getLogger("drumbeat.webhooks")
Q = queries("api_webhooks")
NO_AUTH: list[dict[str, list[str]]] = [{}]  # OpenAPI: these operations take no Bearer credentials

# A 1x1 transparent GIF (GIF89a, one-entry palette, transparency extension): 43 bytes.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Pages opened from an email: nothing but our own inline style and a form posting back here; the token
# in the URL is never sent on as a Referer.
PAGE_HEADERS = {
    **NO_CACHE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
# Characters left as they are in a redirect's Location: RFC 3986 reserved and unreserved ones, and "%"
# (already percent-encoded sequences stay). Everything else (non-ASCII above all) is percent-encoded.
_LOCATION_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


@asynccontextmanager
async def as_webhook(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction from the app's pool acting as drumbeat_worker; commits when the block ends,
    rolls back when it raises. Once it committed, the audit events it wrote are logged."""
    wanted = event_log.wanted(log)
    async with request.app.state.pool.connection() as conn:
        async with conn.transaction():
            await conn.execute(Q["become_webhook_role"])
            mark = await fetch_value(conn, event_log.MARK) if wanted else None
            yield conn
            events = await fetch_all(conn, event_log.WRITTEN, {"mark": mark}) if wanted else []
        event_log.log_events(log, events)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


# --- Twilio ------------------------------------------------------------------------------------------


async def verified_twilio_form(request: Request) -> Any:
    """The POSTed form when X-Twilio-Signature is right for it; else Forbidden (403), or NotConfigured
    (503) when this server cannot verify anything (TWILIO_AUTH_TOKEN or DRUMBEAT_PUBLIC_URL not set).
    DRUMBEAT_PUBLIC_URL's development default counts as not set: Twilio signs the URL it called, which is
    never this machine's own address (a tunnel's, at best)."""
    settings = _settings(request)
    if not settings.twilio_auth_token or not settings.public_url or settings.public_url_defaulted:
        missing = "TWILIO_AUTH_TOKEN" if not settings.twilio_auth_token else "DRUMBEAT_PUBLIC_URL"
        log.error(
            "webhook_not_configured", extra={"missing": missing, "route": request.scope.get("path_template")}
        )
        raise NotConfigured(f"{missing} is not set on this server: Twilio webhooks cannot be verified")
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        raise Forbidden(f"missing {SIGNATURE_HEADER} header")
    form = await request.form()
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    if not RequestValidator(settings.twilio_auth_token).validate(url, form, signature, algorithm):
        log.warning("webhook_bad_signature", extra={"route": request.scope.get("path_template")})
        raise Forbidden(f"invalid {SIGNATURE_HEADER}")
    return form


def _required(form: Any, *names: str) -> str:
    """The first of `names` present and non-empty in the form (Twilio's current name first, then the
    legacy one), else 422 naming the first."""
    for name in names:
        value = form.get(name)
        if isinstance(value, str) and value:
            return value
    raise Invalid("required", names[0])


def _optional(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


@post(
    "/webhooks/twilio/status",
    summary="Twilio message status callback (signed)",
    description="Twilio's StatusCallback for messages the worker sent: `delivered`, `undelivered` and `failed` "
    "update the delivery (an undelivered message with a permanent carrier error counts as a bounce); other "
    "statuses change nothing. Verified with `X-Twilio-Signature` (403 without a valid one). Answers 204.",
    tags=["webhooks"],
    security=NO_AUTH,
    status_code=204,
)
async def twilio_status(request: Request) -> None:
    form = await verified_twilio_form(request)
    message_sid = _required(form, "MessageSid", "SmsSid")
    status = _required(form, "MessageStatus", "SmsStatus")
    async with as_webhook(request) as conn:
        current_status = await fetch_value(
            conn,
            Q["delivery_status"],
            {"message_sid": message_sid, "status": status, "error_code": _optional(form, "ErrorCode")},
        )
    if current_status is None:  # not a message of ours
        log.info("status_unmatched", extra={"provider_message_id": message_sid, "provider_status": status})


@post(
    "/webhooks/twilio/inbound",
    summary="Twilio inbound SMS (signed)",
    description="An SMS sent to one of the workspace's numbers (the sender whose address is `To`, or the "
    "Messaging Service SID). STOP-like keywords opt the contact out of SMS and end its SMS enrollments, "
    "START-like ones opt it back in, HELP changes nothing, anything else is a reply (exit where on_reply). "
    "Verified with `X-Twilio-Signature`. Answers an empty TwiML response (Twilio's Advanced Opt-Out sends "
    "the STOP/START/HELP confirmations).",
    tags=["webhooks"],
    security=NO_AUTH,
    status_code=200,
)
async def twilio_inbound(request: Request) -> Response[str]:
    form = await verified_twilio_form(request)
    params = {
        "to": _required(form, "To"),
        "from": _required(form, "From"),
        "body": form.get("Body") if isinstance(form.get("Body"), str) else "",
        "message_sid": _optional(form, "MessageSid") or _optional(form, "SmsMessageSid"),
    }
    async with as_webhook(request) as conn:
        outcome = await fetch_value(conn, Q["inbound_sms"], params)
        service = _optional(form, "MessagingServiceSid")
        if outcome == "unknown_number" and service:  # the workspace's sender is the Messaging Service
            outcome = await fetch_value(conn, Q["inbound_sms"], params | {"to": service})
    if outcome == "unknown_number":  # nothing written (unknown_contact has its inbound_unmatched event)
        log.info(
            "inbound_unmatched", extra={"outcome": outcome, "provider_message_id": params["message_sid"]}
        )
    return Response(content=EMPTY_TWIML, media_type="text/xml", status_code=200)


# --- Email tracking and unsubscribe ------------------------------------------------------------------


def link_signer(request: Request) -> LinkSigner | None:
    """The signer of tracking and unsubscribe links (None when DRUMBEAT_PUBLIC_URL or DRUMBEAT_SECRET_KEY
    is not set: then no link can be verified)."""
    settings = _settings(request)
    if settings.public_url and settings.secret_key:
        return LinkSigner(settings.public_url, settings.secret_key)
    return None


async def record_engagement(request: Request, delivery_id: str, kind: str, payload: dict[str, Any]) -> str:
    """recorded | duplicate | unknown_delivery (drumbeat.record_delivery_engagement)."""
    async with as_webhook(request) as conn:
        return await fetch_value(
            conn,
            Q["record_delivery_engagement"],
            {"delivery_id": delivery_id, "kind": kind, "payload": Jsonb(payload)},
        )


def location(url: str) -> str:
    """`url` fit for a Location header: a non-ASCII host in IDNA form, every other non-ASCII (or unsafe)
    character percent-encoded as UTF-8. Signed URLs never hold control characters or spaces."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":") if hostport.count(":") == 1 else (hostport, "", "")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = quote(host, safe="")
        netloc = quote(userinfo, safe=_LOCATION_SAFE) + at + host + colon + port
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return f"{parts.scheme}://{netloc}{quote(rest, safe=_LOCATION_SAFE)}"


@get(
    "/t/o/{token:str}",
    summary="Email open pixel",
    description="A 1x1 transparent GIF, never cached. A valid token records `opened` for its delivery's contact, "
    "enrollment and step (once per delivery); any other token gets the same GIF and records nothing.",
    tags=["tracking"],
    security=NO_AUTH,
)
async def open_pixel(request: Request, token: FromPath[str]) -> Response[bytes]:
    signer = link_signer(request)
    delivery_id = signer.verify_open(token) if signer else None
    if delivery_id is not None:
        try:
            await record_engagement(request, delivery_id, "opened", {})
        except Exception:  # an open is not worth a broken image: log it, answer the same GIF
            log.exception("engagement_not_recorded", extra={"delivery_id": delivery_id, "kind": "opened"})
    return Response(content=PIXEL, media_type="image/gif", headers=NO_CACHE)


@get(
    "/t/c/{token:str}",
    summary="Email click redirect",
    description="Redirects (302) to the URL the token was signed for and records `clicked` (once per delivery "
    "and URL). An invalid or altered token is a 404: this never redirects anywhere else.",
    tags=["tracking"],
    security=NO_AUTH,
)
async def click_redirect(request: Request, token: FromPath[str]) -> Response[Any]:
    signer = link_signer(request)
    if signer is None:
        return error_response(503, "not_configured", "tracking links are not configured on this server")
    verified = signer.verify_click(token)
    if verified is None:
        return error_response(404, "not_found", "unknown link")
    delivery_id, url, link_name = verified
    clicked = {"url": url} if link_name is None else {"url": url, "link_name": link_name}
    try:
        await record_engagement(request, delivery_id, "clicked", clicked)
    except Exception:  # the reader still gets where the link points
        log.exception("engagement_not_recorded", extra={"delivery_id": delivery_id, "kind": "clicked"})
    headers = {"Location": location(url), "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return Response(content=b"", status_code=302, headers=headers)


def _page(title: str, body: str, status: int = 200) -> Response[str]:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;"
        "margin:4rem auto;padding:0 1rem;line-height:1.5;color:#222}button{font-size:1rem;padding:.5rem 1rem}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(content=document, media_type=MediaType.HTML, status_code=status, headers=PAGE_HEADERS)


@get(
    "/u/{token:str}",
    summary="Unsubscribe page",
    description="A page offering to unsubscribe, with a button that POSTs back to this URL. Viewing it changes "
    "nothing (link scanners fetch pages). An invalid token is a 404 page.",
    tags=["tracking"],
    security=NO_AUTH,
)
async def unsubscribe_page(request: Request, token: FromPath[str]) -> Response[str]:
    signer = link_signer(request)
    if signer is None or signer.verify_unsubscribe(token) is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid or has been altered.</p>", 404)
    action = html.escape(request.url.path, quote=True)
    return _page(
        "Unsubscribe",
        "<p>Stop receiving these messages?</p>"
        f'<form method="post" action="{action}">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@post(
    "/u/{token:str}",
    summary="Unsubscribe (RFC 8058 one-click, or the page's button)",
    description="Opts the contact out of the channel of the message the link came in (email, for email "
    "links) and ends its live enrollments per the sequences' exit rules. Mail clients POST "
    "`List-Unsubscribe=One-Click` here without showing anything. Repeating it changes nothing. Answers 200 "
    "with a confirmation page; an invalid token is a 404.",
    tags=["tracking"],
    security=NO_AUTH,
    status_code=200,
)
async def unsubscribe(request: Request, token: FromPath[str]) -> Response[Any]:
    signer = link_signer(request)
    if signer is None:
        return error_response(503, "not_configured", "unsubscribe links are not configured on this server")
    delivery_id = signer.verify_unsubscribe(token)
    if delivery_id is None:
        return error_response(404, "not_found", "unknown unsubscribe link")
    form = await request.form()
    source = "one_click" if form.get("List-Unsubscribe") == "One-Click" else "page"
    await record_engagement(request, delivery_id, "unsubscribed", {"source": source})
    return _page("Unsubscribed", "<p>You will not receive these messages any more.</p>")


route_handlers: list = [
    twilio_status,
    twilio_inbound,
    open_pixel,
    click_redirect,
    unsubscribe_page,
    unsubscribe,
]
