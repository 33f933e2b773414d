"""The integrated tables' content hash (`reconcile.run._hash`): the same rows hash the same however they are
chunked (DuckDB and Parquet chunk differently from run to run), and any changed value changes it."""

from __future__ import annotations

import pyarrow as pa

from lienthong.reconcile.run import _hash

N = 450_000


def _table() -> pa.Table:
    # nulls in a few places only, so a window may come from a chunk with nulls outside the window
    return pa.table({
        "id": pa.array(range(N), pa.int64()),
        "name": [None if i in (10, 400_000) else f"n{i}" for i in range(N)],
        "keys": [[f"k{i}"] if i % 7 else None for i in range(N)],
    })


def test_the_same_rows_hash_the_same_however_chunked() -> None:
    t = _table()
    split_unevenly = pa.concat_tables([t.slice(0, 12_345), t.slice(12_345, 300_000), t.slice(312_345)])
    small_batches = pa.Table.from_batches(t.to_batches(max_chunksize=7_777))
    two_chunks = pa.concat_tables([t.slice(0, 300_000), t.slice(300_000)])
    assert _hash(t) == _hash(split_unevenly) == _hash(small_batches) == _hash(two_chunks)


def test_a_changed_value_a_changed_order_or_a_missing_row_changes_the_hash() -> None:
    t = _table()
    changed = t.set_column(1, "name", pa.array([*t["name"].to_pylist()[:-1], "other"]))
    reordered = pa.concat_tables([t.slice(1), t.slice(0, 1)])
    assert len({_hash(t), _hash(changed), _hash(reordered), _hash(t.slice(0, N - 1))}) == 4
