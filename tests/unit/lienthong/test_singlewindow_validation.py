"""Single-window path parameters: only ASCII digits in the shapes of a personal ID, a tax code and a parcel
locator pass; every refusal says what is wrong without echoing the input."""

from __future__ import annotations

import re
from datetime import date

import pytest

from lienthong.singlewindow import validation as v

TODAY = date(2026, 1, 1)


@pytest.mark.parametrize("value", ["031085001234", "001050007890", "079203000001", "031225000001"])
def test_a_well_formed_personal_id_passes_unchanged(value):
    assert v.personal_id(value, TODAY) == value


@pytest.mark.parametrize(("value", "reason"), [
    ("", "is empty"),
    ("03108500123", "wrong length: 11 digits"),
    ("0310850012345", "wrong length: 13 digits"),
    ("031234567", "9-digit old ID card number"),
    ("999085001234", "unknown province code '999'"),
    ("031685001234", "digit 4 (century and sex) is 6"),
    ("031227001234", "birth year 2027, which is in the future"),
    ("031 85001234", "' ', which is not a digit"),
    ("-31085001234", "'-', which is not a digit"),
    ("０３１０８５００１２３４", "U+FF10 (FULLWIDTH DIGIT ZERO)"),
    ("٠٣١٠٨٥٠٠١٢٣٤", "U+0660 (ARABIC-INDIC DIGIT ZERO)"),
    ("031085\u200b001234", "U+200B (ZERO WIDTH SPACE)"),
    ("\u202e031085001234", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("031085\x00001234", "control character U+0000"),
    ("1" * 65, "too long (65 characters)"),
])
def test_a_malformed_personal_id_is_refused_with_its_reason(value, reason):
    with pytest.raises(v.InvalidKey, match=re.escape(reason)) as err:
        v.personal_id(value, TODAY)
    assert len(str(err.value)) < 160


@pytest.mark.parametrize(("value", "canonical"), [
    ("0100233488", "0100233488"), ("0314409058-002", "0314409058-002"), ("0314409058002", "0314409058-002")])
def test_a_valid_tax_code_passes_in_canonical_form(value, canonical):
    assert v.tax_code(value) == canonical


@pytest.mark.parametrize(("value", "reason"), [
    ("0100233480", "check digit"),
    ("0314409058-000", "not a valid tax code"),
    ("010023348", "wrong format"),
    ("0100233488-01", "wrong format"),
    ("0100233488 ", "wrong format"),
    ("０100233488", "U+FF10"),
])
def test_a_malformed_tax_code_is_refused_with_its_reason(value, reason):
    with pytest.raises(v.InvalidKey, match=re.escape(reason)):
        v.tax_code(value)


def test_parcel_locator_parts():
    assert v.commune_code("11311") == "11311"
    assert v.positive_int("007", "the map sheet") == 7
    for bad, reason in (("1131", "has 5"), ("113111", "has 5"), ("1131a", "not a digit")):
        with pytest.raises(v.InvalidKey, match=reason):
            v.commune_code(bad)
    for bad, reason in (("0", "between 1 and 99999"), ("100000", "between 1 and 99999"), ("+5", "not a digit"),
                        ("１", "U+FF11"), ("9" * 20, "too long")):
        with pytest.raises(v.InvalidKey, match=re.escape(reason)):
            v.positive_int(bad, "the parcel number")


def test_for_log_escapes_what_postgresql_text_cannot_hold_and_cuts_long_input():
    assert v.for_log("03\x00\u200b\u200f1") == "03\\x00\\u200b\\u200f1"
    assert v.for_log("Nguyễn Văn An") == "Nguyễn Văn An"
    assert v.for_log("9" * 500) == "9" * 80 + "…"
