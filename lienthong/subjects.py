"""Whose personal data a published row holds: the data subjects of a dataset, as an agency's grant lets it see them.

The places a dataset holds persons are read from the published contracts, never from dataset names
(`lienthong.sessions.person_columns`: columns and item members marked `identifies: person`, e.g.
citizen_profile.citizen_id, enterprise_profile.representatives[].citizen_id, parcel_register.holders[].person_key,
the 12-digit ID of the person's surviving registry record). A nested column the agency's grant hides shares no
one's data with it; a row filter (`DatasetGrant.rows`) and a filter carried into a nested list
(`DatasetGrant.nested_rows`) leave out what the agency's view leaves out. Pseudonymized columns still count:
pseudonymized data are personal data (Law 91/2025/QH15 Art. 2(1) excludes only de-identified data).

Used by the lookup service to record, with each answer, the persons it concerned (`subjects` in the access
log), so that a citizen's usage history lists the lookups of enterprises and parcels that showed their data,
not only the lookups by their own ID.
"""

from __future__ import annotations

import json

from psycopg import sql

from lienthong.access import DatasetGrant
from lienthong.contracts import Contract
from lienthong.sessions import PersonColumns, person_columns


def readable_person_columns(contract: Contract, grant: DatasetGrant) -> PersonColumns:
    """The places of `contract` holding persons (`lienthong.sessions.person_columns`) that `grant` shows: a row
    of persons always (any column of it is the person's data), a nested list unless hidden."""
    cols = person_columns(contract)
    return PersonColumns(cols.top, {c: m for c, m in cols.nested.items() if grant.columns.get(c, "hidden") != "hidden"})


def _filter(rows: dict[str, tuple], alias: str | None, json_item: str | None = None) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for col, values in rows.items():
        if json_item is None:
            target: sql.Composable = sql.Identifier(alias, col) if alias else sql.Identifier(col)
            out.append(sql.SQL("{} = ANY({})").format(target, sql.Literal(list(values))))
        else:  # compare as JSON, as the agency's view does (lienthong.jsonfilter; psycopg 3 here, so not shared)
            out.append(sql.SQL("({}->{}) IN ({})").format(sql.Identifier(json_item), sql.Literal(col), sql.SQL(", ").join(
                sql.SQL("{}::jsonb").format(sql.Literal(json.dumps(v))) for v in values)))
    return out


def subjects_query(relation: sql.Composable, contract: Contract, grant: DatasetGrant,
                   where: sql.Composable) -> sql.Composed | None:
    """A statement listing the distinct person IDs in the rows of `relation` (a published table or view) that
    satisfy `where` and the grant's row filter, as the agency can see them; None when the grant shows no
    person. `where` may hold `%s` placeholders: it appears once in the statement, so the caller's parameters
    are those of `where`."""
    cols = readable_person_columns(contract, grant)
    if not cols:
        return None
    rows = sql.SQL("SELECT * FROM {r} t WHERE {w}").format(
        r=relation, w=sql.SQL(" AND ").join([where, *_filter(grant.rows, "t")]))
    parts: list[sql.Composable] = []
    for key in cols.top:
        parts.append(sql.SQL("SELECT t.{k}::text AS subject FROM _rows t").format(k=sql.Identifier(key)))
    for column, members in cols.nested.items():
        item_filter = _filter(grant.nested_rows.get(column, {}), None, json_item="_item")
        for key in members:
            parts.append(sql.SQL(
                "SELECT _item->>{k} AS subject FROM _rows t CROSS JOIN LATERAL jsonb_array_elements("
                "CASE WHEN jsonb_typeof(t.{c}) = 'array' THEN t.{c} ELSE '[]'::jsonb END) AS _items(_item){f}").format(
                k=sql.Literal(key), c=sql.Identifier(column),
                f=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(item_filter) if item_filter else sql.SQL("")))
    # the rows are selected once (the caller's parameters appear once), then each place a person can be
    return sql.SQL("WITH _rows AS MATERIALIZED ({}) SELECT DISTINCT subject FROM ({}) s WHERE subject IS NOT NULL "
                   "ORDER BY subject").format(rows, sql.SQL(" UNION ALL ").join(parts))
