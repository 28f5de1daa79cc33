"""Running `drumbeat` as a real process, as an operator would, with a controlled environment: none of
Drumbeat's own variables is inherited from the test run, and the working directory is the test's own
(so no stray .env is read)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.sql.factories import Tenant, new_tenant

DRUMBEAT = str(Path(sys.executable).parent / "drumbeat")
DRUMBEAT_VARIABLES = ("DATABASE_URL", "DRUMBEAT_", "TWILIO_", "SMTP_")


def drumbeat(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`drumbeat ARGS` in `cwd`, with the inherited environment minus Drumbeat's variables, plus `variables`."""
    return subprocess.run(
        [DRUMBEAT, *args],
        cwd=cwd,
        env=drumbeat_environment(**variables),
        capture_output=True,
        text=True,
        timeout=120,
    )


def drumbeat_environment(**variables: str) -> dict[str, str]:
    """The inherited environment minus Drumbeat's variables, plus `variables`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(DRUMBEAT_VARIABLES)} | variables


def committed_tenant(db_url: str, *, active_sequence: bool = False) -> Tenant:
    """A workspace with an sms and an email sender (and an active sms sequence), committed so that a
    `drumbeat` process sees it. The returned tenant's connection is closed."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        if active_sequence:
            tenant.sequence()
        conn.commit()
    return tenant
