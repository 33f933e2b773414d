"""The single-window service under operational trouble, over real HTTP against a PostgreSQL of its own (an
embedded server in a temporary folder, so that it can be locked, reconfigured and restarted without touching
the session's): a locked access log costs a bounded wait and a 503, pools open their connections on first use
and must fit the server, lookups survive a server restart, the looked-up IDs never reach the server's log, and
wrong API keys are recorded (without the key) and slowed down per client."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from agency_fixtures import AN, BINH, CUONG, publish_rows, secrets_in_env
from singlewindow_service import Server, running_service

from lienthong.access import apply_access, load_agencies
from lienthong.db import connect, embedded_uri, ensure_database, stop_embedded

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
DESK, TAX = "single_window_desk", "tax_department"
APP = "lienthong-singlewindow"


def citizen(person: dict) -> str:
    return f"/v1/citizens/{person['citizen_id']}/profile"


@dataclass(frozen=True)
class Warehouse:
    pgdata: Path
    url: str
    secret_env: dict[str, str]

    def restart(self) -> None:
        assert stop_embedded(self.pgdata)
        embedded_uri(self.pgdata)


@pytest.fixture(scope="module")
def warehouse(session_dir: Path) -> Iterator[Warehouse]:
    # Under the session's own folder, not pytest's tmp_path: another pytest run on the machine resets the modes
    # of pytest's shared folder, and the server (another system user when run as root) must pass through.
    pgdata = Path(tempfile.mkdtemp(prefix="swops-", dir=session_dir)) / "pg"
    with secrets_in_env() as env:
        try:
            url = ensure_database(embedded_uri(pgdata), "singlewindow_ops")
            publish_rows(url)
            apply_access(url)
            yield Warehouse(pgdata, url, env)
        finally:
            stop_embedded(pgdata)
            shutil.rmtree(pgdata.parent, ignore_errors=True)


@contextmanager
def service(warehouse: Warehouse, log_path: Path, *args: str, **settings: object) -> Iterator[Server]:
    """The service over `warehouse`, with LIENTHONG_SINGLEWINDOW_<NAME> = value for each of `settings`."""
    keys = {name: secrets.token_urlsafe(24) for name in AGENCIES}
    env = {**os.environ, **warehouse.secret_env, "LIENTHONG_DATABASE_URL": warehouse.url,
           "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps(keys), "PYTHONUNBUFFERED": "1",
           **{f"LIENTHONG_SINGLEWINDOW_{name.upper()}": str(value) for name, value in settings.items()}}
    with running_service(env, log_path, keys, *args, secret_env=warehouse.secret_env) as server:
        yield server


def query(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def service_backends(url: str) -> Counter[str]:
    """The service's connections to the server: agency role -> count, and 'audit' for the access log's."""
    rows = query(url, "SELECT usename, application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                 (APP + "-%",))
    return Counter("audit" if app == f"{APP}-audit" else user for user, app in rows)


def eventually(probe, expected, seconds: float = 5.0):
    """`probe()` once it equals `expected` (a backend ends a moment after its client left), else its last value."""
    deadline = time.monotonic() + seconds
    while (value := probe()) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


# --- the access log fails closed within a bound ------------------------------------------------------------

def test_a_locked_access_log_is_a_503_within_the_timeout_and_lookups_resume_when_it_is_released(warehouse, tmp_path):
    with service(warehouse, tmp_path / "service.log", LOG_TIMEOUT=2) as server:
        assert server.get(citizen(AN), DESK).status_code == 200
        locker = psycopg2.connect(warehouse.url)
        try:
            with locker.cursor() as cur:
                cur.execute("LOCK TABLE lienthong_ops.access_log IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            refused = server.get(citizen(AN), DESK, timeout=30)
            lookup_s = time.monotonic() - t0
            t0 = time.monotonic()
            health = server.get("/healthz", timeout=30)
            health_s = time.monotonic() - t0
        finally:
            locker.rollback()
            locker.close()
        assert refused.status_code == 503 and lookup_s < 15, (refused.status_code, lookup_s)
        assert set(refused.json()) == {"detail"} and AN["full_name"] not in refused.text
        assert health.status_code == 503 and health_s < 15, (health.status_code, health_s)

        again = server.get(citizen(AN), DESK)
        assert again.status_code == 200 and again.json()["full_name"] == AN["full_name"]
        assert server.get("/healthz").status_code == 200
    ids = {r[0] for r in query(warehouse.url, "SELECT request_id FROM lienthong_ops.access_log WHERE request_id = ANY(%s)",
                               ([refused.headers["X-Request-ID"], again.headers["X-Request-ID"]],))}
    assert ids == {again.headers["X-Request-ID"]}  # the refused lookup could not be logged, and returned nothing


# --- the pools fit the server -----------------------------------------------------------------------------

def test_connections_are_opened_on_first_use_and_only_for_the_agency_served(warehouse, tmp_path):
    with service(warehouse, tmp_path / "service.log", "--pool-size", "3") as server:
        assert eventually(lambda: service_backends(warehouse.url), Counter()) == Counter()
        assert server.get(citizen(AN), DESK).status_code == 200
        after = service_backends(warehouse.url)
    assert set(after) == {AGENCIES[DESK].role, "audit"}, after
    assert 1 <= after[AGENCIES[DESK].role] <= 3 and 1 <= after["audit"] <= 4, after


def test_a_configuration_that_does_not_fit_the_server_is_refused_at_start_naming_the_setting(warehouse, tmp_path):
    (max_connections,) = query(warehouse.url, "SELECT current_setting('max_connections')::int")[0]
    keys = {name: secrets.token_urlsafe(24) for name in AGENCIES}
    env = {**os.environ, **warehouse.secret_env, "LIENTHONG_DATABASE_URL": warehouse.url,
           "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps(keys), "LIENTHONG_SINGLEWINDOW_POOL_SIZE": str(max_connections)}
    done = subprocess.run([sys.executable, "-m", "lienthong.singlewindow", "--port", "0", "--workers", "3"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"LIENTHONG_SINGLEWINDOW_POOL_SIZE={max_connections}" in done.stderr, done.stderr[-2000:]
    assert "3 worker(s)" in done.stderr and "max_connections" in done.stderr
    assert "Uvicorn running" not in done.stderr  # refused before any worker started


def test_the_service_runs_with_several_workers(warehouse, tmp_path):
    with service(warehouse, tmp_path / "service.log", "--workers", "2", "--pool-size", "2") as server:
        assert server.get("/healthz").status_code == 200
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda p: server.get(citizen(p), DESK).status_code, [AN, BINH, CUONG] * 4))
        assert statuses == [200] * 12
        time.sleep(0.3)
        assert "agency=single_window_desk dataset=citizen_profile status=200" in server.output()


def test_lookups_after_a_database_restart_all_succeed(warehouse, tmp_path):
    with service(warehouse, tmp_path / "service.log", "--pool-size", "2", LOG_POOL_SIZE=2) as server:
        with ThreadPoolExecutor(4) as pool:  # fill the pools: several connections per agency and for the log
            warm = list(pool.map(lambda a: server.get(citizen(AN), a).status_code, [DESK, TAX] * 6))
        assert warm == [200] * 12
        assert service_backends(warehouse.url)[AGENCIES[DESK].role] >= 1  # pooled, to be found broken

        warehouse.restart()
        answers = [server.get(citizen(person), agency) for person in (AN, BINH, CUONG) for agency in (DESK, TAX, DESK)]
        assert [r.status_code for r in answers] == [200] * 9, [(r.status_code, r.text) for r in answers]
        assert server.get("/healthz").status_code == 200
    request_ids = [r.headers["X-Request-ID"] for r in answers]
    logged = query(warehouse.url, "SELECT request_id, count(*) FROM lienthong_ops.access_log WHERE request_id = ANY(%s) "
                                  "GROUP BY request_id", (request_ids,))
    assert sorted(logged) == sorted((rid, 1) for rid in request_ids)  # each logged once: none lost, none doubled


# --- no personal value in the server log --------------------------------------------------------------------

@contextmanager
def server_settings(url: str, **settings: str) -> Iterator[None]:
    def apply(statements: list[str]) -> None:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
        time.sleep(0.5)  # backends take the reloaded settings at their next command

    apply([f"ALTER SYSTEM SET {name} = '{value}'" for name, value in settings.items()])
    try:
        yield
    finally:
        apply([f"ALTER SYSTEM RESET {name}" for name in settings])


@contextmanager
def citizen_reads_raise(url: str) -> Iterator[None]:
    """published.citizen_profile raising on every read (a server-side failure of the lookup)."""
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("""CREATE OR REPLACE FUNCTION published.refuse_reads() RETURNS boolean LANGUAGE plpgsql VOLATILE
                       AS $$ BEGIN RAISE EXCEPTION 'reads refused by the test'; END $$""")
        cur.execute("""CREATE OR REPLACE VIEW published.citizen_profile AS
                       SELECT * FROM published.citizen_profile__v000001 WHERE published.refuse_reads()""")
    try:
        yield
    finally:
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW published.citizen_profile AS SELECT * FROM published.citizen_profile__v000001")
            cur.execute("DROP FUNCTION published.refuse_reads()")


def test_the_service_warns_when_the_server_would_log_parameter_values(warehouse, tmp_path):
    with server_settings(warehouse.url, log_statement="mod", log_parameter_max_length="-1"):
        with service(warehouse, tmp_path / "service.log") as server:
            assert server.get("/healthz").status_code == 200
            text = server.output()
    assert "may log the IDs looked up" in text and "log_statement = mod" in text
    assert "set log_parameter_max_length = 0" in text


def test_no_looked_up_id_reaches_the_postgresql_server_log(warehouse, tmp_path):
    server_log = warehouse.pgdata / "log"
    # Every statement logged, and every failed one with its text; parameter values not (the deployment setting
    # the service asks for: see the test above).
    with server_settings(warehouse.url, log_statement="all", log_min_error_statement="error",
                         log_parameter_max_length="0", log_parameter_max_length_on_error="0"):
        start = server_log.stat().st_size
        with service(warehouse, tmp_path / "service.log") as server:
            ok = server.get(citizen(AN), DESK)
            ok_tax = server.get(citizen(AN), TAX)
            with citizen_reads_raise(warehouse.url):
                failed = server.get(citizen(BINH), DESK)
            assert "may log the IDs looked up" not in server.output()
    assert (ok.status_code, ok_tax.status_code, failed.status_code) == (200, 200, 500), failed.text
    logged = server_log.read_bytes()[start:].decode("utf-8", "replace")
    assert "reads refused by the test" in logged and "STATEMENT:" in logged and "$1" in logged  # it was logged...
    assert "INSERT INTO lienthong_ops.access_log" in logged
    everything = server_log.read_text(errors="replace")
    for value in (AN["citizen_id"], BINH["citizen_id"]):  # ...by its text, without the values
        assert value not in everything
    recorded = query(warehouse.url, "SELECT lookup_key, status_code FROM lienthong_ops.access_log WHERE request_id = %s",
                     (failed.headers["X-Request-ID"],))
    assert recorded == [(BINH["citizen_id"], 500)]  # the failed lookup is in the access log all the same


# --- wrong API keys: recorded without the key, and slowed down --------------------------------------------

def test_a_wrong_key_is_recorded_without_any_part_of_it(warehouse, tmp_path):
    wrong = "wrong-" + secrets.token_urlsafe(24)
    with service(warehouse, tmp_path / "service.log") as server:
        refused = server.get(citizen(AN), key=wrong)
        missing = server.get(citizen(AN))
        text = server.output()
    assert refused.status_code == missing.status_code == 401
    rows = query(warehouse.url, """SELECT request_id, client_addr, route, reason, failures, backoff_s, at::text
                                    FROM lienthong_ops.auth_failure WHERE request_id = ANY(%s) ORDER BY id""",
                 ([refused.headers["X-Request-ID"], missing.headers["X-Request-ID"]],))
    assert [r[1:6] for r in rows] == [("127.0.0.1", "/v1/citizens/{citizen_id}/profile", "unknown", 1, 0.0),
                                      ("127.0.0.1", "/v1/citizens/{citizen_id}/profile", "missing", 2, 0.0)]
    stored = " ".join(str(v) for r in rows for v in r) + text
    pieces = {wrong[i:i + 6] for i in range(len(wrong) - 5)}
    assert not [p for p in pieces if p in stored], "part of the wrong key was stored or logged"
    assert AN["citizen_id"] not in stored


def test_repeated_wrong_keys_from_one_client_are_made_to_wait_and_other_clients_are_not(warehouse, tmp_path):
    wrong = "wrong-" + secrets.token_urlsafe(24)
    one, other = "127.0.0.2", "127.0.0.3"
    with service(warehouse, tmp_path / "service.log", AUTH_FAILURES=3, AUTH_BACKOFF=2, AUTH_BACKOFF_MAX=8) as server:
        assert [server.get(citizen(AN), key=wrong, source=one).status_code for _ in range(3)] == [401] * 3
        waiting = server.get(citizen(AN), key=wrong, source=one)
        assert waiting.status_code == 429 and 1 <= int(waiting.headers["Retry-After"]) <= 2
        assert server.get(citizen(AN), DESK, source=one).status_code == 429  # even its right key waits
        assert server.get(citizen(AN), DESK, source=other).status_code == 200
        assert server.get(citizen(AN), key=wrong, source=other).status_code == 401

        time.sleep(int(waiting.headers["Retry-After"]) + 0.2)
        assert server.get(citizen(AN), key=wrong, source=one).status_code == 401  # tried again: the wait doubles
        longer = server.get(citizen(AN), key=wrong, source=one)
        assert longer.status_code == 429 and 3 <= int(longer.headers["Retry-After"]) <= 4

        time.sleep(int(longer.headers["Retry-After"]) + 0.2)
        right = server.get(citizen(AN), DESK, source=one)
        assert right.status_code == 200 and right.json()["full_name"] == AN["full_name"]
        # the right key started the count again: two more wrong keys are 401s, not a wait
        assert [server.get(citizen(AN), key=wrong, source=one).status_code for _ in range(2)] == [401, 401]
