"""Paging shared by every list endpoint: `page` / `page_size` query parameters, the total count, and the
one response shape, `Page[T]`: {items, total, page, page_size}."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import KwargDefinition, QueryParameter

from app.api.deps import Db
from app.core.db import fetch_all, fetch_value

T = TypeVar("T")

MAX_PAGE_SIZE = 500
# The page bound keeps (page - 1) * page_size inside a bigint OFFSET.
PageNumber = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="1-based page number")]
PageSize = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 500)")]


class Page(msgspec.Struct, Generic[T]):
    """One page of a list: its items, the total across all pages, the page number and its size."""

    items: list[T]
    total: int
    page: int
    page_size: int


def page_of(item: type) -> Any:
    """`Page[item]` as a response annotation whose OpenAPI component is named `<Item>Page` (ContactPage):
    Litestar would otherwise name it after the module paths (Page_app.api.contacts.Contact_)."""
    return Annotated[Page[item], KwargDefinition(schema_component_key=f"{item.__name__}Page")]


async def paged(db: Db, list_sql: str, count_sql: str, params: dict[str, Any]) -> tuple[list[dict], int]:
    """One page and the total (count_sql, same filters). The count is skipped when the page itself shows
    the total: a partial page that is not past the end."""
    rows = await fetch_all(db, list_sql, params)
    if (rows or params["offset"] == 0) and len(rows) < params["limit"]:
        return rows, params["offset"] + len(rows)
    return rows, await fetch_value(db, count_sql, params)
