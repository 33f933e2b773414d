"""docker-compose.yml and the Dockerfile: valid structure, and every path and module they name exists.

No Docker engine runs here, so `docker compose config` is used only when available; the structural checks
always run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_airflow3_services_redis_postgres_and_sandbox(compose):
    services = set(compose["services"])
    assert AIRFLOW_SERVICES | {"redis", "postgres", "sandbox"} <= services


def test_every_service_has_an_image_or_build_and_long_running_ones_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        assert svc.get("image") or svc.get("build"), name
        if name not in ("airflow-init", "sandbox"):
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_all_airflow_services_share_one_jwt_secret_from_the_environment(compose):
    secrets = {svc["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n, svc in compose["services"].items() if n in AIRFLOW_SERVICES}
    assert len(secrets) == 1
    (secret,) = secrets
    assert secret.startswith("${"), "the JWT secret must come from the environment, not the file"


def test_metadata_and_warehouse_are_separate_databases(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].rsplit("/", 1)[1] == "airflow"
    assert env["LIENTHONG_DATABASE_URL"].rsplit("/", 1)[1] == "warehouse"
    assert "CREATE DATABASE warehouse" in (REPO / "docker" / "postgres-init.sql").read_text()


def test_every_mounted_path_and_build_context_exists(compose):
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), f"{name}: mounted path {src} is missing"
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            assert (REPO / ctx / "Dockerfile").exists()


def test_every_python_module_a_service_runs_exists(compose):
    for name, svc in compose["services"].items():
        cmd = svc.get("command")
        text = " ".join(cmd) if isinstance(cmd, list) else str(cmd or "")
        for module in re.findall(r"python -m ([\w.]+)", text):
            path = REPO / Path(*module.split("."))
            assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), f"{name}: module {module} missing"


def test_every_option_a_service_passes_to_a_python_module_exists(compose):
    """`python -m MODULE --flag ...` in a service command: MODULE's own --help must list every --flag."""
    import sys

    for name, svc in compose["services"].items():
        cmd = svc.get("command")
        text = " ".join(cmd) if isinstance(cmd, list) else str(cmd or "")
        for call in re.findall(r"python -m ([\w.]+)([^&;\"]*)", text):
            module, args = call
            flags = re.findall(r"(--[\w-]+)", args)
            if not flags:
                continue
            out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, f"{name}: python -m {module} --help failed: {out.stderr[-500:]}"
            for flag in flags:
                assert flag in out.stdout, f"{name}: python -m {module} has no option {flag}"


def test_dockerfile_builds_from_the_official_airflow_33_image_and_copies_only_repo_files():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+", text, re.M)
    for line in text.splitlines():
        if line.startswith("COPY"):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            for src in parts[:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose CLI not installed")
def test_docker_compose_config_accepts_the_file():
    out = subprocess.run(["docker-compose", "config", "-q"], cwd=REPO, capture_output=True, text=True,
                         env={"AIRFLOW_JWT_SECRET": "test", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
