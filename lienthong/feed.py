"""The change feed of a published dataset: the rows that changed from one published version to the next, in
the shape of Delta Lake's change data feed (`_change_type` insert / update_preimage / update_postimage /
delete, `_commit_version`, `_commit_timestamp`), keyed by the dataset's primary key, plus `_seq`, the row's
place in its version's changes (deletes and pre-images before post-images and inserts, by key).

Owns the diff of a new version against the previous one (DuckDB: by primary key, whole rows compared) and the
two PostgreSQL tables that keep the feed, written in the publish transaction so a reader sees a version and
its changes together or neither:

- `published.<dataset>__changes`: the change rows of every version still kept;
- `published.<dataset>__feed`: one row per version whose changes are kept (version, committed_at, change
  rows, contract version). Its first row is where the feed starts: a consumer holding version `s` can follow
  the feed when `first <= s <= current`; older copies start again from a snapshot.

The feed starts (again) at the first version, and when the dataset's columns change (another contract
version): the changes between two column sets are not rows of either. Retention follows the versions kept
(`publish`'s retention): the feed starts at the oldest version still kept.

Applying the feed to a copy at version `s` (delete each delete and pre-image, insert each insert and
post-image, in `(_commit_version, _seq)` order) gives version `m` exactly; with masked columns or a row filter
the same holds for the agency's view of both, since each image is masked and filtered as the view's rows
are (an image outside the filter is simply absent, so a row leaving the filter is a delete for the agency).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.contracts import Contract
from lienthong.duck import session
from lienthong.zones import sql_text

CHANGE_TYPES = ("delete", "update_preimage", "update_postimage", "insert")  # also their order in a version
META_COLUMNS = {"_change_type": "text NOT NULL", "_commit_version": "integer NOT NULL",
                "_commit_timestamp": "timestamptz NOT NULL", "_seq": "bigint NOT NULL"}
CHANGES_SUFFIX, FEED_SUFFIX = "__changes", "__feed"


def changes_table(dataset: str) -> str:
    return dataset + CHANGES_SUFFIX


def feed_table(dataset: str) -> str:
    return dataset + FEED_SUFFIX


# what an agency's schema holds for the feed of a dataset (lienthong.access builds them)
def change_log_view(dataset: str) -> str:
    return dataset + "_change_log"


def window_view(dataset: str) -> str:
    return dataset + "_feed_window"


def agency_function(dataset: str) -> str:
    return dataset + "_changes"


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type.equals(y.type) for x, y in zip(a, b, strict=True))


def diff(previous_folder: Path | None, rows: pa.Table, contract: Contract, version: int,
         committed_at: datetime) -> pa.Table | None:
    """The change rows from the version in `previous_folder` (its Parquet parts) to `rows`: the contract's
    columns and the feed's four. None when there is nothing to compare with (no previous version, or one
    with other columns): the feed starts at `version`."""
    files = sorted(Path(previous_folder).glob("*.parquet")) if previous_folder is not None else []
    if not files or not _same_columns(pq.read_schema(files[0]), rows.schema):
        return None

    def eq(a: str, b: str) -> str:
        return " AND ".join(f'{a}."{k}" = {b}."{k}"' for k in contract.primary_key)

    keys = ", ".join(f'"{k}"' for k in contract.primary_key)
    rank = " ".join(f"WHEN '{t}' THEN {i}" for i, t in enumerate(CHANGE_TYPES))
    with session(purpose="publish-feed") as con:
        con.register("n", rows)
        parts = ", ".join(sql_text(str(f)) for f in files)
        con.execute(f"CREATE TEMP VIEW o AS SELECT * FROM read_parquet([{parts}])")
        con.execute(f"""CREATE TEMP TABLE changed AS SELECT {", ".join(f'o."{k}"' for k in contract.primary_key)}
                        FROM o JOIN n ON {eq("o", "n")} WHERE o IS DISTINCT FROM n""")
        table = con.execute(f"""
            WITH images AS (
                SELECT x.*, 'delete' AS _change_type FROM o x ANTI JOIN n ON {eq("x", "n")}
                UNION ALL
                SELECT x.*, 'update_preimage' FROM o x SEMI JOIN changed c ON {eq("x", "c")}
                UNION ALL
                SELECT x.*, 'update_postimage' FROM n x SEMI JOIN changed c ON {eq("x", "c")}
                UNION ALL
                SELECT x.*, 'insert' FROM n x ANTI JOIN o ON {eq("x", "o")})
            SELECT *, ?::INTEGER AS _commit_version, ?::TIMESTAMPTZ AS _commit_timestamp,
                   row_number() OVER (ORDER BY CASE _change_type {rank} END, {keys})::BIGINT - 1 AS _seq
            FROM images ORDER BY _seq""", [version, committed_at]).fetch_arrow_table()
    schema = rows.schema.append(pa.field("_change_type", pa.string(), nullable=False)).append(
        pa.field("_commit_version", pa.int32(), nullable=False)).append(
        pa.field("_commit_timestamp", pa.timestamp("us", tz="UTC"), nullable=False)).append(
        pa.field("_seq", pa.int64(), nullable=False))
    return table.cast(schema)


def counts(changes: pa.Table | None) -> dict[str, int] | None:
    """{change type: rows} of a version's changes (None: the feed started at this version)."""
    if changes is None:
        return None
    types = changes["_change_type"].to_pylist()
    return {t: types.count(t) for t in CHANGE_TYPES}


