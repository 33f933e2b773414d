"""Per-agency access in the warehouse: every agency logs in with its own role and password and sees, through
its schema's views, exactly the columns schemas/agencies.yaml grants (visible, masked, pseudonymized) and
nothing else: not the hidden columns, not the datasets it was not granted, not `published.*`, not the
platform's bookkeeping, not the pseudonymization key."""

from __future__ import annotations

import json
import os
import re
from datetime import date

import psycopg2
import pytest
import yaml
from agency_fixtures import (
    AN,
    CITIZENS,
    CUONG,
    IDENTIFYING,
    PARCELS,
    agency_connect,
    password_auth_for_agencies,
    publish_rows,
    published_database,
    secrets_in_env,
)
from psycopg2 import errors

from lienthong.access import (
    KEY_ENV,
    PASSWORD_ENV_PREFIX,
    agency_key,
    apply_access,
    hmac_pads,
    load_agencies,
    pseudonym,
)
from lienthong.db import connect, ensure_database, warehouse_url

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def access_env():
    with secrets_in_env() as env:
        yield env


@pytest.fixture(scope="module")
def published_db() -> str:
    return published_database("access_agency_test")


@pytest.fixture(scope="module")
def enforced_passwords(published_db):
    with password_auth_for_agencies(published_db) as enforced:
        yield enforced


@pytest.fixture(scope="module")
def applied(published_db, access_env, enforced_passwords):
    return apply_access(published_db)


def select(conn, query: str, params=()) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def conns(applied, published_db):
    opened = {name: agency_connect(published_db, name) for name in AGENCIES}
    yield opened
    for c in opened.values():
        c.close()


def test_every_configured_view_is_created(applied):
    for name, agency in AGENCIES.items():
        rep = applied.agencies[name]
        assert rep.role == agency.role and rep.password_set
        assert sorted(rep.views) == sorted(agency.grants) and not rep.skipped


@pytest.mark.parametrize("agency", list(AGENCIES))
def test_each_agency_logs_in_as_its_role_and_sees_exactly_its_columns(conns, agency):
    conn = conns[agency]
    (who,) = select(conn, "SELECT current_user AS u, session_user AS s")
    assert who == {"u": AGENCIES[agency].role, "s": AGENCIES[agency].role}
    for ds, grant in AGENCIES[agency].grants.items():
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM agency_{agency}.{ds} LIMIT 0")
            assert [d.name for d in cur.description] == grant.readable, ds


def test_the_search_path_of_an_agency_role_is_its_schema(conns):
    rows = select(conns["tax_department"], "SELECT citizen_id FROM citizen_profile ORDER BY 1")
    assert [r["citizen_id"] for r in rows] == sorted(c["citizen_id"] for c in CITIZENS)


def test_visible_columns_return_the_published_values(conns):
    rows = select(conns["single_window_desk"], "SELECT * FROM agency_single_window_desk.citizen_profile WHERE citizen_id = %s",
                  (AN["citizen_id"],))
    assert len(rows) == 1
    assert rows[0]["full_name"] == "Nguyễn Văn An" and rows[0]["birth_date"] == date(1985, 3, 2)
    assert rows[0]["enterprises"] == AN["enterprises"] and rows[0]["parcels"] == AN["parcels"]


def test_masked_columns_keep_only_the_commune_or_the_year(conns):
    (tax,) = select(conns["tax_department"], "SELECT residence_address, full_name FROM agency_tax_department.citizen_profile "
                    "WHERE citizen_id = %s", (AN["citizen_id"],))
    assert tax == {"residence_address": "***, 11311", "full_name": "Nguyễn Văn An"}
    land = {r["citizen_id"]: r for r in select(conns["land_department"],
                                                "SELECT citizen_id, birth_date, death_date FROM agency_land_department.citizen_profile")}
    assert land[CUONG["citizen_id"]]["birth_date"] == 1950 and land[CUONG["citizen_id"]]["death_date"] == 2024
    assert land[AN["citizen_id"]]["death_date"] is None


def test_masking_functions_keep_last_three_characters_initials_and_year(published_db, applied):
    with connect(published_db) as conn:
        (row,) = select(conn, """SELECT lienthong_access.mask_id('031085001234') AS id, lienthong_access.mask_id('ab') AS short,
                                        lienthong_access.mask_name('  Nguyễn  Văn An ') AS name,
                                        lienthong_access.mask_name('Đặng Thị Ánh') AS name2,
                                        lienthong_access.mask_year(date '1985-03-02') AS year,
                                        lienthong_access.mask_address('Số 12 Lạch Tray', '11311') AS address,
                                        lienthong_access.mask_address('Số 12', NULL) AS no_commune""")
    assert row == {"id": "*********234", "short": "**", "name": "N. V. A.", "name2": "Đ. T. Á.", "year": 1985,
                   "address": "***, 11311", "no_commune": "***"}


