"""The `drumbeat` command: one entry point, a subcommand per task (app/commands/), `--help` on each.

Before any command runs, variables from a `.env` file are added to the environment (those already set win)
and logging is configured (JSON lines, or plain text on a terminal: app/core/logs.py)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from app.commands import EXIT_USAGE, CommandError

# Subcommand name -> module in app/commands (HELP, add_arguments, run).
COMMANDS = {
    "up": "up",
    "demo": "demo",
    "doctor": "doctor",
    "migrate": "migrate",
    "worker": "worker",
    "api": "api",
    "workspaces": "workspaces",
    "keys": "keys",
    "senders": "senders",
    "import-contacts": "import_contacts",
    "holidays": "holidays",
    "outbox": "outbox",
    "psql": "psql",
}

EPILOG = """\
Without DATABASE_URL every command uses the embedded Postgres kept in DRUMBEAT_DATA_DIR (default: the
user's data directory), starting it when needed. Exit codes: 0 success, 1 the command failed,
2 usage or configuration error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drumbeat",
        description="Multi-step SMS and email outreach sequences, with Postgres as the engine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"app.commands.{module_name}")
        passes_on = getattr(module, "PASSES_ON_ARGUMENTS", False)
        # A command that hands its arguments on keeps none of its own, -h included (`drumbeat psql -h db`).
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__, add_help=not passes_on)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run, command_name=name, passes_on=passes_on)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.core.logs import configure_logging
    from app.core.settings import ConfigError, load_dotenv

    parser = build_parser()
    # A command that hands its arguments to another program (`drumbeat psql -At -c ...`) takes the ones it
    # does not know; every other command refuses them, as parse_args would.
    args, extra = parser.parse_known_args(argv)
    if extra and not args.passes_on:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra[1:] if extra[:1] == ["--"] else extra
    try:
        load_dotenv()
    except ConfigError as error:
        print(f"drumbeat: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(os.environ.get("DRUMBEAT_LOG_FORMAT"), os.environ.get("DRUMBEAT_LOG_LEVEL"))
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"drumbeat {args.command_name}: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130  # the shell's convention for SIGINT


if __name__ == "__main__":
    sys.exit(main())
