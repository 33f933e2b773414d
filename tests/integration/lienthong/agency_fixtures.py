"""Shared set-up of the agency-access and single-window tests: a database of its own holding the five
published datasets (built from the contracts' DDL, a few rows each, nested columns as jsonb), the secrets
(agency passwords, pseudonymization key, API keys) generated per run and passed through the environment, and
password authentication enforced for the agency roles on the session's server."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extras import Json

from lienthong.access import AGENCY_GROUP, PASSWORD_ENV_PREFIX, load_agencies
from lienthong.contracts import contract
from lienthong.db import connect, ensure_database, warehouse_url

DATASETS = ("citizen_profile", "enterprise_profile", "parcel_register", "reconciliation_findings", "quality_summary")
T = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)

AN = {"citizen_id": "031085001234", "legacy_id": "031234567", "full_name": "Nguyễn Văn An",
      "birth_date": date(1985, 3, 2), "birth_date_precision": "day", "sex": "NAM", "nationality": "VN",
      "residence_address": "Số 12 Lạch Tray", "residence_commune_code": "11311",
      "residence_commune_code_2025": "11311", "residence_province_code": "31", "status": "CON_SONG",
      "death_date": None, "source_updated_at": T,
      "enterprises": [{"enterprise_code": "0100233488", "enterprise_name": "Công ty TNHH An Phát",
                       "enterprise_status": "DANG_HOAT_DONG", "title": "Giám đốc"}],
      "parcels": [{"province_code": "01", "commune_code_2025": "00070", "map_sheet": 3, "parcel_number": 18,
                   "area_m2": 52.0, "land_use": "ODT", "certificate_serial": "GH55667788", "share_percent": 50.0},
                  {"province_code": "31", "commune_code_2025": "11311", "map_sheet": 12, "parcel_number": 345,
                   "area_m2": 120.5, "land_use": "ODT", "certificate_serial": "AB12345678", "share_percent": 100.0}]}
BINH = {**AN, "citizen_id": "031192004567", "legacy_id": "031765432", "full_name": "Trần Thị Bình",
        "birth_date": date(1992, 7, 15), "sex": "NU", "residence_address": "Số 8 Văn Cao", "enterprises": None,
        "parcels": None}
CUONG = {**AN, "citizen_id": "001050007890", "legacy_id": "011223344", "full_name": "Lê Văn Cường",
         "birth_date": date(1950, 1, 1), "birth_date_precision": "year", "residence_address": "Số 3 Hàng Bạc",
         "residence_commune_code": "00070", "residence_commune_code_2025": "00070", "residence_province_code": "01",
         "status": "DA_MAT", "death_date": date(2024, 5, 6), "enterprises": None,
         "parcels": [{"province_code": "01", "commune_code_2025": "00070", "map_sheet": 3, "parcel_number": 17,
                      "area_m2": 64.0, "land_use": "ODT", "certificate_serial": "EF11223344", "share_percent": 100.0}]}
CITIZENS = [AN, BINH, CUONG]

AN_PHAT = {"enterprise_code": "0100233488", "name": "Công ty TNHH An Phát", "english_name": "An Phat Co., Ltd",
           "legal_form": "TNHH_1TV", "status": "DANG_HOAT_DONG", "founded_on": date(2010, 4, 1),
           "head_office_address": "Số 5 Lê Lợi", "head_office_commune_code_2025": "11311", "duplicate_codes": [],
           "representatives": [{"position": 0, "full_name": "Nguyễn Văn An", "citizen_id": "031085001234",
                                "title": "Giám đốc", "link_method": "exact_id", "link_band": "accept"}],
           "land": [{"province_code": "01", "parcel_id": 2003, "commune_code_2025": "00070", "map_sheet": 3,
                     "parcel_number": 19, "certificate_serial": "KL99001122", "share_percent": 100.0},
                    {"province_code": "31", "parcel_id": 1002, "commune_code_2025": "11311", "map_sheet": 12,
                     "parcel_number": 345, "certificate_serial": "CD87654321", "share_percent": 100.0}]}
BRANCH = {"enterprise_code": "0314409058-002", "name": "Chi nhánh Công ty Cổ phần Bình Minh",
          "english_name": None, "legal_form": "CO_PHAN", "status": "TAM_NGUNG", "founded_on": date(2018, 9, 9),
          "head_office_address": "Số 9 Trần Phú", "head_office_commune_code_2025": "11305",
          "duplicate_codes": ["0314409058-003"],
          "representatives": [{"position": 0, "full_name": "Trần Thị Bình", "citizen_id": "031192004567",
                               "title": "Trưởng chi nhánh", "link_method": "exact_id", "link_band": "accept"}],
          "land": None}
ENTERPRISES = [AN_PHAT, BRANCH]

PARCELS = [
    {"province_code": "31", "commune_code_original": "11311", "map_sheet": 12, "parcel_number": 345, "parcel_id": 1001,
     "commune_code_2025": "11311", "area_m2": 120.5, "land_use": "ODT", "address": "Tổ 5, phường Lạch Tray",
     "holders": [{"holder_type": "CA_NHAN", "person_key": "031085001234", "full_name": "Nguyễn Văn An",
                  "enterprise_code": None, "enterprise_name": None, "share_percent": 100.0,
                  "certificate_serial": "AB12345678", "certificate_status": "HIEU_LUC", "link_method": "exact_id",
                  "link_band": "accept"}]},
    # Same 2025 commune, sheet and number, surveyed under another (pre-2025) commune: a second parcel.
    {"province_code": "31", "commune_code_original": "11314", "map_sheet": 12, "parcel_number": 345, "parcel_id": 1002,
     "commune_code_2025": "11311", "area_m2": 800.0, "land_use": "SKC", "address": "Khu công nghiệp Đình Vũ",
     "holders": [{"holder_type": "TO_CHUC", "person_key": None, "full_name": None, "enterprise_code": "0100233488",
                  "enterprise_name": "Công ty TNHH An Phát", "share_percent": 100.0, "certificate_serial": "CD87654321",
                  "certificate_status": "HIEU_LUC", "link_method": "exact_id", "link_band": "accept"}]},
    {"province_code": "01", "commune_code_original": "00070", "map_sheet": 3, "parcel_number": 17, "parcel_id": 2001,
     "commune_code_2025": "00070", "area_m2": 64.0, "land_use": "ODT", "address": "Số 3 Hàng Bạc",
     "holders": [{"holder_type": "CA_NHAN", "person_key": "001050007890", "full_name": "Lê Văn Cường",
                  "enterprise_code": None, "enterprise_name": None, "share_percent": 100.0,
                  "certificate_serial": "EF11223344", "certificate_status": "HIEU_LUC", "link_method": "exact_id",
                  "link_band": "accept"}]},
    {"province_code": "01", "commune_code_original": "00070", "map_sheet": 3, "parcel_number": 18, "parcel_id": 2002,
     "commune_code_2025": "00070", "area_m2": 52.0, "land_use": "ODT", "address": "Số 5 Hàng Bạc",
     "holders": [{"holder_type": "CA_NHAN", "person_key": "031085001234", "full_name": "Nguyễn Văn An",
                  "enterprise_code": None, "enterprise_name": None, "share_percent": 50.0,
                  "certificate_serial": "GH55667788", "certificate_status": "HIEU_LUC", "link_method": "exact_id",
                  "link_band": "accept"}]},
    {"province_code": "01", "commune_code_original": "00070", "map_sheet": 3, "parcel_number": 19, "parcel_id": 2003,
     "commune_code_2025": "00070", "area_m2": 300.0, "land_use": "TMD", "address": "Số 7 Hàng Bạc",
     "holders": [{"holder_type": "TO_CHUC", "person_key": None, "full_name": None, "enterprise_code": "0100233488",
                  "enterprise_name": "Công ty TNHH An Phát", "share_percent": 100.0, "certificate_serial": "KL99001122",
                  "certificate_status": "HIEU_LUC", "link_method": "exact_id", "link_band": "accept"}]},
]

FINDINGS = [
    {"finding_id": "deceased_certificate_holder:0123456789abcdef", "type": "deceased_certificate_holder",
     "title": "Land certificate held by a deceased citizen", "severity": "high", "agency": "land_registry",
     "status": "open", "subject": json.dumps({"certificate_no": "EF11223344", "citizen_id": "001050007890"}),
     "evidence": json.dumps({"date_of_death": "2024-05-06"}), "first_seen_at": T, "status_since": T,
     "resolved_at": None, "times_reopened": 0},
]
QUALITY = [
    {"dataset": "citizen", "rule": "citizen_id:nullValues", "expectation": "expect_column_values_to_not_be_null",
     "column_name": "citizen_id", "severity": "critical", "success": True, "element_count": 3, "unexpected_count": 0,
     "unexpected_percent": 0.0, "tolerance": "<= 0 rows", "outcome_since": T},
    {"dataset": "citizen", "rule": "sex:invalidValues:validValues", "expectation": "expect_column_values_to_be_in_set",
     "column_name": "sex", "severity": "warning", "success": True, "element_count": 3, "unexpected_count": 0,
     "unexpected_percent": 0.0, "tolerance": "<= 1.00% of rows", "outcome_since": T},
]
ROWS: dict[str, list[dict[str, Any]]] = {"citizen_profile": CITIZENS, "enterprise_profile": ENTERPRISES,
                                         "parcel_register": PARCELS, "reconciliation_findings": FINDINGS,
                                         "quality_summary": QUALITY}

# Names and identifiers of persons and enterprises: the statistics office must see none of them in clear.
IDENTIFYING = sorted({c["citizen_id"] for c in CITIZENS} | {c["legacy_id"] for c in CITIZENS}
                     | {c["full_name"] for c in CITIZENS} | {e["enterprise_code"] for e in ENTERPRISES}
                     | {e["name"] for e in ENTERPRISES})


def publish_rows(url: str, datasets: tuple[str, ...] = DATASETS) -> None:
    """published.<dataset>__v000001 from the contract's DDL, the rows, and the stable view over it."""
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS published")
        for ds in datasets:
            c = contract(ds)
            table = f"{ds}__v000001"
            cur.execute(sql.SQL("DROP VIEW IF EXISTS {} CASCADE").format(sql.Identifier("published", ds)))
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("published", table)))
            cur.execute(c.postgres_ddl(table, "published"))
            for row in ROWS[ds]:
                values = [Json(row[f.name]) if f.postgres_type() == "jsonb" and row.get(f.name) is not None else row.get(f.name)
                          for f in c.fields]
                cur.execute(sql.SQL("INSERT INTO {} VALUES ({})").format(
                    sql.Identifier("published", table), sql.SQL(", ").join(sql.Placeholder() * len(values))), values)
            if ds == "parcel_register":  # the single window looks parcels up by 2025 commune, sheet, number
                cur.execute(sql.SQL("CREATE INDEX ON {} (commune_code_2025, map_sheet, parcel_number)").format(
                    sql.Identifier("published", table)))
            cur.execute(sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                sql.Identifier("published", ds), sql.Identifier("published", table)))


