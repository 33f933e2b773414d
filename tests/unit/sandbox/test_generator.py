"""The synthetic province generator: determinism, validity of clean records, noise rates, ground truth.

Small scale (2,000 citizens) so the whole module runs in seconds. Rates are checked against a binomial
tolerance: each noise hits each eligible record independently with its rate, so the applied count k of
n eligible records has mean n*p and standard deviation sqrt(n*p*(1-p)); we allow 4 standard deviations
(+2 for tiny n), which a correct generator exceeds with probability below 1e-4 per check. The rate test
uses raised rates (0.08-0.15) and 4,000 citizens so each noise has dozens to hundreds of hits.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stdnum.vn import mst

from lienthong import adminunits
from lienthong.text.legacy_encodings import repair_mojibake
from sandbox.generate import main as cli_main
from sandbox.generator import NOISE_DEFAULTS, GeneratorConfig, generate

SOURCE_FILES = ("population/citizens.parquet", "business/enterprises.parquet")
LAND_TABLES = ("thua_dat", "chu_su_dung", "giay_chung_nhan")
HIGH_RATES = {
    "missing_id": 0.08, "mistyped_id": 0.08, "old_id": 0.15, "name_typo": 0.08, "capitals": 0.10,
    "swapped_name_order": 0.08, "nfd": 0.08, "tcvn3": 0.08, "vni": 0.08, "date_format": 0.10,
    "partial_date": 0.08, "malformed_dob": 0.05, "duplicate": 0.08, "old_commune_code": 0.08, "deceased_representative": 0.10,
    "invalid_tax_code": 0.08, "share_mismatch": 0.15,
}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("province")
    generate(GeneratorConfig(citizens=2000), folder)
    return folder


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noisy")
    generate(GeneratorConfig(citizens=4000, seed=7, noise=HIGH_RATES), folder)
    return folder


def _rows(folder: Path, rel: str) -> list[dict]:
    return pq.read_table(folder / rel).to_pylist()


def _noised(folder: Path, dataset: str, noise: str | None = None) -> set[str]:
    """Record keys of `dataset` hit by `noise` (any noise if None)."""
    return {r["record_key"] for r in _rows(folder, "truth/noise.parquet")
            if r["dataset"] == dataset and (noise is None or r["noise"] == noise)}


def test_same_seed_gives_byte_identical_files(out, tmp_path):
    generate(GeneratorConfig(citizens=2000), tmp_path)
    assert _digest(tmp_path) == _digest(out)


def test_different_seed_gives_different_files(out, tmp_path):
    generate(GeneratorConfig(citizens=2000, seed=1), tmp_path)
    a, b = _digest(out), _digest(tmp_path)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".parquet"))


def test_output_follows_the_documented_layout_and_columns(out):
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["seed"] == 20261120 and cfg["as_of"] == "2026-11-20T12:00:00+07:00"
    assert set(cfg["noise"]) == set(NOISE_DEFAULTS)
    assert pq.read_schema(out / "population/citizens.parquet").names == [
        "_row", "soDinhDanh", "soCmndCu", "hoVaTen", "ngaySinh", "gioiTinh", "danToc", "tonGiao", "quocTich",
        "noiThuongTru", "queQuan", "soHoKhau", "quanHeChuHo", "trangThai", "ngayMat", "capNhatLuc"]
    assert pq.read_schema(out / "business/enterprises.parquet").names == [
        "_row", "MaSoDN", "TenDN", "TenTiengAnh", "LoaiHinh", "NgayThanhLap", "TinhTrang", "VonDieuLe", "TruSo",
        "NganhNghe", "NguoiDaiDien", "NgayCapNhat"]
    for province in ("31", "01"):
        schema = pq.read_schema(out / f"land/{province}/thua_dat.parquet")
        assert schema.names == ["_row", "id", "ma_xa", "so_to_ban_do", "so_thua", "dien_tich", "muc_dich_su_dung",
                                "dia_chi", "cap_nhat_luc", "da_xoa"]
        assert str(schema.field("dien_tich").type) == "decimal128(12, 1)"
        assert pa.types.is_timestamp(schema.field("cap_nhat_luc").type)
        assert schema.field("cap_nhat_luc").type.tz == "UTC"
        assert pq.read_schema(out / f"land/{province}/chu_su_dung.parquet").names == [
            "_row", "id", "loai", "ho_ten", "loai_giay_to", "so_giay_to", "nam_sinh", "dia_chi", "cap_nhat_luc",
            "da_xoa"]
        schema = pq.read_schema(out / f"land/{province}/giay_chung_nhan.parquet")
        assert schema.names == ["_row", "id", "so_phat_hanh", "so_vao_so", "thua_dat_id", "chu_su_dung_id",
                                "ty_le_so_huu", "ngay_cap", "trang_thai", "cap_nhat_luc", "da_xoa"]
        assert str(schema.field("ty_le_so_huu").type) == "decimal128(5, 2)"
    for rel in [*SOURCE_FILES, "land/31/thua_dat.parquet"]:
        assert pq.read_table(out / rel, columns=["_row"])["_row"].to_pylist() == list(
            range(pq.read_metadata(out / rel).num_rows))


def test_citizens_are_ordered_by_update_time_then_id(out):
    rows = _rows(out, "population/citizens.parquet")
    keys = [(r["capNhatLuc"], r["soDinhDanh"]) for r in rows]
    assert keys == sorted(keys)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00", k[0]) for k in keys)
    assert max(k[0] for k in keys) <= "2026-11-20T12:00:00+07:00"


def _id_agrees(pid: str, dob: str, sex: str) -> bool:
    year = int(dob[:4])
    century = (year // 100 - 19) * 2
    allowed = {century, century + 1} if sex == "KHAC" else {century + (sex == "NU")}
    return (re.fullmatch(r"\d{12}", pid) is not None and int(pid[3]) in allowed
            and pid[4:6] == f"{year % 100:02d}")


def test_clean_personal_ids_agree_with_birth_year_and_sex(out):
    noised = _noised(out, "citizen")
    clean = [r for r in _rows(out, "population/citizens.parquet") if r["soDinhDanh"] not in noised]
    assert len(clean) > 1800
    assert all(_id_agrees(r["soDinhDanh"], r["ngaySinh"], r["gioiTinh"]) for r in clean)
    persons = _rows(out, "truth/persons.parquet")
    assert all(_id_agrees(p["so_dinh_danh"], p["ngay_sinh"].isoformat(), p["gioi_tinh"]) for p in persons)
    assert len({p["so_dinh_danh"] for p in persons}) == len(persons)
    assert all(p["so_cmnd_cu"] is None or re.fullmatch(r"\d{9}", p["so_cmnd_cu"]) for p in persons)


def test_personal_ids_are_unique_within_the_registry(out):
    ids = [r["soDinhDanh"] for r in _rows(out, "population/citizens.parquet")]
    assert len(ids) == len(set(ids))


def test_clean_enterprise_codes_pass_python_stdnum(out):
    bad = _noised(out, "enterprise", "invalid_tax_code")
    rows = _rows(out, "business/enterprises.parquet")
    assert all(mst.is_valid(r["MaSoDN"]) for r in rows if r["MaSoDN"] not in bad)
    assert all(not mst.is_valid(code) for code in bad)
    assert all(r["MaSoDN"].startswith("02") for r in rows)
    assert all(mst.is_valid(e["ma_so_dn"]) for e in _rows(out, "truth/enterprises.parquet"))


def test_commune_codes_exist_in_the_official_lists(out):
    old, new = adminunits.old_communes(), adminunits.new_communes()
    moved = _noised(out, "citizen", "old_commune_code")
    for r in _rows(out, "population/citizens.parquet"):
        home = r["noiThuongTru"]
        if r["soDinhDanh"] in moved:
            assert home["maXa"] in old and old[home["maXa"]].province_code == home["maTinh"]
        else:
            assert home["maXa"] in new and new[home["maXa"]].province_code == "31" == home["maTinh"]
        q = r["queQuan"]
        if q["maHuyen"] is None:
            assert new[q["maXa"]].province_code == q["maTinh"]
        else:
            assert (old[q["maXa"]].district_code, old[q["maXa"]].province_code) == (q["maHuyen"], q["maTinh"])
    for r in _rows(out, "business/enterprises.parquet"):
        t = r["TruSo"]
        if t["MaHuyen"] is None:
            assert new[t["MaXa"]].province_code == t["MaTinh"] == "31"
        else:
            assert (old[t["MaXa"]].district_code, old[t["MaXa"]].province_code) == (t["MaHuyen"], t["MaTinh"])
    for province in ("31", "01"):
        allowed = ({c.code for c in adminunits.old_communes_in(province)}
                   | {c.code for c in adminunits.new_communes_in(province)})
        codes = Counter(r["ma_xa"] for r in _rows(out, f"land/{province}/thua_dat.parquet"))
        assert set(codes) <= allowed
        old_share = sum(n for c, n in codes.items() if c in old and old[c].province_code == province)
        assert old_share > 0.7 * sum(codes.values())  # most parcels were surveyed before 2025


def test_parcel_natural_key_is_unique(out):
    for province in ("31", "01"):
        rows = _rows(out, f"land/{province}/thua_dat.parquet")
        keys = [(r["ma_xa"], r["so_to_ban_do"], r["so_thua"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert len({r["id"] for r in rows}) == len(rows)


def test_co_holder_shares_sum_to_100_unless_the_share_noise_was_applied(noisy):
    for province in ("31", "01"):
        hit = _noised(noisy, "certificate", "share_mismatch")
        by_doc: dict[tuple, list] = defaultdict(list)
        for r in _rows(noisy, f"land/{province}/giay_chung_nhan.parquet"):
            by_doc[(r["so_phat_hanh"], r["thua_dat_id"])].append(r)
        co_held = 0
        for rows in by_doc.values():
            total = sum(r["ty_le_so_huu"] for r in rows)
            noised = any(f"{province}:{r['id']}" in hit for r in rows)
            assert (total != 100) == noised
            co_held += len(rows) > 1
        assert co_held > 50


def test_transferred_certificate_is_followed_by_a_valid_one_to_another_holder(out):
    rows = _rows(out, "land/31/giay_chung_nhan.parquet")
    by_parcel: dict[int, list] = defaultdict(list)
    for r in rows:
        by_parcel[r["thua_dat_id"]].append(r)
    transferred = [p for p, rs in by_parcel.items() if any(r["trang_thai"] == "DA_CHUYEN_NHUONG" for r in rs)]
    assert transferred
    for p in transferred:
        old = [r for r in by_parcel[p] if r["trang_thai"] == "DA_CHUYEN_NHUONG"]
        new = [r for r in by_parcel[p] if r["trang_thai"] == "HIEU_LUC"]
        assert new and min(r["ngay_cap"] for r in new) > max(r["ngay_cap"] for r in old)
    assert all(re.fullmatch(r"[A-Z]{2} (\d{6}|\d{8})", r["so_phat_hanh"]) for r in rows)


def test_truth_links_cover_every_source_record(out):
    links = _rows(out, "truth/links.parquet")
    seen = Counter((r["dataset"], r["record_key"].split(":")[0] if ":" in r["record_key"] else "", r["source_row"])
                   for r in links)
    expect = {"citizen": "population/citizens.parquet", "enterprise": "business/enterprises.parquet"}
    for dataset, rel in expect.items():
        n = pq.read_metadata(out / rel).num_rows
        assert {k[2] for k in seen if k[0] == dataset} == set(range(n))
    reps = sum(len(r["NguoiDaiDien"]) for r in _rows(out, "business/enterprises.parquet"))
    assert sum(v for k, v in seen.items() if k[0] == "representative") == reps
    for province in ("31", "01"):
        for table, dataset in zip(LAND_TABLES, ("parcel", "land_holder", "certificate"), strict=True):
            n = pq.read_metadata(out / f"land/{province}/{table}.parquet").num_rows
            assert sorted(k[2] for k in seen if k[:2] == (dataset, province)) == list(range(n))
    # Entities are named where there is one.
    assert all(r["person_id"] is not None for r in links if r["dataset"] in ("citizen", "representative"))
    assert all(r["enterprise_id"] is not None for r in links if r["dataset"] in ("enterprise", "representative"))
    assert all((r["person_id"] is None) != (r["enterprise_id"] is None)
               for r in links if r["dataset"] in ("land_holder", "certificate"))


def test_links_noise_lists_match_the_noise_table(noisy):
    from_noise = defaultdict(set)
    for r in _rows(noisy, "truth/noise.parquet"):
        from_noise[(r["dataset"], r["record_key"])].add(r["noise"])
    from_links = {(r["dataset"], r["record_key"]): set(r["noise"]) for r in _rows(noisy, "truth/links.parquet")
                  if r["noise"]}
    assert from_links == dict(from_noise)


def test_duplicates_are_the_same_entity_under_another_key(noisy):
    links = _rows(noisy, "truth/links.parquet")
    for dataset, entity in (("citizen", "person_id"), ("enterprise", "enterprise_id"),
                            ("land_holder", "person_id")):
        dups = [r for r in links if r["dataset"] == dataset and "duplicate" in r["noise"] and r[entity] is not None]
        assert dups
        others = defaultdict(set)
        for r in links:
            if r["dataset"] == dataset:
                others[r[entity]].add(r["record_key"])
        assert all(len(others[r[entity]]) >= 2 for r in dups)


def test_each_noise_appears_at_its_configured_rate(noisy):
    counts = json.loads((noisy / "config.json").read_text(encoding="utf-8"))["noise_counts"]
    applied_in_table = Counter()
    for r in {(r["dataset"], r["noise"], r["record_key"]) for r in _rows(noisy, "truth/noise.parquet")}:
        applied_in_table[(r[0], r[1])] += 1
    seen_names = set()
    for dataset, by_noise in counts.items():
        for noise, c in by_noise.items():
            n, k, p = c["eligible"], c["applied"], HIGH_RATES[noise]
            assert applied_in_table[(dataset, noise)] == k, (dataset, noise)
            if n == 0:
                continue
            seen_names.add(noise)
            # NFD of an all-ASCII name changes nothing and is not recorded: allow 5% of n below.
            slack = 0.05 * n if noise == "nfd" else 0
            tol = 4 * math.sqrt(n * p * (1 - p)) + 2
            assert n * p - tol - slack <= k <= n * p + tol, f"{dataset}/{noise}: {k} of {n} at rate {p}"
    assert seen_names == set(NOISE_DEFAULTS)


def test_representatives_are_living_adult_persons_unless_noised(out):
    persons = {p["so_dinh_danh"]: p for p in _rows(out, "truth/persons.parquet")}
    noised_rep, noised_ent = _noised(out, "representative"), _noised(out, "enterprise")
    reps = [(r["MaSoDN"], i, d) for r in _rows(out, "business/enterprises.parquet")
            for i, d in enumerate(r["NguoiDaiDien"])]
    clean = [(c, i, d) for c, i, d in reps if f"{c}#{i}" not in noised_rep and c not in noised_ent]
    assert len(clean) > 100
    for _, _, d in clean:
        p = persons[d["SoGiayTo"]]
        assert p["alive"] and p["ho_ten"] == d["HoTen"] and d["LoaiGiayTo"] == "CCCD"
        assert d["NgaySinh"] == p["ngay_sinh"].strftime("%d/%m/%Y")
    outside = sum(not persons[d["SoGiayTo"]]["in_registry"] for _, _, d in clean)
    assert 0 < outside < 0.15 * len(clean)


def test_mojibake_noise_is_repairable_to_the_original_text(noisy):
    rows = [r for r in _rows(noisy, "truth/noise.parquet") if r["noise"] in ("tcvn3", "vni")]
    assert len(rows) > 100
    repaired = [repair_mojibake(r["noisy"]) for r in rows]
    ok = sum(text == r["original"] and enc == r["noise"] for (text, enc), r in zip(repaired, rows, strict=True))
    # Single words whose TCVN3 bytes read as valid Vietnamese (e.g. "Thuý") stay ambiguous.
    assert ok >= 0.97 * len(rows)


def test_cli_writes_files_and_prints_a_summary(tmp_path, capsys):
    assert cli_main(["--citizens", "300", "--seed", "3", "--out", str(tmp_path), "--land-provinces", "31",
                     "--noise", "nfd=0.5", "--as-of", "2026-01-01T00:00:00+07:00"]) == 0
    printed = capsys.readouterr().out
    assert "population/citizens.parquet" in printed and "rows/s" in printed
    cfg = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert cfg["noise"]["nfd"] == 0.5 and cfg["land_provinces"] == ["31"]
    assert not (tmp_path / "land/01").exists()


def test_unknown_noise_name_is_refused():
    with pytest.raises(ValueError, match="unknown noise"):
        GeneratorConfig(noise={"typo_everywhere": 0.1})
