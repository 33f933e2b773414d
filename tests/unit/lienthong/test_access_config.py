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


def test_shipped_configuration_has_the_five_agencies_with_purposes_and_legal_bases():
    agencies = load_agencies(REPO / "schemas" / "agencies.yaml", CONTRACTS)
    assert {"single_window_desk", "tax_department", "land_department", "statistics_office", "auditors"} <= set(agencies)
    for a in agencies.values():
        assert a.role.startswith("lienthong_") and a.schema == f"agency_{a.name}"
        assert a.purposes and all(p.bases for p in a.purposes.values())
        for ds, grant in a.grants.items():
            assert grant.purposes and set(grant.purposes) <= set(a.purposes), f"{a.name}.{ds}"
            # every grant rests on the Law on Personal Data Protection's clause for state agencies
            assert any(b.citation == "91/2025/QH15, Art. 19(1)(c)" for p in a.purposes_of(ds) for b in p.bases)
    cited = {b.instrument for a in agencies.values() for p in a.purposes.values() for b in p.bases}
    assert not cited & {"13/2023/NĐ-CP", "13/2023/ND-CP", "47/2020/NĐ-CP", "47/2020/ND-CP"}  # no longer in force


def test_an_investigation_purpose_carries_its_embargo():
    auditors = parse(DOC)["auditors"]
    assert auditors.purposes["inspection_evidence_review"].embargo_days == 180
    assert auditors.purposes["data_quality_audit"].embargo_days == 0
    assert "278/2025/NĐ-CP, Art. 2, Art. 3(1)" in auditors.purposes["data_quality_audit"].legal_basis


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
    # no grant without a purpose, no purpose without a legal basis, no basis without a number and an article
    (lambda d: d["agencies"]["tax_department"]["datasets"]["citizen_profile"].pop("purposes"),
     r"agency 'tax_department', dataset 'citizen_profile': a dataset grant needs 'purposes'"),
    (lambda d: d["agencies"]["tax_department"]["datasets"]["citizen_profile"].update(purposes=["marketing"]),
     r"dataset 'citizen_profile': unknown purpose 'marketing'"),
    (lambda d: d["agencies"]["tax_department"]["purposes"]["tax_registration"].update(bases=[]),
     r"agency 'tax_department': purpose 'tax_registration': 'bases' must list"),
    (lambda d: d["agencies"]["tax_department"]["purposes"]["tax_registration"].update(bases=["custom"]),
     r"purpose 'tax_registration': unknown legal basis 'custom'"),
    (lambda d: d["agencies"]["auditors"]["purposes"]["inspection_evidence_review"].update(embargo_days=-1),
     r"purpose 'inspection_evidence_review': embargo_days"),
    (lambda d: d["agencies"]["auditors"].pop("purposes"), r"agency 'auditors': 'purposes' must be"),
    (lambda d: d["legal_bases"]["pdp_state_agencies"].update(instrument="the PDP law"),
     r"legal basis 'pdp_state_agencies': instrument 'the PDP law' is not a document number"),
    (lambda d: d["legal_bases"]["pdp_state_agencies"].update(article="somewhere"),
     r"legal basis 'pdp_state_agencies': article 'somewhere' must name an article"),
    (lambda d: d.pop("legal_bases"), r"'legal_bases' must be a non-empty mapping"),
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


# --- a row filter holds for its entity wherever the agency reads it ---------------------------------------------

def test_every_published_contract_names_its_entity_and_every_nested_column_its_items():
    for name, c in CONTRACTS.items():
        if c.custom.get("zone") != "published":
            continue
        assert isinstance(c.custom.get("entity"), str), f"{name}: no customProperty 'entity'"
        for f in c.fields:
            if f.logical_type in ("array", "object"):
                assert f.custom.get("itemEntity"), f"{name}.{f.name}: no customProperty 'itemEntity'"


def test_the_land_filter_is_carried_into_the_nested_parcel_lists():
    land = parse(DOC)["land_department"]
    assert land.grants["parcel_register"].rows == {"province_code": ("31",)}
    assert land.grants["citizen_profile"].nested_rows == {"parcels": {"province_code": ("31",)}}
    assert land.grants["enterprise_profile"].nested_rows == {"land": {"province_code": ("31",)}}
    assert land.grants["citizen_profile"].rows == {}  # citizens are not parcels: all of them stay
    assert not any(g.nested_rows or g.rows for a, ag in parse(DOC).items() if a != "land_department"
                   for g in ag.grants.values())