def test_pseudonymized_columns_are_stable_keyed_hmac_hex_and_differ_from_the_clear_value(conns, published_db, access_env):
    key = os.environ[KEY_ENV].encode()
    query = "SELECT citizen_id, status FROM agency_statistics_office.citizen_profile"
    first = select(conns["statistics_office"], query)
    assert len(first) == len(CITIZENS)
    expected = {pseudonym(c["citizen_id"], agency_key(key, "statistics_office")) for c in CITIZENS}
    assert {r["citizen_id"] for r in first} == expected
    assert all(HEX64.match(r["citizen_id"]) for r in first)
    assert not expected & {c["citizen_id"] for c in CITIZENS}
    again = agency_connect(published_db, "statistics_office")
    try:
        assert sorted(map(str, select(again, query))) == sorted(map(str, first))  # stable across sessions
    finally:
        again.close()
    # the auditors' pseudonyms come from their own key: a nested column is pseudonymized whole
    audit = select(conns["auditors"], "SELECT citizen_id, enterprises, parcels FROM agency_auditors.citizen_profile")
    assert {r["citizen_id"] for r in audit} == {pseudonym(c["citizen_id"], agency_key(key, "auditors")) for c in CITIZENS}
    assert all(HEX64.match(r["enterprises"]) for r in audit if r["enterprises"] is not None)
    assert sum(r["parcels"] is None for r in audit) == sum(c["parcels"] is None for c in CITIZENS)


def test_two_agencies_pseudonyms_of_one_person_differ_and_do_not_join(conns):
    stats = select(conns["statistics_office"], "SELECT citizen_id, birth_date FROM agency_statistics_office.citizen_profile")
    audit = select(conns["auditors"], "SELECT citizen_id, birth_date FROM agency_auditors.citizen_profile")
    assert len(stats) == len(audit) == len(CITIZENS)
    assert not {r["citizen_id"] for r in stats} & {r["citizen_id"] for r in audit}
    # each agency's pseudonyms still count and join within it: one per citizen, stable
    assert len({r["citizen_id"] for r in stats}) == len({r["citizen_id"] for r in audit}) == len(CITIZENS)


@pytest.mark.parametrize(("agency", "dataset", "column"), [
    ("statistics_office", "citizen_profile", "full_name"),
    ("statistics_office", "citizen_profile", "legacy_id"),
    ("statistics_office", "enterprise_profile", "representatives"),
    ("tax_department", "citizen_profile", "parcels"),
    ("land_department", "enterprise_profile", "representatives"),
    ("auditors", "citizen_profile", "full_name"),
])
def test_hidden_columns_do_not_exist_for_the_agency(conns, agency, dataset, column):
    with pytest.raises(errors.UndefinedColumn), conns[agency].cursor() as cur:
        cur.execute(f"SELECT {column} FROM agency_{agency}.{dataset}")


def test_a_dataset_not_granted_is_not_readable(conns):
    tax = conns["tax_department"]
    with pytest.raises(errors.UndefinedTable), tax.cursor() as cur:
        cur.execute("SELECT * FROM agency_tax_department.parcel_register")
    # nor through another agency's view of it
    with pytest.raises(errors.InsufficientPrivilege), tax.cursor() as cur:
        cur.execute("SELECT * FROM agency_single_window_desk.parcel_register")
    with pytest.raises(errors.InsufficientPrivilege), conns["statistics_office"].cursor() as cur:
        cur.execute("SELECT * FROM agency_auditors.reconciliation_findings")


@pytest.mark.parametrize("agency", list(AGENCIES))
@pytest.mark.parametrize("relation", ["published.citizen_profile", "published.citizen_profile__v000001",
                                      "published.quality_summary", "lienthong_ops.publication",
                                      "lienthong_private.agency_pseudonym_key"])
def test_published_tables_bookkeeping_and_the_key_table_are_refused(conns, agency, relation):
    with pytest.raises(errors.InsufficientPrivilege), conns[agency].cursor() as cur:
        cur.execute(f"SELECT * FROM {relation}")


def test_an_agency_cannot_call_the_pseudonymization_function_itself(conns):
    with pytest.raises(errors.InsufficientPrivilege), conns["statistics_office"].cursor() as cur:
        cur.execute("SELECT lienthong_private.pseudonym('statistics_office', '031085001234')")
    with pytest.raises(errors.InsufficientPrivilege), conns["auditors"].cursor() as cur:
        cur.execute("SELECT lienthong_private.pseudonym('statistics_office', '031085001234')")


def test_the_row_filter_limits_the_land_department_to_its_province(conns):
    rows = select(conns["land_department"], "SELECT province_code, parcel_id FROM agency_land_department.parcel_register")
    assert sorted(r["parcel_id"] for r in rows) == sorted(p["parcel_id"] for p in PARCELS if p["province_code"] == "31")
    assert {r["province_code"] for r in rows} == {"31"}
    desk = select(conns["single_window_desk"], "SELECT parcel_id FROM agency_single_window_desk.parcel_register")
    assert len(desk) == len(PARCELS)


