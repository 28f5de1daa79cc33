"""Operations endpoints, outside /api/v1 and unauthenticated (put /metrics behind the network, not the
internet): liveness (/healthz), readiness (/readyz) and Prometheus metrics (/metrics).

HTTP request latency is measured by a small ASGI middleware that the app installs through Litestar's
on_app_init hook: `Litestar(..., on_app_init=[ops.install])`. Without it /metrics still serves the
database figures, only the HTTP histogram is absent.

Every metric is an aggregate: labels are channel, status, HTTP method, route template (never a concrete
path, so no ids or tokens) and response status. No tenant ids, addresses or secrets."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from functools import cache
from typing import Any

import msgspec
import psycopg
from litestar import Request, Response, get
from litestar.config.app import AppConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg_pool import PoolTimeout

from app.api import examples as ex
from app.api.deps import example_response
from app.api.errors import error_response
from app.core.migrate import not_current, shipped_checksums
from app.core.queries import queries

log = logging.getLogger("drumbeat.ops")
Q = queries("api_ops")
NO_AUTH: list[dict[str, list[str]]] = [{}]
STATE_KEY = "http_metrics"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DUE_CAP = 100_000  # the due backlog is counted up to this (an index walk; beyond it the figure says "a lot")
DB_TIMEOUT_SECONDS = 5.0


class Health(msgspec.Struct):
    status: str


class HeldChannel(msgspec.Struct):
    """A channel the circuit breaker holds (README, "Circuit breaker"): its sends wait for a probe."""

    channel: str
    reason: str
    error_code: str | None
    held_since: str
    next_probe_at: str


class Ready(msgspec.Struct, omit_defaults=True):
    status: str  # ok, or degraded while a channel is held (the API still serves: 200)
    migrations: int
    held_channels: list[HeldChannel] = msgspec.field(default_factory=list)
    held_senders: int = 0


# --- HTTP request latency (in process) ---------------------------------------------------------------


class HttpMetrics:
    """A latency histogram per (method, route template, status), kept in this process (each server
    process reports its own; Prometheus sums them)."""

    def __init__(self, buckets: Iterable[float] = HTTP_BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, str, str], list[float]] = {}  # counts per bucket, then count, sum
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += seconds

    def exposition(self) -> list[str]:
        name = "drumbeat_http_request_duration_seconds"
        lines = [
            f"# HELP {name} Time from request to response, per route template, method and status.",
            f"# TYPE {name} histogram",
        ]
        with self._lock:
            snapshot = sorted((key, list(values)) for key, values in self._series.items())
        for (method, route, status), values in snapshot:
            labels = {"method": method, "route": route, "status": status}
            for bound, count in zip(self.buckets, values, strict=False):
                lines.append(sample(f"{name}_bucket", labels | {"le": number(bound)}, count))
            lines.append(sample(f"{name}_bucket", labels | {"le": "+Inf"}, values[-2]))
            lines.append(sample(f"{name}_count", labels, values[-2]))
            lines.append(sample(f"{name}_sum", labels, values[-1]))
        return lines


def metrics_middleware(registry: HttpMetrics):
    """An ASGI middleware factory timing every HTTP request into `registry`. Litestar runs app-level
    middleware after routing, so the scope carries the matched route's template (`path_template`)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                route = scope.get("path_template") or "unmatched"
                registry.observe(scope["method"], route, status, time.perf_counter() - started)

        return middleware

    return factory


def install(app_config: AppConfig) -> AppConfig:
    """Litestar on_app_init hook: adds the request-latency middleware and its registry (app state
    `http_metrics`, read by /metrics). Wire it with `Litestar(..., on_app_init=[ops.install])`."""
    registry = HttpMetrics()
    app_config.state[STATE_KEY] = registry
    app_config.middleware.append(metrics_middleware(registry))
    return app_config


# --- Prometheus text exposition ----------------------------------------------------------------------


def number(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name: str, labels: dict[str, str], value: float | int | None) -> str:
    if not labels:
        return f"{name} {number(value)}"
    rendered = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{rendered}}} {number(value)}"


def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


