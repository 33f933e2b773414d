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


def _hash_before(table: pa.Table) -> str:
    """The hash as reconciliations computed it over a whole table before it was read in batches: the digests
    they stored must keep meaning the same content (an unchanged table keeps its version)."""
    import hashlib

    import pyarrow.compute as pc

    h = hashlib.sha256()
    h.update(table.schema.remove_metadata().serialize().to_pybytes())
    for start in range(0, table.num_rows, 200_000):
        part = table.slice(start, 200_000)
        window = pc.take(part, pa.array(range(part.num_rows), pa.int64()))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, window.schema) as writer:
            for batch in window.to_batches():
                writer.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def test_a_table_read_in_batches_hashes_as_the_whole_table_and_as_before() -> None:
    from lienthong.reconcile.run import _hash_batches

    t = _table()
    expected = _hash_before(t)
    assert _hash(t) == expected
    for size in (7_777, 200_000, 250_001, N):
        digest, rows = _hash_batches(t.to_reader(max_chunksize=size))
        assert (digest, rows) == (expected, N), size
    empty = t.slice(0, 0)
    assert _hash_batches(empty.to_reader()) == (_hash_before(empty), 0)
    assert _hash_batches(t.slice(0, 199_999).to_reader(max_chunksize=50_000))[0] == _hash_before(t.slice(0, 199_999))
