"""Date standardization: the accepted forms, partial dates, impossible dates, local time to UTC."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from standardize_truth import noise_rows, noisy_keys

from lienthong.standardize.dates import FORMS, local_to_utc, parse_dates

D = dt.date


@pytest.mark.parametrize(("text", "form"), [
    ("1985-03-05", "yyyy-mm-dd"), ("05/03/1985", "dd/mm/yyyy"), ("5/3/1985", "d/m/yyyy"),
    ("05-03-1985", "dd-mm-yyyy"), ("1985/03/05", "yyyy/mm/dd"),
])
def test_every_form_reads_day_before_month(text, form):
    expected = parse_dates([text], forms=form)
    assert expected.values.to_pylist() == [D(1985, 3, 5)]
    assert expected.issue.to_pylist() == [None]
    assert expected.precision.to_pylist() == ["day"]


def test_a_form_other_than_the_expected_one_is_parsed_and_flagged():
    r = parse_dates(["05/03/1985", "1985-03-05", "5/3/1985", "05-03-1985"], forms="dd/mm/yyyy")
    assert r.values.to_pylist() == [D(1985, 3, 5)] * 4
    assert r.issue.to_pylist() == [None] + ["date_format_variant"] * 3
    assert r.repaired.to_pylist() == [False, True, True, True]


def test_variants_can_be_refused_where_a_contract_requires_one_form():
    r = parse_dates(["1985-03-05", "05/03/1985"], forms="yyyy-mm-dd", variants=())
    assert r.values.to_pylist() == [D(1985, 3, 5), None]
    assert r.issue.to_pylist() == [None, "unparseable"]


def test_partial_dates_keep_their_precision():
    r = parse_dates(["1985-03-00", "1985-00-00", "00/03/1985", "00/00/1985"], forms=["yyyy-mm-dd", "dd/mm/yyyy"])
    assert r.values.to_pylist() == [D(1985, 3, 1), D(1985, 1, 1), D(1985, 3, 1), D(1985, 1, 1)]
    assert r.precision.to_pylist() == ["month", "year", "month", "year"]
    assert r.issue.to_pylist() == [None] * 4


@pytest.mark.parametrize("text", ["31/02/2020", "29/02/2021", "31/04/2020", "00/13/2020", "05/00/1985",
                                  "1985-13-01", "0000-00-00", "1985-3-5", "5 March 1985", "19850305"])
def test_impossible_or_unknown_dates_are_unparseable(text):
    r = parse_dates([text], forms="dd/mm/yyyy")
    assert r.values.to_pylist() == [None]
    assert r.issue.to_pylist() == ["unparseable"]


def test_leap_days_are_real_dates():
    assert parse_dates(["29/02/2024", "29/02/2000"], forms="dd/mm/yyyy").values.to_pylist() == [
        D(2024, 2, 29), D(2000, 2, 29)]


def test_null_and_blank_are_null_without_an_issue():
    r = parse_dates([None, "", "  "])
    assert r.values.to_pylist() == [None, None, None]
    assert r.issue.to_pylist() == [None, None, None]


def test_unknown_form_names_are_refused():
    with pytest.raises(ValueError, match="unknown date forms"):
        parse_dates(["1985-03-05"], forms="mm/dd/yyyy")


def test_each_form_is_matched_once_over_the_distinct_values(monkeypatch):
    seen: list[int] = []
    real = pc.extract_regex
    monkeypatch.setattr(pc, "extract_regex", lambda arr, pattern: seen.append(len(arr)) or real(arr, pattern))
    values = ["1985-03-05", "05/03/1985", "bad", None] * 5000
    r = parse_dates(values)
    assert len(r.values) == 20_000
    assert seen and all(n == 3 for n in seen) and len(seen) <= len(FORMS)


def test_local_time_is_read_in_vietnam_and_stored_in_utc():
    r = local_to_utc(["01/07/2025 08:30:05", "1/7/2025 8:30:05", "31/12/2024 23:59:59"])
    assert r.values.type == pa.timestamp("us", tz="UTC")
    utc = dt.UTC
    assert r.values.to_pylist() == [dt.datetime(2025, 7, 1, 1, 30, 5, tzinfo=utc),
                                    dt.datetime(2025, 7, 1, 1, 30, 5, tzinfo=utc),
                                    dt.datetime(2024, 12, 31, 16, 59, 59, tzinfo=utc)]
    assert r.issue.to_pylist() == [None, None, None]


def test_local_times_that_do_not_exist_or_do_not_fit_are_unparseable():
    r = local_to_utc(["31/02/2025 08:30:05", "01/07/2025 25:00:00", "2025-07-01T08:30:05", None])
    assert r.values.to_pylist() == [None, None, None, None]
    assert r.issue.to_pylist() == ["unparseable", "unparseable", "unparseable", None]


# --- against the sandbox generator ---------------------------------------------------------------

def test_sandbox_citizen_birth_dates(province, noise):
    t = pq.read_table(province / "population" / "citizens.parquet", columns=["soDinhDanh", "ngaySinh"])
    keys, texts = t["soDinhDanh"].to_pylist(), t["ngaySinh"].to_pylist()
    strict = parse_dates(t["ngaySinh"], forms="yyyy-mm-dd", variants=())
    lenient = parse_dates(t["ngaySinh"], forms="yyyy-mm-dd")
    partial = {r["record_key"]: r for r in noise_rows(noise, "citizen", "partial_date")}
    malformed = {r["record_key"]: r for r in noise_rows(noise, "citizen", "malformed_dob")}
    assert partial and malformed
    for i, key in enumerate(keys):
        if key in malformed:
            assert strict.issue[i].as_py() == "unparseable"
            assert lenient.issue[i].as_py() == "date_format_variant"
            # The original may itself be partial ('1997-07-00' written '00/07/1997').
            original = parse_dates([malformed[key]["original"]])
            assert lenient.values[i].as_py() == original.values[0].as_py()
            assert lenient.precision[i].as_py() == original.precision[0].as_py()
        elif key in partial:
            original = D.fromisoformat(partial[key]["original"])
            expected = "year" if texts[i].endswith("00-00") else "month"
            assert strict.precision[i].as_py() == expected
            assert strict.values[i].as_py() == (original.replace(day=1) if expected == "month"
                                                 else original.replace(month=1, day=1))
            assert strict.issue[i].as_py() is None
        else:
            assert strict.issue[i].as_py() is None
            assert strict.values[i].as_py().isoformat() == texts[i]


def test_sandbox_founding_dates_and_representative_birth_dates(province, noise):
    t = pq.read_table(province / "business" / "enterprises.parquet",
                      columns=["MaSoDN", "NgayThanhLap", "NgayCapNhat"])
    r = parse_dates(t["NgayThanhLap"], forms="dd/mm/yyyy")
    variants = {row["record_key"]: row for row in noise_rows(noise, "enterprise", "date_format")}
    assert variants
    for i, key in enumerate(t["MaSoDN"].to_pylist()):
        if key in variants:
            assert r.issue[i].as_py() == "date_format_variant"
            assert r.values[i].as_py().strftime("%d/%m/%Y") == variants[key]["original"]
        else:
            assert r.issue[i].as_py() is None
            assert r.values[i].as_py().strftime("%d/%m/%Y") == t["NgayThanhLap"][i].as_py()

    reps = noise_rows(noise, "representative", "date_format", "NgaySinh")
    assert reps
    r = parse_dates([x["noisy"] for x in reps], forms="dd/mm/yyyy")
    assert set(r.issue.to_pylist()) == {"date_format_variant"}
    assert [d.strftime("%d/%m/%Y") for d in r.values.to_pylist()] == [x["original"] for x in reps]
    assert noisy_keys(noise, "representative", "NgaySinh")

    updated = local_to_utc(t["NgayCapNhat"])
    assert updated.issue.null_count == len(t)
    # 'dd/mm/yyyy HH:MM:SS' local = UTC + 7 h.
    first = dt.datetime.strptime(t["NgayCapNhat"][0].as_py(), "%d/%m/%Y %H:%M:%S")
    assert updated.values[0].as_py().replace(tzinfo=None) == first - dt.timedelta(hours=7)
