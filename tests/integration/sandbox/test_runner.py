"""The sandbox runner: endpoints file, Airflow connections from the environment, and the serve CLI."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from sandbox.runner import ENDPOINTS_FILE, SandboxEndpoints, read_endpoints

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
