"""Write docs/openapi.json: the OpenAPI document the API serves at /docs/openapi.json, checked in so that
client authors and reviewers can read the API (and see it change in a diff) without running it.
tests/app/api/test_openapi_file.py fails when the served document and the file differ.

Run it from the repository root after changing the API: `.venv/bin/python -m scripts.openapi`
(`--check`: only say whether the file is current; exit 1 when it is not). No database is needed: the
document is built from the routes alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from litestar.serialization import encode_json

from app.api.app import create_app
from app.core.settings import Settings

FILE = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
COMMAND = ".venv/bin/python -m scripts.openapi"


def document() -> dict:
    """The document as the API serves it (the same encoder turns examples' UUIDs and dates into text)."""
    # The pool is only created, never opened: building the document reaches no database.
    app = create_app(Settings(database_url="postgresql://unused"))
    return json.loads(encode_json(app.openapi_schema.to_schema()))


def text(spec: dict) -> str:
    """Indented, keys sorted: a route with two paths lists them in set order, which changes from one run to
    the next, so only sorted keys give the same file every time (and a diff shows only real changes)."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not current")
    args = parser.parse_args(argv)
    current = text(document())
    if args.check:
        if FILE.exists() and FILE.read_text() == current:
            print(f"{FILE} is current")
            return 0
        print(f"{FILE} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1
    FILE.write_text(current)
    print(f"wrote {FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
