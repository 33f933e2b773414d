"""Records a uniqueness rule quarantined come back when their duplicate is gone, as a rebuild would have them."""

from __future__ import annotations

from pathlib import Path

from connectors.base.landing import RawLanding
from lienthong import quality, zones
from lienthong.contracts import contract
from lienthong.rebuild import compare
from lienthong.staging import StagePlan, quarantine_by_rule, quarantine_failed_rows, stage_json_source

RULE = "parcel_natural_key_unique"


def parcel(id_: int, number: int, updated: str = "2026-11-20T08:00:00+07:00") -> dict:
    return {"id": id_, "ma_xa": "11311", "so_to_ban_do": 1, "so_thua": number, "dien_tich": 120.5,
            "muc_dich_su_dung": "ODT", "dia_chi": "Lạch Tray", "da_xoa": False, "cap_nhat_luc": updated}


def land(raw: Path, run_id: str, items: list[dict]) -> None:
    landing = RawLanding(raw, "land_registry", "31/thua_dat", run_id)
    landing.write_page(items, key_field="id", updated_field="cap_nhat_luc")
    landing.commit()


def cycle(root: Path, raw: Path, files: list[Path], run_id: str, *, full: bool = False) -> tuple[str, str]:
    """Stage `files`, validate the change, move rows failing a critical rule: the zones' versions after."""
    c = contract("parcel")
    staged = stage_json_source(c, files, run_id=run_id, staged_dir=root / "staged", quarantine_dir=root / "quarantine",
                               full=full, raw_dir=raw)
    since = -1 if full else (zones.version(root / "staged") or 0) - 1
    result = quality.validate(c, staged.staged_path, run_id=run_id, since_version=since,
                              quarantine_by_rule=quarantine_by_rule(staged.quarantine_path), store=False)
    critical = {o.rule: o.expectation for o in result.outcomes if o.severity == "critical"}
    failing = {r: k for r, k in result.failed_merge_keys.items() if r in critical and k}
    if not failing:
        return staged.staged_path, staged.quarantine_path
    moved = quarantine_failed_rows(c, run_id, staged.staged_path, raw, failing, critical, quarantine_dir=root / "quarantine")
    return moved.staged_path, moved.quarantine_path


def test_a_duplicate_fixed_at_the_source_releases_both_records_as_the_rebuild_does(tmp_path):
    raw = tmp_path / "raw"
    plan = StagePlan.from_contract(contract("parcel"))
    land(raw, "r1", [parcel(1, 7), parcel(2, 7), parcel(3, 8)])
    staged, quarantined = cycle(tmp_path / "zones", raw, plan.raw_files(raw), "r1")
    assert sorted(zones.read_table(staged).column("parcel_id").to_pylist()) == [3]
    q = zones.read_table(quarantined).to_pylist()
    assert sorted(r["record_key"] for r in q) == ["31, 1", "31, 2"]
    assert all(r["rules"] == [f"expectation:{RULE}"] for r in q)

    seen = set(plan.raw_files(raw))
    land(raw, "r2", [parcel(2, 9, updated="2026-11-21T08:00:00+07:00")])  # parcel 2 renumbered at the source
    new = [f for f in plan.raw_files(raw) if f not in seen]
    staged, quarantined = cycle(tmp_path / "zones", raw, new, "r2")
    assert sorted(zones.read_table(staged).column("parcel_id").to_pylist()) == [1, 2, 3]
    assert zones.read_table(quarantined).num_rows == 0

    rebuilt_staged, rebuilt_quarantine = cycle(tmp_path / "rebuilt", raw, plan.raw_files(raw), "full", full=True)
    assert compare(staged, rebuilt_staged, exclude=("_staged_version",))["equal"]
    assert compare(quarantined, rebuilt_quarantine, exclude=("run_id",))["equal"]


def test_a_duplicate_still_there_stays_quarantined(tmp_path):
    raw = tmp_path / "raw"
    plan = StagePlan.from_contract(contract("parcel"))
    land(raw, "r1", [parcel(1, 7), parcel(2, 7)])
    cycle(tmp_path / "zones", raw, plan.raw_files(raw), "r1")
    seen = set(plan.raw_files(raw))
    land(raw, "r2", [parcel(3, 8)])  # an unrelated change
    new = [f for f in plan.raw_files(raw) if f not in seen]
    staged, quarantined = cycle(tmp_path / "zones", raw, new, "r2")
    assert sorted(zones.read_table(staged).column("parcel_id").to_pylist()) == [3]
    assert sorted(r["record_key"] for r in zones.read_table(quarantined).to_pylist()) == ["31, 1", "31, 2"]
    rebuilt_staged, rebuilt_quarantine = cycle(tmp_path / "rebuilt", raw, plan.raw_files(raw), "full", full=True)
    assert compare(staged, rebuilt_staged, exclude=("_staged_version",))["equal"]
    assert compare(quarantined, rebuilt_quarantine, exclude=("run_id",))["equal"]
