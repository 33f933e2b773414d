"""The sandbox runner: endpoints file, Airflow connections from the environment, the serve CLI, and listening
for other containers (fixed ports, an advertised host, the land databases over TCP)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import requests

from sandbox.runner import (
    ENDPOINTS_FILE,
    Listen,
    SandboxCredentials,
    SandboxEndpoints,
    read_endpoints,
    run_sandbox,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]

# Run in a child process: importing Airflow configures logging and settings process-wide.
AIRFLOW_PROBE = textwrap.dedent(
    """
    import json, sys
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    out = {}
    population = HttpHook(method="POST", http_conn_id="population_registry")
    population.get_conn()
    conn = population.get_connection("population_registry")
    out["population"] = [population.base_url, conn.login, conn.password]
    business = HttpHook(method="GET", http_conn_id="business_registry")
    business.get_conn()
    out["business"] = [business.base_url, business.get_connection("business_registry").password]
    out["land"] = {}
    for code in sys.argv[1:]:
        with PostgresHook(postgres_conn_id="land_registry_" + code).get_conn() as pg:
            with pg.cursor() as cur:
                cur.execute("SELECT current_database(), current_user, count(*) FROM thua_dat")
                out["land"][code] = list(cur.fetchone())
    print(json.dumps(out))
    """
)


def test_endpoints_file_is_private_and_describes_the_running_sandbox(
    sandbox: SandboxEndpoints, sandbox_state: Path
) -> None:
    path = sandbox_state / ENDPOINTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_endpoints(sandbox_state) == sandbox


def test_airflow_connections_from_the_environment_reach_every_system(
    sandbox: SandboxEndpoints, tmp_path: Path
) -> None:
    env = os.environ | sandbox.airflow_conn_env() | {"AIRFLOW_HOME": str(tmp_path / "airflow")}
    result = subprocess.run(
        [sys.executable, "-c", AIRFLOW_PROBE, *sandbox.land_dsns],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["population"] == [sandbox.population_url, sandbox.client_id, sandbox.client_secret]
    assert out["business"] == [sandbox.business_url, sandbox.api_key]
    for code in sandbox.land_dsns:
        assert out["land"][code][:2] == [f"land_{code}", "land_reader"]
        assert out["land"][code][2] > 0


def test_serve_cli_runs_until_sigterm_with_fresh_credentials(
    sandbox_session: SandboxEndpoints, sandbox_data: Path, tmp_path: Path
) -> None:
    state = tmp_path / "st"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.serve", "--data", str(sandbox_data), "--state", str(state)]
        + ["--fault", "business.rate_limit_every=1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        printed = "".join(lines)
        assert "Ctrl-C to stop." in printed, printed + process.stderr.read()
        running = read_endpoints(state)
        assert stat.S_IMODE((state / ENDPOINTS_FILE).stat().st_mode) == 0o600
        assert running.client_secret not in printed and running.api_key not in printed
        assert running.client_secret != sandbox_session.client_secret
        assert running.api_key != sandbox_session.api_key
        assert running.population_url in printed
        business = requests.get(
            running.business_url + "/dkkd/v2/doanh-nghiep", headers={"X-API-Key": running.api_key}, timeout=10
        )
        assert business.status_code == 429  # the startup fault
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode == 0, process.stderr.read()
    assert not (state / ENDPOINTS_FILE).exists()
    assert not (state / "land-pg" / "postmaster.pid").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listening_for_other_containers_gives_fixed_ports_the_advertised_host_and_land_over_tcp(
    sandbox_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    population_port, business_port, land_port = _free_port(), _free_port(), _free_port()
    listen = Listen(
        host="127.0.0.1",
        advertise="localhost",
        population_port=population_port,
        business_port=business_port,
        land_port=land_port,
    )
    given = SandboxCredentials(
        client_id="platform", client_secret="client-secret-1", api_key="api-key-1", land_password="land-pw-1"
    )
    state = tmp_path_factory.mktemp("sbt")
    with run_sandbox(sandbox_data, state, listen=listen, credentials=given) as endpoints:
        assert endpoints.population_url == f"http://localhost:{population_port}"
        assert endpoints.business_url == f"http://localhost:{business_port}"
        assert (endpoints.client_id, endpoints.client_secret, endpoints.api_key) == (
            "platform",
            "client-secret-1",
            "api-key-1",
        )
        token = requests.post(
            endpoints.population_url + "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "platform",
                "client_secret": "client-secret-1",
            },
            timeout=10,
        )
        assert token.status_code == 200, token.text

        conn_env = endpoints.airflow_conn_env()
        for code in endpoints.land_dsns:
            land = json.loads(conn_env[f"AIRFLOW_CONN_LAND_REGISTRY_{code}"])
            assert (land["host"], land["port"], land["schema"]) == ("localhost", land_port, f"land_{code}")
            assert (land["login"], land["password"]) == ("land_reader", "land-pw-1")
            with contextlib.closing(psycopg2.connect(endpoints.land_dsns[code])) as pg, pg.cursor() as cur:
                cur.execute("SELECT current_user, count(*) FROM thua_dat")
                user, parcels = cur.fetchone()
            assert user == "land_reader" and parcels > 0
        # over TCP the reader needs its password, even from loopback (its line is before initdb's trust ones)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(
                host="127.0.0.1", port=land_port, dbname="land_31", user="land_reader", password="wrong"
            ).close()
        # the admin DSN stays on the Unix socket
        admin = psycopg2.extensions.parse_dsn(next(iter(endpoints.land_admin_dsns.values())))
        assert admin["host"].startswith("/")
    assert not (state / "land-pg" / "postmaster.pid").exists()
