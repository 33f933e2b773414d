"""The staged and quarantine zones as Delta Lake tables (delta-rs through the `deltalake` package).

One table per dataset and zone (`<zone dir>/<dataset>/`, `_delta_log/` inside): every staging run commits
its change atomically (a MERGE on the row's merge key: insert, update, delete in one commit), every commit
is a version readers can pin, old versions stay readable until `vacuum` removes their files after the
retention setting. Nothing is copied per run: disk per run is the files the change rewrites.

A pinned version is written `<table dir>@v<N>` (the time-travel syntax Databricks SQL uses): that string is
what the ledger keeps as a stage run's `staged_path` and what the next steps read, so a reader always sees
exactly the version that was validated, whatever has been committed since. `read_table` also reads a plain
Parquet file (the per-run copies earlier releases wrote and older ledger rows still name).

DuckDB reads a version through delta-rs' Arrow dataset (`dataset(ref)`), so the SQL stays DuckDB's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

if TYPE_CHECKING:
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

_REF = re.compile(r"^(?P<path>.+)@v(?P<version>[0-9]+)$")
OP = "_op"  # the merge source's column saying what a row does: 'upsert' or 'delete' (not stored)


def ref(path: str | Path, version: int) -> str:
    """The reference to version `version` of the table at `path`."""
    return f"{path}@v{version}"


def split_ref(reference: str | Path) -> tuple[str, int | None]:
    """(table dir or file, version or None) of a reference."""
    m = _REF.match(str(reference))
    return (m["path"], int(m["version"])) if m else (str(reference), None)


def is_table(path: str | Path) -> bool:
    return (Path(split_ref(path)[0]) / "_delta_log").is_dir()


def open_table(reference: str | Path) -> DeltaTable:
    """The Delta table a reference names, at its pinned version (the newest when none is given)."""
    from deltalake import DeltaTable

    path, version = split_ref(reference)
    return DeltaTable(path, version=version)


def readable(reference: str | Path) -> bool:
    """Whether the table version a reference names can still be read (not vacuumed, not removed): a state
    compares against a base only when it is."""
    try:
        open_table(reference)
        return True
    except Exception:  # a vacuumed version, a removed table: nothing to compare against
        return False


def table_id(reference: str | Path) -> str | None:
    """The Delta table id behind a reference (a table made again at the same path has another id); None when
    it names no table or a version that cannot be read any more (vacuumed, removed)."""
    if not is_table(reference):
        return None
    try:
        return str(open_table(reference).metadata().id)
    except Exception:  # a vacuumed version, a removed table (as `readable`)
        return None


def version(path: str | Path) -> int | None:
    """The newest committed version of the table at `path` (None when there is no table)."""
    return open_table(split_ref(path)[0]).version() if is_table(path) else None


def dataset(reference: str | Path) -> pads.Dataset:
    """An Arrow dataset over a table version (or a Parquet file): DuckDB scans it with filters pushed down."""
    if is_table(reference):
        return open_table(reference).to_pyarrow_dataset()
    import pyarrow.dataset as pads

    return pads.dataset(split_ref(reference)[0], format="parquet")


def register(con: Any, name: str, reference: str | Path) -> None:
    """Make a table version (or a Parquet file) readable in DuckDB session `con` as view `name`.

    DuckDB reads the version's own Parquet files with its native reader (filters and projections pushed
    down, streamed within the session's memory limit); the partition folders give the partition columns.
    Not through the Arrow dataset: delta-rs' MERGE writes text columns as Arrow `string_view`, and Arrow's
    dataset scan cannot compare those with the table schema's `string` when DuckDB pushes a filter into it."""
    if not is_table(reference):
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({sql_text(split_ref(reference)[0])})")
        return
    table = open_table(reference)
    files = table.file_uris()
    if not files:  # an empty version: its schema, no rows
        con.register(name + "__empty", table.to_pyarrow_dataset().schema.empty_table())
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}__empty")
        return
    partitions = table.metadata().partition_columns
    listed = "[" + ", ".join(sql_text(f) for f in files) + "]"
    hive = ", hive_partitioning = true, hive_types_autocast = false" if partitions else ", hive_partitioning = false"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({listed}, union_by_name = true{hive})")


def sql_text(text: str | Path) -> str:
    """A text (a path, a run id) as an SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def read_table(reference: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A table version (or a Parquet file) as one Arrow table; `columns` limits what is read."""
    return dataset(reference).to_table(columns=columns)


def schema(reference: str | Path) -> pa.Schema:
    return dataset(reference).schema


@dataclass(frozen=True)
class Commit:
    """What one commit did: the version it made (None when there was nothing to write) and its row counts."""

    version: int | None
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def _properties(run_id: str, metadata: dict[str, str] | None) -> Any:
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata={"lienthong.run_id": run_id, **(metadata or {})})


def _write(path: str | Path, rows: pa.Table | pa.RecordBatchReader, mode: Literal["overwrite", "append"], *,
           run_id: str, partition_by: list[str] | None, metadata: dict[str, str] | None) -> Commit:
    from deltalake import write_deltalake

    Path(path).mkdir(parents=True, exist_ok=True)
    schema_mode: Literal["overwrite"] | None = "overwrite" if mode == "overwrite" else None
    write_deltalake(str(path), rows, mode=mode, schema_mode=schema_mode, partition_by=partition_by or None,
                    commit_properties=_properties(run_id, metadata))
    return Commit(version(path), inserted=rows.num_rows if isinstance(rows, pa.Table) else 0)


