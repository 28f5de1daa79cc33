"""What the operator's commands read through their own connection (`drumbeat import-contacts`, `drumbeat
holidays`). The operator's connection (DATABASE_URL's login) is a trusted caller that sees every workspace,
so a workspace it cannot find does not exist in this database."""

from __future__ import annotations

import uuid

from app.core.errors import NotFound
from app.core.queries import queries


def workspace_name(conn, workspace: uuid.UUID) -> str:
    """The workspace's name; NotFound naming the id when this database has no such workspace."""
    row = conn.execute(queries("operator")["workspace_name"], {"workspace_id": workspace}).fetchone()
    if row is None:
        raise NotFound(f"workspace {workspace} not found in this database")
    return row[0]
