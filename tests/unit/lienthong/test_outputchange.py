"""The records of the keys an integrated table's versions differ in (`lienthong.reconcile.outputchange`): a
reader gets the union from the version it read to the version now, and None wherever the records leave a gap
or describe another table."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from lienthong import zones
from lienthong.reconcile import outputchange


def _keys(*values: str) -> pa.Table:
    return pa.table({"k": pa.array(values, pa.string())})


@pytest.fixture
def table(tmp_path):
    """An integrated table with four versions (v0..v3)."""
    path = tmp_path / "integrated" / "person_master"
    for i in range(4):
        zones.create(path, pa.table({"person_key": [f"p{i}"]}), run_id=f"r{i}")
    return path


def _ref(path, version: int) -> str:
    return zones.ref(path, version)


def test_the_records_from_the_version_read_to_now_are_united(table):
    outputchange.record(table, _ref(table, 0), _ref(table, 1), _keys("a", "b"))
    outputchange.record(table, _ref(table, 1), _ref(table, 3), _keys("b", "c"))  # v2 was a compaction
    got = outputchange.keys_between(_ref(table, 0), _ref(table, 3))
    assert got is not None and sorted(got["k"].to_pylist()) == ["a", "b", "b", "c"]
    one = outputchange.keys_between(_ref(table, 1), _ref(table, 3))
    assert one is not None and sorted(one["k"].to_pylist()) == ["b", "c"]
    same = outputchange.keys_between(_ref(table, 3), _ref(table, 3))
    assert same is not None and same.num_rows == 0
    assert outputchange.records_dir(table) == table.parent / "_state" / "changes" / "person_master"


def test_a_gap_in_the_records_gives_none(table):
    outputchange.record(table, _ref(table, 1), _ref(table, 3), _keys("c"))
    # v0 -> v1 has no record (a whole build, or a kill between the commit and the record)
    assert outputchange.keys_between(_ref(table, 0), _ref(table, 3)) is None
    # a version the records pass over: from v2 the walk reaches v1, never v2
    assert outputchange.keys_between(_ref(table, 2), _ref(table, 3)) is None


def test_records_of_a_table_made_again_are_not_used_and_are_pruned(table, tmp_path):
    outputchange.record(table, _ref(table, 0), _ref(table, 1), _keys("a"))
    outputchange.record(table, _ref(table, 1), _ref(table, 2), _keys("b"))
    assert outputchange.keys_between(_ref(table, 0), _ref(table, 2)) is not None
    shutil.rmtree(table)  # the table made again at the same path: versions 0..2 are other contents
    for i in range(3):
        zones.create(table, pa.table({"person_key": [f"q{i}"]}), run_id=f"again{i}")
    assert outputchange.keys_between(_ref(table, 0), _ref(table, 2)) is None
    assert outputchange.prune(table) == 2
    assert not list(outputchange.records_dir(table).glob("*.parquet"))


def test_a_record_names_a_version_of_its_own_table(table, tmp_path):
    with pytest.raises(ValueError, match="is not a version of"):
        outputchange.record(table, _ref(table, 0), _ref(tmp_path / "other", 1), _keys("a"))


def test_a_masters_keys_are_the_recomputed_ones_and_those_whose_entity_moved(tmp_path):
    """`run._change_keys`: the touched keys, plus a master's rows in a cluster one of whose members changed
    entity (their `entity_id` changes though the golden record did not); a link table's are the touched ones."""
    import duckdb
    import pyarrow.parquet as pq

    from lienthong.reconcile.run import _change_keys

    touched = tmp_path / "touched.parquet"
    pq.write_table(_keys("P1"), touched)
    con = duckdb.connect()
    con.execute("CREATE TABLE master AS SELECT * FROM (VALUES ('P1'), ('P2'), ('P3'), ('P4')) t(person_key)")
    con.execute("""CREATE TABLE changed_cluster AS SELECT * FROM (VALUES ('person', 'P3'), ('enterprise', 'P4'))
                   t(kind, cluster_key)""")
    keys = _change_keys(con, "person_master", "master", touched)
    assert sorted(keys["k"].to_pylist()) == ["P1", "P3"]  # P4's cluster is an enterprise's, P2 untouched
    assert _change_keys(con, "enterprise_representative_link", "master", touched)["k"].to_pylist() == ["P1"]
