"""Contracts of the integrated zone: the five datasets `lienthong.reconcile.integrate` builds load, carry the
agreed primary keys and classifications, and list exactly the columns the SQL produces, in order, with
Arrow types the produced tables cast to."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from lienthong.contracts import contract
from lienthong.duck import session

REPO = Path(__file__).resolve().parents[3]

# Copied from the SELECT lists in lienthong/reconcile/integrate.py (plus `entity_id`, which
# `reconcile.run.with_entity_ids` puts into the masters from the entity registry). A change to the SQL must come
# with the contract change (and this list), or these tests fail.
INTEGRATED_COLUMNS: dict[str, list[str]] = {
    "person_master": [
        "person_key", "entity_id", "in_population_registry", "citizen_id", "legacy_id", "citizen_ids", "full_name",
        "full_name_source", "birth_date", "birth_date_precision", "birth_date_source", "sex",
        "residence_commune_code", "residence_commune_code_2025", "status", "death_date",
        "representative_roles", "land_holder_records",
    ],
    "enterprise_master": [
        "enterprise_code", "entity_id", "duplicate_codes", "name", "english_name", "legal_form", "status", "founded_on",
        "charter_capital_vnd", "head_office_address", "head_office_commune_code",
        "head_office_commune_code_2025", "source", "representatives", "land_holder_records",
    ],
    "parcel_master": [
        "province_code", "commune_code_original", "map_sheet", "parcel_number", "parcel_id",
        "commune_code_2025", "area_m2", "land_use", "land_use_catalogue_version", "address", "entity_id",
        "valid_certificates", "share_total",
    ],
    "enterprise_representative_link": [
        "enterprise_code", "master_enterprise_code", "position", "title", "citizen_id", "person_key",
        "method", "score", "band",
    ],
    "parcel_holder_link": [
        "province_code", "certificate_id", "serial", "parcel_id", "holder_id", "holder_type", "person_key",
        "enterprise_code", "method", "score", "band", "share_percent", "certificate_status",
    ],
}

PRIMARY_KEYS: dict[str, list[str]] = {
    "person_master": ["person_key"],
    "enterprise_master": ["enterprise_code"],
    "parcel_master": ["province_code", "commune_code_original", "map_sheet", "parcel_number", "parcel_id"],
    "enterprise_representative_link": ["enterprise_code", "position"],
    "parcel_holder_link": ["province_code", "certificate_id"],
}

# Names, personal IDs (person_key included: it is a citizen ID or 'NR:' + an ID) and birth dates.
PERSONAL: dict[str, set[str]] = {
    "person_master": {"person_key", "citizen_id", "legacy_id", "citizen_ids", "full_name", "birth_date", "sex",
                      "residence_commune_code", "residence_commune_code_2025"},
    "enterprise_master": set(),
    "parcel_master": set(),
    "enterprise_representative_link": {"citizen_id", "person_key"},
    "parcel_holder_link": {"person_key"},
}

# The integrate function producing each dataset.
PRODUCER = {
    "person_master": "person_master",
    "enterprise_master": "enterprise_master",
    "parcel_master": "parcel_master",
    "enterprise_representative_link": "representative_link",
    "parcel_holder_link": "holder_link",
}

SUPPORTED_METRICS = {"nullValues", "duplicateValues", "invalidValues"}

pytestmark = pytest.mark.parametrize("name", list(INTEGRATED_COLUMNS))


def test_contract_loads_with_its_primary_key(name):
    c = contract(name)
    assert c.name == name
    assert c.primary_key == PRIMARY_KEYS[name]
    assert c.custom.get("zone") == "integrated"
    assert c.purpose and "Grain" in c.purpose and "Survivorship" in c.purpose


def test_arrow_schema_has_exactly_the_columns_the_sql_produces(name):
    schema = contract(name).arrow_schema()
    assert schema.names == INTEGRATED_COLUMNS[name]
    for key in PRIMARY_KEYS[name]:
        assert not schema.field(key).nullable, key


def test_personal_columns_are_classified_personal(name):
    c = contract(name)
    for col in PERSONAL[name]:
        assert c.field(col).classification == "personal", col
    names_ids_births = {f.name for f in c.fields
                        if f.name in ("full_name", "person_key", "citizen_id", "legacy_id", "citizen_ids")
                        or f.name.startswith("birth_date") and f.logical_type == "date"}
    assert names_ids_births <= PERSONAL[name]
    if name == "person_master":
        assert c.field("status").classification == "sensitive"
        assert c.field("death_date").classification == "sensitive"


def test_every_column_is_described_and_derived(name):
    c = contract(name)
    for f in c.fields:
        assert f.description, f.name
        derived = f.custom.get("derivedFrom")
        assert derived == "reconcile" or (isinstance(derived, str) and derived.count(".") == 1), f.name
    for f in c.fields:
        if f.name.endswith("_source") or f.name == "source":
            assert "provenance" in f.description.lower(), f.name


def test_quality_rules_use_only_supported_metrics(name):
    c = contract(name)
    for rule in c.rules:
        assert rule.metric in SUPPORTED_METRICS, rule.name
        assert rule.column is not None, rule.name
    critical = {(r.column, r.metric) for r in c.rules if r.severity == "critical"}
    for key in PRIMARY_KEYS[name]:
        assert (key, "nullValues") in critical, key
    assert any(metric == "duplicateValues" and col in PRIMARY_KEYS[name] for col, metric in critical)
    for rule in c.rules:
        if rule.column == "band":
            assert rule.arguments["validValues"] == ["accept", "review", "reject"]
        if rule.column == "score":
            assert (rule.arguments["minValue"], rule.arguments["maxValue"]) == (0, 1)


def _staged(name: str, rows: list[dict]) -> pa.Table:
    schema = contract(name).arrow_schema()
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in schema]))


def _link(rows: list[tuple]) -> pa.Table:
    from lienthong.reconcile.people import LINK_SCHEMA

    keys = ("left_id", "right_id", "method", "score", "band", "runner_up_id", "runner_up_score")
    return pa.Table.from_pylist([dict(zip(keys, r, strict=True)) for r in rows], schema=LINK_SCHEMA)


@pytest.fixture(scope="module")
def produced() -> dict[str, pa.Table]:
    """The five tables built by integrate.py from a handful of staged rows and links."""
    from lienthong.reconcile import integrate
    from lienthong.reconcile.dedupe import DUPLICATE_SCHEMA

    ts = datetime(2025, 7, 1, 0, 0)
    cit = [dict(citizen_id=cid, legacy_id=None, full_name="Nguyễn Văn An", birth_date=date(1980, 5, 1),
                birth_date_precision="day", sex="NAM", residence_commune_code="26734",
                residence_commune_code_2025="26734", status=status, death_date=death, source_updated_at=ts)
           for cid, status, death in (("001080000001", "CON_SONG", None), ("001080000002", "CON_SONG", None),
                                      ("001080000009", "DA_MAT", date(2024, 1, 2)))]
    ent = [dict(enterprise_code=code, name="Công ty A", status="DANG_HOAT_DONG", founded_on=date(2010, 1, 1),
                charter_capital_vnd=1_000_000_000, head_office_address="1 Lê Lợi", source_updated_at=ts)
           for code in ("0100000001", "0100000002")]
    reps = [dict(enterprise_code="0100000001", position=0, full_name="Nguyễn Văn An",
                 document_number="001080000001", birth_date=date(1980, 5, 1), title="Giám đốc"),
            dict(enterprise_code="0100000002", position=0, full_name="Trần Thị Bình",
                 document_number="001090000077", birth_date=date(1990, 2, 3), title="Giám đốc")]
    holders = [dict(province_code="31", holder_id=1, holder_type="CA_NHAN", name="Lê Văn Cường",
                    document_number="031070000055", birth_year=1970, deleted=False, source_updated_at=ts),
               dict(province_code="31", holder_id=2, holder_type="TO_CHUC", name="Công ty A",
                    document_number="0100000001", deleted=False, source_updated_at=ts)]
    parcels = [dict(province_code="31", parcel_id=10, commune_code_original="11311", commune_code_2025="11311",
                    map_sheet=5, parcel_number=12, area_m2=120.5, land_use="ONT", deleted=False,
                    source_updated_at=ts)]
    certs = [dict(province_code="31", certificate_id=100 + h, serial="AA 12345678", parcel_id=10, holder_id=h,
                  share_percent=50.0, issued_on=date(2015, 1, 1), status="HIEU_LUC", deleted=False,
                  source_updated_at=ts) for h in (1, 2)]
    dup = pa.Table.from_pylist([dict(record_key=k, survivor_key=s, cluster_size=2) for k, s in (
        ("0100000001", "0100000001"), ("0100000002", "0100000001"))], schema=DUPLICATE_SCHEMA)
    with session(purpose="test") as con:
        integrate.load(con, integrate.Inputs(
            citizen=_staged("citizen", cit), enterprise=_staged("enterprise", ent),
            legal_representative=_staged("legal_representative", reps), land_holder=_staged("land_holder", holders),
            parcel=_staged("parcel", parcels), certificate=_staged("certificate", certs),
            citizen_duplicates=DUPLICATE_SCHEMA.empty_table(), enterprise_duplicates=dup,
            holder_duplicates=DUPLICATE_SCHEMA.empty_table(),
            representative_links=_link([("0100000001#0", "001080000001", "exact_id", 1.0, "accept", None, None),
                                        ("0100000002#0", "001080000002", "probabilistic", 0.4, "reject", None, None)]),
            holder_person_links=_link([("31:1", None, "probabilistic", None, "reject", None, None)]),
            holder_organisation_links=_link([("31:2", "0100000001", "exact_id", 1.0, "accept", None, None)]),
        ))
        tables = {ds: getattr(integrate, fn)(con) for ds, fn in PRODUCER.items()}
        clusters = integrate.clusters(con)
    # the masters get their entity IDs from the registry (here a first run: every entity created)
    from lienthong import entities
    from lienthong.reconcile.run import with_entity_ids
    from lienthong.settings import load_settings

    assignment = entities.assign(entities.empty_members(), entities.empty_entities(), clusters, "test")
    return with_entity_ids(tables, clusters, assignment.members, load_settings())


def test_produced_table_matches_the_contract(name, produced):
    table = produced[name]
    c = contract(name)
    assert table.column_names == INTEGRATED_COLUMNS[name]
    assert table.num_rows > 0
    cast = table.cast(c.arrow_schema())  # raises when a type does not fit
    for f in c.fields:
        if f.required:
            assert cast.column(f.name).null_count == 0, f.name
        assert cast.schema.field(f.name).type == f.arrow_type(), f.name
