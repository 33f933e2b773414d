"""Agency access configuration: the shipped schemas/agencies.yaml is valid against the published contracts and
grants each agency what its purpose states; a wrong entry is refused naming agency, dataset and column; the
HMAC the database computes from the stored pads is RFC 2104 HMAC-SHA256."""

from __future__ import annotations

import copy
import hashlib
import hmac
from pathlib import Path

import pytest
import yaml

from lienthong.access import AccessConfigError, hmac_pads, load_agencies, parse_agencies, pseudonym
from lienthong.contracts import load_contracts

REPO = Path(__file__).resolve().parents[3]
DOC = yaml.safe_load((REPO / "schemas" / "agencies.yaml").read_text(encoding="utf-8"))
CONTRACTS = load_contracts(REPO / "schemas")


def parse(doc):
    return parse_agencies(doc, CONTRACTS, "agencies.yaml")


def test_shipped_configuration_has_the_five_agencies_with_purpose_and_legal_basis():
    agencies = load_agencies(REPO / "schemas" / "agencies.yaml", CONTRACTS)
    assert {"single_window_desk", "tax_department", "land_department", "statistics_office", "auditors"} <= set(agencies)
    for a in agencies.values():
        assert "Decree 13/2023" in a.purpose and ("Law" in a.purpose or "Decree" in a.purpose)
        assert a.role.startswith("lienthong_") and a.schema == f"agency_{a.name}"


def test_a_column_not_listed_is_hidden():
    agencies = parse(DOC)
    grant = agencies["statistics_office"].grants["citizen_profile"]
    assert grant.columns["full_name"] == "hidden" and "full_name" not in grant.readable
    assert set(grant.columns) == set(CONTRACTS["citizen_profile"].field_names)


def test_the_single_window_desk_sees_its_three_datasets_in_clear():
    desk = parse(DOC)["single_window_desk"]
    assert set(desk.grants) == {"citizen_profile", "enterprise_profile", "parcel_register"}
    assert all(m == "visible" for g in desk.grants.values() for m in g.columns.values())


def test_the_statistics_office_gets_no_name_or_identifier_in_clear():
    stats = parse(DOC)["statistics_office"]
    for ds, grant in stats.grants.items():
        contract = CONTRACTS[ds]
        for col, mode in grant.columns.items():
            f = contract.field(col)
            if mode == "visible" and f.is_personal:
                assert col in {"sex", "nationality", "status"}, f"{ds}.{col}"  # aggregates only
            if f.custom.get("mask") in ("id", "name"):
                assert mode in ("pseudonymized", "hidden"), f"{ds}.{col}"
    assert stats.grants["citizen_profile"].columns["birth_date"] == "masked"


def test_the_land_department_reads_only_its_province_parcels():
    land = parse(DOC)["land_department"]
    assert land.grants["parcel_register"].rows == {"province_code": ("31",)}


def test_the_auditors_read_findings_and_quality_in_clear_and_persons_pseudonymized():
    auditors = parse(DOC)["auditors"]
    for ds in ("reconciliation_findings", "quality_summary"):
        assert set(auditors.grants[ds].columns.values()) == {"visible"}
    person = auditors.grants["citizen_profile"].columns
    assert person["citizen_id"] == "pseudonymized" and person["full_name"] == "hidden"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["agencies"]["tax_department"]["datasets"].update(land_tax={"columns": {"a": "visible"}}),
     r"agency 'tax_department', dataset 'land_tax': unknown dataset"),
    (lambda d: d["agencies"]["tax_department"]["datasets"]["citizen_profile"]["columns"].update(shoe_size="visible"),
     r"agency 'tax_department', dataset 'citizen_profile', column 'shoe_size': unknown column"),
    (lambda d: d["agencies"]["tax_department"]["datasets"]["citizen_profile"]["columns"].update(full_name="blurred"),
     r"column 'full_name': unknown mode 'blurred'"),
    (lambda d: d["agencies"]["auditors"]["datasets"]["citizen_profile"]["columns"].update(parcels="masked"),
     r"agency 'auditors', dataset 'citizen_profile', column 'parcels': a nested column cannot be masked"),
    (lambda d: d["agencies"]["auditors"]["datasets"]["citizen_profile"]["columns"].update(sex="masked"),
     r"column 'sex': the contract gives no masking"),
    (lambda d: d["agencies"]["land_department"]["datasets"]["parcel_register"].update(rows={"province_code": [31]}),
     r"column 'province_code': rows: value 31 is not a string"),
    (lambda d: d["agencies"]["land_department"]["datasets"]["parcel_register"].update(rows={"holders": ["x"]}),
     r"column 'holders': rows cannot filter a array column"),
    (lambda d: d["agencies"]["land_department"]["datasets"]["parcel_register"].update(rows="province_code = '31'"),
     r"rows must be a mapping"),
    (lambda d: d["agencies"]["auditors"].update(role="lienthong_tax_department"),
     r"agency 'auditors': role 'lienthong_tax_department' is also used by agency 'tax_department'"),
    (lambda d: d["agencies"]["auditors"].update(role="x; DROP ROLE postgres"), r"role must be a PostgreSQL role name"),
    (lambda d: d["agencies"]["auditors"].pop("purpose"), r"agency 'auditors': a purpose"),
    (lambda d: d["agencies"]["auditors"].update(sql="SELECT 1"), r"unknown field\(s\) \['sql'\]"),
])
def test_a_wrong_entry_is_refused_naming_agency_dataset_and_column(edit, message):
    doc = copy.deepcopy(DOC)
    edit(doc)
    with pytest.raises(AccessConfigError, match=message):
        parse(doc)


def test_hmac_from_the_stored_pads_is_rfc2104_hmac_sha256():
    for key in (b"k" * 20, b"a-very-long-key-" * 8):  # short and longer than the 64-byte block
        inner, outer = hmac_pads(key)
        for value in ("031085001234", "Nguyễn Văn An", ""):
            message = value.encode()
            by_pads = hashlib.sha256(outer + hashlib.sha256(inner + message).digest()).hexdigest()
            assert by_pads == hmac.new(key, message, hashlib.sha256).hexdigest() == pseudonym(value, key)
