"""Staging from raw JSON payloads: typing, NFC, dedupe, quarantine reasons, conservation, merging the change."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base.landing import RawLanding
from lienthong import zones
from lienthong.contracts import contract
from lienthong.staging import atomic_writer, stage_json_source


def citizen(id_: str | None, name: str = "Nguyễn Văn An", dob: str = "2003-05-14", updated: str = "2026-11-20T08:15:02+07:00", **kw):
    item = {
        "soDinhDanh": id_, "soCmndCu": None, "hoVaTen": name, "ngaySinh": dob, "gioiTinh": "NAM", "danToc": "Kinh",
        "tonGiao": "Không", "quocTich": "VN", "noiThuongTru": {"diaChiChiTiet": "12 Lạch Tray", "maXa": "11311", "maTinh": "31"},
        "queQuan": {"maXa": "11320", "maHuyen": "303", "maTinh": "31"}, "soHoKhau": "HK-31-000123",
        "quanHeChuHo": "CHU_HO", "trangThai": "CON_SONG", "ngayMat": None, "capNhatLuc": updated,
    }
    item.update(kw)
    return item


def land(tmp_path, run_id, items):
    landing = RawLanding(tmp_path / "raw", "population_registry", "citizens", run_id)
    landing.write_page(items, key_field="soDinhDanh", updated_field="capNhatLuc")
    return landing.commit()


def stage(tmp_path, run_id="r1"):
    files = sorted((tmp_path / "raw").rglob("*.parquet"))
    return stage_json_source(
        contract("citizen"), files, key_source_field="soDinhDanh", updated_source_field="capNhatLuc",
        run_id=run_id, staged_dir=tmp_path / "staged", quarantine_dir=tmp_path / "quarantine",
    )


def test_valid_records_are_typed_and_names_are_nfc(tmp_path):
    nfd = unicodedata.normalize("NFD", "Trần Thị Bình")
    land(tmp_path, "r1", [citizen("031203001234"), citizen("031185004321", name=nfd, dob="1985-00-00")])
    result = stage(tmp_path)
    table = zones.read_table(result.staged_path).to_pylist()
    by_id = {r["citizen_id"]: r for r in table}
    assert by_id["031185004321"]["full_name"] == "Trần Thị Bình"
    assert unicodedata.is_normalized("NFC", by_id["031185004321"]["full_name"])
    assert str(by_id["031185004321"]["birth_date"]) == "1985-01-01"
    assert by_id["031185004321"]["birth_date_precision"] == "year"
    assert by_id["031203001234"]["birth_date_precision"] == "day"
    assert by_id["031203001234"]["source_updated_at"].isoformat() == "2026-11-20T01:15:02+00:00"
    assert by_id["031203001234"]["residence_commune_code"] == "11311"
    assert result.rows_quarantined == 0 and result.conservation_ok


def test_bad_records_go_to_quarantine_with_a_reason_naming_record_and_field(tmp_path):
    land(tmp_path, "r1", [
        citizen("031203001234"),
        citizen(None),
        citizen("03120300123X"),
        citizen("031203009999", dob="14/05/2003"),
        citizen("031203008888", gioiTinh="M"),
        citizen("031203007777", updated="2026-11-20 08:15:02"),
    ])
    result = stage(tmp_path)
    assert (result.rows_in, result.rows_staged, result.rows_quarantined) == (6, 1, 5)
    q = {r["record_key"]: r for r in zones.read_table(result.quarantine_path).to_pylist()}
    assert any("required" in x and "citizen_id (soDinhDanh) is missing" in x for x in q[None]["reasons"])
    assert any("record 03120300123X" in x and "citizen_id (soDinhDanh)" in x and "does not match" in x for x in q["03120300123X"]["reasons"])
    assert any("unparseable" in x and "birth_date (ngaySinh) = 14/05/2003" in x for x in q["031203009999"]["reasons"])
    assert any("sex (gioiTinh)" in x for x in q["031203008888"]["reasons"])
    assert any("source_updated_at (capNhatLuc)" in x for x in q["031203007777"]["reasons"])
    # the full original record is kept
    assert '"hoVaTen":"Nguyễn Văn An"' in q["031203009999"]["payload"]
    assert result.quarantine_by_rule["required:citizen_id"] == 1


def test_repeats_across_pages_and_runs_are_deduplicated_keeping_the_latest(tmp_path):
    land(tmp_path, "r1", [citizen("031203001234", name="A Old"), citizen("031203001234", name="A Old")])
    land(tmp_path, "r2", [citizen("031203001234", name="A New", updated="2026-11-21T08:00:00+07:00")])
    result = stage(tmp_path, "r2")
    assert result.raw_rows == 3 and result.rows_in == 1 and result.duplicates_removed == 2
    rows = zones.read_table(result.staged_path).to_pylist()
    assert [r["full_name"] for r in rows] == ["A New"]
    assert rows[0]["_source_run_id"] == "r2"


def test_same_input_gives_same_content_hash(tmp_path):
    land(tmp_path, "r1", [citizen("031203001234"), citizen("031185004321")])
    assert stage(tmp_path, "a").content_hash == stage(tmp_path, "b").content_hash


def test_no_new_landing_reads_and_writes_nothing(tmp_path):
    land(tmp_path, "r1", [citizen("031203001234")])
    first = stage(tmp_path)
    result = stage_json_source(contract("citizen"), [], run_id="r2", staged_dir=tmp_path / "staged",
                               quarantine_dir=tmp_path / "quarantine")
    assert result.mode == "none" and result.rows_in == 0 and result.conservation_ok
    assert result.staged_path == first.staged_path and result.quarantine_path == first.quarantine_path


def test_rows_failing_a_critical_expectation_move_to_quarantine_with_their_original_record(tmp_path):
    from lienthong.staging import quarantine_failed_rows

    land(tmp_path, "r1", [citizen(f"03120300{i:04d}") for i in range(5)])
    result = stage(tmp_path)
    before = zones.read_table(result.staged_path).column("citizen_id").to_pylist()
    rule = "sex:invalidValues:validValues"
    moved = quarantine_failed_rows(contract("citizen"), "r1", result.staged_path, tmp_path / "raw",
                                   {rule: [before[1], before[3]]}, {rule: "expect_column_values_to_be_in_set"},
                                   quarantine_dir=tmp_path / "quarantine")
    assert moved.by_rule == {f"expectation:{rule}": 2} and moved.rows == 2
    after = zones.read_table(moved.staged_path).column("citizen_id").to_pylist()
    q = zones.read_table(moved.quarantine_path).to_pylist()
    assert sorted(after + [r["record_key"] for r in q]) == sorted(before)
    assert {r["record_key"] for r in q} == {before[1], before[3]}
    assert all("expect_column_values_to_be_in_set" in r["reasons"][0] and r["payload"].startswith("{") for r in q)
    # the version validated before the move still reads as it was
    assert sorted(zones.read_table(result.staged_path).column("citizen_id").to_pylist()) == sorted(before)


def test_a_full_stage_in_parts_equals_one_pass(tmp_path, monkeypatch):
    from lienthong.rebuild import compare

    land(tmp_path, "r1", [citizen(f"03120300{i:04d}") for i in range(12)] + [citizen("bad")])
    land(tmp_path, "r2", [citizen("031203000003", name="Đổi Tên", updated="2026-11-21T08:00:00+07:00")])
    files = sorted((tmp_path / "raw").rglob("*.parquet"))
    one = stage_json_source(contract("citizen"), files, run_id="one", staged_dir=tmp_path / "s1",
                            quarantine_dir=tmp_path / "q1", full=True)
    monkeypatch.setenv("LIENTHONG_STAGE_CHUNK_ROWS", "4")
    parts = stage_json_source(contract("citizen"), files, run_id="one", staged_dir=tmp_path / "s2",
                              quarantine_dir=tmp_path / "q2", full=True)
    assert zones.version(tmp_path / "s2" / "citizen") >= 3  # one commit per part
    assert zones.last_mode(tmp_path / "s2" / "citizen") == "rebuild"
    assert (parts.rows_in, parts.rows_staged, parts.rows_quarantined) == (one.rows_in, one.rows_staged, one.rows_quarantined) == (13, 12, 1)
    assert compare(one.staged_path, parts.staged_path, exclude=("_staged_version",))["equal"]
    assert compare(one.quarantine_path, parts.quarantine_path)["equal"]
    names = {r["citizen_id"]: r["full_name"] for r in zones.read_table(parts.staged_path).to_pylist()}
    assert names["031203000003"] == "Đổi Tên"


def test_landings_split_in_one_pass_give_each_share_exactly_its_filtered_rows(tmp_path):
    """`split_landings` writes each share the rows the share's hash filter takes from the landings, every column
    as read, and no row twice; folders named by number (no Hive columns when read back)."""
    import duckdb

    from lienthong.staging import StagePlan, _share_sql, split_landings

    land(tmp_path, "r1", [citizen(f"03120300{i:04d}") for i in range(40)] + [citizen(None), citizen(None, name="Khác")])
    land(tmp_path, "r2", [citizen("031203000003", name="Đổi Tên", updated="2026-11-21T08:00:00+07:00")])
    files = [str(f) for f in sorted((tmp_path / "raw").rglob("*.parquet"))]
    plan = StagePlan.from_contract(contract("citizen"))
    shares = split_landings(plan, files, 3, tmp_path / "split")
    con = duckdb.connect()
    every = con.execute(f"SELECT count(*) FROM read_parquet({files!r}, union_by_name = true)").fetchone()[0]
    assert sum(con.execute(f"SELECT count(*) FROM read_parquet({f!r})").fetchone()[0] for f in shares if f) == every == 43
    for i, mine in enumerate(shares):
        assert mine, i  # 43 rows in 3 shares: none is empty here
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({mine!r}, union_by_name = true)").fetchall()]
        assert "_share" not in cols and "payload" in cols, cols
        got = con.execute(f"SELECT * FROM read_parquet({mine!r}, union_by_name = true) ORDER BY _record_hash").fetchall()
        want = con.execute(f"SELECT {', '.join(cols)} FROM read_parquet({files!r}, union_by_name = true) "
                           f"WHERE {_share_sql(plan, 3)} = {i} ORDER BY _record_hash").fetchall()
        assert got == want, i


def test_a_relanding_of_records_already_staged_writes_nothing(tmp_path):
    land(tmp_path, "r1", [citizen("031203001234"), citizen("031185004321", updated="2026-11-21T08:00:00+07:00")])
    first = stage(tmp_path)
    land(tmp_path, "r2", [citizen("031203001234"),  # the same record again (an inclusive watermark's boundary)
                          citizen("031185004321", name="Older", updated="2026-11-19T08:00:00+07:00")])  # late, older
    new = [f for f in sorted((tmp_path / "raw").rglob("*.parquet")) if "run=r2" in str(f)]
    again = stage_json_source(contract("citizen"), new, run_id="r2", staged_dir=tmp_path / "staged",
                              quarantine_dir=tmp_path / "quarantine")
    assert again.mode == "unchanged" and (again.rows_in, again.rows_unchanged) == (2, 2) and again.conservation_ok
    assert again.staged_path == first.staged_path and again.quarantine_path == first.quarantine_path


def test_a_file_written_table_by_table_is_replaced_whole_or_not_at_all(tmp_path: Path):
    schema = pa.schema([("k", pa.string()), ("n", pa.int64())])
    path = tmp_path / "links.parquet"
    with atomic_writer(path, schema) as write:
        for i in range(3):
            write(pa.table({"n": [i, i], "k": ["x", "y"]}))  # columns in another order are put in the schema's
    assert pq.read_table(path).to_pydict() == {"k": ["x", "y"] * 3, "n": [0, 0, 1, 1, 2, 2]}
    with pytest.raises(RuntimeError, match="part 2 failed"), atomic_writer(path, schema) as write:
        write(pa.table({"k": ["z"], "n": [9]}))
        raise RuntimeError("part 2 failed")
    assert pq.read_table(path).num_rows == 6  # the earlier file stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.parquet"]  # no temporary file left
