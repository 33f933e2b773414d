"""Dates and local times as agencies write them: several day-month-year forms, partial dates, local time.

Owns: `parse_dates` (text -> date32 with a precision and an issue) and `local_to_utc` (local wall-clock
text -> timestamp[us, UTC]). Both are vectorised Arrow computations over the DISTINCT values.

Forms (`FORMS`): 'yyyy-mm-dd' (ISO), 'dd/mm/yyyy', 'd/m/yyyy', 'dd-mm-yyyy', 'yyyy/mm/dd'. Day-month order
only: Vietnamese agencies never write month first, so '03/05/1985' is 3 May.

Partial dates: a day, or day and month, of '00' ('1985-03-00', '1985-00-00', '00/03/1985') is a partial
date, not an error: the value is the first day of the known period and `precision` says 'month' or
'year'. A month of 00 with a known day is unparseable.

Why not `pyarrow.compute.strptime` for dates: it rolls impossible dates over ('31/02/2020' -> 2020-03-02),
cannot express the '00' partial forms and requires zero padding. The date forms are therefore matched
with one `extract_regex` pass per form over the values still unparsed, and validated with numpy calendar
arithmetic. `local_to_utc` does use `strptime` (one format, full timestamps) and rejects its roll-overs by
comparing the numbers read back.

Issue codes: 'date_format_variant' (parsed, but not in one of the expected forms), 'unparseable'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .common import ArrayLike, Standardized, as_array, distinct, to_bool_numpy

__all__ = ["FORMS", "ParsedDates", "local_to_utc", "parse_dates"]

FORMS: dict[str, str] = {
    "yyyy-mm-dd": r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})$",
    "dd/mm/yyyy": r"^(?P<d>[0-9]{2})/(?P<m>[0-9]{2})/(?P<y>[0-9]{4})$",
    "d/m/yyyy": r"^(?P<d>[0-9]{1,2})/(?P<m>[0-9]{1,2})/(?P<y>[0-9]{4})$",
    "dd-mm-yyyy": r"^(?P<d>[0-9]{2})-(?P<m>[0-9]{2})-(?P<y>[0-9]{4})$",
    "yyyy/mm/dd": r"^(?P<y>[0-9]{4})/(?P<m>[0-9]{2})/(?P<d>[0-9]{2})$",
}
# A year outside this range is a placeholder or a typo ('0000', '1085'), not a birth or founding date.
MIN_YEAR, MAX_YEAR = 1800, 2200


@dataclass(frozen=True)
class ParsedDates(Standardized):
    """`values` date32 (first day of the known period); `precision` 'day' | 'month' | 'year' (null when
    not parsed); `repaired` True where the date was read from a variant form."""

    precision: pa.Array


def _forms(forms: str | Sequence[str]) -> list[str]:
    names = [forms] if isinstance(forms, str) else list(forms)
    unknown = [f for f in names if f not in FORMS]
    if unknown:
        raise ValueError(f"unknown date forms {unknown}; known: {list(FORMS)}")
    return names


def _calendar(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, days since epoch, precision code 0 day / 1 month / 2 year) for y/m/d numbers; day and
    month 0 mean 'unknown'."""
    year_ok = (y >= MIN_YEAR) & (y <= MAX_YEAR)
    month_ok = (m >= 1) & (m <= 12)
    month_index = (np.clip(y, MIN_YEAR, MAX_YEAR) - 1970) * 12 + np.clip(m, 1, 12) - 1
    first = month_index.astype("datetime64[M]").astype("datetime64[D]")
    days_in_month = ((month_index + 1).astype("datetime64[M]").astype("datetime64[D]") - first).astype(np.int64)
    full = year_ok & month_ok & (d >= 1) & (d <= days_in_month)
    month_only = year_ok & month_ok & (d == 0)
    year_only = year_ok & (m == 0) & (d == 0)
    jan_first = ((np.clip(y, MIN_YEAR, MAX_YEAR) - 1970) * 12).astype("datetime64[M]").astype("datetime64[D]")
    days = np.where(year_only, jan_first.astype(np.int64), first.astype(np.int64) + np.where(full, d - 1, 0))
    precision = np.where(full, 0, np.where(month_only, 1, 2))
    return full | month_only | year_only, days, precision