def agency_secrets() -> dict[str, str]:
    """Per-run secrets in the environment variables the platform reads (never written to a file)."""
    env = {"LIENTHONG_PSEUDONYM_KEY": secrets.token_urlsafe(32)}
    for name in load_agencies():
        env[PASSWORD_ENV_PREFIX + name.upper()] = secrets.token_urlsafe(18)
    return env


@contextmanager
def password_auth_for_agencies(url: str) -> Iterator[bool]:
    """Require SCRAM passwords from the agency roles on the session's server (the embedded server trusts local
    connections), restoring pg_hba.conf afterwards. Yields False when the server's config is out of reach."""
    with connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SHOW hba_file")
        (hba,) = cur.fetchone()
    path = Path(hba)
    if not (path.is_file() and os.access(path, os.W_OK)):
        yield False
        return
    original = path.read_text()
    rules = (f"local all +{AGENCY_GROUP} scram-sha-256\n"
             f"host all +{AGENCY_GROUP} 127.0.0.1/32 scram-sha-256\nhost all +{AGENCY_GROUP} ::1/128 scram-sha-256\n")
    path.write_text(rules + original)
    _reload(url)
    try:
        yield True
    finally:
        path.write_text(original)
        _reload(url)


def _reload(url: str) -> None:
    with connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")


def agency_connect(url: str, agency: str, password: str | None = None):
    """A real login as the agency's role with its password from the environment."""
    role = load_agencies()[agency].role
    pw = password if password is not None else os.environ[PASSWORD_ENV_PREFIX + agency.upper()]
    conn = psycopg2.connect(url, user=role, password=pw)
    conn.autocommit = True
    return conn


@contextmanager
def secrets_in_env() -> Iterator[dict[str, str]]:
    """`agency_secrets()` set in os.environ for the duration (restored afterwards)."""
    env = agency_secrets()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def published_database(name: str) -> str:
    """A database of its own on the session's server with the five published datasets."""
    url = ensure_database(warehouse_url(), name)
    publish_rows(url)
    return url
