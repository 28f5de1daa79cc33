"""What the operator's commands share (`drumbeat import-contacts`, `drumbeat holidays`): a workspace named on
the command line. The operator's connection (DATABASE_URL's login) is a trusted caller that sees every
workspace, so a workspace it cannot find does not exist in this database."""

from __future__ import annotations

import argparse
import uuid

from app.commands import CommandError


def workspace_id(text: str) -> uuid.UUID:
    """argparse type of --workspace: a malformed id is a usage error (exit 2) before anything runs."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a workspace id (a UUID)") from None


def workspace_name(conn, workspace: uuid.UUID) -> str:
    """The workspace's name; CommandError (exit 1) naming the id when this database has no such workspace."""
    from app.core.queries import queries

    row = conn.execute(queries("operator")["workspace_name"], {"workspace_id": workspace}).fetchone()
    if row is None:
        raise CommandError(f"workspace {workspace} not found in this database")
    return row[0]
