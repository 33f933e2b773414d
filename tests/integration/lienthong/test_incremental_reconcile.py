"""Incremental reconciliation equals a rebuild, step after step, and untouched entities keep their IDs.

A real province (sandbox, real connectors) is staged, validated and reconciled. Then random change sequences
arrive the way the agency systems deliver them: new raw landings of changed source records (in each system's
own payload format, with a newer update time), staged, validated and reconciled by the pipeline's own steps:
citizens renamed, born, dying, re-registered under a corrected ID (a duplicate record appearing), birth dates
corrected; enterprises dissolving; representatives renamed or given a mistyped ID; land holders renamed,
deleted, losing their document number, added; parcels re-measured or deleted; certificates moving to another
holder or parcel, revoked or re-shared. After every step:

- `rebuild.check_reconcile` (relink everything from scratch with the persisted models, assign entity IDs
  against the registry) equals what the incremental run left: link state, integrated tables with their
  entity IDs, registry members, open findings;
- the change run relinked only part of the person records, and recomputed golden records and findings only
  for the keys the change touched (the rest carried over from the last run's snapshot);
- every record whose entity ID changed is named by one of the run's entity events (an entity untouched by
  the change keeps its ID).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

CITIZENS = 2500
SEED = 8

SOURCES = {  # (source, entity) -> (key field, updated field)
    ("population_registry", "citizens"): ("soDinhDanh", "capNhatLuc"),
    ("business_registry", "enterprises"): ("MaSoDN", "NgayCapNhat"),
}
LAND = ("chu_su_dung", "id", "cap_nhat_luc")


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    from province import reconciled_province

    with reconciled_province(tmp_path_factory.mktemp("increconcile"), citizens=CITIZENS, seed=SEED) as prov:
        yield prov


def _payloads(raw_dir: Path, source: str, entity: str) -> dict[str, dict[str, Any]]:
    """The newest landed payload of every key of one source entity."""
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for f in sorted((raw_dir / source / entity).rglob("*.parquet")):
        t = pq.read_table(f, columns=["_key", "_ingested_at", "payload"])
        for key, at, payload in zip(t["_key"].to_pylist(), t["_ingested_at"].to_pylist(), t["payload"].to_pylist(),
                                    strict=True):
            if key not in newest or str(at) >= newest[key][0]:
                newest[key] = (str(at), json.loads(payload))
    return {k: v for k, (_, v) in newest.items()}


def _land(raw_dir: Path, source: str, entity: str, run_id: str, items: list[dict[str, Any]], key: str, updated: str) -> None:
    from connectors.base.landing import RawLanding

    if not items:
        return
    landing = RawLanding(raw_dir, source, entity, run_id)
    landing.write_page(items, key_field=key, updated_field=updated)
    landing.commit()


def change_sources(raw_dir: Path, rng: random.Random, step: int, run_id: str) -> list[str]:
    done: list[str] = []
    stamp_iso = f"2026-12-0{1 + step % 8}T0{step % 10}:00:00+07:00"
    cit = _payloads(raw_dir, "population_registry", "citizens")
    keys = sorted(cit)
    items = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(["rename", "death", "born", "re_registered", "birth_corrected"])
        item = dict(cit[rng.choice(keys)])
        if kind == "rename":
            item["hoVaTen"] = " ".join(item["hoVaTen"].split()[:-1] + ["Khánh"])
        elif kind == "death":
            item["trangThai"], item["ngayMat"] = "DA_MAT", "2026-11-30"
        elif kind in ("born", "re_registered"):
            item["soDinhDanh"] = item["soDinhDanh"][:6] + f"{rng.randrange(10**6):06d}"
            if kind == "born":
                item["hoVaTen"] = item["hoVaTen"] + " Minh"
                item["soCmndCu"] = None
        else:
            y, m, d = item["ngaySinh"].split("-")
            item["ngaySinh"] = f"{y}-{m}-{(int(d) % 28) + 1:02d}"
        item["capNhatLuc"] = stamp_iso
        items.append(item)
        done.append(f"citizen {kind}")
    # a duplicate record of a citizen arrives with an older update time: it becomes the survivor of the
    # cluster, so the citizen's own unchanged record moves to another person
    item = dict(cit[rng.choice(keys)])
    item["soDinhDanh"] = item["soDinhDanh"][:6] + f"{rng.randrange(10**6):06d}"
    item["capNhatLuc"] = f"2001-01-0{1 + step % 8}T00:00:00+07:00"
    items.append(item)
    done.append("citizen re_registered with an older record")
    # a legal representative of an enterprise dies (the findings of every role the person holds change)
    ent_now = _payloads(raw_dir, "business_registry", "enterprises")
    reps = sorted({r.get("SoGiayTo") for e in ent_now.values() for r in (e.get("NguoiDaiDien") or [])
                   if r.get("SoGiayTo") in cit and cit[r["SoGiayTo"]].get("trangThai") != "DA_MAT"}, key=str)
    if reps:
        item = dict(cit[rng.choice(reps)]) | {"trangThai": "DA_MAT", "ngayMat": "2026-11-29", "capNhatLuc": stamp_iso}
        items.append(item)
        done.append("legal representative death")
    # the population registry registers a person another registry already names by a 12-digit ID it did not
    # know (the left record is unchanged: only the registry change can relink it)
    unknown = sorted({h["so_giay_to"] for p in (raw_dir / "land_registry").iterdir() if p.is_dir()
                      for h in _payloads(raw_dir, "land_registry", f"{p.name}/{LAND[0]}").values()
                      if h.get("loai") == "CA_NHAN" and h.get("so_giay_to") and len(h["so_giay_to"]) == 12
                      and h["so_giay_to"] not in cit and not h.get("da_xoa")}, key=str)
    if unknown:
        doc = rng.choice(unknown)
        holder = next(h for p in sorted((raw_dir / "land_registry").iterdir()) if p.is_dir()
                      for h in _payloads(raw_dir, "land_registry", f"{p.name}/{LAND[0]}").values()
                      if h.get("so_giay_to") == doc)
        item = dict(cit[rng.choice(keys)]) | {"soDinhDanh": doc, "hoVaTen": holder["ho_ten"], "soCmndCu": None,
                                              "capNhatLuc": stamp_iso}
        items.append(item)
        done.append("citizen registered under an ID a land holder gave")
    _land(raw_dir, "population_registry", "citizens", run_id, items, "soDinhDanh", "capNhatLuc")

    ent = _payloads(raw_dir, "business_registry", "enterprises")
    items = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["dissolve", "rep_renamed", "rep_id_typo"])
        item = json.loads(json.dumps(ent[rng.choice(sorted(ent))]))
        reps = item.get("NguoiDaiDien") or []
        if kind == "dissolve" or not reps:
            item["TinhTrang"] = "GIAI_THE"
            kind = "dissolve"
        elif kind == "rep_renamed":
            reps[0]["HoTen"] = reps[0]["HoTen"].upper()
        elif reps[0].get("SoGiayTo"):
            d = reps[0]["SoGiayTo"]
            reps[0]["SoGiayTo"] = d[:-1] + str((int(d[-1]) + 1) % 10)
        item["NgayCapNhat"] = f"0{1 + step % 8}/12/2026 0{step % 10}:00:00"
        items.append(item)
        done.append(f"enterprise {kind}")
    _land(raw_dir, "business_registry", "enterprises", run_id, items, "MaSoDN", "NgayCapNhat")

    for province in sorted(p.name for p in (raw_dir / "land_registry").iterdir() if p.is_dir()):
        entity = f"{province}/{LAND[0]}"
        holders = _payloads(raw_dir, "land_registry", entity)
        items = []
        for _ in range(rng.randint(0, 2)):
            kind = rng.choice(["rename", "deleted", "drop_id", "added"])
            item = dict(holders[rng.choice(sorted(holders, key=int))])
            if kind == "rename":
                item["ho_ten"] = (item["ho_ten"] or "") + " Văn"
            elif kind == "deleted":
                item["da_xoa"] = True
            elif kind == "drop_id":
                item["so_giay_to"], item["loai_giay_to"] = None, None
            else:
                item["id"] = 900_000 + rng.randrange(10**5)
            item["cap_nhat_luc"] = f"2026-12-0{1 + step % 8}T0{step % 10}:00:00.000000Z"
            items.append(item)
            done.append(f"holder {province} {kind}")
        _land(raw_dir, "land_registry", entity, run_id, items, LAND[1], LAND[2])
        # parcels re-measured or deleted; certificates moving to another holder or parcel, revoked, re-shared
        stamp = f"2026-12-0{1 + step % 8}T0{step % 10}:00:00.000000Z"
        parcels = _payloads(raw_dir, "land_registry", f"{province}/thua_dat")
        items = []
        for _ in range(rng.randint(0, 2)):
            kind = rng.choice(["area", "deleted"])
            item = dict(parcels[rng.choice(sorted(parcels, key=int))])
            if kind == "area":
                item["dien_tich"] = round(float(item["dien_tich"] or 0) + 1.5, 1)
            else:
                item["da_xoa"] = True
            item["cap_nhat_luc"] = stamp
            items.append(item)
            done.append(f"parcel {province} {kind}")
        _land(raw_dir, "land_registry", f"{province}/thua_dat", run_id, items, "id", "cap_nhat_luc")
        certificates = _payloads(raw_dir, "land_registry", f"{province}/giay_chung_nhan")
        items = []
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(["new_holder", "other_parcel", "revoked", "share"])
            item = dict(certificates[rng.choice(sorted(certificates, key=int))])
            other = certificates[rng.choice(sorted(certificates, key=int))]
            if kind == "new_holder":
                item["chu_su_dung_id"] = other["chu_su_dung_id"]
            elif kind == "other_parcel":
                item["thua_dat_id"] = other["thua_dat_id"]
            elif kind == "revoked":
                item["trang_thai"] = "DA_THU_HOI"
            else:
                item["ty_le_so_huu"] = 50.0
            item["cap_nhat_luc"] = stamp
            items.append(item)
            done.append(f"certificate {province} {kind}")
        _land(raw_dir, "land_registry", f"{province}/giay_chung_nhan", run_id, items, "id", "cap_nhat_luc")
    return done


def _entity_of_record(settings) -> dict[tuple[str, str, str], str]:
    from lienthong import entities

    members, _ = entities.load(entities.registry_dir(settings))
    return {(r["kind"], r["dataset"], r["record_key"]): r["entity_id"] for r in members.to_pylist()}


def _check_recorded_change(previous: dict[str, Any], result: dict[str, Any]) -> int:
    """Every integrated table the run wrote has a record of the keys it may differ in from the last run's
    version (`outputchange`), and every key whose row differs between the two versions (or is in one only)
    is among them; returns how many keys the records name."""
    from lienthong import zones
    from lienthong.duck import session
    from lienthong.reconcile import outputchange

    named = 0
    for name, out in result["outputs"].items():
        if not out["written"]:
            continue
        keys = outputchange.keys_between(previous[name]["path"], out["path"])
        assert keys is not None and out["changed_keys"] == keys.num_rows, (name, out)
        assert keys.num_rows < out["rows"], (name, keys.num_rows, out)
        with session(purpose="test") as con:
            zones.register(con, "old", previous[name]["path"])
            zones.register(con, "new", out["path"])
            key = outputchange.key_sql(name)
            differing = {r[0] for r in con.execute(f"""
                SELECT CAST(({key}) AS VARCHAR) FROM ((SELECT * FROM old EXCEPT ALL SELECT * FROM new)
                                                     UNION ALL (SELECT * FROM new EXCEPT ALL SELECT * FROM old))""").fetchall()}
        assert differing, (name, "a version with no row changed is not written")
        missing = differing - set(keys["k"].to_pylist())
        assert not missing, (name, sorted(missing)[:5])
        named += keys.num_rows
    return named


def test_each_change_run_equals_a_rebuild_and_keeps_untouched_ids(reconciled):
    from lienthong import entities, pipeline, zones
    from lienthong.rebuild import check_reconcile
    from lienthong.reconcile.sources import INPUT_DATASETS

    s = reconciled["settings"]
    assert reconciled["first"]["link_state"]["mode"] == "full"
    check = check_reconcile(s)
    assert check["equal"], check
    rng = random.Random(3)
    previous = reconciled["first"]["outputs"]
    for step in range(1, 5):
        before = _entity_of_record(s)
        run_id = f"c{step}"
        done = change_sources(s.raw_dir, rng, step, run_id)
        for name in INPUT_DATASETS:
            summary = pipeline.stage(name, run_id)
            if summary.get("mode") not in ("none", "unchanged"):
                pipeline.validate(name, run_id, summary)
        result = pipeline.reconcile(run_id)
        # the keys the new versions may differ in are recorded, and hold every row that differs
        assert _check_recorded_change(previous, result) > 0, (step, done)
        previous = result["outputs"]
        state = result["link_state"]
        assert state["mode"] == "change", (step, done, state)
        assert 0 < state["counts"]["relinked"] < state["counts"]["left_upserts"] + 400, (step, done, state["counts"])
        # the warehouse was given only the findings that changed (and check_reconcile below compares every
        # open finding there with a rebuild's)
        sync = result["findings_sync"]
        assert sync["mode"] == "change", (step, sync)
        assert 0 < sync["changed"] + sync["gone"] < result["findings"]["found"], (step, sync, result["findings"])
        # golden records and findings were recomputed for the touched keys only, the rest carried over
        golden = result["golden_state"]
        assert golden["mode"] == "change", (step, golden)
        for name, out in golden["outputs"].items():
            rows = result["outputs"][name]["rows"] if name != "clusters" else len(before)
            assert out["recomputed"] < rows, (step, name, out)
        assert set(golden["outputs"]) == set(result["outputs"]) | {"clusters"}
        assert sum(out["touched"] for out in golden["outputs"].values()) > 0, (step, golden)
        check = check_reconcile(s)
        assert check["equal"], (step, done, {k: v for k, v in check.items() if k != "equal"})
        # an entity ID changes only where the run's events say why
        after = _entity_of_record(s)
        events = zones.read_table(entities.registry_dir(s) / "entity_event").to_pylist()
        named = {e["entity_id"] for e in events if e["run_id"] == run_id} | {
            e["other_entity_id"] for e in events if e["run_id"] == run_id and e["other_entity_id"]}
        moved = [(r, before[r], after[r]) for r in before.keys() & after.keys() if before[r] != after[r]]
        unexplained = [m for m in moved if m[1] not in named and m[2] not in named]
        assert not unexplained, (step, done, unexplained[:5])
        kept = sum(1 for r in before.keys() & after.keys() if before[r] == after[r])
        assert kept >= 0.98 * len(before), (step, done, kept, len(before))
    # a change that reaches no parcel: the parcel master is the last run's file, copied, and still equal
    ent = _payloads(s.raw_dir, "business_registry", "enterprises")
    item = json.loads(json.dumps(ent[sorted(ent)[0]])) | {"NgayCapNhat": "08/12/2026 09:00:00"}
    item["TenTiengAnh"] = (item.get("TenTiengAnh") or "") + " NEW"
    _land(s.raw_dir, "business_registry", "enterprises", "c-ent", [item], "MaSoDN", "NgayCapNhat")
    for name in INPUT_DATASETS:
        summary = pipeline.stage(name, "c-ent")
        if summary.get("mode") not in ("none", "unchanged"):
            pipeline.validate(name, "c-ent", summary)
    result = pipeline.reconcile("c-ent")
    golden = result["golden_state"]
    assert golden["mode"] == "change", golden
    assert golden["outputs"]["parcel_master"] == {"touched": 0, "recomputed": 0,
                                                  "seconds": golden["outputs"]["parcel_master"]["seconds"]}
    assert golden["outputs"]["enterprise_master"]["touched"] >= 1, golden["outputs"]
    check = check_reconcile(s)
    assert check["equal"], ("c-ent", {k: v for k, v in check.items() if k != "equal"})
    # the newest run again under its own id, on inputs that changed since its first attempt succeeded: the
    # findings it syncs are the difference from what its first attempt left, not from its own new file
    done = change_sources(s.raw_dir, rng, 5, "c4-again")
    for name in INPUT_DATASETS:
        summary = pipeline.stage(name, "c4-again")
        if summary.get("mode") not in ("none", "unchanged"):
            pipeline.validate(name, "c4-again", summary)
    result = pipeline.reconcile("c4")
    assert result["findings_sync"]["mode"] == "change", result["findings_sync"]
    assert result["findings_sync"]["changed"] + result["findings_sync"]["gone"] > 0, result["findings_sync"]
    check = check_reconcile(s)
    assert check["equal"], ("c4 again", done, {k: v for k, v in check.items() if k != "equal"})
    # a run with no change does nothing
    for name in INPUT_DATASETS:
        pipeline.stage(name, "c-none")
    assert pipeline.reconcile("c-none").get("unchanged") is True
