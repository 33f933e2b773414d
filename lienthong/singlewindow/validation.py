"""Validation of the single window's path parameters: the personal ID, the tax code, the parcel locator.

Owns the rules a lookup key must pass before it reaches the database, each failure with a reason a desk
clerk can act on ("wrong check digit", "unknown province code '999'"). Only ASCII digits are accepted:
Python's `str.isdigit()` and `int()` would take full-width digits ('０１２') and other scripts' digits, so
every check is on the ASCII range explicitly; invisible characters (zero-width space, RTL marks), control
characters (NUL) and over-long input are named and refused. The ID rules come from `lienthong.ids`
(Circular 59/2021 prefixes, century/sex digit) and the tax code check digit from python-stdnum.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from stdnum import exceptions as stdnum_errors
from stdnum.vn import mst

from lienthong import ids as id_rules

MAX_INPUT = 64  # longer than any valid key: refused before anything else looks at it
MAX_SHEET_OR_PARCEL = 99_999
_DIGITS = re.compile(r"[0-9]+")
_TAX_CODE = re.compile(r"[0-9]{10}(-?[0-9]{3})?")


def _century_of_digit() -> dict[int, int]:
    out: dict[int, int] = {}
    for century in (1900, 2000, 2100):
        base = id_rules.century_base(century)
        if base is None:
            raise RuntimeError(f"lienthong.ids gives no personal-ID digit for the {century}s")
        out |= {base: century, base + 1: century}
    return out


# 4th digit of a personal ID -> the century of birth (0/1 1900s, 2/3 2000s, 4/5 2100s; even male, odd female)
_CENTURY_OF_DIGIT = _century_of_digit()


class InvalidKey(ValueError):
    """A lookup key is malformed; the message says what is wrong (never echoes the whole input)."""


def _characters(value: str, what: str, max_len: int = MAX_INPUT) -> None:
    if len(value) > max_len:
        raise InvalidKey(f"{what} is too long ({len(value)} characters)")
    if not value:
        raise InvalidKey(f"{what} is empty")
    for ch in value:
        code = ord(ch)
        if code < 32 or code == 127:
            raise InvalidKey(f"{what} contains the control character U+{code:04X}")
        if code > 127:
            name = unicodedata.name(ch, unicodedata.category(ch))
            raise InvalidKey(f"{what} contains the non-ASCII character U+{code:04X} ({name}); only the digits 0-9 are allowed")


def _only_digits(value: str, what: str) -> None:
    if not _DIGITS.fullmatch(value):
        bad = next(ch for ch in value if not "0" <= ch <= "9")
        raise InvalidKey(f"{what} contains {bad!r}, which is not a digit")


def personal_id(value: str, today: date | None = None) -> str:
    """A 12-digit personal ID (CCCD) with a known birth-registration province code and a possible
    century/sex and birth-year digits; returns it unchanged."""
    what = "the personal ID"
    _characters(value, what)
    _only_digits(value, what)
    if len(value) == 9:
        raise InvalidKey("a 9-digit old ID card number (CMND) is not accepted: give the 12-digit personal ID")
    if len(value) != 12:
        raise InvalidKey(f"wrong length: {len(value)} digits, a personal ID has 12")
    if value[:3] not in id_rules.personal_id_prefixes():
        raise InvalidKey(f"unknown province code {value[:3]!r} in digits 1-3")
    century = _CENTURY_OF_DIGIT.get(int(value[3]))
    if century is None:
        raise InvalidKey(f"digit 4 (century and sex) is {value[3]}: must be 0 to 5")
    year = century + int(value[4:6])
    if year > (today or date.today()).year:
        raise InvalidKey(f"digits 4-6 give the birth year {year}, which is in the future")
    return value


def tax_code(value: str) -> str:
    """An enterprise code (tax code): 10 digits, or 13 for a branch written NNNNNNNNNN-NNN (the hyphen may be
    left out), with a valid check digit (python-stdnum `vn.mst`); returns the canonical form."""
    what = "the tax code"
    _characters(value, what)
    if not _TAX_CODE.fullmatch(value):
        raise InvalidKey("wrong format: a tax code is 10 digits, or 13 written NNNNNNNNNN-NNN for a branch")
    try:
        return mst.format(mst.validate(value))
    except stdnum_errors.InvalidChecksum:
        raise InvalidKey("wrong check digit (digit 10) for a tax code") from None
    except stdnum_errors.ValidationError as exc:  # digits 3-9 all zero, branch suffix 000
        raise InvalidKey(f"not a valid tax code: {exc}") from None


def commune_code(value: str) -> str:
    """A 5-digit commune code (2025 administrative units)."""
    what = "the commune code"
    _characters(value, what)
    _only_digits(value, what)
    if len(value) != 5:
        raise InvalidKey(f"wrong length: {len(value)} digits, a commune code has 5")
    return value


def positive_int(value: str, what: str, maximum: int = MAX_SHEET_OR_PARCEL) -> int:
    """A map sheet or parcel number: ASCII digits, 1 to `maximum`."""
    _characters(value, what, max_len=len(str(maximum)) + 3)
    _only_digits(value, what)
    number = int(value)
    if not 1 <= number <= maximum:
        raise InvalidKey(f"{what} must be between 1 and {maximum}")
    return number


def for_log(value: str, limit: int = 80) -> str:
    """An input as it can be stored in the audit log: control and invisible characters escaped (PostgreSQL
    text cannot hold NUL), cut at `limit` characters."""
    out = []
    for ch in value[:limit]:
        cat = unicodedata.category(ch)
        out.append(ch.encode("unicode_escape").decode("ascii") if cat[0] in "CZ" and ch != " " else ch)
    return "".join(out) + ("…" if len(value) > limit else "")


def feed_cursor(value: str, since: int) -> tuple[int, int]:
    """The `after` cursor of a change feed page, `<commit version>.<seq>` (the previous page's `next`), at or
    after `since`."""
    version, dot, seq = value.partition(".")
    if not (dot and version.isdigit() and seq.isdigit() and len(value) <= 40):
        raise InvalidKey(f"after: {for_log(value, 40)!r} is not a page cursor (<version>.<seq>, a page's `next`)")
    if int(version) <= since:
        raise InvalidKey(f"after: cursor {for_log(value, 40)} is not after version {since}")
    return int(version), int(seq)
