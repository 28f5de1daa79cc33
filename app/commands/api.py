"""`drumbeat api`: serve the HTTP API until Ctrl-C."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, add_listen_arguments, settings_for_server

HELP = "serve the HTTP API (OpenAPI docs at /docs) until Ctrl-C"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_listen_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.app import create_app

    settings = settings_for_server("api", args)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,  # our logging configuration (app/core/logs.py), not uvicorn's
        proxy_headers=True,
    )
    return EXIT_OK
