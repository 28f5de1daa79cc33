"""Unknown query parameters are refused (400 naming the parameter), not ignored: `?statuz=active` would
otherwise list everything, and a client would never learn of its typo.

What each endpoint takes is what Litestar itself parses for it (its own parameters and its dependencies',
such as `workspace_id`), read once from the app's routes when it starts."""

from __future__ import annotations

from litestar import Litestar, Request, Response
from litestar.routes import HTTPRoute

from app.api.errors import ErrorBody, error_response

STATE_KEY = "query_parameters"


def remember_query_parameters(app: Litestar) -> None:
    """Note, for every route handler of `app`, the query parameters it takes (app.state)."""
    known: dict[int, frozenset[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler, kwargs_model in route.route_handler_map.values():
                known[id(handler)] = frozenset(p.field_alias for p in kwargs_model.expected_query_params)
    app.state[STATE_KEY] = known


def refuse_unknown_query(request: Request) -> Response[ErrorBody] | None:
    """A 400 naming the first query parameter the endpoint does not take, or None."""
    taken = request.app.state[STATE_KEY].get(id(request.route_handler))
    if taken is None or request.method == "OPTIONS":  # (a CORS preflight carries the real request's query)
        return None
    for name in request.query_params:
        if name not in taken:
            accepted = ", ".join(sorted(taken)) or "none"
            return error_response(
                400, "bad_request", f"unknown query parameter (this endpoint takes: {accepted})", name
            )
    return None
