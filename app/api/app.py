"""The Litestar application: routes under /api/v1 (authenticated, rate-limited per caller, one transaction
per request acting as the caller), the operator console under /console (app/console), webhooks and operations endpoints outside it, the OpenAPI document at
/docs/openapi.json and its documentation at /docs (Swagger UI from this server's own files, app/api/docs.py).
Request bodies are limited to DRUMBEAT_MAX_BODY_BYTES (413 past it)."""

from __future__ import annotations

import secrets

from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from app.api import (
    contacts,
    enrollments,
    idempotency,
    inbound_email,
    messages,
    ops,
    sequences,
    webhook_endpoints,
    webhooks,
    workspaces,
)
from app.api.access import with_request_context
from app.api.auth import Authenticator
from app.api.db import make_pool
from app.api.deps import provide_db
from app.api.docs import OfflineSwaggerPlugin, docs_router
from app.api.errors import EXCEPTION_HANDLERS, ErrorBody
from app.api.ratelimit import RateLimiter
from app.api.strict_query import refuse_unknown_query, remember_query_parameters
from app.console import console_router
from app.console.session import Sessions
from app.core.settings import Settings

API_VERSION = "1.0.0"
BEARER = {"BearerAuth": []}


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Drumbeat API",
        version=API_VERSION,
        description="Multi-step SMS and email outreach sequences. Authenticate with `Authorization: Bearer <API key or JWT>`. "
        "Each API key (and each JWT user) is rate-limited: past the limit a request is refused with 429 and a "
        "`Retry-After` header (seconds). Request bodies are limited in size (413; 1 MiB unless the operator "
        "changed it).",
        # /docs and /docs/swagger: one page, working offline (app/api/docs.py).
        openapi_router=docs_router(),
        render_plugins=[OfflineSwaggerPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http", scheme="bearer", description="A Drumbeat API key (dbk_...) or a JWT"
                ),
                "InboundBasicAuth": SecurityScheme(
                    type="http",
                    scheme="basic",
                    description="Inbound email only: the workspace id and its inbound secret (dbi_...)",
                ),
            }
        ),
        security=[BEARER],
    )


def create_app(settings: Settings) -> Litestar:
    pool = make_pool(settings.database_url)

    async def open_pool() -> None:
        await pool.open(wait=True, timeout=30)

    async def close_pool() -> None:
        await pool.close()

    api_v1 = Router(
        path="/api/v1",
        route_handlers=idempotency.document_keys(
            [
                *workspaces.route_handlers,
                *sequences.route_handlers,
                *enrollments.route_handlers,
                *contacts.route_handlers,
                *webhook_endpoints.route_handlers,
                *messages.route_handlers,
            ]
        ),
        dependencies={"db": Provide(provide_db)},
        # Unknown query parameters are refused; a POST's Idempotency-Key is noted (its response is stored
        # before the request's transaction commits).
        before_request=before_api_request,
        after_request=idempotency.after_request,
    )
    app = Litestar(
        route_handlers=[
            api_v1,
            console_router(),
            *webhooks.route_handlers,
            *inbound_email.route_handlers,
            *ops.route_handlers,
        ],
        on_startup=[open_pool],
        on_shutdown=[close_pool],
        state=State(
            {
                "pool": pool,
                "settings": settings,
                "authenticator": Authenticator(settings),
                "rate_limiter": RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
                # load_settings always has a key (development keeps one in the data directory); settings
                # made in code may not, and then sessions are sealed with a key of this process's own (they
                # end when it restarts).
                "console_sessions": Sessions(settings.secret_key or secrets.token_bytes(32)),
            }
        ),
        # Litestar counts the bytes it reads, so a body sent without Content-Length (chunked) is cut off
        # at the limit too; a route may set its own (the CSV import does).
        request_max_body_size=settings.max_body_bytes,
        # (a replay is no error: an Idempotency-Key's stored answer, app/api/idempotency.py)
        exception_handlers={**EXCEPTION_HANDLERS, idempotency.Replay: idempotency.on_replay},
        openapi_config=openapi_config(),
        on_app_init=[ops.install],  # the HTTP latency histogram of /metrics
        # Not Litestar's: by default it replaces the root logger's handlers with its own plain-text one,
        # undoing app/core/logs.py (JSON lines, correlation ids). Unexpected errors are logged by
        # app/api/errors.py's handler.
        logging_config=None,
    )
    # Around the whole app, not as route middleware (which only runs for matched routes): request ids
    # and the access line for every request, 404s included (app/api/access.py).
    app.asgi_handler = with_request_context(app.asgi_handler)
    remember_query_parameters(app)
    return app


async def before_api_request(request: Request) -> Response[ErrorBody] | None:
    """Every /api/v1 request, before its dependencies: a 400 for an unknown query parameter (the handler
    does not run), else the idempotency holder."""
    if refused := refuse_unknown_query(request):
        return refused
    await idempotency.before_request(request)
    return None
