"""The README's run command (`scripts/run`) as a newcomer runs it: no DATABASE_URL, no Postgres to use, no
provider credentials, the embedded server's data in a directory of the test's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

RUN_COMMAND = str(Path(__file__).resolve().parents[2] / "scripts" / "run")


def environment(data_dir: Path, **variables: str) -> dict[str, str]:
    """The inherited environment minus every database, Drumbeat and provider variable, plus `variables`."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name != "DATABASE_URL" and not name.startswith(("DRUMBEAT_", "TWILIO_", "SMTP_", "PG"))
    }
    return inherited | {
        "DRUMBEAT_VENV": sys.prefix,  # the test's own environment: scripts/run would otherwise fill .venv
        "DRUMBEAT_DATA_DIR": str(data_dir),
        **variables,
    }
