"""The `drumbeat` command."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: export it (postgresql://user@host:5432/dbname) and retry.")
    return url


def cmd_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from app.migrate import MigrationError, migrate

    try:
        names = migrate(_database_url(), dry_run=args.dry_run)
    except MigrationError as error:
        print(f"drumbeat migrate: {error}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.OperationalError as error:
        print(f"drumbeat migrate: cannot reach the database: {error}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    except psycopg.Error as error:
        # A failing migration rolled back as a whole; the message says which statement failed.
        print(f"drumbeat migrate: a migration failed and was rolled back: {error}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    verb = "pending" if args.dry_run else "applied"
    if not names:
        print("Schema is current: nothing to apply.")
    for name in names:
        print(f"{verb}: {name}")
    return EXIT_OK


def _refuse_missing_credentials(settings) -> str | None:
    """In production, a channel that active sequences use must have its provider configured."""
    import psycopg

    from app.queries import queries

    with psycopg.connect(settings.database_url) as conn:
        channels = [row[0] for row in conn.execute(queries("dispatch")["active_channels"])]
    missing = [c for c in channels if not settings.has_credentials(c)]
    variables = {
        "sms": "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        "email": "SMTP_HOST (and SMTP_* as needed)",
    }
    if missing:
        return "; ".join(f"active sequences send {c} but {variables[c]} are not set" for c in missing)
    return None


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from app.settings import ConfigError, load_settings
    from workers.app import build_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"drumbeat worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    if (
        settings.production
        and settings.transport != "outbox"
        and (problem := _refuse_missing_credentials(settings))
    ):
        print(f"drumbeat worker: refusing to start in production: {problem}", file=sys.stderr)
        return EXIT_FAILED
    for channel in ("sms", "email"):
        if settings.transport == "outbox" or not settings.has_credentials(channel):
            print(
                f"*** drumbeat worker: {channel} messages go to the OUTBOX (drumbeat.outbox), NOT to recipients ***",
                file=sys.stderr,
            )
    build_app(settings).run_worker(
        queues=["drumbeat"], concurrency=args.concurrency, install_signal_handlers=True
    )
    return EXIT_OK


def _settings_or_exit(command: str):
    from app.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as error:
        raise SystemExit(f"drumbeat {command}: {error}") from error


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.app import create_app

    settings = _settings_or_exit("api")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", proxy_headers=True)
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, revoke or list API keys as the operator (DATABASE_URL's role is a trusted caller)."""
    import psycopg

    from app.errors import domain_error
    from app.queries import queries

    statements = queries("keys")
    try:
        with psycopg.connect(_database_url()) as conn:
            if args.action == "create":
                key_id, token = conn.execute(
                    statements["issue"],
                    {"workspace_id": args.workspace, "name": args.name, "role": args.role},
                ).fetchone()
                print(f"key id: {key_id}\ntoken:  {token}\n(shown once: store it now; only its hash is kept)")
            elif args.action == "revoke":
                conn.execute(statements["revoke"], {"key_id": args.key_id})
                print(f"revoked: {args.key_id}")
            else:
                for row in conn.execute(statements["list"], {"workspace_id": args.workspace}):
                    key_id, name, prefix, role, created, used, revoked = row
                    state = f"revoked {revoked:%Y-%m-%d}" if revoked else "live"
                    last_used = f"{used:%Y-%m-%d %H:%M}" if used else "never used"
                    print(
                        f"{key_id}  {prefix}  {role:<6}  {state:<18}  {created:%Y-%m-%d}  {last_used:<16}  {name}"
                    )
    except psycopg.Error as error:
        problem = domain_error(error) or error
        print(f"drumbeat keys {args.action}: {problem}".rstrip(), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drumbeat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser(
        "migrate", help="apply pending SQL migrations to DATABASE_URL (each in its own transaction)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="list pending migrations, apply nothing")
    migrate.set_defaults(handler=cmd_migrate)
    worker = commands.add_parser(
        "worker", help="run the dispatcher (procrastinate worker) until SIGTERM / Ctrl-C"
    )
    worker.add_argument(
        "--concurrency", type=int, default=4, help="batches in flight at once in this process"
    )
    worker.set_defaults(handler=cmd_worker)
    api = commands.add_parser("api", help="serve the HTTP API (OpenAPI docs at /docs) until Ctrl-C")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(handler=cmd_api)
    keys = commands.add_parser("keys", help="create, revoke or list API keys (as the operator)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key; prints the token once")
    create.add_argument("--workspace", required=True, help="workspace id")
    create.add_argument("--name", default="cli", help="a label shown in key lists")
    create.add_argument("--role", default="member", choices=["owner", "admin", "member"])
    revoke = key_actions.add_parser("revoke", help="revoke a key by id (it stops working at once)")
    revoke.add_argument("key_id")
    listing = key_actions.add_parser("list", help="a workspace's keys (prefixes, never secrets)")
    listing.add_argument("--workspace", required=True, help="workspace id")
    keys.set_defaults(handler=cmd_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
