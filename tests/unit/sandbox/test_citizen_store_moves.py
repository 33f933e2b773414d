"""The population sandbox's walk order after a bulk change equals the order after moving each record
one by one (the bulk path re-sorts once; the single path patches the sorted arrays)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.population_api import CitizenStore


def _store(path) -> CitizenStore:
    n = 500
    rng = np.random.default_rng(7)
    stamps = [f"2026-01-{1 + int(d):02d}T08:00:00+07:00" for d in rng.integers(0, 20, n)]
    ids = [f"031{int(x):09d}" for x in rng.integers(0, 10**9, n)]
    ids[10] = ids[11]  # a shared ID, and many shared stamps: ties broken by id, then file row
    pq.write_table(pa.table({"soDinhDanh": ids, "capNhatLuc": stamps}), path)
    return CitizenStore(path)


def test_bulk_move_gives_the_same_walk_order_as_moving_each_record(tmp_path):
    one, bulk = _store(tmp_path / "a.parquet"), _store(tmp_path / "b.parquet")
    rows = sorted({int(r) for r in np.random.default_rng(3).integers(0, len(one), 120)} | {10, 11})
    at = one.freshest()
    for row in rows:
        one.move(row, at)
    bulk.move_many(rows, at)
    assert np.array_equal(one._order, bulk._order)
    assert np.array_equal(one._sorted_ts, bulk._sorted_ts)
    assert one._overrides == bulk._overrides
    assert [one.key_of(r) for r in rows] == [bulk.key_of(r) for r in rows]
