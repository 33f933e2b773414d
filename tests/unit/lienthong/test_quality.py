"""Quality: the personal-ID expectation, failing rows by position and key, the gate, the verdict, Data Docs.

Staged data is built here as small Parquet files typed by the citizen contract; the warehouse write is
replaced by a recorder (unit tests touch no server; tests/integration/test_quality_store.py covers it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lienthong import quality
from lienthong.contracts import Contract, contract

UPDATED = dt.datetime(2026, 11, 20, 1, 15, tzinfo=dt.UTC)
# Personal IDs whose digits 4-6 agree with the row built by `row` (2003, NAM -> digit 4 = 2, year 03).
GOOD = [f"0312030{i:05d}" for i in range(20)]


def row(citizen_id: str | None, birth: str | None = "2003-05-14", sex: str | None = "NAM", **kw) -> dict:
    out = {
        "citizen_id": citizen_id, "full_name": "Nguyễn Văn An",
        "birth_date": dt.date.fromisoformat(birth) if birth else None, "birth_date_precision": "day",
        "sex": sex, "status": "CON_SONG", "source_updated_at": UPDATED,
    }
    out.update(kw)
    return out


def write_staged(path: Path, rows: list[dict]) -> Path:
    """A staged citizen file: the contract's Arrow types for the columns used here."""
    full = contract("citizen").arrow_schema()
    schema = pa.schema([pa.field(n, full.field(n).type) for n in rows[0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def with_severity(c: Contract, rule_name: str, severity: str) -> Contract:
    rules = tuple(dataclasses.replace(r, severity=severity) if r.name == rule_name else r for r in c.dataset_rules)
    return dataclasses.replace(c, dataset_rules=rules)


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> list[quality.QualityResult]:
    """Results that would go to the warehouse."""
    seen: list[quality.QualityResult] = []
    monkeypatch.setattr(quality, "_store", lambda result, url: seen.append(result))
    return seen


def gx_batch(df: pd.DataFrame):
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("t").add_dataframe_asset("t")
    return asset.add_batch_definition_whole_dataframe("w").get_batch(batch_parameters={"dataframe": df})


def test_personal_id_expectation_fails_rows_that_contradict_birth_and_ignores_uncheckable_ones():
    import great_expectations as gx

    from lienthong.expectations import PERSONAL_ID_COLUMNS, ExpectPersonalIdToMatchBirth

    df = pd.DataFrame([
        row("031203000001"),                      # 0 ok: 2000s male -> 2, year 03
        row("031303000002"),                      # 1 century/sex digit 3 = 2000s female, row says NAM
        row("031203000003", birth="2004-01-01"),  # 2 year digits 03, born 2004
        row("031185000004", birth="1985-02-02", sex="NU"),  # 3 ok: 1900s female -> 1
        row("03120300000X"),                      # 4 not a 12-digit ID: not checkable
        row("031299000006", birth=None),          # 5 no birth date: not checkable
        row("031303000007", sex=None),            # 6 ok: unknown sex allows both digits of the century
        row(None),                                # 7 no ID: not checkable
    ])
    suite = gx.ExpectationSuite(name="pid", expectations=[ExpectPersonalIdToMatchBirth(column_list=list(PERSONAL_ID_COLUMNS))])
    res = gx_batch(df).validate(suite, result_format="COMPLETE")
    r = res.results[0].result
    assert sorted(r["unexpected_index_list"]) == [1, 2]
    assert r["unexpected_count"] == 2 and r["element_count"] == 8


def test_personal_id_expectation_within_mostly_succeeds():
    import great_expectations as gx

    from lienthong.expectations import PERSONAL_ID_COLUMNS, ExpectPersonalIdToMatchBirth

    df = pd.DataFrame([row(i) for i in GOOD[:9]] + [row("031303000099")])
    exp = ExpectPersonalIdToMatchBirth(column_list=list(PERSONAL_ID_COLUMNS), mostly=0.9)
    res = gx_batch(df).validate(gx.ExpectationSuite(name="pid", expectations=[exp]))
    assert res.success


def test_personal_id_expectation_is_registered_and_used_by_the_contract_suite():
    from great_expectations.expectations.registry import get_expectation_impl

    from lienthong.expectations import ExpectPersonalIdToMatchBirth

    assert get_expectation_impl("expect_personal_id_to_match_birth") is ExpectPersonalIdToMatchBirth
    c = contract("citizen")
    pairs = quality.expectations_for(c, 10, {f.name for f in c.fields})
    exp = dict((rule.name, e) for rule, e in pairs)["personal_id_matches_birth"]
    assert isinstance(exp, ExpectPersonalIdToMatchBirth)
    assert exp.column_list == ["citizen_id", "birth_date", "sex"]
    assert not any("_chk_" in json.dumps(e.configuration.to_json_dict()) for _, e in pairs)


def test_failed_rows_are_the_positions_of_the_bad_rows_in_the_staged_file(tmp_path, stored):
    rows = [row(i) for i in GOOD[:10]]
    rows[2] = row("0312030BAD02")                 # breaks the ID pattern
    rows[5] = row(GOOD[4])                        # duplicates row 4's key
    rows[7] = row(GOOD[7], sex="M")               # not a valid sex
    path = write_staged(tmp_path / "citizen.parquet", rows)
    result = quality.validate(contract("citizen"), path, run_id="r1")
    assert result.failed_rows == {
        "citizen_id:invalidValues:pattern": [2],
        "citizen_id:duplicateValues": [4, 5],
        "sex:invalidValues:validValues": [7],
    }
    ids = pq.read_table(path).column("citizen_id").to_pylist()
    for rule, positions in result.failed_rows.items():
        assert result.failed_keys[rule] == [{"citizen_id": ids[p]} for p in positions]
    assert stored == [result]


def test_personal_id_rule_reports_failed_rows_only_when_critical(tmp_path, stored):
    rows = [row(i) for i in GOOD[:10]]
    rows[3] = row("031103000003")                 # 1900s digit for a 2003 birth
    rows[6] = row("031203000006", birth=None)     # not checkable: not a failure
    path = write_staged(tmp_path / "citizen.parquet", rows)
    c = contract("citizen")
    as_warning = quality.validate(c, path, run_id="r1")
    assert "personal_id_matches_birth" not in as_warning.failed_rows
    assert [o.unexpected_staged for o in as_warning.outcomes if o.rule == "personal_id_matches_birth"] == [1]
    as_critical = quality.validate(with_severity(c, "personal_id_matches_birth", "critical"), path, run_id="r2")
    # row 6 fails the birth-date null rule, not the personal-ID one
    assert as_critical.failed_rows == {"birth_date:nullValues": [6], "personal_id_matches_birth": [3]}
    assert as_critical.failed_keys["personal_id_matches_birth"] == [{"citizen_id": "031103000003"}]
    # 1 of 10 rows is 10 %, over the rule's 1 % tolerance
    assert not as_critical.gate_passed
    assert "personal_id_matches_birth" in [o.rule for o in as_critical.failed_critical]


@pytest.mark.parametrize(
    ("quarantined", "passes"),
    [(0, True), (1, True), (2, False)],
)
def test_gate_counts_staged_and_quarantined_failures_against_the_tolerance(tmp_path, stored, quarantined, passes):
    # 200 records in, 1 % allowed for the ID pattern: 1 staged failure + `quarantined` ones.
    rows = [row(f"031203{i:06d}") for i in range(199 - quarantined)] + [row("03120300BAD0")]
    path = write_staged(tmp_path / "citizen.parquet", rows)
    result = quality.validate(
        contract("citizen"), path, run_id="r1", rows_in=200,
        quarantine_by_rule={"invalid:citizen_id:invalidValues:pattern": quarantined},
    )
    outcome = next(o for o in result.outcomes if o.rule == "citizen_id:invalidValues:pattern")
    assert (outcome.unexpected_staged, outcome.unexpected_quarantined, outcome.element_count) == (1, quarantined, 200)
    assert outcome.success is passes
    assert result.gate_passed is passes
    # the staged failure is reported for quarantine even when the rule stays within tolerance
    assert result.failed_rows["citizen_id:invalidValues:pattern"] == [len(rows) - 1]


def test_verdict_is_json_with_per_rule_outcomes_and_no_personal_key(tmp_path, stored):
    rows = [row(i) for i in GOOD[:5]] + [row(GOOD[0])]
    path = write_staged(tmp_path / "citizen.parquet", rows)
    c = contract("citizen")
    result = quality.validate(c, path, run_id="r1", reports_dir=tmp_path / "reports")
    verdict = quality.verdict(result, c)
    text = json.dumps(verdict)
    assert json.loads(text) == verdict
    assert verdict["rules"]["citizen_id:duplicateValues"]["unexpected_staged"] == 2
    assert verdict["rules"]["citizen_id:duplicateValues"]["success"] is False
    assert verdict["failed_rows"] == {"citizen_id:duplicateValues": [0, 5]}
    assert verdict["failed_critical"] == ["citizen_id:duplicateValues"] and verdict["gate_passed"] is False
    # the citizen ID is personal data: positions go to XCom, key values do not
    assert "failed_keys" not in verdict and GOOD[0] not in text
    json.dumps(result.as_dict())


def test_data_docs_are_built_and_show_no_citizen_id_from_the_data(tmp_path, stored):
    rows = [row(i) for i in GOOD[:10]]
    rows[1] = row("0312030BAD01")
    rows[2] = row(GOOD[3])
    rows[4] = row("031103000004", sex="NU", status="X", birth_date_precision="week")
    path = write_staged(tmp_path / "citizen.parquet", rows)
    reports = tmp_path / "reports"
    result = quality.validate(contract("citizen"), path, run_id="manual__2026-11-20T00:00:00+00:00", reports_dir=reports)
    index = Path(result.data_docs_path)
    assert index == reports / "data_docs" / "index.html" and index.is_file()
    pages = list((reports / "data_docs").rglob("*.html"))
    assert any("validations" in p.parts for p in pages)
    written = [p.read_text(encoding="utf-8") for p in pages] + [Path(result.result_path).read_text(encoding="utf-8")]
    written += [p.read_text(encoding="utf-8") for p in (reports / "gx").rglob("*.json")]
    for citizen_id in {r["citizen_id"] for r in rows}:
        assert not any(citizen_id in text for text in written), citizen_id
    # a non-personal column keeps GX's sample of failing values, so auditors see what was wrong
    assert any("week" in text for text in written if "<html" in text)


def test_data_docs_index_lists_every_run(tmp_path, stored):
    path = write_staged(tmp_path / "citizen.parquet", [row(i) for i in GOOD[:3]])
    for run in ("run_a", "run_b"):
        result = quality.validate(contract("citizen"), path, run_id=run, reports_dir=tmp_path / "reports")
    index = Path(result.data_docs_path).read_text(encoding="utf-8")
    assert "run_a" in index and "run_b" in index


def write_contract_rows(path: Path, name: str, rows: list[dict]) -> Path:
    """A staged file of contract `name` with the columns used in `rows`, typed by the contract."""
    full = contract(name).arrow_schema()
    schema = pa.schema([pa.field(n, full.field(n).type) for n in rows[0]])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_future_values_become_a_between_expectation_with_the_run_date_or_year_as_maximum():
    import great_expectations as gx

    today = dt.date(2026, 12, 5)
    cert, holder = contract("certificate"), contract("land_holder")
    exp = dict((r.name, e) for r, e in quality.expectations_for(cert, 10, {"issued_on"}, today=today))["issued_on:futureValues"]
    assert isinstance(exp, gx.expectations.ExpectColumnValuesToBeBetween)
    assert (exp.column, exp.min_value, exp.max_value, exp.mostly) == ("issued_on", None, today, pytest.approx(0.999))
    year = dict((r.name, e) for r, e in quality.expectations_for(holder, 10, {"birth_year"}, today=today))
    assert year["birth_year:futureValues"].max_value == 2026


def test_a_future_issue_date_is_counted_and_today_in_vietnam_is_not(tmp_path, stored):
    today = dt.datetime.now(quality.LOCAL_TZ).date()
    rows = [{"certificate_id": i, "province_code": "31", "issued_on": dt.date(2020, 1, 1)} for i in range(10)]
    rows[3]["issued_on"] = today
    rows[6]["issued_on"] = dt.date(2999, 1, 1)
    path = write_contract_rows(tmp_path / "certificate.parquet", "certificate", rows)
    # with Data Docs: the suite, whose maximum is a date, is stored and rendered
    result = quality.validate(contract("certificate"), path, run_id="r1", reports_dir=tmp_path / "reports")
    outcome = next(o for o in result.outcomes if o.rule == "issued_on:futureValues")
    assert (outcome.expectation, outcome.unexpected_staged, outcome.severity) == ("expect_column_values_to_be_between", 1, "warning")
    assert not outcome.success  # 1 of 10 is over the 0.1 % tolerance
    assert result.gate_passed  # a warning does not stop the publication
    assert "issued_on:futureValues" not in result.failed_rows


def test_a_key_over_several_columns_fails_both_rows_sharing_it(tmp_path, stored):
    rows = [{"province_code": "31", "parcel_id": i, "commune_code_original": "11311", "map_sheet": 1, "parcel_number": i}
            for i in range(1, 7)]
    rows[4]["parcel_number"] = 2           # same commune, sheet and number as parcel 2
    rows[5].update(province_code="01")     # the same key in another province's registry is no clash
    rows[5]["parcel_number"] = 1
    path = write_contract_rows(tmp_path / "parcel.parquet", "parcel", rows)
    result = quality.validate(contract("parcel"), path, run_id="r1")
    outcome = next(o for o in result.outcomes if o.rule == "parcel_natural_key_unique")
    assert outcome.expectation == "expect_compound_columns_to_be_unique"
    assert result.failed_rows["parcel_natural_key_unique"] == [1, 4]
    assert result.failed_keys["parcel_natural_key_unique"] == [
        {"province_code": "31", "parcel_id": 2}, {"province_code": "31", "parcel_id": 5}]
    assert not result.gate_passed and [o.rule for o in result.failed_critical] == ["parcel_natural_key_unique"]


def test_a_rule_only_where_applies_to_the_rows_of_that_document_type(tmp_path, stored):
    docs = [("CCCD", "031185004321"), ("CCCD", "03118500432"), ("CMND", "031456789"), ("CMND", "031185004321"),
            ("MST", "0100233488"), ("MST", "0314409058-002"), (None, None)]
    rows = [{"province_code": "31", "holder_id": i, "holder_type": "CA_NHAN", "document_type": t, "document_number": n}
            for i, (t, n) in enumerate(docs, 1)]
    path = write_contract_rows(tmp_path / "land_holder.parquet", "land_holder", rows)
    result = quality.validate(contract("land_holder"), path, run_id="r1")
    staged = {o.rule: o.unexpected_staged for o in result.outcomes if o.column == "document_number"}
    assert staged == {
        "document_number:invalidValues:pattern[document_type=CCCD]": 1,  # 11 digits
        "document_number:invalidValues:pattern[document_type=CMND]": 1,  # a 12-digit number typed CMND
        "document_number:invalidValues:pattern[document_type=MST]": 0,
    }
    assert result.gate_passed
