"""Identifier rules: personal IDs (CCCD, Circular 59/2021/TT-BCA Art. 4) and enterprise codes (tax codes).

Personal ID: 12 digits; digits 1-3 the province (or country) of birth registration, digit 4 century and sex
(1900s: 0 male / 1 female, 2000s: 2 / 3, 2100s: 4 / 5), digits 5-6 the birth year's last two digits.
Enterprise codes are checked with python-stdnum (`stdnum.vn.mst`), not a copy of its check digit.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pandas as pd

_PERSONAL_ID = re.compile(r"^[0-9]{12}$")
_LEGACY_ID = re.compile(r"^[0-9]{9}$")
_CENTURY_BASE = {1900: 0, 2000: 2, 2100: 4}


def is_personal_id(value: str | None) -> bool:
    return bool(value and _PERSONAL_ID.match(value))


def is_legacy_id(value: str | None) -> bool:
    return bool(value and _LEGACY_ID.match(value))


def century_sex_digit(birth_year: int, sex: str | None) -> set[int]:
    """Allowed 4th digits for a birth year and sex (both sexes' digits when sex is unknown or other)."""
    base = _CENTURY_BASE.get(birth_year // 100 * 100)
    if base is None:
        return set()
    if sex == "NAM":
        return {base}
    if sex == "NU":
        return {base + 1}
    return {base, base + 1}


def personal_id_matches_birth(personal_id: str | None, birth_year: int | None, sex: str | None) -> bool | None:
    """Whether the ID's century/sex digit and year digits agree with the record; None when not checkable."""
    if not is_personal_id(personal_id) or birth_year is None:
        return None
    assert personal_id is not None
    allowed = century_sex_digit(birth_year, sex)
    return int(personal_id[3]) in allowed and int(personal_id[4:6]) == birth_year % 100


def personal_id_matches_birth_series(ids: pd.Series, birth_dates: pd.Series, sexes: pd.Series) -> pd.Series:
    """Vectorised `personal_id_matches_birth` over columns (object dtype: True / False / None)."""
    ids = ids.astype("string")
    ok_shape = ids.str.fullmatch(r"[0-9]{12}").fillna(False).astype(bool)
    years = pd.to_datetime(birth_dates, errors="coerce").dt.year
    checkable = ok_shape & years.notna()
    digit4 = pd.to_numeric(ids.str.slice(3, 4), errors="coerce")
    yy = pd.to_numeric(ids.str.slice(4, 6), errors="coerce")
    base = (years // 100 * 100).map(_CENTURY_BASE)
    sexes = sexes.astype("string")
    # A missing sex is "unknown": both sex digits of the century are allowed (no NA in the masks).
    male = (sexes == "NAM").fillna(False).to_numpy(dtype=bool)
    female = (sexes == "NU").fillna(False).to_numpy(dtype=bool)
    d4, b = digit4.to_numpy(dtype=float, na_value=np.nan), base.to_numpy(dtype=float, na_value=np.nan)
    century_ok = np.where(male, d4 == b, np.where(female, d4 == b + 1, (d4 == b) | (d4 == b + 1)))
    result = pd.Series(century_ok, index=ids.index).fillna(False).astype(bool) & (yy == years % 100).fillna(False).astype(bool)
    out = result.astype(object)
    out[~checkable.to_numpy()] = None
    return out


def is_enterprise_code(value: str | None) -> bool:
    """A valid enterprise code (10 digits, or 13 as NNNNNNNNNN-NNN for a branch), check digit included."""
    if not value:
        return False
    from stdnum.vn import mst

    return mst.is_valid(value)


def personal_id_prefixes() -> frozenset[str]:
    """The 3-digit birth-registration codes a personal ID may start with: the 63 pre-2025 province codes,
    zero-padded ('001' Hà Nội, '031' Hải Phòng, '079' TP. HCM). Circular 59/2021 keeps them after the 2025
    merger (domain.md). Read from the official unit list, not typed here. Country codes (citizens whose
    birth was registered abroad) are not bundled: pass them to `standardize.identifiers.personal_id` as
    `extra_prefixes` once the Circular's appendix is transcribed."""
    return _personal_id_prefixes()


@cache
def _personal_id_prefixes() -> frozenset[str]:
    from lienthong import adminunits

    return frozenset(f"0{c.province_code}" for c in adminunits.old_communes().values())


def century_base(birth_year: int) -> int | None:
    """The male 4th digit for a birth year's century (female = +1): 1900s 0, 2000s 2, 2100s 4."""
    return _CENTURY_BASE.get(birth_year // 100 * 100)