def is_kept(cur: Any, dataset: str, schema: str) -> bool:
    """Whether the feed's tables are there (a version can be appended to them)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                (f'"{schema}"."{changes_table(dataset)}"', f'"{schema}"."{feed_table(dataset)}"'))
    return bool(cur.fetchone()[0])


def store(cur: Any, contract: Contract, schema: str, version: int, committed_at: datetime,
          changes: pa.Table | None, copy: Callable[[Any, pa.Table, str], None]) -> None:
    """In the publish transaction: append `version`'s changes to the feed (`copy(cur, table, full name)` loads
    them), or start the feed at `version` when `changes` is None or the feed tables are missing."""
    name = contract.name
    ct, ft = f'"{schema}"."{changes_table(name)}"', f'"{schema}"."{feed_table(name)}"'
    if changes is None or not is_kept(cur, name, schema):
        # the agency views of the old feed go with it (CASCADE); the publish DAG's access task rebuilds them
        cur.execute(f"DROP TABLE IF EXISTS {ct}, {ft} CASCADE")
        cur.execute(contract.postgres_ddl(changes_table(name), schema, extra=META_COLUMNS, primary_key=False))
        cur.execute(f'CREATE INDEX "{changes_table(name)}_version" ON {ct} (_commit_version, _seq)')
        cur.execute(f"""CREATE TABLE {ft} (version integer PRIMARY KEY, committed_at timestamptz NOT NULL,
                        changes bigint NOT NULL, contract_version text NOT NULL)""")
        cur.execute(f"COMMENT ON TABLE {ft} IS %s", (f"{contract.id}: the versions whose changes "
                                                      f"{changes_table(name)} keeps; the first is where the feed starts",))
        cur.execute(f"INSERT INTO {ft} VALUES (%s, %s, 0, %s)", (version, committed_at, contract.version))
        return
    if changes.num_rows:
        copy(cur, changes, ct)
    cur.execute(f"INSERT INTO {ft} VALUES (%s, %s, %s, %s)", (version, committed_at, changes.num_rows,
                                                              contract.version))


def expire(cur: Any, dataset: str, schema: str, oldest_kept: int) -> None:
    """Drop what the feed no longer needs once versions before `oldest_kept` are gone: it then starts at
    `oldest_kept` (or later, if it started later)."""
    ct, ft = f'"{schema}"."{changes_table(dataset)}"', f'"{schema}"."{feed_table(dataset)}"'
    if not is_kept(cur, dataset, schema):
        return
    cur.execute(f"DELETE FROM {ft} WHERE version < %s", (oldest_kept,))
    cur.execute(f"DELETE FROM {ct} WHERE _commit_version <= (SELECT min(version) FROM {ft})")
