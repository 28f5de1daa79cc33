"""`drumbeat workspaces create|list`: workspaces, as the operator. A new workspace has no members: give it
an owner key in the same step with --owner-key (what a fresh Docker Compose deployment needs)."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, database_url, describe_database_error, fail

HELP = "create or list workspaces (as the operator)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list}")
    create = actions.add_parser("create", help="create a workspace; prints its id")
    create.add_argument("--name", required=True, help="the workspace's name")
    create.add_argument("--timezone", default="UTC", help="IANA zone for its calendar (default UTC)")
    create.add_argument(
        "--owner-key", action="store_true", help="also create an owner API key and print it once"
    )
    actions.add_parser("list", help="every workspace, with its active sequences and live keys")


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.queries import queries

    statements = queries("workspaces")
    try:
        with psycopg.connect(database_url("workspaces")) as conn:
            if args.action == "create":
                (workspace_id,) = conn.execute(
                    statements["create"], {"name": args.name, "timezone": args.timezone}
                ).fetchone()
                print(f"workspace id: {workspace_id}")
                if args.owner_key:
                    _key_id, token = conn.execute(
                        queries("keys")["issue"],
                        {"workspace_id": workspace_id, "name": "owner (cli)", "role": "owner"},
                    ).fetchone()
                    print(f"owner key:    {token}\n(shown once: store it now; only its hash is kept)")
            else:
                for workspace_id, name, zone, created, active, keys in conn.execute(statements["list"]):
                    print(
                        f"{workspace_id}  {created:%Y-%m-%d}  {zone:<24} {active:>3} active  {keys:>3} keys  {name}"
                    )
    except psycopg.Error as error:
        return fail(f"workspaces {args.action}", describe_database_error(error))
    return EXIT_OK
