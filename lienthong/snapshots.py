"""The Parquet side of a published version: a whole snapshot, or a delta on the version before it.

Owns the forms of a version folder `published/<dataset>/v<NNNNNN>/` and reading a version back from them:

- `snapshot`: the version's rows (`part-*.parquet`, file role `rows`);
- `delta`: what changed from the version before (`new-rows.parquet`: the new images, the contract's columns
  and `_change_type` insert / update_postimage; `removed-keys.parquet`: the keys of the rows replaced or
  removed, `_change_type` update_preimage / delete). Its manifest names its `chain`: the snapshot it builds on
  (`base_version`), its place in the chain (`length`) and the change rows since the base (`change_rows`).

A version is read by taking its base snapshot and applying each delta up to it in order (`read_version`,
DuckDB). `lienthong.publish` writes a snapshot for a first version, when the columns change, every
`SNAPSHOT_EVERY` versions, and when the change rows since the base pass `SNAPSHOT_SHARE` of the rows, so a
read applies a bounded chain; retention keeps every folder a kept version's chain needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.duck import session
from lienthong.zones import sql_text

MANIFEST = "_manifest.json"
SNAPSHOT, DELTA = "snapshot", "delta"
NEW_ROWS, REMOVED_KEYS = "new-rows.parquet", "removed-keys.parquet"
SNAPSHOT_EVERY = 8  # versions in a chain, its snapshot included
SNAPSHOT_SHARE = 0.2  # change rows since the snapshot, as a share of the rows, that make the next one a snapshot


def folder_of(ds_dir: Path, version: int) -> Path:
    return Path(ds_dir) / f"v{version:06d}"


def manifest(ds_dir: Path, version: int) -> dict[str, Any]:
    path = folder_of(ds_dir, version) / MANIFEST
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def form(m: dict[str, Any]) -> str:
    return str(m.get("form", SNAPSHOT))  # versions written before deltas existed are snapshots


def chain_of(m: dict[str, Any]) -> dict[str, int]:
    """The chain a version's manifest names (a snapshot is a chain of its own)."""
    if form(m) == SNAPSHOT:
        return {"base_version": int(m["version"]), "length": 1, "change_rows": 0}
    return {k: int(v) for k, v in m["chain"].items()}


def next_form(previous: dict[str, Any] | None, change_rows: int | None, rows: int) -> tuple[str, dict[str, int]]:
    """(form, chain) of the next version after the one whose manifest is `previous`, given its change rows
    (None: no change to build on)."""
    if previous is None or change_rows is None:
        return SNAPSHOT, {}
    chain = chain_of(previous)
    total = chain["change_rows"] + change_rows
    if chain["length"] + 1 > SNAPSHOT_EVERY or total > SNAPSHOT_SHARE * max(rows, 1):
        return SNAPSHOT, {}
    return DELTA, {"base_version": chain["base_version"], "length": chain["length"] + 1, "change_rows": total}


def read_version(ds_dir: Path, version: int, keys: list[str]) -> pa.Table:
    """The rows of `version` (ordered by `keys`): its base snapshot with every delta up to it applied."""
    m = manifest(ds_dir, version)
    chain = chain_of(m)
    base = folder_of(ds_dir, chain["base_version"])
    parts = [base / f["path"] for f in manifest(ds_dir, chain["base_version"])["files"]]
    on = " AND ".join(f'r."{k}" = g."{k}"' for k in keys)
    with session(purpose="published-read") as con:
        con.execute(f"CREATE TEMP TABLE r AS SELECT * FROM read_parquet([{', '.join(sql_text(p) for p in parts)}])")
        for v in range(chain["base_version"] + 1, version + 1):
            folder = folder_of(ds_dir, v)
            con.execute(f"DELETE FROM r WHERE EXISTS (SELECT 1 FROM read_parquet({sql_text(folder / REMOVED_KEYS)}) g "
                        f"WHERE {on})")
            con.execute(f"INSERT INTO r BY NAME SELECT * EXCLUDE (_change_type) "
                        f"FROM read_parquet({sql_text(folder / NEW_ROWS)})")
        order = ", ".join(f'"{k}"' for k in keys)
        table = con.execute(f"SELECT * FROM r ORDER BY {order}").fetch_arrow_table()
    return table.cast(pq.read_schema(parts[0])) if parts else table
