"""`drumbeat outbox [--limit N] [--workspace ID]`: the latest messages the outbox transport recorded
(DRUMBEAT_TRANSPORT=outbox, the development default: nothing leaves the machine), newest first, with
their status, to and from, subject and text: what a sequence would have sent, read as the operator."""

from __future__ import annotations

import argparse

from app.commands import EXIT_OK, database_url, describe_database_error, fail, workspace_id

HELP = "print the latest messages recorded by the outbox transport (development)"
BODY_LINES = 6  # a long email is cut here: the whole text is in GET /api/v1/messages/{id}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, help="how many messages (default 20, newest first)")
    parser.add_argument("--workspace", type=workspace_id, help="only this workspace's (its id)")


def run(args: argparse.Namespace) -> int:
    import psycopg
    from psycopg.rows import dict_row

    from app.core.queries import queries

    if not 1 <= args.limit <= 1000:
        return fail("outbox", "--limit must be between 1 and 1000", 2)
    try:
        with psycopg.connect(database_url("outbox"), row_factory=dict_row) as conn:
            rows = conn.execute(
                queries("outbox")["latest"], {"limit": args.limit, "workspace_id": args.workspace}
            ).fetchall()
    except psycopg.Error as error:
        return fail("outbox", describe_database_error(error))
    if not rows:
        print("The outbox is empty: nothing was recorded by the outbox transport yet.")
    for row in rows:
        print(message_block(row))
    return EXIT_OK


def message_block(row: dict) -> str:
    """One message as a few readable lines."""
    lines = [
        f"{row['created_at']:%Y-%m-%d %H:%M:%S %Z}  {row['channel']}  {row['status']}  "
        f"{row['sequence_name']} #{row['step_position']}",
        f"  from {row['from_address']} to {row['to_address']}",
    ]
    if row["subject"]:
        lines.append(f"  subject: {row['subject']}")
    text = row["text_body"].splitlines() or [""]
    lines.extend(f"  | {line}" for line in text[:BODY_LINES])
    if len(text) > BODY_LINES:
        lines.append(f"  | ... ({len(text) - BODY_LINES} more lines)")
    return "\n".join(lines) + "\n"
