"""Administrative units: commune codes, old (pre-2025, three-level) or new (2025, two-level), to 2025 codes.

Owns: `commune_to_2025`, which reads each (commune, district, province) combination once, decides whether
it is an old or a new code, and converts old codes with the official old -> new conversion of
`vietnamadminunits` (through `lienthong.adminunits`; no table is typed here). The caller keeps the
original code beside the result.

How an ambiguous 5-digit code is read. 3,316 of the 3,321 new commune codes are also old codes: most
new communes took the code of one of the old communes merged into them, so the two readings usually
agree, but 27 codes mean a different commune in each list (old 11443, Phường Trần Thành Ngọ of Hải
Phòng, went by default to 11446, while new 11443 is Phường Kiến An). The context decides:
  - a district code present => an old three-level record (the 2025 system has no districts): read the
    code in the old list, and it must lie in that district;
  - no district => a two-level record, read as a 2025 code when the new list has it (in the given
    province, if one is given); otherwise as an old code (in the given province, which may be the old
    province code or the 2025 one the commune now belongs to);
  - when both readings fit (no district, and the code exists in both lists under the same province
    code) and they disagree, the 2025 reading is returned and flagged 'commune_code_ambiguous' with the old reading's
    targets among the alternatives: the value alone cannot tell them apart.

Issue codes:
  commune_code_outdated     an old code, converted to its single 2025 commune
  commune_split_ambiguous   an old commune split across several new ones: the dataset's default target
                            is returned and every target is listed in `alternatives`
  commune_code_ambiguous    a code valid in both lists whose readings disagree (see above)
  commune_context_mismatch  a known code whose district or province contradicts it (no value returned)
  unknown_commune_code      in neither list (or not a 5-digit code)
  missing                   no commune code
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from lienthong import adminunits

from .common import ArrayLike, Standardized, distinct_rows, expand

__all__ = ["CommuneStandardized", "commune_to_2025"]


@dataclass(frozen=True)
class CommuneStandardized(Standardized):
    """`values`: the 2025 commune code; `province`: its 2025 province code; `alternatives`: list of every
    2025 commune the value may stand for when the conversion is not unique (null otherwise).
    `repaired`: True where the returned code differs from the input code."""

    province: pa.Array
    alternatives: pa.Array


def _code(value: str | None, width: int) -> str | None:
    """Trimmed code, zero-padded when it arrived as a number that lost its leading zeros ('1' -> '00001')."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    return value.zfill(width) if value.isdigit() and len(value) < width else value


_Resolved = tuple[str | None, str | None, bool, str | None, list[str] | None]


def _resolve(commune: str | None, district: str | None, province: str | None) -> _Resolved:
    """(2025 commune, 2025 province, changed, issue, alternatives) for one combination."""
    raw = commune
    code, district, province = _code(commune, 5), _code(district, 3), _code(province, 2)
    if code is None:
        return None, None, False, "missing", None
    old = adminunits.old_communes().get(code)
    new_list = adminunits.new_communes()
    new = new_list.get(code)
    conv = adminunits.to_2025(code)

    in_district = old is not None and (district is None or district == old.district_code)
    # The old reading in its own province, or given with the 2025 province the commune now lies in (a
    # record whose province was updated but not its commune); the latter only when no 2025 reading fits.
    fits_old = in_district and old is not None and (province is None or province == old.province_code)
    fits_old_moved = in_district and conv is not None and province == new_list[conv.default].province_code
    fits_new = new is not None and district is None and (province is None or province == new.province_code)

    if fits_new and new is not None:
        if fits_old and conv is not None and conv.default != code:
            targets = sorted({code, *conv.targets})
            return code, new.province_code, code != raw, "commune_code_ambiguous", targets
        return code, new.province_code, code != raw, None, None
    if (fits_old or fits_old_moved) and conv is not None:
        target = conv.default
        province_2025 = new_list[target].province_code
        if conv.is_split:
            return target, province_2025, target != raw, "commune_split_ambiguous", list(conv.targets)
        return target, province_2025, target != raw, "commune_code_outdated", None
    if old is not None or new is not None:
        return None, None, False, "commune_context_mismatch", None
    return None, None, False, "unknown_commune_code", None


def commune_to_2025(communes: ArrayLike | Sequence[str | None],
                    districts: ArrayLike | Sequence[str | None] | None = None,
                    provinces: ArrayLike | Sequence[str | None] | None = None) -> CommuneStandardized:
    """Convert commune codes to 2025 codes. `districts` (old 3-digit district codes; null for two-level
    records) and `provinces` (2-digit, old or new) give the context that decides how a code is read (see
    the module docstring). One lookup per DISTINCT (commune, district, province) combination."""
    combos, indices = distinct_rows(communes, districts, provinces)
    results = [_resolve(*combo) for combo in combos]
    values, province, repaired, issue, alternatives = expand(
        results, indices, (pa.string(), pa.string(), pa.bool_(), pa.string(), pa.list_(pa.string())))
    return CommuneStandardized(values=values, repaired=repaired, issue=issue, province=province,
                               alternatives=alternatives)

