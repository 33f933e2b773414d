"""Vietnamese text: Unicode form, legacy-encoding mojibake, case and spacing, and the ASCII matching key.

Owns: `nfc`, `repair_mojibake`, `clean_case_and_space`, `fold_key` and the name pipeline
`standardize_name` (nfc -> mojibake repair -> case/space). Every function works on the DISTINCT values of
its input and maps the answers back with `take` (see `common.map_distinct`), so its Python cost follows
the number of distinct names, not the number of rows.

Issue codes (joined by ";" when several steps changed one value):
  nfc_normalized            decomposed (NFD) or mixed (Windows-1258 style) text composed to NFC
  mojibake_tcvn3_repaired   TCVN3 bytes that had been read as Windows-1252, decoded back
  mojibake_vni_repaired     the same for VNI-Windows
  whitespace_collapsed      runs of spaces / tabs / NBSP / zero-width characters made one space, trimmed
  lookalike_d_replaced      Ð / ð (U+00D0 / U+00F0, Icelandic eth) replaced by Đ / đ
  capitals_title_cased      a name written in capitals put in title case ("NGUYỄN VĂN AN" -> "Nguyễn Văn An")
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lienthong.text import legacy_encodings

from .common import ArrayLike, Standardized, distinct, join_issues, map_distinct

__all__ = ["clean_case_and_space", "fold_key", "nfc", "repair_mojibake", "standardize_name"]

_SPACE = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")
# A word: letters plus any combining marks that follow them, so a decomposed (NFD) "Ễ" stays one word.
_WORD = re.compile(r"(?:[^\W\d_]|[\u0300-\u036f])+")
_LOOKALIKE_D = str.maketrans({"\u00d0": "\u0110", "\u00f0": "\u0111"})
# Đ/đ have no decomposition and ð is the look-alike some fonts and mis-decodings produce: map all to d.
_FOLD_D = str.maketrans({"đ": "d", "\u00f0": "d"})


def nfc(arr: ArrayLike | Sequence[str | None]) -> Standardized:
    """Compose to NFC. Vectorised over the distinct values with Arrow's `utf8_normalize`."""
    dictionary, indices = distinct(arr)
    composed = pc.utf8_normalize(dictionary, form="NFC")
    changed = pc.not_equal(composed, dictionary)
    issue = pc.if_else(changed, pa.scalar("nfc_normalized"), pa.scalar(None, pa.string()))
    return Standardized(
        values=pc.take(composed, indices),
        repaired=pc.take(changed, indices),
        issue=pc.take(issue, indices),
    )


def _repair_one(value: str) -> tuple[str, bool, str | None]:
    # Looked up on the module at call time, so a test can count the calls.
    fixed, encoding = legacy_encodings.repair_mojibake(value)
    if encoding is None:
        return value, False, None
    return fixed, True, f"mojibake_{encoding}_repaired"


def repair_mojibake(arr: ArrayLike | Sequence[str | None]) -> Standardized:
    """Detect and undo TCVN3 / VNI mojibake ('C«ng ty' -> 'Công ty', 'Coâng ty' -> 'Công ty'); the issue
    names the encoding. Text that already reads as Unicode Vietnamese is left alone."""
    values, repaired, issue = map_distinct(arr, _repair_one, (pa.string(), pa.bool_(), pa.string()))
    return Standardized(values, repaired, issue)


def _title(word: re.Match[str]) -> str:
    w = word.group()
    return w[0].upper() + w[1:].lower()


def _clean_one(value: str, title_case_capitals: bool) -> tuple[str, bool, str | None]:
    issues = []
    out = _SPACE.sub(" ", value).strip()
    if out != value:
        issues.append("whitespace_collapsed")
    swapped = out.translate(_LOOKALIKE_D)
    if swapped != out:
        issues.append("lookalike_d_replaced")
        out = swapped
    # Only text with no lowercase letter at all is "in capitals"; mixed case is someone's deliberate
    # spelling (Mc-, de la, ethnic names) and is left alone.
    if title_case_capitals and any(c.isupper() for c in out) and not any(c.islower() for c in out):
        titled = _WORD.sub(_title, out)
        if titled != out:
            issues.append("capitals_title_cased")
            out = titled
    return out, bool(issues), ";".join(issues) or None


def clean_case_and_space(arr: ArrayLike | Sequence[str | None], title_case_capitals: bool = True) -> Standardized:
    """Collapse whitespace and trim; replace the look-alike Ð/ð by Đ/đ; put text written entirely in
    capitals into title case (each word: first letter capital, rest lowercase; Vietnamese letters and
    decomposed marks handled). Pass `title_case_capitals=False` for fields where capitals are the norm
    (enterprise names: "CÔNG TY TNHH" must not become "Công Ty Tnhh")."""
    values, repaired, issue = map_distinct(
        arr, lambda v: _clean_one(v, title_case_capitals), (pa.string(), pa.bool_(), pa.string()))
    return Standardized(values, repaired, issue)


def _fold_one(value: str) -> tuple[str]:
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFC", value).lower())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD_D)
    return (_SPACE.sub(" ", bare).strip(),)


def fold_key(arr: ArrayLike | Sequence[str | None]) -> pa.Array:
    """An ASCII matching key for Vietnamese text: NFC, lowercase, accents and tone marks removed, Đ/đ and
    the look-alike Ð/ð mapped to d, whitespace collapsed. "Hoà"/"Hòa", "Thuỷ"/"Thủy" and NFC/NFD forms
    fold equal. It also merges distinct names (Hà/Hạ/Hả -> "ha"): use it to find candidates, not to decide.
    Returns the key column only: it derives a key, it repairs nothing."""
    (keys,) = map_distinct(arr, _fold_one, (pa.string(),))
    return keys


def standardize_name(arr: ArrayLike | Sequence[str | None]) -> Standardized:
    """The person-name pipeline: `nfc` -> `repair_mojibake` -> `clean_case_and_space`. `issue` lists every
    repair applied to the value, in that order ("nfc_normalized;capitals_title_cased")."""
    # Each step runs on the distinct values of the previous one; the rows are touched once, at the end.
    dictionary, indices = distinct(arr)
    step1 = nfc(dictionary)
    step2 = repair_mojibake(step1.values)
    step3 = clean_case_and_space(step2.values)
    repaired = pc.or_(pc.or_(step1.repaired, step2.repaired), step3.repaired)
    issue = join_issues(step1.issue, step2.issue, step3.issue)
    return Standardized(
        values=pc.take(step3.values, indices),
        repaired=pc.take(repaired, indices),
        issue=pc.take(issue, indices),
    )
