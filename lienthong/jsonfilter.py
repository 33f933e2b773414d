"""A row filter (`{column: allowed values}`, schemas/agencies.yaml) applied to the items of a jsonb list: the one
SQL form shared by the agency views (`lienthong.access`, which keep only the passing items of a nested list) and
the session log (`lienthong.sessions`, which asks whether a person's item passes), so both judge an item alike."""

from __future__ import annotations

import json
from typing import Any

from psycopg2 import sql


def item_conditions(rows: dict[str, tuple[Any, ...]], item: str = "_item") -> list[sql.Composable]:
    """The row filter `rows` on the members of a jsonb list item named `item`, compared as JSON (a string
    member matches a string value, a number a number), one condition per column."""
    return [sql.SQL("{} -> {} IN ({})").format(
        sql.Identifier(item), sql.Literal(c),
        sql.SQL(", ").join(sql.SQL("{}::jsonb").format(sql.Literal(json.dumps(v))) for v in values))
        for c, values in rows.items()]
