"""How the reconcile states find the staged change (`stagedchange`): by `_staged_version` when only staging
wrote between two versions, by record hash otherwise (a restore brings back rows with older versions)."""

from __future__ import annotations

import pyarrow as pa

from lienthong import duck, zones
from lienthong.reconcile import stagedchange
from lienthong.settings import Settings


def _rows(version: int, items: dict[str, str]) -> pa.Table:
    keys = sorted(items)
    return pa.table({"_merge_key": keys, "_record_hash": [items[k] for k in keys],
                     "_staged_version": pa.array([version] * len(keys), pa.int64())})


def _merge(path, version: int, upserts: dict[str, str], deletes: list[str], mode: str | None) -> str:
    rows = _rows(version, upserts).append_column(zones.OP, pa.array(["upsert"] * len(upserts), pa.string()))
    if deletes:
        gone = pa.table({"_merge_key": deletes, "_record_hash": pa.nulls(len(deletes), pa.string()),
                         "_staged_version": pa.nulls(len(deletes), pa.int64()),
                         zones.OP: ["delete"] * len(deletes)})
        rows = pa.concat_tables([rows, gone])
    commit = zones.merge(path, rows, key="_merge_key", run_id="t",
                         metadata={"lienthong.mode": mode} if mode else None)
    return zones.ref(path, commit.version or 0)


def _keys(settings: Settings, new: str, old: str) -> tuple[set[str], str]:
    with duck.session(settings, purpose="test") as con:
        zones.register(con, "n", new)
        zones.register(con, "b", old)
        how = stagedchange.changed_keys(con, new, old, new_view="n", old_view="b", target="k")
        return {r[0] for r in con.execute("SELECT _merge_key FROM k").fetchall()}, how


def test_staging_commits_are_read_by_staged_version_and_a_restore_by_record_hash(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=None, land_provinces=(), duckdb_memory="256MiB",
                        duckdb_threads=1)
    path = tmp_path / "staged" / "citizen"
    zones.create(path, _rows(0, {"a": "h1", "b": "h1", "c": "h1"}), run_id="t", metadata={"lienthong.mode": "create"})
    v0 = zones.ref(path, 0)
    v1 = _merge(path, 1, {"b": "h2", "d": "h1"}, ["c"], "change")
    assert _keys(settings, v1, v0) == ({"b", "c", "d"}, "staged_version+deleted")
    # a restore to v0 (rows with their old versions again): only the record hashes tell what changed
    zones.open_table(path).restore(0)
    v2 = zones.ref(path, zones.version(path) or 0)
    assert _keys(settings, v2, v1) == ({"b", "c", "d"}, "record_hash")
    # a foreign writer between the versions is not trusted either
    v3 = _merge(path, 0, {"a": "h9"}, [], None)
    assert _keys(settings, v3, v2) == ({"a"}, "record_hash")
    # staging after that: the versions since v3 are staging's again
    v4 = _merge(path, 4, {"e": "h1"}, [], "change")
    assert _keys(settings, v4, v3) == ({"e"}, "staged_version")
