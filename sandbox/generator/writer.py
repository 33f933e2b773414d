"""Writing the generated province: sorted source files, ground truth and config, byte-for-byte stable.

Owns: the file layout of docs/sandbox.md, the fixed Parquet options (so the same input gives the same
bytes), the final row order of each source file and its `_row` column, and the resolution of noise-log
entries and truth links from "record index before sorting" to (`_row`, record key).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .noise import NoiseLog

# Fixed writer options: explicit so a pyarrow default change cannot silently change the bytes.
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    row_group_size=256 * 1024,
)


def write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(None), path, **PARQUET_OPTIONS)


def write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def sort_rows(table: pa.Table, keys: Sequence[str], drop: Sequence[str] = ()) -> tuple[pa.Table, np.ndarray]:
    """Order rows by `keys` (ascending; the keys are unique together, so the order is total) and add the
    leading `_row`. Returns the table and row_of[record index before sorting]."""
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]).to_numpy()
    out = table.take(pa.array(order)).drop_columns(list(drop))
    out = out.add_column(0, "_row", pa.array(np.arange(len(order), dtype=np.int64)))
    row_of = np.empty(len(order), dtype=np.int64)
    row_of[order] = np.arange(len(order))
    return out, row_of


class Truth:
    """Accumulates truth/links.parquet and truth/noise.parquet across datasets."""

    def __init__(self, log: NoiseLog) -> None:
        self.log = log
        self.links: list[pa.Table] = []
        self.noise_rows: list[tuple[str, str, int, str, str, str | None, str | None]] = []

    def add(self, dataset: str, scope: str, keys: pa.Array, source_rows: np.ndarray, person: np.ndarray,
            enterprise: np.ndarray, item_of: Callable[[int, int], int] | None = None) -> None:
        """Links of one dataset, one per item (a record, or a representative inside a record), all arrays
        indexed by item. Log entries carry (record index before sorting, sub-index); `item_of` maps them
        to the item (default: the record index itself)."""
        n = len(keys)
        seen: set[tuple[int, str]] = set()
        hit_item: list[int] = []
        hit_noise: list[str] = []
        for idx, sub, field_, noise, original, noisy in self.log.for_dataset(dataset, scope):
            item = idx if item_of is None else item_of(idx, sub)
            self.noise_rows.append((dataset, keys[item].as_py(), int(source_rows[item]), field_, noise,
                                    original, noisy))
            if (item, noise) not in seen:  # one mention per noise in a record's list
                seen.add((item, noise))
                hit_item.append(item)
                hit_noise.append(noise)
        items = np.asarray(hit_item, dtype=np.int64)
        counts = np.bincount(items, minlength=n)
        order = np.argsort(items, kind="stable")
        values = pa.array([hit_noise[i] for i in order], pa.string())
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        person, enterprise = np.asarray(person), np.asarray(enterprise)
        tbl = pa.table({
            "dataset": pa.array([dataset] * n, pa.string()),
            "record_key": keys,
            "source_row": pa.array(source_rows, pa.int64()),
            "person_id": pa.array(person, pa.int64(), mask=person < 0),
            "enterprise_id": pa.array(enterprise, pa.int64(), mask=enterprise < 0),
            "noise": pa.ListArray.from_arrays(offsets, values),
        })
        # In source-row order (items of one record keep their order).
        self.links.append(tbl.take(pa.array(np.lexsort((np.arange(n), np.asarray(source_rows))))))

    def links_table(self) -> pa.Table:
        return pa.concat_tables(self.links)


# --- streaming (the synthetic country) ------------------------------------------------------------------

def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer with the fixed options, for files written a part at a time (`write_part`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    return pq.ParquetWriter(path, schema.remove_metadata(), **options)


def write_part(writer: pq.ParquetWriter, table: pa.Table) -> None:
    if table.num_rows:
        writer.write_table(table.replace_schema_metadata(None), row_group_size=PARQUET_OPTIONS["row_group_size"])


def spill(table: pa.Table, path: Path) -> None:
    """A table to a temporary Arrow IPC file (uncompressed, so `unspill` maps it without copying)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
        ipc.write_table(table)


def unspill(path: Path) -> pa.Table:
    """A spilled table, memory-mapped: its rows are read from disk when used."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


@dataclass
class Run:
    """One province's rows of a national file, already in that file's order, spilled; with the sort key
    of each row as two integers (update time, then ID or code: the file's order, since both are written
    as fixed-width text)."""

    path: Path
    time: np.ndarray
    key: np.ndarray


def merge_runs(runs: Sequence[Run], path: Path) -> list[np.ndarray]:
    """Write the national file of `runs` in (time, key) order (ties: run, then row in run) with the leading
    `_row`, a row group at a time: each group takes a contiguous slice of every run. Returns per run the
    national row of each of its rows."""
    sizes = [len(r.time) for r in runs]
    run_of = np.repeat(np.arange(len(runs)), sizes)
    pos = np.concatenate([np.arange(k) for k in sizes]) if runs else np.zeros(0, dtype=np.int64)
    order = np.lexsort((pos, run_of, np.concatenate([r.key for r in runs]), np.concatenate([r.time for r in runs])))
    national = np.empty(len(order), dtype=np.int64)
    national[order] = np.arange(len(order))
    tables = [unspill(r.path) for r in runs]
    schema = tables[0].schema
    for t in tables[1:]:
        if not t.schema.equals(schema):
            raise ValueError(f"runs disagree on the schema: {t.schema} vs {schema}")
    group = int(PARQUET_OPTIONS["row_group_size"])  # type: ignore[call-overload]
    with parquet_writer(path, schema.insert(0, pa.field("_row", pa.int64()))) as writer:
        for start in range(0, len(order), group):
            sel = order[start:start + group]
            sel_run, sel_pos = run_of[sel], pos[sel]
            parts, where, base = [], np.empty(len(sel), dtype=np.int64), 0
            for q in np.unique(sel_run):
                mask = sel_run == q
                lo, hi = int(sel_pos[mask].min()), int(sel_pos[mask].max()) + 1
                if hi - lo != int(mask.sum()):  # a run is in the file's order: its rows stay together
                    raise AssertionError("a run is not in the national order")
                parts.append(tables[q].slice(lo, hi - lo))
                where[mask] = base + sel_pos[mask] - lo
                base += hi - lo
            part = pa.concat_tables(parts).take(pa.array(where))
            write_part(writer, part.add_column(0, "_row", pa.array(np.arange(start, start + len(sel)), pa.int64())))
    bounds = np.cumsum([0, *sizes])
    return [national[bounds[q]:bounds[q + 1]] for q in range(len(runs))]
