"""What every signed-in console page stands on: the session, opened and checked; one transaction acting as
the signed-in caller, exactly as an API request does (app/api/deps.py), so RLS decides what a page shows;
the workspace being worked in; and, on every POST, the CSRF token checked before anything is done."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from litestar import Request
from litestar.di import NamedDependency

from app.api.auth import Caller
from app.api.db import act_as
from app.console.session import CSRF_FIELD, Session, Sessions, SignInRequired, same_token
from app.core.db import fetch_all
from app.core.errors import DrumbeatError, Forbidden, Unauthenticated
from app.core.queries import queries

Q = queries("console")


@dataclass
class Console:
    """A signed-in request: its transaction (`db`), who it is, the workspace it works in and the others
    it may switch to, and the CSRF token its forms carry."""

    request: Request
    db: psycopg.AsyncConnection
    caller: Caller
    session: Session
    workspace: dict[str, Any]
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # for the page's Server-Timing header
    _form: dict[str, Any] | None = None

    @property
    def workspace_id(self) -> Any:
        return self.workspace["id"]

    @property
    def csrf(self) -> str:
        return self.session.csrf

    async def form(self) -> dict[str, Any]:
        """The posted form, as one value per field (the last when a field repeats) and `getall` lists."""
        if self._form is None:
            self._form = dict((await self.request.form()).items())
        return self._form

    async def form_list(self, name: str) -> list[str]:
        return [value for value in (await self.request.form()).getall(name, []) if isinstance(value, str)]

    async def attempt(self, action: Callable[[], Awaitable[Any]]) -> DrumbeatError | None:
        """Run `action` in a savepoint: a refusal (a domain error) undoes only what it did and comes back
        to be shown next to its field, while the page itself is still rendered in the same transaction."""
        try:
            async with self.db.transaction():
                await action()
        except DrumbeatError as error:
            return error
        return None


ConsoleDep = NamedDependency[Console]


def sessions(request: Request) -> Sessions:
    return request.app.state.console_sessions


async def provide_console(request: Request) -> AsyncIterator[Console]:
    """The signed-in caller's transaction; commits when the page returns, rolls back when it raises.
    No session, a revoked key or an expired token: SignInRequired (a redirect to the sign-in page)."""
    started = time.perf_counter()
    session = sessions(request).read(request)
    state = request.app.state
    async with state.pool.connection() as conn, conn.transaction():
        try:
            caller = await state.authenticator.caller(conn, f"Bearer {session.credential}")
        except Unauthenticated as error:
            raise SignInRequired(f"signed out: {error.message}") from None
        state.rate_limiter.admit(caller)
        await act_as(conn, caller.claims)
        workspaces = await fetch_all(conn, Q["my_workspaces"])
        if not workspaces:
            raise SignInRequired("this account belongs to no workspace")
        current = next((w for w in workspaces if str(w["id"]) == session.workspace_id), workspaces[0])
        console = Console(request, conn, caller, session, current, workspaces, started)
        if request.method == "POST" and not same_token((await console.form()).get(CSRF_FIELD), session.csrf):
            raise Forbidden(
                "the form is stale or did not come from this console: reload the page and try again"
            )
        yield console


@asynccontextmanager
async def signed_in_transaction(
    request: Request, credential: str
) -> AsyncIterator[tuple[Caller, list[dict]]]:
    """For the sign-in form: the credential checked as the API checks it, and its workspaces."""
    state = request.app.state
    async with state.pool.connection() as conn, conn.transaction():
        caller = await state.authenticator.caller(conn, f"Bearer {credential}")
        await act_as(conn, caller.claims)
        yield caller, await fetch_all(conn, Q["my_workspaces"])
