"""The change of a published version from row hashes (`lienthong.feed`): inserts, deletes and updates found
by key and hash; a version read back from its Parquet folders (a snapshot, or a snapshot and deltas:
`lienthong.snapshots`) has the hashes of its rows, so a version whose hashes were not kept is compared the same
way; when the next version is a delta; the content hash is the one `content_hash` gives."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong import feed, snapshots
from lienthong.contracts import contract
from lienthong.publish import content_hash
from sandbox.profiles import synthetic_profiles

C = contract("citizen_profile")


def _rows(n: int = 200) -> pa.Table:
    return synthetic_profiles(n, seed=3).sort_by("citizen_id")


def test_the_change_names_inserts_deletes_and_updates_by_key():
    old = _rows()
    rows = old.to_pylist()
    removed, renamed = rows[3]["citizen_id"], rows[10]["citizen_id"]
    rows[10] = {**rows[10], "full_name": rows[10]["full_name"] + " Văn"}
    rows[20] = {**rows[20], "parcels": None if rows[20]["parcels"] else [
        {"province_code": "31", "commune_code_2025": "11311", "map_sheet": 1, "parcel_number": 2, "area_m2": 3.0,
         "land_use": "ODT", "certificate_serial": "AB00000001", "share_percent": 100.0}]}
    del rows[3]
    fresh = synthetic_profiles(5, seed=99).to_pylist()
    new = pa.Table.from_pylist(rows + fresh, schema=old.schema)
    change = feed.change(feed.row_hashes(old, C.primary_key), feed.row_hashes(new, C.primary_key), new, C)
    assert change.counts == {"delete": 1, "update_preimage": 2, "update_postimage": 2, "insert": 5}
    gone = dict(zip(change.gone["citizen_id"].to_pylist(), change.gone["_change_type"].to_pylist(), strict=True))
    assert gone == {removed: "delete", renamed: "update_preimage", rows[19]["citizen_id"]: "update_preimage"}
    post = {r["citizen_id"]: r for r in change.post.to_pylist()}
    assert post[renamed]["_change_type"] == "update_postimage" and post[renamed]["full_name"].endswith(" Văn")
    assert {r["citizen_id"] for r in fresh} <= set(post)
    assert change.post.column_names == [*old.column_names, "_change_type"]
    assert feed.change(feed.row_hashes(old, C.primary_key), feed.row_hashes(old, C.primary_key), old, C).counts == {
        t: 0 for t in feed.CHANGE_TYPES}


def _version(ds_dir, version: int, files: dict[str, pa.Table], **manifest) -> None:
    folder = ds_dir / f"v{version:06d}"
    folder.mkdir(parents=True)
    for name, table in files.items():
        pq.write_table(table, folder / name, compression="zstd")
    doc = {"version": version, "files": [{"path": n, "rows": t.num_rows} for n, t in files.items()], **manifest}
    (folder / "_manifest.json").write_text(json.dumps(doc))


def test_a_version_is_read_back_from_its_snapshot_and_deltas_with_the_same_hashes(tmp_path):
    old = _rows(500)
    _version(tmp_path, 1, {"part-00000.parquet": old})
    from_folder = feed.hashes_of_version(tmp_path, 1, C, old.schema)
    assert from_folder is not None and from_folder.equals(feed.row_hashes(old, C.primary_key))
    # version 2 as a delta: one row renamed, one removed, new people
    rows = old.to_pylist()
    renamed = {**rows[7], "full_name": rows[7]["full_name"] + " Văn"}
    new_rows = [*rows[:7], renamed, *rows[8:40], *rows[41:], *synthetic_profiles(3, seed=77).to_pylist()]
    new = pa.Table.from_pylist(sorted(new_rows, key=lambda r: r["citizen_id"]), schema=old.schema)
    change = feed.change(feed.row_hashes(old, C.primary_key), feed.row_hashes(new, C.primary_key), new, C)
    _version(tmp_path, 2, {snapshots.NEW_ROWS: change.post, snapshots.REMOVED_KEYS: change.gone}, form="delta",
             chain={"base_version": 1, "length": 2, "change_rows": sum(change.counts.values())})
    assert snapshots.read_version(tmp_path, 2, C.primary_key).equals(new)
    # `lienthong snapshot` writes it to one file (the manifest names the key)
    from lienthong import cli

    manifest = json.loads((tmp_path / "v000002" / "_manifest.json").read_text())
    (tmp_path / "v000002" / "_manifest.json").write_text(json.dumps({**manifest, "key": C.primary_key}))
    assert cli.main(["snapshot", str(tmp_path / "v000002"), "--out", str(tmp_path / "v2.parquet")]) == 0
    assert pq.read_table(tmp_path / "v2.parquet").equals(new)
    assert feed.hashes_of_version(tmp_path, 2, C, new.schema).equals(feed.row_hashes(new, C.primary_key))
    # other columns (another contract version) or no version: nothing to compare with
    assert feed.hashes_of_version(tmp_path, 1, C, old.drop_columns(["parcels"]).schema) is None
    assert feed.hashes_of_version(tmp_path, 9, C, old.schema) is None


def test_the_next_version_is_a_delta_until_the_chain_is_long_or_large():
    snap = {"version": 4}
    assert snapshots.next_form(None, 10, 1000) == (snapshots.SNAPSHOT, {})
    assert snapshots.next_form(snap, None, 1000) == (snapshots.SNAPSHOT, {})
    kind, chain = snapshots.next_form(snap, 10, 1000)
    assert (kind, chain) == (snapshots.DELTA, {"base_version": 4, "length": 2, "change_rows": 10})
    delta = {"version": 5, "form": "delta", "chain": chain}
    assert snapshots.next_form(delta, 190, 1000)[0] == snapshots.DELTA  # 200 change rows: 20 % of 1000
    assert snapshots.next_form(delta, 200, 1000)[0] == snapshots.SNAPSHOT  # 210 of 1000 rows: over 20 %
    long = {"version": 11, "form": "delta", "chain": {"base_version": 4, "length": snapshots.SNAPSHOT_EVERY,
                                                       "change_rows": 1}}
    assert snapshots.next_form(long, 1, 1000)[0] == snapshots.SNAPSHOT


def test_the_digest_of_row_hashes_is_the_content_hash():
    rows = _rows()
    assert feed.digest(feed.row_hashes(rows, C.primary_key), C) == content_hash(rows, C)
    assert feed.digest(feed.row_hashes(rows.slice(1), C.primary_key), C) != content_hash(rows, C)
