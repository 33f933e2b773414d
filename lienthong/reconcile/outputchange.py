"""The keys in which a version of an integrated table may differ from the version before it, recorded by the
reconciliation that wrote it, so that a reader comparing two versions (the publish task's scope,
`lienthong.profilechange`) reads the change instead of hashing every row of both.

Owns the records `<integrated dir>/_state/changes/<table>/v<N>.parquet`: one per version `N` a change run
wrote, a column `k` of keys (the output's key expression, `goldenstate.SPECS[<table>].key`) and in its
metadata the version it was built from and the table's Delta id. A record's keys are a superset of the keys
whose row differs between the two versions, or that either lacks:
- the keys the golden-record state recomputed (`goldenstate`'s touched keys: every other key's row is carried
  over from the last successful reconciliation's output unchanged, and that output is the version before);
- for a master, the keys of the rows whose cluster has a member whose entity changed in the registry
  (`entities.Assignment.changed_members`): a row's `entity_id` is its cluster's entity, which is its members'.

Only change runs write records (a whole build has no touched keys). A reader follows the records from the
version it read last to the version now (`keys_between`); a gap (a whole build, a run killed between its
commit and its record, a table made again) returns None, and the reader compares the versions itself.
Records of versions that cannot be read any more go (`prune`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong import zones
from lienthong.staging import write_atomic

log = logging.getLogger(__name__)

KEY = "k"
FROM_REF, TO_REF, TABLE_ID = b"lienthong.from_ref", b"lienthong.to_ref", b"lienthong.table_id"


def key_sql(table: str) -> str:
    """The SQL expression of integrated table `table`'s key over its rows (the records' `k`)."""
    from lienthong.reconcile.goldenstate import SPECS

    return SPECS[table].key


def records_dir(table_path: Path) -> Path:
    """Where the records of the integrated table at `table_path` are kept (outside the Delta table)."""
    table_path = Path(table_path)
    return table_path.parent / "_state" / "changes" / table_path.name


def record(table_path: Path, from_ref: str, to_ref: str, keys: pa.Table) -> Path:
    """Keep `keys` (column `k`) as the keys in which version `to_ref` may differ from `from_ref`."""
    path, version = zones.split_ref(to_ref)
    if Path(path) != Path(table_path) or version is None:
        raise ValueError(f"{to_ref} is not a version of {table_path}")
    meta = {FROM_REF: from_ref.encode(), TO_REF: to_ref.encode(), TABLE_ID: str(zones.table_id(to_ref)).encode()}
    out = write_atomic(keys.select([KEY]).replace_schema_metadata(meta), records_dir(table_path) / f"v{version}.parquet")
    log.info("%s: version %d differs from %s in at most %d keys", Path(table_path).name, version, from_ref,
             keys.num_rows)
    return out


def keys_between(then: str, now: str) -> pa.Table | None:
    """The keys in which table version `now` may differ from `then` (column `k`, the union of the records
    from `then` to `now`), or None when the records do not cover every step between them."""
    if then == now:
        return pa.table({KEY: pa.array([], pa.string())})
    path, version = zones.split_ref(now)
    if version is None:
        return None
    table_id = zones.table_id(now)
    folder = records_dir(Path(path))
    parts: list[pa.Table] = []
    at, at_version = now, version
    while at != then:
        step = folder / f"v{at_version}.parquet"
        if not step.is_file():
            return None
        meta = pq.read_schema(step).metadata or {}
        if meta.get(TO_REF, b"").decode() != at or meta.get(TABLE_ID, b"").decode() != table_id:
            return None  # a record of another table made at this path, or of a version written again
        parts.append(pq.read_table(step))
        at = meta.get(FROM_REF, b"").decode()
        from_path, from_version = zones.split_ref(at)
        if from_path != path or from_version is None or from_version >= at_version:
            return None  # each step goes back in the same table, so the walk ends
        at_version = from_version
    return pa.concat_tables(parts, promote_options="permissive") if parts else None


def prune(table_path: Path) -> int:
    """Drop the records of versions that cannot be read any more (vacuumed, or of a table made again);
    returns how many went."""
    folder = records_dir(table_path)
    if not folder.is_dir():
        return 0
    current = zones.table_id(table_path)
    gone = 0
    for step in folder.glob("v*.parquet"):
        meta = pq.read_schema(step).metadata or {}
        to_ref = meta.get(TO_REF, b"").decode()
        if meta.get(TABLE_ID, b"").decode() != current or not zones.readable(to_ref):
            step.unlink(missing_ok=True)
            gone += 1
    return gone
