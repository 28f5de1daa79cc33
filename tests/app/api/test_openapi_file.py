"""docs/openapi.json, the checked-in copy of the OpenAPI document, is the one the API serves at
/docs/openapi.json, and scripts/openapi.py (the command that regenerates it) writes exactly that file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[3]
FILE = REPOSITORY / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python -m scripts.openapi"
SHOWN = 10


def differences(served: Any, checked_in: Any, at: str = "") -> list[str]:
    """Where the two documents differ, as JSON pointers (#/paths/~1api~1v1~1contacts/post), the deepest
    place each time: what the developer must look at."""
    if isinstance(served, dict) and isinstance(checked_in, dict):
        found = []
        for key in sorted(served.keys() | checked_in.keys()):
            here = f"{at}/{key.replace('~', '~0').replace('/', '~1')}"
            if key not in checked_in:
                found.append(f"{here}: served, not in the file")
            elif key not in served:
                found.append(f"{here}: in the file, no longer served")
            else:
                found += differences(served[key], checked_in[key], here)
        return found
    return [] if served == checked_in else [f"{at or '/'}: changed"]


def test_the_checked_in_document_is_the_served_one(client):
    served = client.get("/docs/openapi.json").json()
    checked_in = json.loads(FILE.read_text())
    found = differences(served, checked_in)
    listed = "\n  ".join(f"#{place}" for place in found[:SHOWN])
    more = f"\n  and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    assert not found, (
        f"docs/openapi.json is not the document the API serves; regenerate it from the repository root "
        f"with `{REGENERATE}` and commit it. Differences:\n  {listed}{more}"
    )


def test_the_regenerate_command_writes_exactly_the_checked_in_file():
    """`--check` builds the document as the command would write it and compares the text: formatting and
    key order included, so regenerating an unchanged API leaves no diff."""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.openapi", "--check"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
