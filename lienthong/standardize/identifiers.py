"""Identifiers: the personal ID (CCCD / số định danh, or an old 9-digit CMND) and the enterprise tax code.

Owns: `personal_id` (normalise, then check shape, birth-registration prefix, and the century/sex and
year digits against the record's birth date and sex) and `enterprise_code` (normalise and validate with
python-stdnum's `stdnum.vn.mst`). The rules themselves live in `lienthong.ids`; this module applies them
to Arrow columns.

`personal_id` is pure Arrow/numpy arithmetic (no Python per value: IDs are nearly unique per row, so
working on distinct values would not save anything); `enterprise_code` calls python-stdnum once per
DISTINCT code.

Issue codes:
  missing                  no ID / code (null or blank)
  bad_format               personal ID not 12 digits (nor 9) after removing spaces, dots, hyphens;
                           tax code not 10 or 13 digits, or a part stdnum rejects (digits 3-9 all zero,
                           branch suffix 000)
  legacy_9_digit           a 9-digit CMND where a CCCD is expected: recognised, not an error by itself
  unknown_province_prefix  the first 3 digits are not a pre-2025 province code (nor an extra prefix given)
  id_birth_mismatch        the 4th digit (century and sex) or digits 5-6 (birth year) disagree with the
                           record; a finding about the record, the ID is NOT changed
  invalid_check_digit      a well-formed tax code whose check digit is wrong
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from stdnum import exceptions as stdnum_errors
from stdnum.vn import mst

from lienthong import ids as id_rules

from .common import ArrayLike, Standardized, as_array, issues_from_flags, map_distinct, to_bool_numpy
from .dates import parse_dates

__all__ = ["enterprise_code", "personal_id"]

# Separators people key into an ID number; anything else non-digit makes the value bad_format.
_SEPARATORS = r"[\s.\-]+"
_MALE = {"NAM", "M", "MALE"}
_FEMALE = {"NU", "NỮ", "F", "FEMALE"}


def _birth_years(birth_dates: ArrayLike | Sequence | None, n: int) -> np.ndarray:
    """Birth year per row as float (NaN unknown): from dates/timestamps, integer years, or date text in
    any form `parse_dates` reads (a partial date still gives its year)."""
    if birth_dates is None:
        return np.full(n, np.nan)
    arr = as_array(birth_dates)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = parse_dates(arr).values
    if pa.types.is_integer(arr.type):
        years = arr
    elif pa.types.is_date(arr.type) or pa.types.is_timestamp(arr.type):
        years = pc.year(arr)
    elif pa.types.is_null(arr.type):
        return np.full(n, np.nan)
    else:
        raise TypeError(f"birth_dates must be dates, timestamps, integer years or date text, not {arr.type}")
    return years.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _sex_codes(sexes: ArrayLike | Sequence | None, n: int) -> np.ndarray:
    """0 male, 1 female, -1 unknown or other (then both of the century's digits are accepted)."""
    if sexes is None:
        return np.full(n, -1, dtype=np.int8)
    arr = pc.utf8_upper(pc.utf8_trim_whitespace(as_array(sexes, pa.string())))
    male = to_bool_numpy(pc.is_in(arr, value_set=pa.array(sorted(_MALE))))
    female = to_bool_numpy(pc.is_in(arr, value_set=pa.array(sorted(_FEMALE))))
    return np.where(male, 0, np.where(female, 1, -1)).astype(np.int8)


def personal_id(ids: ArrayLike | Sequence[str | None], birth_dates: ArrayLike | Sequence | None = None,
                sexes: ArrayLike | Sequence[str | None] | None = None,
                extra_prefixes: Iterable[str] = ()) -> Standardized:
    """Normalise personal IDs (trim; remove spaces, dots and hyphens) and check them.

    `birth_dates`: the record's birth date (date32/timestamp, an integer year, or date text); `sexes`:
    'NAM' / 'NU' (also 'Nữ', 'M', 'F'), anything else checks against both sexes' digits. Without them
    only shape and prefix are checked. `extra_prefixes`: further accepted 3-digit prefixes (country codes).
    `values` is the normalised text (null when missing); `repaired` is True where normalising changed it."""
    raw = as_array(ids, pa.string())
    n = len(raw)
    norm = pc.replace_substring_regex(raw, _SEPARATORS, "")
    missing = to_bool_numpy(pc.or_kleene(pc.is_null(norm), pc.equal(norm, "")))
    norm = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), norm)
    is12 = to_bool_numpy(pc.match_substring_regex(norm, r"^[0-9]{12}$"))
    is9 = to_bool_numpy(pc.match_substring_regex(norm, r"^[0-9]{9}$"))

    prefixes = pa.array(sorted(id_rules.personal_id_prefixes() | set(extra_prefixes)), pa.string())
    prefix_known = to_bool_numpy(pc.is_in(pc.utf8_slice_codeunits(norm, 0, 3), value_set=prefixes))

    digits = pc.if_else(pa.array(is12), norm, pa.scalar("000000000000"))
    digit4 = pc.cast(pc.utf8_slice_codeunits(digits, 3, 4), pa.int64()).to_numpy()
    yy = pc.cast(pc.utf8_slice_codeunits(digits, 4, 6), pa.int64()).to_numpy()
    years = _birth_years(birth_dates, n)
    sex = _sex_codes(sexes, n)
    known_year = ~np.isnan(years)
    year = np.where(known_year, years, 2000).astype(np.int64)
    # The century rule of lienthong.ids, evaluated once per distinct century (-10: no valid digit).
    centuries, inverse = np.unique(year // 100, return_inverse=True)
    bases = np.array([b if (b := id_rules.century_base(int(c) * 100)) is not None else -10 for c in centuries])
    base = bases[inverse.reshape(-1)]
    century_ok = np.where(sex == 0, digit4 == base, np.where(sex == 1, digit4 == base + 1,
                                                             (digit4 == base) | (digit4 == base + 1)))
    mismatch = is12 & known_year & ~(century_ok & (yy == year % 100))

    issue = issues_from_flags([
        ("missing", missing),
        ("bad_format", ~missing & ~is12 & ~is9),
        ("legacy_9_digit", is9),
        ("unknown_province_prefix", is12 & ~prefix_known),
        ("id_birth_mismatch", mismatch),
    ], n)
    repaired = pc.and_(pc.not_equal(norm, raw), pc.is_valid(norm)).fill_null(False)
    return Standardized(values=norm, repaired=repaired, issue=issue)


def _tax_code_one(value: str) -> tuple[str | None, bool, str | None]:
    compact = mst.compact(value)
    if not compact:
        return None, value != "", "missing"
    try:
        valid = mst.validate(compact)
    except stdnum_errors.InvalidChecksum:
        formatted = mst.format(compact)
        return formatted, formatted != value, "invalid_check_digit"
    except stdnum_errors.ValidationError:
        # Wrong length, non-digits, or an impossible part: keep the normalised text for the record.
        shaped = mst.format(compact) if compact.isdigit() and len(compact) in (10, 13) else compact
        return shaped, shaped != value, "bad_format"
    formatted = mst.format(valid)
    return formatted, formatted != value, None


def enterprise_code(codes: ArrayLike | Sequence[str | None]) -> Standardized:
    """Normalise and validate enterprise codes (tax codes) with python-stdnum: spaces, dots and hyphens
    removed, then written as 10 digits or, for a branch, 'NNNNNNNNNN-NNN'. One stdnum call per DISTINCT
    code. An invalid code keeps its normalised text; the issue says why it failed."""
    values, changed, issue = map_distinct(
        as_array(codes, pa.string()), _tax_code_one, (pa.string(), pa.bool_(), pa.string()),
        null_result=(None, False, "missing"))
    return Standardized(values, changed, issue)
