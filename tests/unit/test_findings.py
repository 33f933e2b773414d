"""The findings taxonomy and the Finding value: codes, defaults, overrides and the stable finding id."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from lienthong.findings import AGENCIES, SEVERITIES, TAXONOMY, Finding, FindingType, finding_type

CODES = {
    "id_not_in_population_registry": ("high", "population_registry"),
    "same_id_different_name": ("medium", "population_registry"),
    "same_id_different_birth_date": ("high", "population_registry"),
    "deceased_legal_representative": ("critical", "business_registry"),
    "deceased_certificate_holder": ("high", "land_registry"),
    "dissolved_enterprise_holds_land": ("medium", "land_registry"),
    "legacy_id_resolved": ("info", "population_registry"),
    "commune_code_outdated": ("low", "population_registry"),
    "duplicate_records": ("medium", "population_registry"),
    "match_needs_review": ("medium", "population_registry"),
    "shares_do_not_sum_to_100": ("high", "land_registry"),
}


def test_taxonomy_has_exactly_the_eleven_codes_with_their_severity_and_agency():
    assert set(TAXONOMY) == set(CODES) and len(TAXONOMY) == 11
    for code, (severity, agency) in CODES.items():
        kind = TAXONOMY[code]
        assert isinstance(kind, FindingType) and kind.code == code
        assert (kind.severity, kind.agency) == (severity, agency), code
        assert kind.title and kind.description
        assert kind.severity in SEVERITIES and kind.agency in AGENCIES


def test_finding_types_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TAXONOMY["duplicate_records"].severity = "low"  # type: ignore[misc]


def test_unknown_type_raises_naming_it():
    with pytest.raises(ValueError, match="no_such_problem"):
        Finding("no_such_problem", {"citizen_id": "001203000001"}, {})
    with pytest.raises(ValueError, match="no_such_problem"):
        finding_type("no_such_problem")


def test_finding_id_ignores_evidence():
    a = Finding("same_id_different_name", {"citizen_id": "001203000001"}, {"population": "Nguyễn Văn An"})
    b = Finding("same_id_different_name", {"citizen_id": "001203000001"}, {"population": "Nguyễn Văn Anh"})
    assert a.finding_id == b.finding_id
    assert a.finding_id.startswith("same_id_different_name:")
    assert len(a.finding_id.split(":", 1)[1]) == 16


def test_finding_id_ignores_subject_key_order():
    a = Finding("deceased_legal_representative", {"enterprise_code": "0101234567", "position": "0"})
    b = Finding("deceased_legal_representative", {"position": "0", "enterprise_code": "0101234567"})
    assert a.finding_id == b.finding_id


def test_finding_id_differs_by_subject_and_type():
    base = Finding("duplicate_records", {"citizen_id": "001203000001"})
    assert base.finding_id != Finding("duplicate_records", {"citizen_id": "001203000002"}).finding_id
    assert base.finding_id != Finding("duplicate_records", {"citizen_ids": "001203000001"}).finding_id
    assert base.finding_id != Finding("match_needs_review", {"citizen_id": "001203000001"}).finding_id


def test_finding_id_is_the_documented_recipe():
    """The id is persisted: its recipe must not drift (sha256 of the canonical JSON of [type, subject])."""
    f = Finding("legacy_id_resolved", {"old_id": "031234567", "record": "Đất/12"})
    canonical = '["legacy_id_resolved",{"old_id":"031234567","record":"Đất/12"}]'
    assert f.finding_id == "legacy_id_resolved:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_severity_and_agency_default_to_the_type():
    f = Finding("deceased_certificate_holder", {"certificate_no": "CS-31-0001", "holder": "1"})
    assert (f.severity, f.agency) == ("high", "land_registry")


def test_severity_and_agency_can_be_overridden():
    f = Finding("id_not_in_population_registry", {"enterprise_code": "0101234567", "position": "0"},
                {"citizen_id": "001203999999"}, agency="business_registry", severity="critical")
    assert (f.severity, f.agency) == ("critical", "business_registry")
    assert f.finding_id == Finding("id_not_in_population_registry",
                                   {"enterprise_code": "0101234567", "position": "0"}).finding_id


@pytest.mark.parametrize("override", [{"agency": "tax_office"}, {"severity": "urgent"}])
def test_unknown_override_raises(override):
    with pytest.raises(ValueError, match="unknown"):
        Finding("duplicate_records", {"citizen_id": "001203000001"}, **override)


@pytest.mark.parametrize("subject", [{}, {"citizen_id": 1203000001}, {"citizen_id": None}, "001203000001"])
def test_subject_must_be_non_empty_strings(subject):
    with pytest.raises(ValueError):
        Finding("duplicate_records", subject)


def test_evidence_must_be_json_able():
    with pytest.raises(ValueError, match="JSON"):
        Finding("duplicate_records", {"citizen_id": "001203000001"}, {"rows": {1, 2}})
    with pytest.raises(ValueError, match="JSON"):
        Finding("duplicate_records", {"citizen_id": "001203000001"}, {"score": float("nan")})
    with pytest.raises(ValueError, match="NUL"):
        Finding("duplicate_records", {"citizen_id": "001203000001"}, {"name": "a\x00b"})
    with pytest.raises(ValueError, match="NUL"):
        Finding("duplicate_records", {"citizen_id": "001203000001"}, {"a\x00": 1})
    # a backslash followed by "u0000" is text, not NUL
    assert Finding("duplicate_records", {"citizen_id": "001203000001"}, {"name": "\\u0000"}).evidence["name"] == "\\u0000"


def test_evidence_json_round_trips():
    evidence = {"name": "Trần Thị Bích\tHà\n\"x\" \\ y", "rows": [1, 2], "score": 0.82}
    f = Finding("match_needs_review", {"citizen_id": "001203000001", "land_holder": "CS-1/0"}, evidence)
    assert json.loads(f.evidence_json) == evidence


def test_findings_are_immutable():
    f = Finding("duplicate_records", {"citizen_id": "001203000001"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.type = "match_needs_review"  # type: ignore[misc]