async def database_metrics(conn: psycopg.AsyncConnection) -> list[str]:
    """The figures read from the database, as drumbeat_worker in a read-only transaction with a short
    statement timeout. Every query is index-driven and bounded (see sql/queries/api_ops.sql)."""
    await conn.execute(Q["metrics_read_only"])
    await conn.execute(Q["become_ops_role"])
    await conn.execute(Q["metrics_timeout"])
    deliveries = await (await conn.execute(Q["deliveries_last_hour"])).fetchall()
    sending = await (await conn.execute(Q["deliveries_sending"])).fetchone()
    due = await (await conn.execute(Q["due_backlog"], {"cap": DUE_CAP})).fetchone()
    lateness = await (await conn.execute(Q["send_lateness"])).fetchone()
    webhooks = await (await conn.execute(Q["webhooks_due"], {"cap": DUE_CAP})).fetchone()

    lines = family(
        "drumbeat_deliveries_last_hour",
        "gauge",
        "Deliveries claimed in the last hour, by channel and current status.",
        (
            sample("drumbeat_deliveries_last_hour", {"channel": r["channel"], "status": r["status"]}, r["n"])
            for r in deliveries
        ),
    )
    lines += family(
        "drumbeat_deliveries_sending",
        "gauge",
        "Deliveries whose provider call began and is not yet recorded (in flight), any age.",
        [sample("drumbeat_deliveries_sending", {}, sending["n"])],
    )
    lines += family(
        "drumbeat_deliveries_reserved",
        "gauge",
        "Deliveries claimed by a worker and not yet started (they lapse back to the queue within seconds).",
        [sample("drumbeat_deliveries_reserved", {}, sending["reserved"])],
    )
    lines += family(
        "drumbeat_deliveries_sending_oldest_age_seconds",
        "gauge",
        "Age of the oldest in-flight delivery (0 when none); past the lease it becomes unknown.",
        [sample("drumbeat_deliveries_sending_oldest_age_seconds", {}, sending["oldest_age"] or 0)],
    )
    lines += family(
        "drumbeat_due_enrollments",
        "gauge",
        f"Steps due now in active sequences, waiting for a worker (counted up to {DUE_CAP}).",
        [sample("drumbeat_due_enrollments", {}, due["due"])],
    )
    lines += family(
        "drumbeat_due_oldest_age_seconds",
        "gauge",
        "How long the oldest due step has been waiting for a worker (0 when none is due).",
        [sample("drumbeat_due_oldest_age_seconds", {}, max(due["oldest_age"] or 0.0, 0.0))],
    )
    lines += family(
        "drumbeat_webhooks_due",
        "gauge",
        f"Outgoing webhook messages due now, waiting for a worker (counted up to {DUE_CAP}); retries not yet due are not counted.",
        [sample("drumbeat_webhooks_due", {}, webhooks["due"])],
    )
    lines += family(
        "drumbeat_webhooks_due_oldest_age_seconds",
        "gauge",
        "How long the oldest due webhook message of an enabled endpoint has been waiting (0 when none).",
        [sample("drumbeat_webhooks_due_oldest_age_seconds", {}, max(webhooks["oldest_age"] or 0.0, 0.0))],
    )
    lines += family(
        "drumbeat_webhook_endpoints_disabled",
        "gauge",
        "Webhook endpoints switched off (410, refused URL, five days failing, or by a user).",
        [sample("drumbeat_webhook_endpoints_disabled", {}, webhooks["disabled"])],
    )
    name = "drumbeat_send_lateness_seconds"
    buckets = [(key, value) for key, value in lateness.items() if key not in ("count", "sum")]
    lines += family(
        name,
        "histogram",
        "Deliveries claimed in the last hour and sent: sent_at - scheduled_for (the instant the step came due), "
        "i.e. due time to recorded send. A sliding-window snapshot: use histogram_quantile() on it directly, without rate().",
        [
            *(sample(f"{name}_bucket", {"le": number(float(key))}, value) for key, value in buckets),
            sample(f"{name}_bucket", {"le": "+Inf"}, lateness["count"]),
            sample(f"{name}_count", {}, lateness["count"]),
            sample(f"{name}_sum", {}, lateness["sum"]),
        ],
    )
    return lines


# --- Endpoints ---------------------------------------------------------------------------------------


@example_response(ex.HEALTH)
@get("/healthz", summary="Liveness: the process answers", tags=["ops"], security=NO_AUTH)
async def healthz() -> Health:
    return Health(status="ok")


