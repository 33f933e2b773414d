"""An integrated table whose content a reconciliation did not change keeps its version: no new Delta commit,
the ledger names the same version again (so nothing downstream moves and the zone does not grow by a copy).
A table a killed run committed to since is written again, so the version the ledger names is always the
table's newest. On a real province (sandbox, real connectors, staged, reconciled)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

CITIZENS = 1500
SEED = 31


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    from province import reconciled_province

    with reconciled_province(tmp_path_factory.mktemp("unchanged-outputs"), citizens=CITIZENS, seed=SEED) as prov:
        yield prov


def _versions(settings) -> dict[str, int | None]:
    from lienthong import zones
    from lienthong.reconcile.integrate import OUTPUT_SQL
    from lienthong.reconcile.run import integrated_table

    return {name: zones.version(integrated_table(settings.integrated_dir, name)) for name in OUTPUT_SQL}


def test_a_relink_that_changes_nothing_keeps_every_integrated_version(province) -> None:
    from lienthong.reconcile.run import reconcile

    s, first = province["settings"], province["first"]
    before = _versions(s)
    again = reconcile("r2", s, relink=True)  # everything recomputed: the same content
    assert not again.get("unchanged")  # it did run (not the no-change early stop)
    assert _versions(s) == before
    for name, out in again["outputs"].items():
        assert out["written"] is False, name
        assert out["path"] == first["outputs"][name]["path"], name
        assert out["content_hash"] == first["outputs"][name]["content_hash"], name


def test_a_table_a_killed_run_committed_to_is_written_again(province) -> None:
    from lienthong import zones
    from lienthong.reconcile.run import integrated_table, reconcile

    s = province["settings"]
    table = integrated_table(s.integrated_dir, "parcel_master")
    # what a killed run leaves: a newer version of one table that no finished run names
    zones.create(table, zones.read_table(table), run_id="killed")
    before = _versions(s)
    out = reconcile("r3", s, relink=True)["outputs"]
    after = _versions(s)
    assert out["parcel_master"]["written"] is True
    assert after["parcel_master"] == (before["parcel_master"] or 0) + 1
    assert out["parcel_master"]["path"] == zones.ref(table, after["parcel_master"] or 0)
    assert {n for n, o in out.items() if o["written"]} == {"parcel_master"}
    assert {n: v for n, v in after.items() if n != "parcel_master"} == \
        {n: v for n, v in before.items() if n != "parcel_master"}