def parse_dates(arr: ArrayLike | Sequence[str | None], forms: str | Sequence[str] = "yyyy-mm-dd",
                variants: str | Sequence[str] | None = None) -> ParsedDates:
    """Parse date text. `forms`: the form(s) the source is meant to use (no issue). `variants`: other forms
    still accepted, flagged 'date_format_variant' (default: every other form in FORMS; pass () to make
    anything outside `forms` 'unparseable', e.g. where a contract requires ISO). Impossible dates
    ('31/02/2020') and text in no accepted form are 'unparseable'. Null or blank input gives a null date
    and no issue (whether a date is required is the contract's rule)."""
    expected = _forms(forms)
    others = [f for f in FORMS if f not in expected] if variants is None else _forms(variants)
    dictionary, indices = distinct(pc.utf8_trim_whitespace(_as_string(arr)))
    n = len(dictionary)
    parsed = np.zeros(n, dtype=bool)
    days = np.zeros(n, dtype=np.int64)
    precision = np.zeros(n, dtype=np.int8)
    variant = np.zeros(n, dtype=bool)
    for k, form in enumerate(expected + [f for f in others if f not in expected]):
        todo = ~parsed
        if not todo.any():
            break
        match = pc.extract_regex(dictionary, FORMS[form])
        hit = to_bool_numpy(match.is_valid()) & todo
        if not hit.any():
            continue
        # Struct children do not carry the struct's validity: unmatched rows hold "" there.
        y, m, d = (pc.cast(pc.if_else(pa.array(hit), match.field(g), "0"), pa.int64()).to_numpy()
                   for g in ("y", "m", "d"))
        ok, dd, pr = _calendar(y, m, d)
        good = hit & ok
        parsed |= good
        days = np.where(good, dd, days)
        precision = np.where(good, pr, precision)
        variant |= good & (k >= len(expected))
    blank = to_bool_numpy(pc.equal(dictionary, ""))
    values = pa.array(days.astype(np.int32), pa.date32(), mask=~parsed)
    prec = pc.take(pa.array(["day", "month", "year"]), pa.array(precision.astype(np.int32), mask=~parsed))
    # Null where parsed in an expected form or blank; a variant form wins over the other codes.
    issue = np.full(n, None, dtype=object)
    issue[~(parsed | blank)] = "unparseable"
    issue[variant] = "date_format_variant"
    return ParsedDates(
        values=pc.take(values, indices),
        repaired=pc.take(pa.array(variant), indices),
        issue=pc.take(pa.array(issue.tolist(), pa.string()), indices),
        precision=pc.take(prec, indices),
    )


def _as_string(arr: ArrayLike | Sequence[str | None]) -> pa.Array:
    out = as_array(arr)
    if pa.types.is_large_string(out.type) or pa.types.is_null(out.type):
        out = out.cast(pa.string())
    return out


def local_to_utc(arr: ArrayLike | Sequence[str | None], fmt: str = "%d/%m/%Y %H:%M:%S",
                 tz: str = "Asia/Ho_Chi_Minh") -> Standardized:
    """Local wall-clock text (no offset; the business registry's 'dd/mm/yyyy HH:MM:SS') -> timestamp[us,
    UTC], reading it in `tz`. Text that does not fit `fmt` or names an impossible time is 'unparseable'."""
    dictionary, indices = distinct(pc.utf8_trim_whitespace(_as_string(arr)))
    naive = pc.strptime(dictionary, format=fmt, unit="s", error_is_null=True)
    # strptime rolls '31/02' over to 2 or 3 March: print the result back and compare the numbers with
    # the text's (as integers, so '1/7/2025' and '01/07/2025' compare equal).
    same = pc.equal(_numbers(dictionary), _numbers(pc.strftime(naive, format=fmt)))
    naive = pc.if_else(same, naive, pa.scalar(None, naive.type))
    local = pc.assume_timezone(naive, timezone=tz, ambiguous="earliest", nonexistent="earliest")
    utc = local.cast(pa.timestamp("us", tz="UTC"))
    blank = pc.equal(dictionary, "")
    bad = pc.and_(pc.is_null(utc), pc.invert(blank))
    issue = pc.if_else(bad, pa.scalar("unparseable"), pa.scalar(None, pa.string()))
    return Standardized(values=pc.take(utc, indices), repaired=None, issue=pc.take(issue, indices))


def _numbers(text: pa.Array) -> pa.Array:
    """The digit runs of each text as integers, '|'-joined ('01/07/2025 08:30' -> '1|7|2025|8|30')."""
    parts = pc.split_pattern_regex(text, r"[^0-9]+")
    flat = pc.list_flatten(parts)
    keep = pc.not_equal(flat, "")  # a leading or trailing separator leaves an empty run
    parent = pc.list_parent_indices(parts).filter(keep).to_numpy()
    runs = pc.cast(pc.cast(flat.filter(keep), pa.int64()), pa.string())
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=len(parts)))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), runs, mask=parts.is_null())
    return pc.binary_join(lists, "|")
