"""The session log of agency reads (lienthong.sessions) on a real PostgreSQL (the embedded 17+ build): every login
of an agency role is recorded with the versions its views served and its declared purpose; other roles' logins
are not, and are never blocked, even with the log's tables gone (agency logins then are refused); a publish
while an agency session is open records the new version for it; `bulk_reads_of` finds, for one person, the
reads of versions containing that person as each agency's grant shows it (hidden nested columns and row
filters respected), and leaves out versions whose table retention dropped.

The datasets are published with the real `publish` (so `lienthong_ops.publication` and the switch hook are the
production ones), from the rows of agency_fixtures."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
from agency_fixtures import AN, BINH, CUONG, ROWS, agency_connect, password_auth_for_agencies, secrets_in_env
from psycopg2 import errors

from lienthong import access, sessions
from lienthong.access import PASSWORD_ENV_PREFIX, apply_access, load_agencies
from lienthong.contracts import contract, load_contracts
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.publish import publish
from lienthong.sessions import bulk_reads_of

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
CONTRACTS = load_contracts()
PERSON_DATASETS = ("citizen_profile", "enterprise_profile", "parcel_register")


def _publish(url: str, folder: Path, dataset: str, rows: list[dict[str, Any]], run: str, retention: int = 5):
    table = pa.Table.from_pylist(rows, schema=contract(dataset).arrow_schema())
    return publish(contract(dataset), {}, run_id=run, gate_passed=True, published_dir=folder, lineage={},
                   quality={}, retention=retention, url=url, rows=table)


def _rows(url: str, query: str, params: Any = ()) -> list[tuple]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _login(url: str, agency: str, purpose: str | None = None, case_id: str | None = None):
    role = AGENCIES[agency].role
    options = " ".join(f"-c lienthong.{k}={v}" for k, v in (("purpose", purpose), ("case_id", case_id)) if v)
    conn = psycopg2.connect(url, user=role, password=os.environ[PASSWORD_ENV_PREFIX + agency.upper()],
                            options=options, application_name="sessions-test")
    conn.autocommit = True
    return conn


def _session_of(url: str, conn) -> int:
    (sid,) = _rows(url, "SELECT id FROM lienthong_ops.agency_session WHERE pid = %s ORDER BY id DESC LIMIT 1",
                   (conn.info.backend_pid,))[0]
    return sid


def _versions(url: str, sid: int) -> dict[tuple[str, int], str]:
    return {(d, v): how for d, v, how in _rows(
        url, "SELECT dataset, version, how FROM lienthong_ops.session_version WHERE session_id = %s", (sid,))}


def _count(url: str) -> int:
    return _rows(url, "SELECT count(*) FROM lienthong_ops.agency_session")[0][0]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("published")
    with secrets_in_env():
        url = ensure_database(warehouse_url(), "agency_sessions_test")
        with password_auth_for_agencies(url):
            for ds in PERSON_DATASETS:
                _publish(url, folder, ds, ROWS[ds], "run-1")
            report = apply_access(url)
            assert report.session_log == []
            yield url, folder


@pytest.fixture(scope="module")
def first_logins(warehouse) -> dict[str, int]:
    """One session per agency on the first versions, closed again: agency -> session id."""
    url, _ = warehouse
    ids = {}
    for agency in AGENCIES:
        conn = agency_connect(url, agency)
        ids[agency] = _session_of(url, conn)
        conn.close()
    return ids


def test_the_trigger_names_the_group_access_manages():
    assert sessions.AGENCY_GROUP == access.AGENCY_GROUP


def test_an_agency_login_is_recorded_with_its_declared_purpose_and_the_versions_its_views_serve(warehouse):
    url, _ = warehouse
    before = _count(url)
    conn = _login(url, "tax_department", purpose="tax_arrears", case_id="HS-2026-0042")
    try:
        assert _count(url) == before + 1
        (row,) = _rows(url, """SELECT role, agency, pid, application_name, purpose, case_id, at <= now(), backend_start
                              FROM lienthong_ops.agency_session WHERE id = %s""", (_session_of(url, conn),))
        assert row[:7] == ("lienthong_tax_department", "tax_department", conn.info.backend_pid, "sessions-test",
                           "tax_arrears", "HS-2026-0042", True)
        (start,) = _rows(url, "SELECT backend_start FROM pg_stat_activity WHERE pid = %s", (conn.info.backend_pid,))[0]
        assert row[7] == start
        # the datasets the tax department is granted, at the version its views serve; parcel_register is not granted
        assert _versions(url, _session_of(url, conn)) == {("citizen_profile", 1): "login", ("enterprise_profile", 1): "login"}
    finally:
        conn.close()


def test_logins_of_other_roles_are_not_recorded(warehouse):
    url, _ = warehouse
    before = _count(url)
    with connect(url) as conn, conn.cursor() as cur:  # the platform's role (a superuser here)
        cur.execute("SELECT 1")
        cur.execute("DROP ROLE IF EXISTS sessions_plain_reader")
        cur.execute("CREATE ROLE sessions_plain_reader LOGIN")
    psycopg2.connect(url, user="sessions_plain_reader").close()
    assert _count(url) == before


def test_an_agency_role_cannot_read_write_or_switch_off_the_log(warehouse, first_logins):
    url, _ = warehouse
    conn = agency_connect(url, "single_window_desk")
    try:
        for statement in ("SELECT * FROM lienthong_ops.agency_session", "SELECT * FROM lienthong_ops.session_version",
                          "SELECT * FROM lienthong_ops.agency_role",
                          "DELETE FROM lienthong_ops.agency_session",
                          "UPDATE lienthong_ops.agency_session SET purpose = 'x'"):
            with pytest.raises(errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute(statement)
        with pytest.raises(errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("ALTER EVENT TRIGGER lienthong_agency_login DISABLE")
    finally:
        conn.close()
    role = AGENCIES["single_window_desk"].role
    pw = os.environ[PASSWORD_ENV_PREFIX + "SINGLE_WINDOW_DESK"]
    with pytest.raises(psycopg2.OperationalError, match="event_triggers"):
        psycopg2.connect(url, user=role, password=pw, options="-c event_triggers=off")


def test_an_agency_login_that_starts_read_only_is_refused_not_left_unrecorded(warehouse):
    url, _ = warehouse
    before = _count(url)
    role = AGENCIES["tax_department"].role
    pw = os.environ[PASSWORD_ENV_PREFIX + "TAX_DEPARTMENT"]
    with pytest.raises(psycopg2.OperationalError, match="read-only"):
        psycopg2.connect(url, user=role, password=pw, options="-c default_transaction_read_only=on")
    assert _count(url) == before
    conn = agency_connect(url, "tax_department")  # read-only set after the login is fine
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = on")
            cur.execute("SELECT count(*) FROM agency_tax_department.citizen_profile")
    finally:
        conn.close()


@pytest.mark.parametrize("table", ["agency_session", "session_version", "agency_role", "publication"])
def test_with_a_log_table_missing_the_platform_role_logs_in_and_agency_roles_are_refused(warehouse, table):
    url, _ = warehouse
    moved = f"{table}_moved_away"
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE lienthong_ops.{table} RENAME TO {moved}")
    try:
        with connect(url) as conn, conn.cursor() as cur:  # a new login of the platform's role
            cur.execute("SELECT current_user")
        psycopg2.connect(url, user="sessions_plain_reader").close()
        with pytest.raises(psycopg2.OperationalError, match="refused"):
            agency_connect(url, "tax_department")
    finally:
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute(f"ALTER TABLE lienthong_ops.{moved} RENAME TO {table}")
    agency_connect(url, "tax_department").close()


def test_a_publish_while_a_session_is_open_records_the_new_version_for_it(warehouse, first_logins):
    url, folder = warehouse
    open_tax, open_land = _login(url, "tax_department"), _login(url, "land_department")
    closed = _login(url, "single_window_desk")
    closed_id = _session_of(url, closed)
    closed.close()
    try:
        tax, land = _session_of(url, open_tax), _session_of(url, open_land)
        changed = copy.deepcopy(ROWS["parcel_register"])
        changed[0]["area_m2"] = 121.0
        assert _publish(url, folder, "parcel_register", changed, "run-2").version == 2
        assert _versions(url, land)[("parcel_register", 2)] == "switch"
        assert _versions(url, land)[("parcel_register", 1)] == "login"
        assert ("parcel_register", 2) not in _versions(url, tax)  # not granted to the tax department
        assert ("parcel_register", 2) not in _versions(url, closed_id)  # closed before the switch
    finally:
        open_tax.close()
        open_land.close()
    later = _login(url, "land_department")
    try:
        assert _versions(url, _session_of(url, later))[("parcel_register", 2)] == "login"
    finally:
        later.close()


def _reads(url: str, person: str, sessions: dict[str, int]):
    with connect(url) as conn:
        found = bulk_reads_of(conn, person, AGENCIES, CONTRACTS)
    ids = set(sessions.values())
    return found, {(r.agency, r.dataset, r.version) for r in found if r.session_id in ids}


def test_bulk_reads_of_a_person_follow_each_agencys_grant(warehouse, first_logins):
    url, _ = warehouse
    found, reads = _reads(url, AN["citizen_id"], first_logins)
    assert reads == {
        ("single_window_desk", "citizen_profile", 1), ("single_window_desk", "enterprise_profile", 1),
        ("single_window_desk", "parcel_register", 1),
        ("tax_department", "citizen_profile", 1), ("tax_department", "enterprise_profile", 1),
        # land: An's parcel 1001 lies in its province; An Phát's representatives are hidden from it
        ("land_department", "citizen_profile", 1), ("land_department", "parcel_register", 1),
        # statistics: the (pseudonymized) row is An's; representatives and holders are hidden
        ("statistics_office", "citizen_profile", 1),
        # auditors: pseudonymized lists are not hidden
        ("auditors", "citizen_profile", 1), ("auditors", "enterprise_profile", 1), ("auditors", "parcel_register", 1),
    }
    assert [r.at for r in found] == sorted((r.at for r in found), reverse=True)  # newest session first
    first = next(r for r in found if r.session_id == first_logins["tax_department"])
    assert first.purpose is None and first.case_id is None
    if AGENCIES["tax_department"].__dict__.get("purposes"):
        assert first.legal_basis and first.embargo_until is not None and first.embargo_until >= first.at


def test_the_row_filter_decides_whether_a_nested_person_was_readable(warehouse, first_logins):
    url, _ = warehouse
    _, reads = _reads(url, CUONG["citizen_id"], first_logins)
    # Cường holds parcel 2001 in province 01 only: outside the land department's filter
    assert ("land_department", "parcel_register", 1) not in reads
    assert ("land_department", "citizen_profile", 1) in reads
    assert ("single_window_desk", "parcel_register", 1) in reads


def test_nothing_is_returned_of_another_person(warehouse, first_logins):
    url, _ = warehouse
    found, _ = _reads(url, "079099000001", first_logins)  # in no dataset
    assert list(found) == []
    _, reads = _reads(url, BINH["citizen_id"], first_logins)
    assert not any(ds == "parcel_register" for _, ds, _ in reads)  # Bình holds no parcel
    assert ("tax_department", "enterprise_profile", 1) in reads  # she represents the branch


def test_a_read_of_a_version_whose_table_was_dropped_is_left_out_and_counted(warehouse, first_logins):
    url, folder = warehouse
    changed = copy.deepcopy(ROWS["citizen_profile"])
    changed[1]["residence_address"] = "Số 10 Văn Cao"
    assert _publish(url, folder, "citizen_profile", changed, "run-3", retention=1).version == 2
    assert not _rows(url, "SELECT 1 FROM pg_tables WHERE tablename = 'citizen_profile__v000001'")
    found, reads = _reads(url, AN["citizen_id"], first_logins)
    assert not any(ds == "citizen_profile" for _, ds, _ in reads)
    assert ("tax_department", "enterprise_profile", 1) in reads
    assert ("citizen_profile", 1) in found.unchecked_versions
    assert found.unchecked >= len(first_logins)