def test_the_nested_filter_is_applied_before_pseudonymizing_the_list():
    from lienthong.access import view_select

    doc = copy.deepcopy(DOC)
    doc["agencies"]["land_department"]["datasets"]["citizen_profile"]["columns"]["parcels"] = "pseudonymized"
    grant = parse(doc)["land_department"].grants["citizen_profile"]
    text = str(view_select(grant, CONTRACTS["citizen_profile"], "land_department"))
    at = text.index("pseudonym")
    assert "jsonb_array_elements" in text[at:] and '"31"' in text[at:]


def _with(agency: str, dataset: str, columns: dict[str, str], rows: dict | None = None):
    doc = copy.deepcopy(DOC)
    first_purpose = next(iter(doc["agencies"][agency]["purposes"]))
    spec = doc["agencies"][agency]["datasets"].setdefault(dataset, {"columns": {}, "purposes": [first_purpose]})
    spec["columns"].update(columns)
    if rows is not None:
        spec["rows"] = rows
    return doc


@pytest.mark.parametrize(("doc", "where", "problem"), [
    # a person filter, and the agency reads persons inside the enterprises' representative lists: their items
    # carry no residence province
    (_with("tax_department", "citizen_profile", {}, {"residence_province_code": ["31"]}),
     "dataset 'enterprise_profile', column 'representatives'", "cannot be filtered"),
    # a parcel filter, and the findings name certificates in free text
    (_with("land_department", "reconciliation_findings", {"finding_id": "visible", "subject": "visible"}),
     "dataset 'reconciliation_findings', column 'subject'", "free text"),
    # a parcel filter on a column the enterprises' land lists do not carry (the citizens' parcel lists do)
    (_with("land_department", "parcel_register", {}, {"province_code": ["31"], "land_use": ["ODT"]}),
     "dataset 'enterprise_profile', column 'land'", "cannot be filtered"),
    # a person filter, and parcel holders mix persons and enterprises in one list
    (_with("single_window_desk", "citizen_profile", {}, {"residence_province_code": ["31"]}),
     "column 'representatives'", "cannot be filtered"),
])
def test_a_filter_that_cannot_hold_everywhere_is_refused(doc, where, problem):
    with pytest.raises(AccessConfigError, match=problem) as exc:
        parse(doc)
    assert where in str(exc.value)


def test_hiding_the_unfilterable_column_makes_the_filter_acceptable():
    doc = _with("tax_department", "citizen_profile", {}, {"residence_province_code": ["31"]})
    doc["agencies"]["tax_department"]["datasets"]["enterprise_profile"]["columns"].pop("representatives")
    tax = parse(doc)["tax_department"]
    assert tax.grants["citizen_profile"].rows == {"residence_province_code": ("31",)}
    doc["agencies"]["tax_department"]["datasets"]["parcel_register"] = {
        "columns": {"parcel_id": "visible", "holders": "visible"}, "purposes": ["tax_registration"]}
    with pytest.raises(AccessConfigError, match="column 'holders'.*cannot be filtered"):
        parse(doc)


def test_the_usage_history_cites_the_right_to_know_basis_of_the_catalogue():
    from lienthong.singlewindow import usage

    basis = DOC["legal_bases"]["pdp_right_to_know"]
    assert f"{basis['instrument']}, {basis['article']}" == usage.RIGHT_TO_KNOW


def test_the_grants_command_lists_every_grant_with_its_purposes_and_bases(capsys, tmp_path):
    import json

    from lienthong.cli import main

    assert main(["grants", "--json", "--agencies", str(REPO / "schemas" / "agencies.yaml")]) == 0
    rows = json.loads(capsys.readouterr().out)
    agencies = parse(DOC)
    assert {(r["agency"], r["dataset"]) for r in rows} == {(a, d) for a, ag in agencies.items() for d in ag.grants}
    land = next(r for r in rows if (r["agency"], r["dataset"]) == ("land_department", "parcel_register"))
    assert land["rows"] == {"province_code": ["31"]} and "26/2023/QH15, Art. 12(3)" in land["legal_bases"]
    assert main(["grants", "--agency", "auditors", "--agencies", str(REPO / "schemas" / "agencies.yaml")]) == 0
    text = capsys.readouterr().out
    assert "auditors / citizen_profile" in text and "embargo up to 180 days" in text and "tax_department" not in text
    broken = copy.deepcopy(DOC)
    broken["agencies"]["auditors"]["datasets"]["citizen_profile"].pop("purposes")
    path = tmp_path / "agencies.yaml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    assert main(["grants", "--agencies", str(path)]) == 1
    assert "dataset 'citizen_profile': a dataset grant needs 'purposes'" in capsys.readouterr().err
