"""Validate the change, gate the whole: a warning rule's failures are counted over the dataset's state, not
only over the rows a run changed, and stay put when an unrelated change comes."""

from __future__ import annotations

from pathlib import Path

from connectors.base.landing import RawLanding
from lienthong import quality, zones
from lienthong.contracts import contract
from lienthong.rebuild import compare
from lienthong.staging import quarantine_by_rule, stage_json_source
from lienthong.validatestep import apply_verdict

RULE = "legacy_id:invalidValues:pattern"


def citizen(id_: str, soCmndCu: str | None = None, updated: str = "2026-11-20T08:15:02+07:00") -> dict:  # noqa: N803
    return {"soDinhDanh": id_, "soCmndCu": soCmndCu, "hoVaTen": "Nguyễn Văn An", "ngaySinh": "2003-05-14",
            "gioiTinh": "NAM", "danToc": "Kinh", "tonGiao": "Không", "quocTich": "VN",
            "noiThuongTru": {"diaChiChiTiet": "12 Lạch Tray", "maXa": "11311", "maTinh": "31"},
            "queQuan": {"maXa": "11320", "maHuyen": "303", "maTinh": "31"}, "soHoKhau": "HK-31-000123",
            "quanHeChuHo": "CHU_HO", "trangThai": "CON_SONG", "ngayMat": None, "capNhatLuc": updated}


def land(tmp: Path, run_id: str, items: list[dict]) -> None:
    landing = RawLanding(tmp / "raw", "population_registry", "citizens", run_id)
    landing.write_page(items, key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()


def cycle(tmp: Path, files: list[Path], run_id: str, since: int, root: str = "zones", full: bool = False):
    c = contract("citizen")
    staged = stage_json_source(c, files, run_id=run_id, staged_dir=tmp / root / "staged",
                               quarantine_dir=tmp / root / "quarantine", full=full, raw_dir=tmp / "raw")
    result = quality.validate(c, staged.staged_path, run_id=run_id, since_version=since,
                              quarantine_by_rule=quarantine_by_rule(staged.quarantine_path), store=False)
    moved = apply_verdict(c, run_id, result, staged.staged_path, raw_dir=tmp / "raw",
                          quarantine_dir=tmp / root / "quarantine")
    return result, moved


def outcome(result: quality.QualityResult, rule: str) -> quality.RuleOutcome:
    return next(o for o in result.outcomes if o.rule == rule)


def test_warning_failures_of_unchanged_rows_still_count_and_a_fixed_row_stops_counting(tmp_path):
    land(tmp_path, "r1", [citizen(f"03120300{i:04d}", soCmndCu="12345") for i in range(3)]
         + [citizen(f"03120300{i:04d}") for i in range(3, 8)])
    first, moved = cycle(tmp_path, sorted((tmp_path / "raw").rglob("*.parquet")), "r1", -1)
    assert outcome(first, RULE).unexpected_staged == 3 and first.rows_changed == 8
    flagged = {r["citizen_id"]: r["_failed_rules"] for r in zones.read_table(moved.staged_path).to_pylist()}
    assert sum(1 for v in flagged.values() if v == [RULE]) == 3

    seen = set((tmp_path / "raw").rglob("*.parquet"))
    land(tmp_path, "r2", [citizen("031203009999")])  # unrelated new citizen
    since = zones.split_ref(moved.staged_path)[1]
    second, moved = cycle(tmp_path, sorted(set((tmp_path / "raw").rglob("*.parquet")) - seen), "r2", since)
    assert second.rows_changed == 1
    assert outcome(second, RULE).unexpected_staged == 3  # the state, not the change
    assert outcome(second, RULE).element_count == 9

    seen = set((tmp_path / "raw").rglob("*.parquet"))
    land(tmp_path, "r3", [citizen("031203000000", soCmndCu="123456789", updated="2026-11-22T08:00:00+07:00")])
    since = zones.split_ref(moved.staged_path)[1]
    third, moved = cycle(tmp_path, sorted(set((tmp_path / "raw").rglob("*.parquet")) - seen), "r3", since)
    assert outcome(third, RULE).unexpected_staged == 2  # the fixed row no longer fails

    _, rebuilt = cycle(tmp_path, sorted((tmp_path / "raw").rglob("*.parquet")), "full", -1, root="rebuilt", full=True)
    assert compare(moved.staged_path, rebuilt.staged_path, exclude=("_staged_version",))["equal"]
