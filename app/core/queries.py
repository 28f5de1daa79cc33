"""Named SQL statements: every statement Python sends lives in sql/queries/*.sql under a
`-- name: x` header (docs/ARCHITECTURE.md conventions), loaded once."""

from __future__ import annotations

import re
from functools import cache

from app.core.sqlfiles import sql_root

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """{name: statement} from a file of named blocks; comments inside a block are kept, blank edges trimmed."""
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries(area: str) -> dict[str, str]:
    """The named statements of sql/queries/<area>.sql."""
    return parse((sql_root() / "queries" / f"{area}.sql").read_text())
