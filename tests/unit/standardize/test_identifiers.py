"""Identifier standardization: personal IDs against birth date and sex, enterprise tax codes via stdnum."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from standardize_truth import noise_rows, noisy_keys, representatives
from stdnum.vn import mst

from lienthong import ids
from lienthong.standardize.dates import parse_dates
from lienthong.standardize.identifiers import enterprise_code, personal_id


def test_a_consistent_id_passes_unchanged():
    r = personal_id(["031085001234", "001305001234"], ["1985-03-05", "2005-01-01"], ["NAM", "NU"])
    assert r.values.to_pylist() == ["031085001234", "001305001234"]
    assert r.repaired.to_pylist() == [False, False]
    assert r.issue.to_pylist() == [None, None]


def test_spaces_dots_and_hyphens_are_removed_and_reported_as_a_repair():
    r = personal_id([" 031 085 001234 ", "031.085.001.234", "031-085-001234"])
    assert r.values.to_pylist() == ["031085001234"] * 3
    assert r.repaired.to_pylist() == [True, True, True]
    assert r.issue.to_pylist() == [None, None, None]


def test_missing_and_malformed_ids_are_told_apart():
    r = personal_id([None, "", "   ", "03108500123", "0310850012345", "03a085001234"])
    assert r.values.to_pylist()[:3] == [None, None, None]
    assert r.issue.to_pylist() == ["missing"] * 3 + ["bad_format"] * 3


def test_a_nine_digit_cmnd_is_recognised_not_rejected():
    r = personal_id(["031234567"], ["1985-03-05"], ["NAM"])
    assert r.issue.to_pylist() == ["legacy_9_digit"]
    assert r.values.to_pylist() == ["031234567"]


@pytest.mark.parametrize(("pid", "birth", "sex"), [
    ("031185001234", "1985-03-05", "NAM"),  # 1 = female 1900s
    ("031285001234", "1985-03-05", "NAM"),  # 2 = male 2000s
    ("031086001234", "1985-03-05", "NAM"),  # year digits 86
    ("031005001234", "2005-03-05", "NU"),   # 0 = male 1900s for a woman born 2005
])
def test_century_sex_or_year_digits_that_disagree_are_a_finding_not_a_change(pid, birth, sex):
    r = personal_id([pid], [birth], [sex])
    assert r.issue.to_pylist() == ["id_birth_mismatch"]
    assert r.values.to_pylist() == [pid]
    assert r.repaired.to_pylist() == [False]


def test_unknown_sex_accepts_either_digit_of_the_century():
    r = personal_id(["031085001234", "031185001234", "031285001234"], [1985] * 3, ["KHAC", None, ""])
    assert r.issue.to_pylist() == [None, None, "id_birth_mismatch"]


def test_birth_dates_may_be_dates_years_partial_or_other_forms():
    pid = ["031185001234"] * 4
    births = [pa.array([dt.date(1985, 3, 5)] * 4), pa.array([1985] * 4, pa.int32()),
              ["1985-00-00", "05/03/1985", "1985-03-00", None]]
    for b in births:
        assert personal_id(pid, b, ["Nữ"] * 4).issue.to_pylist()[:3] == [None] * 3


def test_prefix_must_be_a_pre_2025_province_code_unless_given_as_extra():
    r = personal_id(["031085001234", "032085001234", "400085001234"], ["1985-01-01"] * 3)
    assert r.issue.to_pylist() == [None, "unknown_province_prefix", "unknown_province_prefix"]
    r = personal_id(["400085001234"], ["1985-01-01"], extra_prefixes={"400"})
    assert r.issue.to_pylist() == [None]


def test_several_findings_are_all_reported():
    r = personal_id(["032185001234"], ["1985-01-01"], ["NAM"])
    assert r.issue.to_pylist() == ["unknown_province_prefix;id_birth_mismatch"]


def test_prefixes_are_the_63_old_provinces():
    prefixes = ids.personal_id_prefixes()
    assert len(prefixes) == 63
    assert {"001", "031", "079", "030"} <= prefixes and "032" not in prefixes


# --- enterprise codes --------------------------------------------------------------------------

def test_enterprise_codes_validate_with_stdnum_vectors():
    r = enterprise_code(["0100233488", "0314409058-002", "0100233480"])
    assert r.values.to_pylist() == ["0100233488", "0314409058-002", "0100233480"]
    assert r.issue.to_pylist() == [None, None, "invalid_check_digit"]
    assert r.repaired.to_pylist() == [False, False, False]


def test_enterprise_code_separators_are_normalised_to_the_registry_form():
    r = enterprise_code(["0312687878 001", " 0100.233.488 ", "0312687878001", "0312687878-001"])
    assert r.values.to_pylist() == ["0312687878-001", "0100233488", "0312687878-001", "0312687878-001"]
    assert r.repaired.to_pylist() == [True, True, True, False]
    assert r.issue.to_pylist() == [None] * 4


def test_enterprise_code_shape_errors_and_missing_values():
    r = enterprise_code(["01002334", "abc", "0100000000", "0100233488-000", None, ""])
    assert r.issue.to_pylist() == ["bad_format"] * 4 + ["missing"] * 2


def test_stdnum_runs_once_per_distinct_code(monkeypatch):
    calls: list[str] = []
    real = mst.validate
    monkeypatch.setattr(mst, "validate", lambda v: calls.append(v) or real(v))
    r = enterprise_code(["0100233488", "0314409058-002", "0100233480", None] * 1000)
    assert len(r.values) == 4000
    assert sorted(calls) == ["0100233480", "0100233488", "0314409058002"]


# --- against the sandbox generator ---------------------------------------------------------------

def test_sandbox_citizen_ids_agree_with_birth_date_and_sex(province):
    t = pq.read_table(province / "population" / "citizens.parquet",
                      columns=["soDinhDanh", "ngaySinh", "gioiTinh"])
    r = personal_id(t["soDinhDanh"], t["ngaySinh"], t["gioiTinh"])
    assert r.issue.null_count == len(t)
    assert r.values.to_pylist() == t["soDinhDanh"].to_pylist()


def _holder_ids(province):
    rows = []
    for code in ("31", "01"):
        t = pq.read_table(province / "land" / code / "chu_su_dung.parquet").to_pylist()
        rows += [{**r, "key": f"{code}:{r['id']}"} for r in t]
    return rows


@pytest.mark.parametrize("dataset", ["representative", "land_holder"])
def test_sandbox_id_noise_is_flagged_whenever_it_is_detectable(province, noise, dataset):
    if dataset == "representative":
        people = {r["key"]: (r["SoGiayTo"], r["NgaySinh"]) for r in representatives(province)}
        field = "SoGiayTo"
    else:
        people = {r["key"]: (r["so_giay_to"], r["nam_sinh"]) for r in _holder_ids(province)
                  if r["loai"] == "CA_NHAN"}
        field = "so_giay_to"
    keys = list(people)
    births = [people[k][1] for k in keys]
    if dataset == "representative":
        births = parse_dates(births, forms="dd/mm/yyyy").values
    r = personal_id([people[k][0] for k in keys], births)
    issue = dict(zip(keys, r.issue.to_pylist(), strict=True))
    year = dict(zip(keys, pa.array(births).cast(pa.date32()).to_pylist() if dataset == "representative"
                    else births, strict=True))

    # The last noise on a value decides its final form; earlier rows are superseded.
    final = {}
    for kind in ("missing_id", "old_id", "mistyped_id"):
        for row in noise_rows(noise, dataset, kind, field):
            final[row["record_key"]] = (kind, row)
    assert {kind for kind, _ in final.values()} == {"missing_id", "old_id", "mistyped_id"}
    for key, (kind, row) in final.items():
        got = issue[key]
        noisy = row["noisy"]
        if kind == "missing_id":
            assert got == "missing"
        elif kind == "old_id":
            assert got == "legacy_9_digit"
        elif len(noisy) != len(row["original"]):
            assert got == "bad_format", (key, noisy)
        elif len(noisy) == 12:
            # A slip in digits 7-12 is invisible (no check digit); in digits 1-6 it is caught whenever
            # the scalar rule of lienthong.ids says the head no longer fits the record.
            y = year[key]
            y = y.year if isinstance(y, dt.date) else y
            fits = noisy[:3] in ids.personal_id_prefixes() and (
                y is None or ids.personal_id_matches_birth(noisy, y, None))
            assert (got is None) == fits, (key, noisy, row["original"], got)
        else:
            assert got == "legacy_9_digit"  # a slip inside an old CMND: nothing to check it against

    touched = noisy_keys(noise, dataset, field)
    clean = [k for k in keys if (k, field) not in touched]
    assert len(clean) > 0.6 * len(keys)
    assert all(issue[k] is None for k in clean)


def test_sandbox_tax_codes_invalid_check_digits_are_flagged_and_valid_pass(province, noise):
    t = pq.read_table(province / "business" / "enterprises.parquet", columns=["MaSoDN"])
    r = enterprise_code(t["MaSoDN"])
    bad = {row["noisy"] for row in noise_rows(noise, "enterprise", "invalid_tax_code")}
    assert bad
    for code, issue in zip(t["MaSoDN"].to_pylist(), r.issue.to_pylist(), strict=True):
        assert issue == ("invalid_check_digit" if code in bad else None), code
    assert r.values.to_pylist() == t["MaSoDN"].to_pylist()

    holders = [h for h in _holder_ids(province) if h["loai"] != "CA_NHAN"]
    bad = {row["noisy"] for row in noise_rows(noise, "land_holder", "invalid_tax_code")}
    r = enterprise_code([h["so_giay_to"] for h in holders])
    for h, issue in zip(holders, r.issue.to_pylist(), strict=True):
        assert issue == ("invalid_check_digit" if h["so_giay_to"] in bad else None), h
