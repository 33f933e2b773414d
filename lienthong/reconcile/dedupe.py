"""Duplicate records inside one source: the same citizen, enterprise or land holder listed twice under
two keys.

Owns the rules that decide two records of one source are the same entity, and which record survives:

- citizens: same folded name, birth date (and its precision), sex, 2025 residence commune and household;
  the survivor is the record that also carries the old CMND (the original registration), then the
  earliest update, then the smallest ID;
- enterprises: same folded name, founding date and head-office commune; the survivor is the earliest
  updated record, then the smallest code;
- land holders: same province, holder type and folded name, and the same document number (or, without
  one, the same address); the survivor is the smallest row id.

Each function returns (record key, cluster key) for every record in a cluster of two or more; the cluster
key is the survivor's key. These are exact rules on standardized values: a typo between two records of
the same source is not merged here (cross-source linkage handles typos).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pyarrow as pa

from lienthong.duck import session
from lienthong.standardize.text import fold_key

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

DUPLICATE_SCHEMA = pa.schema([("record_key", pa.string()), ("survivor_key", pa.string()),
                              ("cluster_size", pa.int64())])


def _clusters(con: DuckDBPyConnection, source: str, key: str, group: list[str], order: str) -> pa.Table:
    cols = ", ".join(group)
    not_null = " AND ".join(f"{g} IS NOT NULL" for g in group[:1])
    return con.execute(f"""
        WITH g AS (
          SELECT {key} AS record_key,
                 first({key} ORDER BY {order}) OVER (PARTITION BY {cols}) AS survivor_key,
                 count(*) OVER (PARTITION BY {cols}) AS cluster_size
          FROM {source} WHERE {not_null}
        )
        SELECT record_key, survivor_key, cluster_size FROM g WHERE cluster_size > 1 ORDER BY survivor_key, record_key
    """).fetch_arrow_table().cast(DUPLICATE_SCHEMA)


_CITIZEN_COLUMNS = ["citizen_id", "legacy_id", "full_name", "birth_date", "birth_date_precision", "sex",
                    "residence_commune_code_2025", "household_id", "source_updated_at"]
# The columns the enterprise and land-holder rules read (the reconciliation reads only these from its session)
DUPLICATE_ENTERPRISE_COLUMNS = ("enterprise_code", "name", "founded_on", "head_office_commune_code_2025",
                                "source_updated_at")
DUPLICATE_HOLDER_COLUMNS = ("province_code", "holder_id", "holder_type", "name", "document_number", "address",
                            "deleted")

Rows: TypeAlias = pa.Table | pa.RecordBatchReader  # a table, or a reader of its batches


def _load_folded(con: DuckDBPyConnection, table: str, rows: Rows, columns: list[str], name: str,
                 where: str = "true") -> None:
    """Table `table` of session `con`: the `columns` of `rows` (a table, or a reader of its batches: the
    reconciliation reads them from its session a batch at a time) with `name` folded as `name_fold`, of the
    rows `where` holds. Each batch is folded and handed to DuckDB, which holds the rows: Python holds one."""
    reader = rows.to_reader(max_chunksize=200_000) if isinstance(rows, pa.Table) else rows

    def folded(part: pa.Table) -> pa.Table:
        part = part.select(columns)
        return part.append_column("name_fold", fold_key(part[name].combine_chunks()))

    con.register("folded_in", folded(reader.schema.empty_table()))
    con.execute(f"CREATE TABLE {table} AS SELECT * FROM folded_in WHERE false")
    for batch in reader:
        con.register("folded_in", folded(pa.Table.from_batches([batch])))
        con.execute(f"INSERT INTO {table} SELECT * FROM folded_in WHERE {where}")
    con.unregister("folded_in")


def citizen_duplicates(citizens: Rows) -> pa.Table:
    """`citizens` a table, or a reader of its rows (`_load_folded`)."""
    with session(purpose="dedupe") as con:
        _load_folded(con, "c", citizens, _CITIZEN_COLUMNS, "full_name", "birth_date IS NOT NULL")
        return _clusters(con, "c", "citizen_id",
                         ["name_fold", "birth_date", "birth_date_precision", "sex", "residence_commune_code_2025",
                          "coalesce(household_id, '')"],
                         "legacy_id IS NULL, source_updated_at, citizen_id")


def enterprise_duplicates(enterprises: Rows) -> pa.Table:
    """`enterprises` a table, or a reader of its rows (`_load_folded`)."""
    with session(purpose="dedupe") as con:
        _load_folded(con, "e", enterprises, list(DUPLICATE_ENTERPRISE_COLUMNS), "name")
        return _clusters(con, "e", "enterprise_code",
                         ["name_fold", "founded_on", "coalesce(head_office_commune_code_2025, '')"],
                         "source_updated_at, enterprise_code")


def holder_duplicates(holders: Rows) -> pa.Table:
    """`holders` a table, or a reader of its rows (`_load_folded`); deleted holders are left out."""
    with session(purpose="dedupe") as con:
        _load_folded(con, "h", holders, list(DUPLICATE_HOLDER_COLUMNS), "name", "NOT coalesce(deleted, false)")
        return _clusters(con, "h", "province_code || ':' || holder_id",
                         ["name_fold", "province_code", "holder_type", "coalesce(document_number, 'addr:' || coalesce(address, ''))"],
                         "holder_id")
