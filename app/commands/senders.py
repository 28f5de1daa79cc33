"""`drumbeat senders share|users`: which workspaces send from a number or from-address, as the operator.
A number or address belongs to the workspace that added it first; another workspace may use it (an agency
texting for several brands from one number) only when the operator shares it: a tenant cannot."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, database_url, describe_database_error, fail

HELP = "share a number or from-address with another workspace, or list who uses one (as the operator)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{share,users}")
    share = actions.add_parser(
        "share",
        help="let a workspace send from an address another workspace owns; replies reach it only from "
        "people it texted",
    )
    share.add_argument("--address", required=True, help="E.164 number, Messaging Service SID or from-address")
    share.add_argument("--workspace", required=True, help="id of the workspace to share it with")
    users = actions.add_parser("users", help="the workspaces that send from an address (its owner first)")
    users.add_argument("--address", required=True)


def run(args: argparse.Namespace) -> int:
    import psycopg

    from app.core.queries import queries

    statements = queries("senders")
    try:
        with psycopg.connect(database_url("senders")) as conn:
            if args.action == "share":
                params = {"workspace_id": args.workspace, "address": args.address}
                (sender_id,) = conn.execute(statements["share"], params).fetchone()
                print(f"shared: {args.address} with workspace {args.workspace} (sender {sender_id})")
            else:
                for workspace_id, name, channel, shared, sender_id in conn.execute(
                    statements["users"], {"address": args.address}
                ):
                    print(
                        f"{workspace_id}  {'shared' if shared else 'owner ':<6}  {channel:<5}  {sender_id}  {name}"
                    )
    except psycopg.Error as error:
        return fail(f"senders {args.action}", describe_database_error(error))
    return EXIT_OK
