"""A list of ids or keys as **one** parameter of a set-based statement: an array on PostgreSQL
(``= ANY(:ids)``), a JSON array on SQLite (``IN (SELECT value FROM json_each(:ids))``). No ``IN`` list of
thousands of bound parameters to compile, bind and plan, no chunking under SQLite's parameter limit.

Its own module (re-exported by :mod:`derbridge.infra.columnar`) because it needs only SQLAlchemy: the bridge's
tracker uses it, and a CLI command reading the bridge's counts must not load pyarrow for it.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam, false, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

_ARRAY_TYPES: Final[dict[str, Any]] = {"int": BigInteger(), "str": String()}


def id_list(
    connection: AsyncConnection, column: ColumnElement[Any], values: list[Any], name: str
) -> ColumnElement[bool]:
    """``column`` is one of ``values`` (ints or strings), bound as one parameter named ``name``."""
    if not values:
        return false()
    kind = "int" if isinstance(values[0], int) else "str"
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(name, values, type_=ARRAY(_ARRAY_TYPES[kind])))
    each = func.json_each(bindparam(name, json.dumps(values), type_=String())).table_valued("value")
    return column.in_(select(each.c.value))
