"""`drumbeat keys create|revoke|list`: API keys, as the operator (the database login is a trusted caller)."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, database_url, describe_database_error, fail

HELP = "create, revoke or list API keys (as the operator)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{create,revoke,list}")
    create = actions.add_parser("create", help="create a key; prints the token once")
    create.add_argument("--workspace", required=True, help="workspace id")
    create.add_argument("--name", default="cli", help="a label shown in key lists")
    create.add_argument("--role", default="member", choices=["owner", "admin", "member"])
    revoke = actions.add_parser("revoke", help="revoke a key by id (it stops working at once)")
    revoke.add_argument("key_id")
    listing = actions.add_parser("list", help="a workspace's keys (prefixes, never secrets)")
    listing.add_argument("--workspace", required=True, help="workspace id")


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.queries import queries

    statements = queries("keys")
    try:
        with psycopg.connect(database_url("keys")) as conn:
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
                    print(_key_line(*row))
    except psycopg.Error as error:
        return fail(f"keys {args.action}", describe_database_error(error))
    return EXIT_OK


def _key_line(key_id, name, prefix, role, created, used, revoked) -> str:
    state = f"revoked {revoked:%Y-%m-%d}" if revoked else "live"
    last_used = f"{used:%Y-%m-%d %H:%M}" if used else "never used"
    return f"{key_id}  {prefix}  {role:<6}  {state:<18}  {created:%Y-%m-%d}  {last_used:<16}  {name}"
