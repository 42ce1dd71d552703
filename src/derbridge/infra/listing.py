"""Read-side helpers for the APIs: keyset pages and single rows from a table, as plain dicts.

Listings page by the table's key in ascending order (``WHERE key > :after ORDER BY key LIMIT n``): stable
under concurrent inserts and as fast on the millionth page as on the first, unlike OFFSET.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.errors import FieldError, Invalid, not_found
from derbridge.infra.web import MAX_BIGINT, PageParams

RowDict = dict[str, Any]


def _cursor_value(table: Table, key: str, after: str) -> Any:
    python_type = table.c[key].type.python_type
    if python_type is int:
        try:
            value = int(after)
        except ValueError:
            value = None
        # Outside BIGINT no row can follow it, and the database would fail on it (PostgreSQL: out of
        # range; SQLite: OverflowError): it is no cursor this listing returned.
        if value is None or not -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
            raise Invalid(
                "validation-error",
                "The request is not valid",
                "The cursor is not one this listing returned; pass next_after unchanged.",
                errors=[FieldError(field="query.after", message="must be a whole number for this listing")],
            )
        return value
    return after


async def list_page(
    connection: AsyncConnection,
    table: Table,
    key: str,
    page: PageParams,
    filters: Mapping[str, Any] | None = None,
    *,
    where: list[ColumnElement[bool]] | None = None,
    query: Select[Any] | None = None,
) -> tuple[list[RowDict], str | None]:
    """One page of ``table`` ordered by ``key``, with equality ``filters`` (None values are ignored)."""
    statement = query if query is not None else select(table)
    key_column = table.c[key]
    for column, value in (filters or {}).items():
        if value is not None:
            statement = statement.where(table.c[column] == value)
    for condition in where or []:
        statement = statement.where(condition)
    if page.after is not None:
        statement = statement.where(key_column > _cursor_value(table, key, page.after))
    statement = statement.order_by(key_column).limit(page.limit + 1)
    rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        return rows, str(rows[-1][key])
    return rows, None


async def get_one(connection: AsyncConnection, table: Table, key: str, value: Any, what: str) -> RowDict:
    """The row of ``table`` whose ``key`` is ``value``, or a 404 problem naming ``what``."""
    row = (await connection.execute(select(table).where(table.c[key] == value))).mappings().first()
    if row is None:
        raise not_found(what, str(value))
    return dict(row)
