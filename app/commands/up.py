"""`drumbeat up`: everything in one process. Starts the embedded Postgres when DATABASE_URL is not set (data
kept in DRUMBEAT_DATA_DIR and reused on the next run), applies pending migrations, then serves the HTTP API
and runs a worker side by side until Ctrl-C / SIGTERM. On a database without workspaces it creates a
default workspace and prints an owner API key for it, once."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.commands import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_listen_arguments,
    fail,
    program,
    settings_for_server,
)

HELP = "run everything (embedded Postgres unless DATABASE_URL, migrations, API + worker) until Ctrl-C"
DEFAULT_WORKSPACE = "Default workspace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_listen_arguments(parser)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="the worker's batches in flight at once (default 4)"
    )


@dataclass(frozen=True)
class FirstRun:
    """The workspace `up` points at, and the key it minted (only on the run that created it)."""

    workspace_id: str
    workspace_name: str
    workspaces: int
    token: str | None = None


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    listener = _listen(args.host, args.port)  # fail fast, before starting anything, when the port is taken
    settings = settings_for_server("up", args)
    applied = _migrate(settings.database_url)
    first_run = _default_workspace(settings.database_url)
    try:
        asyncio.run(
            _serve(settings, listener, args, lambda: _banner(settings, args, first_run, applied, started))
        )
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return fail("up", "stopped before in-flight work finished (interrupted twice)")
    return EXIT_OK


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now so a port in use is a clear error, not a traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CommandError(
            f"cannot listen on {host}:{port}: {error.strerror} (pick another with --port)"
        ) from None
    return sock


def _migrate(database_url: str) -> list[str]:
    import psycopg

    from app.core.migrate import MigrationError, migrate

    try:
        return migrate(database_url)
    except MigrationError as error:
        raise CommandError(str(error)) from error
    except psycopg.OperationalError as error:
        raise CommandError(f"cannot reach the database: {error}") from error
    except psycopg.Error as error:
        raise CommandError(f"a migration failed and was rolled back: {error}") from error


def _default_workspace(database_url: str) -> FirstRun:
    """The oldest workspace; on a database with none, a new default workspace and an owner key for it."""
    import psycopg

    from app.core.queries import queries

    statements = queries("up")
    with psycopg.connect(database_url) as conn:
        conn.execute(statements["lock_first_run"])
        if row := conn.execute(statements["first_workspace"]).fetchone():
            return FirstRun(str(row[0]), row[1], row[2])
        (workspace_id,) = conn.execute(
            statements["create_workspace"], {"name": DEFAULT_WORKSPACE, "timezone": _local_timezone()}
        ).fetchone()
        _key_id, token = conn.execute(
            queries("keys")["issue"],
            {"workspace_id": workspace_id, "name": "drumbeat up (first run)", "role": "owner"},
        ).fetchone()
    return FirstRun(str(workspace_id), DEFAULT_WORKSPACE, 1, token)


def _local_timezone() -> str:
    """This machine's IANA zone (from /etc/localtime's link), for the default workspace; else UTC."""
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1].removeprefix("posix/")
    return "UTC"


async def _serve(settings, listener: socket.socket, args: argparse.Namespace, on_ready) -> None:
    """The API and a worker in this event loop until SIGINT/SIGTERM: then the API stops taking requests
    and the worker finishes the batches it holds (procrastinate stops gracefully on cancel)."""
    server = _api_server(settings, args)
    from workers.app import run_beside

    worker = asyncio.create_task(run_beside(settings, args.concurrency), name="worker")
    api = asyncio.create_task(server.serve(sockets=[listener]), name="api")

    def stop() -> None:
        server.should_exit = True
        # Cancel once: procrastinate answers the first cancel by finishing the batches it holds; a second
        # cancel would interrupt that wait and abandon them mid-send.
        if not worker.cancelling():
            worker.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    while not server.started and not api.done() and not worker.done():
        await asyncio.sleep(0.05)
    if server.started:
        on_ready()
    await asyncio.wait({api, worker}, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one side ended on its own (a crash): stop the other
    results = await asyncio.gather(api, worker, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise CommandError(f"stopped after an error: {result!r}", EXIT_FAILED) from result
    print("Drumbeat stopped.", file=sys.stderr)


def _api_server(settings, args: argparse.Namespace):
    import uvicorn

    from app.api.app import create_app

    class Server(uvicorn.Server):
        """uvicorn, minus its signal handling: _serve owns SIGINT/SIGTERM for the API and the worker."""

        @contextlib.contextmanager
        def capture_signals(self):
            yield

    config = uvicorn.Config(
        create_app(settings), host=args.host, port=args.port, log_config=None, proxy_headers=True
    )
    return Server(config)


def _banner(
    settings, args: argparse.Namespace, first_run: FirstRun, applied: list[str], started: float
) -> None:
    from app.core.embedded import describe
    from app.core.migrate import describe_applied
    from app.core.settings import local_server_url

    base = local_server_url(args.host, args.port)
    lines = [
        f"Drumbeat is up (ready in {time.monotonic() - started:.1f} s)",
        f"  database   {describe(settings.database_url)}"
        + (f" (applied: {describe_applied(applied)})" if applied else ""),
        f"  console    {base}/console/  (sign in with the API key)",
        f"  API        {base}/api/v1",
        f"  docs       {base}/docs",
        f"  health     {base}/healthz",
        f"  workspace  {first_run.workspace_name}  {first_run.workspace_id}",
    ]
    if first_run.token:
        lines += [
            f"  API key    {first_run.token}",
            "             (owner key, shown once: store it now; only its hash is kept)",
            f'  try        curl -H "Authorization: Bearer {first_run.token}" {base}/api/v1/workspaces',
        ]
    else:
        # A command that runs as printed, even when `drumbeat` is not on PATH (after scripts/run).
        create = f"{program()} keys create --workspace {first_run.workspace_id} --role admin"
        lines.append(f"  API key    {create}")
    lines += [f"  sending    {_describe_sending(settings)}", "Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)


def _describe_sending(settings) -> str:
    """Which channels reach recipients: the outbox stands in for a provider without credentials."""
    parts = []
    for channel, provider in (("sms", "Twilio"), ("email", "SMTP")):
        real = settings.transport != "outbox" and settings.has_credentials(channel)
        parts.append(f"{channel} via {provider}" if real else f"{channel} to the OUTBOX (nothing is sent)")
    return ", ".join(parts)
