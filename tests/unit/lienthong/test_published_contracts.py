"""Contracts of the published zone: the five datasets agencies read load, carry the agreed primary keys, type
their nested columns as list<struct> (jsonb in PostgreSQL), and classify names and IDs of persons as
personal data."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lienthong.contracts import contract

PUBLISHED = ("citizen_profile", "enterprise_profile", "parcel_register", "reconciliation_findings", "quality_summary")

PRIMARY_KEYS = {
    "citizen_profile": ["citizen_id"],
    "enterprise_profile": ["enterprise_code"],
    "parcel_register": ["province_code", "commune_code_original", "map_sheet", "parcel_number", "parcel_id"],
    "reconciliation_findings": ["finding_id"],
    "quality_summary": ["dataset", "rule"],
}

# nested column -> its struct members, in order
NESTED = {
    ("citizen_profile", "enterprises"): ["enterprise_code", "enterprise_name", "enterprise_status", "title"],
    ("citizen_profile", "parcels"): ["province_code", "commune_code_2025", "map_sheet", "parcel_number", "area_m2",
                                     "land_use", "certificate_serial", "share_percent"],
    ("enterprise_profile", "representatives"): ["position", "full_name", "citizen_id", "title", "link_method",
                                                "link_band"],
    ("enterprise_profile", "land"): ["province_code", "parcel_id", "commune_code_2025", "map_sheet", "parcel_number",
                                     "certificate_serial", "share_percent"],
    ("parcel_register", "holders"): ["holder_type", "person_key", "full_name", "enterprise_code", "enterprise_name",
                                     "share_percent", "certificate_serial", "certificate_status", "link_method",
                                     "link_band"],
}

# The flat columns citizen_profile had before the nested ones were added: same names, same order.
CITIZEN_PROFILE_V1 = [
    "citizen_id", "legacy_id", "full_name", "birth_date", "birth_date_precision", "sex", "nationality",
    "residence_address", "residence_commune_code", "residence_commune_code_2025", "residence_province_code",
    "status", "death_date", "source_updated_at",
]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_contract_loads_with_its_primary_key_in_the_published_zone(name):
    c = contract(name)
    assert c.name == name
    assert c.primary_key == PRIMARY_KEYS[name]
    assert c.custom["zone"] == "published"
    assert all(f.custom.get("derivedFrom") for f in c.fields), "every column says where it comes from"
    pk = c.postgres_ddl(f"{name}__v000001", "published")
    assert "PRIMARY KEY (" + ", ".join(f'"{k}"' for k in PRIMARY_KEYS[name]) + ")" in pk


@pytest.mark.parametrize(("name", "column"), list(NESTED))
def test_nested_columns_are_list_of_struct_in_arrow_and_jsonb_in_postgres(name, column):
    c = contract(name)
    f = c.field(column)
    arrow = c.arrow_schema().field(column).type
    assert pa.types.is_list(arrow) and pa.types.is_struct(arrow.value_type)
    assert [m.name for m in arrow.value_type] == NESTED[(name, column)]
    assert f.item_type == "object" and [ch.name for ch in f.children] == NESTED[(name, column)]
    assert f.postgres_type() == "jsonb"
    assert f.custom["derivedFrom"] == "reconcile"


def test_citizen_profile_keeps_its_columns_in_order_and_ends_with_the_nested_ones():
    c = contract("citizen_profile")
    # the person's entity ID right after the key (1.2.0), the nested lists last
    assert c.field_names == [CITIZEN_PROFILE_V1[0], "entity_id", *CITIZEN_PROFILE_V1[1:], "enterprises", "parcels"]
    assert c.field("entity_id").custom["derivedFrom"] == "person_master.entity_id"
    for name in CITIZEN_PROFILE_V1:
        assert c.field(name).custom["derivedFrom"] == f"citizen.{name}"


def test_duplicate_codes_is_a_list_of_strings():
    assert contract("enterprise_profile").arrow_schema().field("duplicate_codes").type == pa.list_(pa.string())


@pytest.mark.parametrize(("name", "column"), [
    ("citizen_profile", "citizen_id"), ("citizen_profile", "legacy_id"), ("citizen_profile", "full_name"),
    ("citizen_profile", "birth_date"), ("citizen_profile", "residence_address"),
    ("citizen_profile", "enterprises"), ("enterprise_profile", "representatives"),
    ("parcel_register", "holders"), ("reconciliation_findings", "subject"), ("reconciliation_findings", "evidence"),
])
def test_names_ids_birth_dates_and_what_contains_them_are_personal(name, column):
    assert contract(name).field(column).is_personal


@pytest.mark.parametrize("column", ["status", "death_date", "parcels"])
def test_death_status_and_land_holdings_of_a_citizen_are_sensitive(column):
    assert contract("citizen_profile").field(column).classification == "sensitive"


@pytest.mark.parametrize(("name", "column", "child"), [
    ("enterprise_profile", "representatives", "full_name"), ("enterprise_profile", "representatives", "citizen_id"),
    ("parcel_register", "holders", "person_key"), ("parcel_register", "holders", "full_name"),
])
def test_personal_members_of_nested_columns_are_classified(name, column, child):
    members = {ch.name: ch for ch in contract(name).field(column).children}
    assert members[child].classification == "personal"


def test_enterprise_data_is_public():
    c = contract("enterprise_profile")
    assert {f.classification for f in c.fields if f.name not in ("representatives",)} == {"public"}
