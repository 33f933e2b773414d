"""Vietnamese administrative units before and after the 2025 reform, read from `vietnamadminunits`.

Owns: the lists of old (63-province, three-level) and new (34-province, two-level) units and the mapping
from an old commune code to its 2025 commune(s), built once from the package's own dataset
(`dataset.db` for codes, `converter_2025.json` for the old -> new conversion) and cached.
Nothing here is a hand-written table: every code comes from the package's official lists.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class OldCommune:
    code: str
    name: str
    district_code: str
    district_name: str
    province_code: str
    province_name: str


@dataclass(frozen=True)
class NewCommune:
    code: str
    name: str
    province_code: str
    province_name: str


@dataclass(frozen=True)
class Conversion:
    """Where an old commune went in 2025. `targets` lists every new commune that received part of it;
    `default` is the one the official dataset marks as default when the old commune was split."""

    old_code: str
    default: str
    targets: tuple[str, ...]

    @property
    def is_split(self) -> bool:
        return len(self.targets) > 1


def _data_path(name: str):
    return files("vietnamadminunits").joinpath("data", name)


def _rows(sql: str) -> list[tuple]:
    with sqlite3.connect(str(_data_path("dataset.db"))) as conn:
        return conn.execute(sql).fetchall()


@cache
def old_communes() -> dict[str, OldCommune]:
    """Every pre-2025 commune with a code, keyed by its 5-digit code."""
    out: dict[str, OldCommune] = {}
    for ward, wcode, district, dcode, province, pcode in _rows(
        "SELECT ward, wardCode, district, districtCode, province, provinceCode FROM admin_units_legacy "
        "WHERE wardCode IS NOT NULL ORDER BY wardCode"
    ):
        out.setdefault(wcode, OldCommune(wcode, ward, dcode, district, pcode, province))
    return out


@cache
def new_communes() -> dict[str, NewCommune]:
    """Every 2025 commune, keyed by its 5-digit code."""
    return {
        wcode: NewCommune(wcode, ward, pcode, province)
        for ward, wcode, province, pcode in _rows(
            "SELECT ward, wardCode, province, provinceCode FROM admin_units ORDER BY wardCode"
        )
    }


@cache
def conversions() -> dict[str, Conversion]:
    """Old commune code -> its 2025 commune(s), joined from the package's converter keys."""
    legacy = {
        f"{p}_{d}_{w or ''}": wcode
        for p, d, w, wcode in _rows(
            "SELECT provinceKey, districtKey, wardKey, wardCode FROM admin_units_legacy"
        )
    }
    new = {(p, w): wcode for p, w, wcode in _rows("SELECT provinceKey, wardKey, wardCode FROM admin_units")}
    conv = json.loads(_data_path("converter_2025.json").read_text(encoding="utf-8"))
    targets: dict[str, dict[str, bool]] = {}
    for new_province, wards in conv["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for new_ward, old_keys in wards.items():
            for old_key in old_keys:
                old_code, new_code = legacy.get(old_key), new.get((new_province, new_ward))
                if old_code and new_code:
                    targets.setdefault(old_code, {})[new_code] = True
    for new_province, olds in conv["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old_key, parts in olds.items():
            old_code = legacy.get(old_key)
            if not old_code:
                continue
            slot = targets.setdefault(old_code, {})
            for part in parts:
                new_code = new.get((new_province, part["newWardKey"]))
                if new_code:
                    # A split commune: only the dataset's default target is marked default.
                    slot[new_code] = bool(part["isDefaultNewWard"]) and slot.get(new_code, True)
    out: dict[str, Conversion] = {}
    for old_code, tmap in sorted(targets.items()):
        ordered = tuple(sorted(tmap))
        defaults = [c for c in ordered if tmap[c]]
        out[old_code] = Conversion(old_code, defaults[0] if defaults else ordered[0], ordered)
    return out


def old_communes_in(province_code: str) -> list[OldCommune]:
    """Pre-2025 communes of a pre-2025 province code (e.g. '31' Hải Phòng, '30' Hải Dương)."""
    return [c for c in old_communes().values() if c.province_code == province_code]


def new_communes_in(province_code: str) -> list[NewCommune]:
    """2025 communes of a 2025 province code."""
    return [c for c in new_communes().values() if c.province_code == province_code]


def to_2025(old_code: str) -> Conversion | None:
    """The 2025 conversion of an old commune code; None if the code is not an old commune."""
    return conversions().get(old_code)
