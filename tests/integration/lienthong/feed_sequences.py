"""Seeded random sequences of published rows for the change-feed tests: each step changes, removes and adds
rows of a published dataset the way the registries do (people renamed, dying, moving province, gaining and
losing enterprises and parcels, merged into another entity; parcels re-measured, changing holders, moving
across a row filter)."""

from __future__ import annotations

import json
import random
from datetime import date

from sandbox.profiles import synthetic_profiles


def rows_key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)


def _citizens(rows: list[dict], rng: random.Random, step: int) -> list[dict]:
    """One publish's worth of change: about 6 % of the rows changed (renamed, dying, moving, gaining or losing
    enterprises and parcels, merged into another person's entity), 2 % removed, 3 % added."""
    out = []
    for r in rows:
        x = rng.random()
        if x < 0.02:
            continue  # removed (e.g. a duplicate record merged away)
        if x < 0.08:
            r = dict(r)
            kind = rng.choice(["rename", "death", "move", "enterprises", "parcels", "address", "merge"])
            if kind == "merge":  # found to be the same person as another record: it takes that entity's ID
                r["entity_id"] = rng.choice(rows)["entity_id"]
            elif kind == "rename":
                r["full_name"] = r["full_name"] + " Văn"
            elif kind == "death" and r["status"] != "DA_MAT":
                r["status"], r["death_date"] = "DA_MAT", date(2026, 1, 1 + step)
            elif kind == "move":
                r["residence_province_code"] = "01" if r["residence_province_code"] != "01" else "31"
                r["residence_commune_code_2025"] = "00070" if r["residence_province_code"] == "01" else "11311"
            elif kind == "enterprises":
                r["enterprises"] = None if r["enterprises"] else [
                    {"enterprise_code": f"0{step:02d}0233488", "enterprise_name": "Công ty TNHH Mới",
                     "enterprise_status": "DANG_HOAT_DONG", "title": "Giám đốc"}]
            elif kind == "parcels":
                r["parcels"] = (r["parcels"] or [])[1:] or None
            else:
                r["residence_address"] = f"Số {step} Lạch Tray"
        out.append(r)
    fresh = synthetic_profiles(len(rows) // 30 + 1, seed=100 + step).to_pylist()
    known = {r["citizen_id"] for r in out}
    out += [r for r in fresh if r["citizen_id"] not in known]
    return sorted(out, key=lambda r: r["citizen_id"])


def parcel(i: int, province: str) -> dict:
    return {"province_code": province, "commune_code_original": "11311" if province == "31" else "00070",
            "map_sheet": 1 + i % 40, "parcel_number": i, "parcel_id": 1000 + i, "entity_id": f"L-{i:016d}",
            "commune_code_2025": "11311" if province == "31" else "00070", "area_m2": 40.0 + i % 300,
            "land_use": "ODT", "address": f"Tổ {i % 9}",
            "holders": [{"holder_type": "CA_NHAN", "person_key": f"031085{i:06d}", "full_name": "Nguyễn Văn An",
                         "enterprise_code": None, "enterprise_name": None, "share_percent": 100.0,
                         "certificate_serial": f"AB{i:08d}", "certificate_status": "HIEU_LUC",
                         "link_method": "exact_id", "link_band": "accept"}]}


def _parcels(rows: list[dict], rng: random.Random, step: int) -> list[dict]:
    """Parcels re-measured, changing holders, re-registered in the other province (a key change that crosses
    the land department's row filter), removed, added."""
    out = []
    for r in rows:
        x = rng.random()
        if x < 0.02:
            continue
        if x < 0.10:
            r = dict(r)
            kind = rng.choice(["area", "holder", "province", "address"])
            if kind == "area":
                r["area_m2"] = r["area_m2"] + step
            elif kind == "holder":
                r["holders"] = [{**r["holders"][0], "person_key": f"001050{step:06d}", "full_name": "Lê Thị Mai"}]
            elif kind == "province":
                r["province_code"] = "01" if r["province_code"] == "31" else "31"
            else:
                r["address"] = f"Số {step} Hàng Bạc"
        out.append(r)
    top = max(r["parcel_number"] for r in out)
    out += [parcel(top + i + 1, rng.choice(["31", "01"])) for i in range(len(rows) // 30 + 1)]
    key = ("province_code", "commune_code_original", "map_sheet", "parcel_number", "parcel_id")
    return sorted({tuple(r[k] for k in key): r for r in out}.values(), key=lambda r: tuple(r[k] for k in key))


GENERATORS = {
    "citizen_profile": (lambda: sorted(synthetic_profiles(400, seed=7).to_pylist(), key=lambda r: r["citizen_id"]),
                        _citizens),
    "parcel_register": (lambda: [parcel(i, "31" if i % 3 else "01") for i in range(1, 301)], _parcels),
}


