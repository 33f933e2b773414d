"""When staging rebuilds a dataset's tables instead of merging the change into them."""

from __future__ import annotations

from lienthong import zones
from lienthong.contracts import contract
from lienthong.stagestep import _rebuild_needed
from lienthong.staging import staged_schema


def test_rebuild_when_missing_interrupted_of_another_shape_or_contract_version(tmp_path):
    c = contract("citizen")
    schema = staged_schema(c)[0]
    table = tmp_path / "citizen"
    assert _rebuild_needed(c, table, schema) == "no staged table yet"
    zones.create(table, schema.empty_table(), run_id="r", metadata={"lienthong.mode": "rebuild-partial",
                                                                     "lienthong.contract_version": c.version})
    assert _rebuild_needed(c, table, schema) == "a rebuild of the table was interrupted"
    zones.append(table, schema.empty_table(), run_id="r", metadata={"lienthong.mode": "rebuild",
                                                                     "lienthong.contract_version": c.version})
    assert _rebuild_needed(c, table, schema) is None
    zones.append(table, schema.empty_table(), run_id="r", metadata={"lienthong.mode": "change",
                                                                     "lienthong.contract_version": "0.0.1"})
    assert "written under contract version 0.0.1" in (_rebuild_needed(c, table, schema) or "")
    other = tmp_path / "other"
    zones.create(other, schema.empty_table().drop_columns(["full_name"]), run_id="r")
    assert "columns differ" in (_rebuild_needed(c, other, schema) or "")