def create(path: str | Path, rows: pa.Table | pa.RecordBatchReader, *, run_id: str,
           partition_by: list[str] | None = None, metadata: dict[str, str] | None = None) -> Commit:
    """Create the table at `path` holding `rows` (or replace what a table there holds, in one commit). A
    reader's batches are written as they come (never held at once); its commit counts no rows."""
    return _write(path, rows, "overwrite", run_id=run_id, partition_by=partition_by, metadata=metadata)


def append(path: str | Path, rows: pa.Table, *, run_id: str, partition_by: list[str] | None = None,
           metadata: dict[str, str] | None = None) -> Commit:
    """Add `rows` to the table at `path` in one commit (rows whose keys the table does not hold yet)."""
    return _write(path, rows, "append", run_id=run_id, partition_by=partition_by, metadata=metadata)


def _newest(path: str | Path, name: str) -> str | None:
    """The value of commit property `name` in the table's newest commit (of the last 50) that sets it."""
    for commit in open_table(split_ref(path)[0]).history(50):
        if commit.get(name):
            return str(commit[name])
    return None


def last_mode(path: str | Path) -> str | None:
    """The `lienthong.mode` of the table's newest commit that names one (maintenance commits name theirs as
    `lienthong.maintenance` and are skipped)."""
    return _newest(path, "lienthong.mode")


def merge(path: str | Path, rows: pa.Table, *, key: str, run_id: str, partition_by: list[str] | None = None,
          metadata: dict[str, str] | None = None) -> Commit:
    """Apply `rows` to the table at `path` in ONE commit, matched on column `key`: a row whose `_op` is
    'upsert' replaces the row with its key or is inserted, one whose `_op` is 'delete' removes it. Creates the
    table from the upserts when there is none. `rows` carries the table's columns plus `_op`."""
    if rows.num_rows == 0:
        return Commit(version(path))
    if not is_table(path):
        upserts = rows.filter(pa.compute.equal(rows[OP], "upsert")).drop_columns([OP])
        return create(path, upserts, run_id=run_id, partition_by=partition_by, metadata=metadata)
    stats = (
        open_table(path).merge(rows, _match(key, partition_by), source_alias="s", target_alias="t",
                               commit_properties=_properties(run_id, metadata))
        .when_matched_delete(f"s.{OP} = 'delete'")
        .when_matched_update_all(f"s.{OP} = 'upsert'", except_cols=[OP])
        .when_not_matched_insert_all(f"s.{OP} = 'upsert'", except_cols=[OP])
        .execute()
    )
    return Commit(version(path), int(stats.get("num_target_rows_inserted", 0)),
                  int(stats.get("num_target_rows_updated", 0)), int(stats.get("num_target_rows_deleted", 0)))


def set_column(path: str | Path, rows: pa.Table, *, key: str, column: str, run_id: str,
               partition_by: list[str] | None = None, metadata: dict[str, str] | None = None) -> Commit:
    """Set `column` of the rows whose `key` is in `rows` (columns: key, column, partition columns) in ONE
    commit; other columns and rows are left as they are."""
    if rows.num_rows == 0:
        return Commit(version(path))
    stats = (
        open_table(path).merge(rows, _match(key, partition_by), source_alias="s", target_alias="t",
                               commit_properties=_properties(run_id, metadata))
        .when_matched_update(updates={_q(column): f"s.{_q(column)}"})
        .execute()
    )
    return Commit(version(path), updated=int(stats.get("num_target_rows_updated", 0)))


def _match(key: str, partition_by: list[str] | None) -> str:
    """A MERGE's condition: the key, and the partition columns (so delta-rs skips untouched partitions)."""
    return " AND ".join(f"t.{_q(c)} = s.{_q(c)}" for c in [key, *(partition_by or [])])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


COMPACT_AT_FILES = 32  # a table's live files beyond which `maintain` compacts


def maintain(path: str | Path, *, retention_hours: int, run_id: str, compact_at_files: int = COMPACT_AT_FILES) -> dict[str, Any]:
    """Compact the table's files once there are more than `compact_at_files` (a new version with the same
    rows; compacting at every run would rewrite the whole table each time, since all its files are below the
    target size until it is large) and remove the files no version within `retention_hours` needs. Returns
    what it did."""
    if not is_table(path):
        return {}
    table = open_table(path)
    compacted: dict[str, Any] = {}
    if len(table.file_uris()) > compact_at_files:
        compacted = table.optimize.compact(commit_properties=_properties(run_id, {"lienthong.maintenance": "compact"}))
    removed = open_table(path).vacuum(retention_hours=retention_hours, dry_run=False,
                                      enforce_retention_duration=False)
    out = {"files_added": compacted.get("numFilesAdded", 0), "files_removed": compacted.get("numFilesRemoved", 0),
           "vacuumed": len(removed)}
    log.info("%s: compacted (%s) and vacuumed %d files older than %dh", path, out, len(removed), retention_hours)
    return out


def contract_version(path: str | Path) -> str | None:
    """The contract version the table's newest staging commit was written under (None when unrecorded)."""
    return _newest(path, "lienthong.contract_version")