def test_the_statistics_office_sees_no_name_or_id_in_clear_anywhere(conns):
    conn = conns["statistics_office"]
    scanned = 0
    for ds in AGENCIES["statistics_office"].grants:
        for row in select(conn, f"SELECT * FROM agency_statistics_office.{ds}"):
            for column, value in row.items():
                text = json.dumps(value, ensure_ascii=False, default=str)
                leaked = [v for v in IDENTIFYING if v in text]
                assert not leaked, f"{ds}.{column} shows {leaked}"
                scanned += 1
    assert scanned > 50


def test_the_key_appears_in_no_view_or_function_definition(published_db, applied, access_env):
    key = os.environ[KEY_ENV]
    inner, outer = hmac_pads(key.encode())
    with connect(published_db) as conn:
        defs = [r["d"] for r in select(conn, "SELECT definition AS d FROM pg_views")]
        defs += [r["d"] for r in select(conn, "SELECT prosrc AS d FROM pg_proc")]
        uses = [r["d"] for r in select(conn, "SELECT definition AS d FROM pg_views WHERE schemaname LIKE 'agency\\_%%'")]
    assert any("pseudonym(" in d for d in uses)  # the views call the function...
    derived = [pad.hex() for name in AGENCIES for pad in hmac_pads(agency_key(key.encode(), name))]
    for secret in (key, inner.hex(), outer.hex(), *derived):
        assert not any(secret in d for d in defs)  # ...and hold no key material


def test_a_wrong_or_missing_password_is_refused(published_db, applied, enforced_passwords):
    if not enforced_passwords:
        pytest.skip("the test server's pg_hba.conf is out of reach: cannot require passwords there")
    for password in ("not-the-password", ""):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            agency_connect(published_db, "tax_department", password=password)


def test_applying_again_is_idempotent_and_follows_the_configuration(published_db, applied, access_env, tmp_path,
                                                                   repo_root):
    again = apply_access(published_db)
    assert again.as_dict()["agencies"] == applied.as_dict()["agencies"]
    doc = yaml.safe_load((repo_root / "schemas" / "agencies.yaml").read_text(encoding="utf-8"))
    del doc["agencies"]["tax_department"]["datasets"]["citizen_profile"]["columns"]["full_name"]
    del doc["agencies"]["tax_department"]["datasets"]["enterprise_profile"]
    path = tmp_path / "agencies.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        changed = apply_access(published_db, path)
        assert changed.agencies["tax_department"].views == ["citizen_profile"]
        tax = agency_connect(published_db, "tax_department")
        try:
            with pytest.raises(errors.UndefinedColumn), tax.cursor() as cur:
                cur.execute("SELECT full_name FROM agency_tax_department.citizen_profile")
            with pytest.raises(errors.UndefinedTable), tax.cursor() as cur:
                cur.execute("SELECT * FROM agency_tax_department.enterprise_profile")
        finally:
            tax.close()
    finally:
        apply_access(published_db)  # back to the shipped configuration for the other tests


def test_a_dataset_not_yet_published_is_skipped_and_reported(access_env, enforced_passwords):
    url = ensure_database(warehouse_url(), "access_partial")
    publish_rows(url, ("citizen_profile",))
    report = apply_access(url)
    desk = report.agencies["single_window_desk"]
    assert desk.views == ["citizen_profile"]
    assert set(desk.skipped) == {"enterprise_profile", "parcel_register"}
    assert "not published yet" in desk.skipped["parcel_register"]


def test_pseudonymized_columns_without_a_key_fail_clearly(access_env, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(RuntimeError, match=KEY_ENV):
        apply_access(ensure_database(warehouse_url(), "access_nokey"))


def test_an_existing_role_not_managed_by_lienthong_is_never_taken_over(published_db, access_env, tmp_path,
                                                                     repo_root):
    doc = yaml.safe_load((repo_root / "schemas" / "agencies.yaml").read_text(encoding="utf-8"))
    attrs = "SELECT rolname, rolsuper, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = current_user"
    with connect(published_db) as conn:
        (before,) = select(conn, attrs)
    owner = before["rolname"]
    doc["agencies"]["auditors"]["role"] = owner
    path = tmp_path / "agencies.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ValueError, match="not an agency role managed by lienthong"):
        apply_access(published_db, path)
    with connect(published_db) as conn:
        assert select(conn, attrs) == [before]


def test_passwords_come_from_the_environment_only(access_env, repo_root):
    assert all(f"{PASSWORD_ENV_PREFIX}{a.upper()}" in os.environ for a in AGENCIES)
    text = (repo_root / "schemas" / "agencies.yaml").read_text(encoding="utf-8")
    assert not any(os.environ[f"{PASSWORD_ENV_PREFIX}{a.upper()}"] in text for a in AGENCIES)
