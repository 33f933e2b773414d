"""Writing the generated province: sorted source files, ground truth and config, byte-for-byte stable.

Owns: the file layout of docs/sandbox.md, the fixed Parquet options (so the same input gives the same
bytes), the final row order of each source file and its `_row` column, and the resolution of noise-log
entries and truth links from "record index before sorting" to (`_row`, record key).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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