@example_response(ex.READY, shape=Ready)
@get(
    "/readyz",
    summary="Readiness: the database answers and its schema is current",
    description="200 when the database is reachable, every migration and function file this server ships is "
    "applied as shipped (drumbeat_meta.schema_migrations) and the webhook role can be assumed; otherwise 503 "
    "saying why. A channel the circuit breaker holds (refused credentials, provider unreachable) shows as "
    "status `degraded` with `held_channels`: the API still serves (200), the channel's sends wait.",
    tags=["ops"],
    security=NO_AUTH,
)
async def readyz(request: Request) -> Response[Any]:
    shipped = _shipped()
    try:
        applied, holds = await _check_database(request)
    except NotReady as not_ready:
        return error_response(503, "not_ready", str(not_ready))
    if pending := not_current(applied, shipped):
        names = ", ".join(pending)
        return error_response(
            503,
            "not_ready",
            f"{len(pending)} SQL file(s) not applied as shipped: {names} (run `drumbeat migrate`)",
        )
    channels = [
        HeldChannel(
            h["channel"], h["reason"], h["error_code"], h["held_since"].isoformat(), h["probe_at"].isoformat()
        )
        for h in holds
        if h["sender_id"] is None
    ]
    return Response(
        Ready(
            status="degraded" if channels else "ok",
            migrations=sum(name.startswith("migrations/") for name in shipped),
            held_channels=channels,
            held_senders=sum(h["sender_id"] is not None for h in holds),
        )
    )


@cache
def _shipped() -> dict[str, str]:
    """The files do not change under a running server: read and hashed once."""
    return shipped_checksums()


class NotReady(Exception):
    """Why this server should not get traffic yet."""


async def _check_database(request: Request) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The applied SQL files (name -> checksum), once the database answered and the webhook role could be
    assumed; and the circuit breaker's holds."""
    try:
        async with request.app.state.pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
            try:
                rows = await (await conn.execute(Q["applied_migrations"])).fetchall()
            except psycopg.errors.UndefinedTable as error:
                raise NotReady(
                    "drumbeat_meta.schema_migrations does not exist: apply the schema with `drumbeat migrate`"
                ) from error
            except psycopg.errors.InsufficientPrivilege as error:
                raise NotReady(
                    "the API's database role cannot read drumbeat_meta.schema_migrations: grant it USAGE "
                    "on schema drumbeat_meta and SELECT on the table"
                ) from error
            try:
                await conn.execute(Q["become_ops_role"])
            except psycopg.errors.InsufficientPrivilege as error:
                raise NotReady(
                    "the API's database role cannot SET ROLE drumbeat_worker (webhooks and metrics need it): "
                    "make it a member of drumbeat_authenticator (or of drumbeat_worker)"
                ) from error
            holds = await (await conn.execute(Q["channel_holds"])).fetchall()
    except (PoolTimeout, psycopg.OperationalError) as error:
        log.warning("readiness: database unreachable: %s", error)
        raise NotReady("the database is unreachable") from error
    return {row["name"]: row["checksum"] for row in rows}, holds


@get(
    "/metrics",
    summary="Prometheus metrics",
    description="Text exposition format 0.0.4: deliveries in the last hour by channel and status, in-flight "
    "deliveries, the due backlog and its oldest age, send lateness over the last hour (histogram) and HTTP "
    "request latency per route, method and status (histogram, when the app installs the middleware).",
    tags=["ops"],
    security=NO_AUTH,
    media_type=PROMETHEUS_TEXT,
)
async def metrics(request: Request) -> Response[Any]:
    lines: list[str] = []
    try:
        async with request.app.state.pool.connection(timeout=DB_TIMEOUT_SECONDS) as conn, conn.transaction():
            lines += await database_metrics(conn)
        up = 1
    except (PoolTimeout, psycopg.Error) as error:
        log.warning("metrics: database figures unavailable: %s", error)
        up = 0
    lines += family(
        "drumbeat_database_up",
        "gauge",
        "1 when this scrape could read the database figures, else 0.",
        [sample("drumbeat_database_up", {}, up)],
    )
    registry: HttpMetrics | None = request.app.state.get(STATE_KEY)
    if registry is not None:
        lines += registry.exposition()
    return Response(content="\n".join(lines) + "\n", media_type=PROMETHEUS_TEXT)


route_handlers: list = [healthz, readyz, metrics]
