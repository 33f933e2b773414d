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

from typing import TYPE_CHECKING

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


def _citizens_folded(part: pa.Table) -> pa.Table:
    part = part.select(_CITIZEN_COLUMNS)
    return part.append_column("name_fold", fold_key(part["full_name"].combine_chunks()))


def citizen_duplicates(citizens: pa.Table | pa.RecordBatchReader) -> pa.Table:
    """`citizens` a table, or a reader of its rows (the reconciliation reads them from its session a batch at a
    time): each batch is folded and handed to DuckDB, which holds the rows, so Python holds one batch."""
    reader = citizens.to_reader(max_chunksize=200_000) if isinstance(citizens, pa.Table) else citizens
    with session(purpose="dedupe") as con:
        con.register("c0", _citizens_folded(reader.schema.empty_table()))
        con.execute("CREATE TABLE c AS SELECT * FROM c0 WHERE false")
        for batch in reader:
            con.register("c0", _citizens_folded(pa.Table.from_batches([batch])))
            con.execute("INSERT INTO c SELECT * FROM c0 WHERE birth_date IS NOT NULL")
        con.unregister("c0")
        return _clusters(con, "c", "citizen_id",
                         ["name_fold", "birth_date", "birth_date_precision", "sex", "residence_commune_code_2025",
                          "coalesce(household_id, '')"],
                         "legacy_id IS NULL, source_updated_at, citizen_id")


def enterprise_duplicates(enterprises: pa.Table) -> pa.Table:
    with session(purpose="dedupe") as con:
        con.register("e0", enterprises.select(["enterprise_code", "name", "founded_on", "head_office_commune_code_2025",
                                               "source_updated_at"])
                     .append_column("name_fold", fold_key(enterprises["name"].combine_chunks())))
        return _clusters(con, "e0", "enterprise_code",
                         ["name_fold", "founded_on", "coalesce(head_office_commune_code_2025, '')"],
                         "source_updated_at, enterprise_code")


def holder_duplicates(holders: pa.Table) -> pa.Table:
    with session(purpose="dedupe") as con:
        con.register("h0", holders.select(["province_code", "holder_id", "holder_type", "name", "document_number",
                                           "address", "deleted"])
                     .append_column("name_fold", fold_key(holders["name"].combine_chunks())))
        con.execute("""CREATE TABLE h AS SELECT province_code || ':' || holder_id AS holder_key, * FROM h0
                       WHERE NOT coalesce(deleted, false)""")
        return _clusters(con, "h", "holder_key",
                         ["name_fold", "province_code", "holder_type", "coalesce(document_number, 'addr:' || coalesce(address, ''))"],
                         "holder_id")
