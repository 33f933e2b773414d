"""The zones' Delta tables: one commit per merge, pinned versions, DuckDB reads after a MERGE, retention."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from lienthong import zones


def rows(keys: list[str], values: list[int], op: str = "upsert", province: str = "01") -> pa.Table:
    return pa.table({"_merge_key": keys, "v": pa.array(values, pa.int64()), "province": [province] * len(keys),
                     zones.OP: [op] * len(keys)})


def test_merge_upserts_and_deletes_in_one_commit_and_old_versions_stay_readable(tmp_path):
    path = tmp_path / "t"
    first = zones.merge(path, rows(["a", "b", "c"], [1, 2, 3]), key="_merge_key", run_id="r1", partition_by=["province"])
    assert first.version == 0 and first.inserted == 3
    change = pa.concat_tables([rows(["a", "d"], [10, 4]), rows(["b"], [0], op="delete")])
    second = zones.merge(path, change, key="_merge_key", run_id="r2", partition_by=["province"])
    assert (second.version, second.inserted, second.updated, second.deleted) == (1, 1, 1, 1)
    now = {r["_merge_key"]: r["v"] for r in zones.read_table(path).to_pylist()}
    assert now == {"a": 10, "c": 3, "d": 4}
    before = {r["_merge_key"]: r["v"] for r in zones.read_table(zones.ref(path, 0)).to_pylist()}
    assert before == {"a": 1, "b": 2, "c": 3}
    assert zones.split_ref(zones.ref(path, 7)) == (str(path), 7)
    assert zones.version(path) == 1 and zones.version(tmp_path / "none") is None


def test_duckdb_filters_text_columns_of_a_merged_version(tmp_path):
    # delta-rs' MERGE writes text as Arrow string_view; a filter DuckDB pushes into an Arrow dataset scan of
    # such files fails, so `register` reads the version's files with DuckDB's own reader.
    path = tmp_path / "t"
    zones.merge(path, rows(["a", "b"], [1, 2]), key="_merge_key", run_id="r1")
    zones.merge(path, rows(["b", "c"], [20, 3]), key="_merge_key", run_id="r2")
    con = duckdb.connect()
    zones.register(con, "t", path)
    con.register("k", pa.table({"k": ["b", "c"]}))
    assert con.execute("SELECT sum(v) FROM t WHERE _merge_key IN (SELECT k FROM k)").fetchone() == (23,)
    assert con.execute("SELECT v FROM t WHERE _merge_key = 'a'").fetchone() == (1,)
    zones.register(con, "old", zones.ref(path, 0))
    assert con.execute("SELECT sum(v) FROM old").fetchone() == (3,)


def test_an_empty_version_reads_as_its_schema(tmp_path):
    path = tmp_path / "t"
    zones.create(path, pa.schema([("_merge_key", pa.string()), ("v", pa.int64())]).empty_table(), run_id="r")
    con = duckdb.connect()
    zones.register(con, "t", path)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert [r[0] for r in con.execute("DESCRIBE t").fetchall()] == ["_merge_key", "v"]


def test_maintain_compacts_and_vacuum_removes_only_files_no_retained_version_needs(tmp_path):
    path = tmp_path / "t"
    for i in range(4):
        zones.merge(path, rows([f"k{i}"], [i]), key="_merge_key", run_id=f"r{i}")
    files_before = set(path.rglob("*.parquet"))
    assert zones.maintain(path, retention_hours=10_000, run_id="m0") == {"files_added": 0, "files_removed": 0, "vacuumed": 0}
    kept = zones.maintain(path, retention_hours=10_000, run_id="m", compact_at_files=2)
    assert kept["files_removed"] == 4 and kept["vacuumed"] == 0  # compacted; history still readable
    assert zones.read_table(zones.ref(path, 1)).num_rows == 2
    done = zones.maintain(path, retention_hours=0, run_id="m2")
    assert done["vacuumed"] == len(files_before)
    assert sorted(zones.read_table(path).column("_merge_key").to_pylist()) == ["k0", "k1", "k2", "k3"]
    with pytest.raises(Exception):  # noqa: B017  (delta-rs raises its own error type for a vacuumed version)
        zones.read_table(zones.ref(path, 1))


def test_contract_version_comes_from_the_newest_commit_that_names_one(tmp_path):
    path = tmp_path / "t"
    zones.merge(path, rows(["a"], [1]), key="_merge_key", run_id="r1", metadata={"lienthong.contract_version": "1.2.0"})
    zones.maintain(path, retention_hours=10_000, run_id="m")
    assert zones.contract_version(path) == "1.2.0"
