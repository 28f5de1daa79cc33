"""The workspace's settings page: its name and time zone, its holidays, its senders (the numbers and
from-addresses steps go out from) and its webhook endpoints with each one's delivery log. Admins change
them; members see them. Every change is the contract function the API calls, as the signed-in user."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from psycopg.types.json import Jsonb

from app.api.webhook_endpoints import checked_url
from app.console.context import ConsoleDep
from app.console.forms import FormErrors, text
from app.console.render import html
from app.core.db import fetch_all, fetch_one, fetch_value
from app.core.errors import DrumbeatError, Invalid
from app.core.queries import queries

WORKSPACES = queries("api_workspaces")
WEBHOOKS = queries("api_webhook_endpoints")


async def settings_page(
    console: ConsoleDep,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
    form: dict[str, Any] | None = None,
    editing: str | None = None,
    secret: str | None = None,
    notice: str | None = None,
) -> Response:
    workspace_id = console.workspace_id
    senders = await fetch_all(console.db, WORKSPACES["list_senders"], {"workspace_id": workspace_id})
    holidays = await fetch_all(console.db, WORKSPACES["list_holidays"], {"workspace_id": workspace_id})
    endpoints: list[dict[str, Any]] = []
    if console.workspace["role"] in ("admin", "owner"):  # the endpoints are admins' only
        rows = await fetch_all(console.db, WEBHOOKS["list_webhook_endpoints"], {"workspace_id": workspace_id})
        endpoints = [row["endpoint"] for row in rows]
    return html(
        "settings.html",
        status=status,
        console=console,
        nav="settings",
        senders=senders,
        holidays=[row["day"] for row in holidays],
        endpoints=endpoints,
        errors=errors or FormErrors(),
        form=form or {},
        editing=editing,
        secret=secret,
        notice=notice or console.request.query_params.get("notice"),
    )


@get("/settings", name="console:settings")
async def settings(console: ConsoleDep) -> Response:
    return await settings_page(console)


async def saved_or_shown(
    console: ConsoleDep, error: DrumbeatError | None, form: dict[str, Any], editing: str, notice: str
) -> Response:
    if error is None:
        return Redirect(f"/console/settings?notice={notice}", status_code=303)
    return await settings_page(
        console, status=error.http_status, errors=FormErrors.of(error), form=form, editing=editing
    )


@post("/settings/workspace", name="console:workspace-settings")
async def change_workspace(console: ConsoleDep) -> Response:
    form = await console.form()
    params = {"id": console.workspace_id, "name": text(form, "name"), "timezone": text(form, "timezone")}
    error = await console.attempt(lambda: fetch_one(console.db, WORKSPACES["update_workspace"], params))
    return await saved_or_shown(console, error, form, "workspace", "Workspace+saved")


@post("/settings/holidays", name="console:holidays")
async def change_holidays(console: ConsoleDep) -> Response:
    """The holiday list, one date (YYYY-MM-DD) per line, replaces the workspace's."""
    form = await console.form()

    async def replace() -> None:
        days = []
        for number, line in enumerate((text(form, "holidays") or "").splitlines(), 1):
            try:
                days.append(dt.date.fromisoformat(line.strip()))
            except ValueError:
                raise Invalid(
                    f"line {number}: {line.strip()!r} is not a date (YYYY-MM-DD)", "holidays"
                ) from None
        await fetch_one(
            console.db, WORKSPACES["set_holidays"], {"workspace_id": console.workspace_id, "dates": days}
        )

    return await saved_or_shown(console, await console.attempt(replace), form, "holidays", "Holidays+saved")


@post("/settings/senders", name="console:add-sender")
async def add_sender(console: ConsoleDep) -> Response:
    form = await console.form()

    async def create() -> None:
        settings = {"name": text(form, "name")}
        if rate := text(form, "rate_per_second"):
            try:
                settings["rate_per_second"] = float(rate)
            except ValueError:
                raise Invalid(f"must be a number, not {rate!r}", "rate_per_second") from None
        params = {
            "workspace_id": console.workspace_id,
            "channel": text(form, "channel"),
            "address": text(form, "address"),
            "settings": Jsonb({k: v for k, v in settings.items() if v}),
        }
        await fetch_value(console.db, WORKSPACES["create_sender"], params)

    return await saved_or_shown(console, await console.attempt(create), form, "sender", "Sender+added")


@post("/settings/webhooks", name="console:add-webhook")
async def add_webhook(console: ConsoleDep) -> Response:
    """A new endpoint for every event type (or the ones listed); its signing secret is shown once."""
    form = await console.form()
    created: dict[str, Any] = {}

    async def create() -> None:
        types = [t.strip() for t in (text(form, "event_types") or "*").replace(",", " ").split() if t.strip()]
        endpoint = {
            "url": await checked_url(console.request, console.db, text(form, "url") or ""),
            "event_types": types,
            "description": text(form, "description") or "",
        }
        params = {"workspace_id": console.workspace_id, "endpoint": Jsonb(endpoint)}
        created.update(await fetch_value(console.db, WEBHOOKS["create_webhook_endpoint"], params))

    error = await console.attempt(create)
    if error is not None:
        return await saved_or_shown(console, error, form, "webhook", "")
    return await settings_page(
        console, secret=created["secret"], notice="Endpoint added: copy its secret now"
    )


@get("/settings/webhooks/{endpoint_id:uuid}", name="console:webhook")
async def webhook_log(console: ConsoleDep, endpoint_id: FromPath[UUID]) -> Response:
    """One endpoint and its latest delivery attempts (status, latency, error, next retry)."""
    endpoint = await fetch_value(console.db, WEBHOOKS["get_webhook_endpoint"], {"endpoint_id": endpoint_id})
    params = {"endpoint_id": endpoint_id, "before": None, "limit": 100}
    attempts = [
        row["delivery"] for row in await fetch_all(console.db, WEBHOOKS["list_webhook_deliveries"], params)
    ]
    return html(
        "webhook.html", console=console, nav="settings", endpoint=endpoint, attempts=attempts, notice=None
    )


route_handlers = [settings, change_workspace, change_holidays, add_sender, add_webhook, webhook_log]
