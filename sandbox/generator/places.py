"""Where things are: the administrative units the generator places people, firms and parcels in.

Owns: `Places`, numpy-friendly arrays built once from `lienthong.adminunits` (never a hand-written unit
table): the pre-2025 communes that now belong to the home province (residences, head offices) with their
default 2025 commune, the home province's 2025 communes, the old communes of any old province (hometowns,
outside people), and the old and new communes of a land province.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from lienthong import adminunits


@dataclass(frozen=True)
class CommuneSet:
    """Parallel arrays over a list of communes."""

    code: pa.Array  # 5-digit commune code
    district: pa.Array  # 3-digit district code (null for 2025 communes)
    province: pa.Array  # 2-digit province code (old or new, as the unit is)
    name: pa.Array
    district_name: pa.Array
    urban: np.ndarray  # bool: a ward (phường) or town (thị trấn), else a rural commune (xã)
    new_code: pa.Array  # the 2025 commune it became (itself for 2025 communes)
    new_province: pa.Array  # the 2025 province of new_code

    def __len__(self) -> int:
        return len(self.code)


def _is_urban(name: str) -> bool:
    return name.startswith(("Phường", "Thị trấn"))


def _old_set(communes: list[adminunits.OldCommune]) -> CommuneSet:
    new = adminunits.new_communes()
    targets = []
    for c in communes:
        conv = adminunits.to_2025(c.code)
        targets.append(conv.default if conv else None)
    return CommuneSet(
        code=pa.array([c.code for c in communes], pa.string()),
        district=pa.array([c.district_code for c in communes], pa.string()),
        province=pa.array([c.province_code for c in communes], pa.string()),
        name=pa.array([c.name for c in communes], pa.string()),
        district_name=pa.array([c.district_name for c in communes], pa.string()),
        urban=np.array([_is_urban(c.name) for c in communes], dtype=bool),
        new_code=pa.array(targets, pa.string()),
        new_province=pa.array([new[t].province_code if t else None for t in targets], pa.string()),
    )


def _new_set(communes: list[adminunits.NewCommune]) -> CommuneSet:
    n = len(communes)
    return CommuneSet(
        code=pa.array([c.code for c in communes], pa.string()),
        district=pa.nulls(n, pa.string()),
        province=pa.array([c.province_code for c in communes], pa.string()),
        name=pa.array([c.name for c in communes], pa.string()),
        district_name=pa.nulls(n, pa.string()),
        urban=np.array([_is_urban(c.name) for c in communes], dtype=bool),
        new_code=pa.array([c.code for c in communes], pa.string()),
        new_province=pa.array([c.province_code for c in communes], pa.string()),
    )


@cache
def home_old(province: str) -> CommuneSet:
    """Pre-2025 communes whose default 2025 commune lies in `province` (for '31': old Hải Phòng and old
    Hải Dương), sorted by code."""
    new = adminunits.new_communes()
    out = []
    for c in adminunits.old_communes().values():
        conv = adminunits.to_2025(c.code)
        if conv and new[conv.default].province_code == province:
            out.append(c)
    if not out:
        raise ValueError(f"no pre-2025 commune maps into province {province!r}")
    return _old_set(out)


@cache
def old_in(old_province: str) -> CommuneSet:
    """Pre-2025 communes of one pre-2025 province code."""
    communes = adminunits.old_communes_in(old_province)
    if not communes:
        raise ValueError(f"no pre-2025 communes for province {old_province!r}")
    return _old_set(communes)


@cache
def new_in(province: str) -> CommuneSet:
    """2025 communes of one 2025 province code."""
    communes = adminunits.new_communes_in(province)
    if not communes:
        raise ValueError(f"no 2025 communes for province {province!r}")
    return _new_set(communes)


@cache
def old_province_codes() -> tuple[str, ...]:
    """The 63 pre-2025 province codes (the first digits of a personal ID, zero-padded to 3)."""
    return tuple(sorted({c.province_code for c in adminunits.old_communes().values()}))


@cache
def new_province_codes() -> tuple[str, ...]:
    """The 34 province codes of the 2025 reform, sorted."""
    return tuple(sorted({c.province_code for c in adminunits.new_communes().values()}))


@cache
def province_short_name(province: str) -> str:
    """'31' -> 'Hải Phòng' (the 2025 province's name without 'Thành phố' / 'Tỉnh')."""
    for c in adminunits.new_communes().values():
        if c.province_code == province:
            name = c.province_name
            for prefix in ("Thành phố ", "Tỉnh "):
                name = name.removeprefix(prefix)
            return name
    raise ValueError(f"no 2025 province {province!r}")


@cache
def old_to_new_province() -> dict[str, str]:
    """Pre-2025 province code -> the 2025 province it merged into (the province of most of its communes'
    2025 communes; in the package's lists every old province goes whole into one new one)."""
    new = adminunits.new_communes()
    votes: dict[str, dict[str, int]] = {}
    for c in adminunits.old_communes().values():
        conv = adminunits.to_2025(c.code)
        if conv:
            slot = votes.setdefault(c.province_code, {})
            target = new[conv.default].province_code
            slot[target] = slot.get(target, 0) + 1
    return {old: max(sorted(v), key=lambda k: v[k]) for old, v in sorted(votes.items())}


@cache
def old_codes_of(province: str) -> tuple[int, ...]:
    """The pre-2025 province codes (as ints, the first digits of a personal ID) that merged into a 2025
    province: '31' -> (30, 31)."""
    return tuple(sorted(int(o) for o, n in old_to_new_province().items() if n == province))
