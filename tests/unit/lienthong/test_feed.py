"""The change of a published version from row hashes (`lienthong.feed`): inserts, deletes and updates found
by key and hash; hashes of a version read back from its Parquet parts equal those of its rows, so a version
whose hashes were not kept is compared the same way; the content hash is the one `content_hash` gives."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong import feed
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


def test_hashes_from_the_parquet_parts_equal_those_of_the_rows(tmp_path):
    rows = _rows(500)
    pq.write_table(rows, tmp_path / "part-00000.parquet", compression="zstd")
    from_folder = feed.hashes_of_folder(tmp_path, C, rows.schema)
    assert from_folder is not None and from_folder.equals(feed.row_hashes(rows, C.primary_key))
    # other columns (another contract version): nothing to compare with
    assert feed.hashes_of_folder(tmp_path, C, rows.drop_columns(["parcels"]).schema) is None
    assert feed.hashes_of_folder(tmp_path / "missing", C, rows.schema) is None


def test_the_digest_of_row_hashes_is_the_content_hash():
    rows = _rows()
    assert feed.digest(feed.row_hashes(rows, C.primary_key), C) == content_hash(rows, C)
    assert feed.digest(feed.row_hashes(rows.slice(1), C.primary_key), C) != content_hash(rows, C)
