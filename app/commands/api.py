"""`drumbeat api`: serve the HTTP API until Ctrl-C."""

from __future__ import annotations

import argparse
import os

from app.commands import EXIT_OK, settings_for

HELP = "serve the HTTP API (OpenAPI docs at /docs) until Ctrl-C"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=os.environ.get("DRUMBEAT_HOST") or "127.0.0.1",
        help="address to listen on (0.0.0.0 for all; default DRUMBEAT_HOST or 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("DRUMBEAT_PORT") or "8000",
        help="TCP port (default 8000, or DRUMBEAT_PORT)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.app import create_app

    settings = settings_for("api")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,  # our logging configuration (app/logs.py), not uvicorn's
        proxy_headers=True,
    )
    return EXIT_OK
