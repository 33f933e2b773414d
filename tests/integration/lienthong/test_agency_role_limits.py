"""Agency roles read and never write or hoard: no temporary tables, no tables or schemas of their own, no large
objects, nothing to pass on to another agency; a connection limit; statement, idle-in-transaction and temp-file
limits. Each restriction is tried for real as the agency's login on a database of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg2
import pytest
import yaml
from agency_fixtures import agency_connect, password_auth_for_agencies, published_database, secrets_in_env
from psycopg2 import errors

from lienthong.access import DEFAULT_LIMITS, AccessConfigError, apply_access, load_agencies, parse_agencies
from lienthong.contracts import load_contracts

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
# Tight limits for one agency so that each can be reached quickly in a test.
TIGHT = {"connections": 3, "statement_timeout": "1s", "idle_in_transaction_session_timeout": "1s",
         "idle_session_timeout": "1h", "temp_file_limit": "1MB"}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, repo_root) -> Iterator[tuple[str, object]]:
    doc = yaml.safe_load((repo_root / "schemas" / "agencies.yaml").read_text(encoding="utf-8"))
    doc["agencies"]["statistics_office"]["limits"] = TIGHT
    path = tmp_path_factory.mktemp("limits") / "agencies.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with secrets_in_env():
        url = published_database("access_role_limits")
        with password_auth_for_agencies(url):
            report = apply_access(url, path)
            try:
                yield url, report
            finally:
                apply_access(url)  # roles are cluster-wide: back to the shipped limits


@pytest.fixture()
def desk(warehouse):
    conn = agency_connect(warehouse[0], "single_window_desk")
    yield conn
    conn.close()


def test_every_restriction_was_enforced_on_this_server(warehouse):
    _, report = warehouse
    assert {name: a.not_enforced for name, a in report.agencies.items()} == {name: [] for name in AGENCIES}
    assert report.agencies["statistics_office"].limits == TIGHT
    assert report.agencies["tax_department"].limits == DEFAULT_LIMITS


@pytest.mark.parametrize("statement", [
    "CREATE TEMP TABLE hoard (citizen_id text)",
    "CREATE TABLE public.hoard (citizen_id text)",
    "CREATE TABLE agency_single_window_desk.hoard (citizen_id text)",
    "CREATE SCHEMA hoard",
    "CREATE VIEW agency_single_window_desk.copy AS SELECT 1",
    "SELECT lo_from_bytea(0, convert_to('031085001234', 'UTF8'))",
    "SELECT lo_create(0)",
    "SELECT lo_creat(-1)",
])
def test_an_agency_role_cannot_create_anything(desk, statement):
    with pytest.raises(errors.InsufficientPrivilege), desk.cursor() as cur:
        cur.execute(statement)


def test_an_agency_cannot_pass_its_view_to_another_agency(warehouse, desk):
    with desk.cursor() as cur:
        try:  # PostgreSQL answers a grant without grant option with a warning, or an error: either way nothing moves
            cur.execute("GRANT SELECT ON agency_single_window_desk.citizen_profile TO lienthong_statistics_office")
        except errors.InsufficientPrivilege:
            pass
    stats = agency_connect(warehouse[0], "statistics_office")
    try:
        with pytest.raises(errors.InsufficientPrivilege), stats.cursor() as cur:
            cur.execute("SELECT citizen_id FROM agency_single_window_desk.citizen_profile")
    finally:
        stats.close()


def test_the_connection_limit_refuses_one_more_login(warehouse):
    url = warehouse[0]
    opened = []
    try:
        with pytest.raises(psycopg2.OperationalError, match="too many connections for role"):
            for _ in range(TIGHT["connections"] + 1):
                opened.append(agency_connect(url, "statistics_office"))
        assert len(opened) == TIGHT["connections"]
    finally:
        for conn in opened:
            conn.close()


def test_a_long_statement_is_cancelled(warehouse):
    conn = agency_connect(warehouse[0], "statistics_office")
    try:
        with pytest.raises(errors.QueryCanceled, match="statement timeout"), conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(5)")
    finally:
        conn.close()


def test_temp_space_is_limited_and_the_agency_cannot_lift_the_limit(warehouse):
    conn = agency_connect(warehouse[0], "statistics_office")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW temp_file_limit")
            assert cur.fetchone()[0] == "1MB"
            cur.execute("SET statement_timeout = '60s'")  # the sort below must hit the space limit, not the clock
            cur.execute("SET work_mem = '64kB'")
        with pytest.raises(errors.ConfigurationLimitExceeded, match="temp_file_limit"), conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM (SELECT g FROM generate_series(1, 1000000) g ORDER BY g DESC) s")
        with pytest.raises(errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("SET temp_file_limit = -1")
    finally:
        conn.close()


def test_bound_values_never_reach_the_server_log_and_the_agency_cannot_change_that(warehouse):
    conn = agency_connect(warehouse[0], "single_window_desk")
    try:
        with conn.cursor() as cur:
            for setting in ("log_parameter_max_length", "log_parameter_max_length_on_error"):
                cur.execute(f"SHOW {setting}")
                assert cur.fetchone()[0] == "0", setting
        with pytest.raises(errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("SET log_parameter_max_length = -1")
    finally:
        conn.close()


def test_an_idle_transaction_is_ended(warehouse):
    conn = agency_connect(warehouse[0], "statistics_office")
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        time.sleep(2.5)
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)), conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


@pytest.mark.parametrize(("limits", "match"), [
    ({"connections": 0}, "connections"),
    ({"statement_timeout": "forever"}, "statement_timeout"),
    ({"temp_file_limit": "1 GB; DROP ROLE x"}, "temp_file_limit"),
    ({"work_mem": "1GB"}, "unknown limit"),
])
def test_bad_limits_are_refused_naming_the_agency(repo_root, limits, match):
    doc = yaml.safe_load((repo_root / "schemas" / "agencies.yaml").read_text(encoding="utf-8"))
    doc["agencies"]["tax_department"]["limits"] = limits
    with pytest.raises(AccessConfigError, match=f"agency 'tax_department'.*{match}"):
        parse_agencies(doc, load_contracts())
