"""The operator console: server-rendered pages under /console/ in the API's own app, calling the same SQL
functions as the same caller (RLS decides what a page shows), with their assets served from the package
(no CDN, no build step). Sign-in: app/console/signin.py; the session: session.py; pages: sequences.py,
work.py, contacts.py and workspace.py; templates in templates/, the stylesheet and the one small script in
static/."""

from __future__ import annotations

from urllib.parse import quote

from litestar import Request, Response, Router, get
from litestar.di import Provide
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from app.console import contacts, sequences, signin, work, workspace
from app.console.context import provide_console
from app.console.render import STATIC, html
from app.console.session import Sessions, SignInRequired
from app.core.errors import DrumbeatError


@get("/", name="console:home")
async def home() -> Redirect:
    return Redirect(signin.HOME, status_code=303)


def to_sign_in(request: Request, error: SignInRequired) -> Response:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    reason = f"&reason={quote(error.reason)}" if error.reason else ""
    response: Response = Redirect(f"/console/login?next={target}{reason}", status_code=303)
    if error.reason:  # a cookie that no longer works: drop it
        Sessions.end(response)
    return response


def refused(request: Request, error: DrumbeatError) -> Response:
    """A page refused as a whole (an unknown or another tenant's id, a stale form): a page saying why."""
    return html("error.html", status=error.http_status, error=error, console=None)


def console_router() -> Router:
    return Router(
        path="/console",
        route_handlers=[
            home,
            *signin.route_handlers,
            *sequences.route_handlers,
            *work.route_handlers,
            *contacts.route_handlers,
            *workspace.route_handlers,
            create_static_files_router(path="/static", directories=[STATIC], name="console:static"),
        ],
        dependencies={"console": Provide(provide_console)},
        exception_handlers={SignInRequired: to_sign_in, DrumbeatError: refused},
        include_in_schema=False,
    )
