"""Signing in and out of the console, and switching workspace. The sign-in form takes an API key (field
`api_key`) or a Supabase JWT (field `access_token`); either is checked exactly as the API checks a bearer
token, then kept in the sealed session cookie (app/console/session.py)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect

from app.console.context import ConsoleDep, sessions, signed_in_transaction
from app.console.forms import text
from app.console.render import html
from app.console.session import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    LOGIN_SECONDS,
    cookie,
    new_login_token,
    same_token,
)
from app.core.errors import Unauthenticated

HOME = "/console/sequences"


def safe_next(value: Any) -> str:
    """Where to go after signing in: a console page only (never another site: no open redirect)."""
    if isinstance(value, str) and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return HOME


def login_form(
    request: Request, *, error: str | None = None, status: int = 200, reason: str | None = None
) -> Response:
    token = new_login_token()
    response = html(
        "login.html",
        status=status,
        csrf=token,
        error=error,
        reason=reason,
        next=safe_next(request.query_params.get("next")),
        CSRF_FIELD=CSRF_FIELD,
    )
    response.set_cookie(cookie(request, LOGIN_CSRF_COOKIE, token, LOGIN_SECONDS))
    return response


@get("/login", name="console:login")
async def login_page(request: Request, reason: FromQuery[str | None] = None) -> Response:
    return login_form(request, reason=reason)


@post("/login", name="console:sign-in")
async def sign_in(request: Request) -> Response:
    form = dict((await request.form()).items())
    if not same_token(form.get(CSRF_FIELD), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return login_form(request, error="the sign-in form expired: try again", status=403)
    credential = text(form, "api_key") or text(form, "access_token")
    if credential is None:
        return login_form(request, error="enter an API key (dbk_...) or a Supabase access token", status=422)
    try:
        async with signed_in_transaction(request, credential) as (_, workspaces):
            pass
    except Unauthenticated as error:
        return login_form(request, error=error.message, status=401)
    if not workspaces:
        return login_form(request, error="this account belongs to no workspace yet", status=403)
    response: Response = Redirect(safe_next(form.get("next")), status_code=303)
    sessions(request).start(response, request, credential, str(workspaces[0]["id"]))
    return response


@post("/logout", name="console:sign-out")
async def sign_out(console: ConsoleDep) -> Response:
    response: Response = Redirect("/console/login?reason=Signed+out", status_code=303)
    sessions(console.request).end(response)
    return response


@post("/workspace", name="console:switch-workspace")
async def switch_workspace(console: ConsoleDep) -> Response:
    chosen = text(await console.form(), "workspace_id")
    if not any(str(w["id"]) == chosen for w in console.workspaces):
        chosen = str(console.workspace_id)
    response: Response = Redirect(HOME, status_code=303)
    sessions(console.request).switch_workspace(response, console.request, console.session, chosen)
    return response


route_handlers = [login_page, sign_in, sign_out, switch_workspace]
