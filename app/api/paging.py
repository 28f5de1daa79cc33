"""Paging shared by every list endpoint: `page` / `page_size` query parameters and the total count."""

from __future__ import annotations

from typing import Annotated, Any

from litestar.params import QueryParameter

from app.api.deps import Db
from app.core.db import fetch_all, fetch_value

MAX_PAGE_SIZE = 500
# The page bound keeps (page - 1) * page_size inside a bigint OFFSET.
Page = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="1-based page number")]
PageSize = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 500)")]


async def paged(db: Db, list_sql: str, count_sql: str, params: dict[str, Any]) -> tuple[list[dict], int]:
    """One page and the total (count_sql, same filters). The count is skipped when the page itself shows
    the total: a partial page that is not past the end."""
    rows = await fetch_all(db, list_sql, params)
    if (rows or params["offset"] == 0) and len(rows) < params["limit"]:
        return rows, params["offset"] + len(rows)
    return rows, await fetch_value(db, count_sql, params)
