"""docker-compose.yml and the Dockerfile: valid structure, every path and module they name exists, and the
national set-up holds together: every connection and URL a service is given names a compose service on a port
it listens on, the Celery workers scale, Airflow runs the CeleryExecutor with a shared warehouse everywhere, the
Spark master and worker match the image's pyspark, the sandbox is reachable with the credentials the agency
connections carry, and init creates the pools the DAGs use.

No Docker engine runs here: `docker compose config` (or the older `docker-compose config`) needs none and is
used when the CLI is installed; every other check parses the file itself, with compose's `${VAR}` rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
SCALED_SERVICES = ("airflow-worker", "spark-worker")  # `docker compose up --scale NAME=N`
# Hosts outside the compose project a service may be pointed at (a real agency system, a managed database).
# None today: every connection reaches a service of this file. Add one here only with the reason beside it.
ALLOWED_EXTERNAL_HOSTS: frozenset[str] = frozenset()
DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "redis": 6379, "spark": 7077}
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
# A value for every variable the file requires (`${VAR:?message}`), as an .env would give: URL-safe, as the
# connections' JSON needs.
REQUIRED_ENV = {
    name: f"test-{name.lower().replace('_', '-')}" for name in re.findall(r"\$\{(\w+):?\?", COMPOSE_TEXT)
}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_TEXT)


def interpolate(value: str, env: Mapping[str, str] = REQUIRED_ENV) -> str:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}` / `${VAR-default}`, `${VAR:?error}` / `${VAR?error}`;
    `$$` is a literal `$` (left for the container's shell)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1) or m.group(4), m.group(2) or "", m.group(3) or ""
        value = env.get(name)
        if value is not None and not (op.startswith(":") and value == ""):
            return value
        if op.endswith("?"):
            raise AssertionError(f"${{{name}}} is required ({arg}) and the test gives no value")
        return arg if op.endswith("-") else ""

    return "$".join(_VARIABLE.sub(one, part) for part in value.split("$$"))


def service_env(compose: dict, name: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (compose["services"][name].get("environment") or {}).items()}


def use_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """A service's platform settings and connections in this process's environment. Airflow's own settings
    (`AIRFLOW__*`) are left out: Airflow reads some once, at its first import, and would keep the service's
    database for the rest of the test session."""
    for key, value in env.items():
        if key.startswith(("LIENTHONG_", "AIRFLOW_CONN_")):
            monkeypatch.setenv(key, value)


def image_services(compose: dict) -> set[str]:
    """The services that run the platform's image (built from the Dockerfile)."""
    return {name for name, svc in compose["services"].items() if svc.get("build")}


def declared_ports(svc: dict) -> set[int]:
    """Container ports a service says it listens on: `expose`, and the container side of `ports`."""
    ports = {int(p) for p in svc.get("expose", [])}
    for mapping in svc.get("ports", []):
        ports.add(int(str(mapping).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def command_text(svc: dict) -> str:
    """The service's command as the container gets it (interpolated; `$$` left as `$` for its shell)."""
    cmd = svc.get("command")
    return interpolate(" ".join(cmd) if isinstance(cmd, list) else str(cmd or ""))


def option(text: str, flag: str) -> str:
    m = re.search(rf"{re.escape(flag)}[ =](\S+)", text)
    assert m, f"{flag} is not given in {text!r}"
    return m.group(1)


def targets(env: Mapping[str, str]) -> list[tuple[str, str, int | None]]:
    """(setting, host, port) for every connection (`AIRFLOW_CONN_*`, JSON or URI form) and every URL-valued
    setting; the port is the scheme's or connection type's default when none is written."""
    found: list[tuple[str, str, int | None]] = []
    for key, value in env.items():
        if key.startswith("AIRFLOW_CONN_") and value.lstrip().startswith("{"):
            conn = json.loads(value)
            port = conn.get("port") or DEFAULT_PORTS.get(conn["conn_type"])
            found.append((key, conn["host"], int(port) if port else None))
        elif re.match(r"^[a-z][a-z0-9+.-]*://", value):
            url = urlsplit(value)
            scheme = url.scheme.removeprefix("db+").split("+", 1)[0]
            found.append((key, url.hostname or "", url.port or DEFAULT_PORTS.get(scheme)))
    return found


def test_compose_has_the_airflow3_services_redis_postgres_and_sandbox(compose):
    services = set(compose["services"])
    assert AIRFLOW_SERVICES | {"redis", "postgres", "sandbox"} <= services


def test_every_service_has_an_image_or_build_and_long_running_ones_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        assert svc.get("image") or svc.get("build"), name
        if name not in ("airflow-init", "sandbox"):
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_all_airflow_services_share_one_jwt_secret_from_the_environment(compose):
    secrets = {
        svc["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
        for n, svc in compose["services"].items()
        if n in AIRFLOW_SERVICES
    }
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
            assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), (
                f"{name}: module {module} missing"
            )


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
            out = subprocess.run(
                [sys.executable, "-m", module, "--help"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
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


# --- the national set-up ----------------------------------------------------------------------------------


def test_every_connection_and_url_a_service_is_given_names_a_service_on_a_port_it_listens_on(compose):
    services = compose["services"]
    checked = 0
    for name in services:
        for setting, host, port in targets(service_env(compose, name)):
            checked += 1
            if host in ALLOWED_EXTERNAL_HOSTS:
                continue
            assert host in services, f"{name}: {setting} names host {host!r}, which is no service of the file"
            listening = declared_ports(services[host])
            if listening:
                assert port in listening, (
                    f"{name}: {setting} names {host}:{port}; {host} listens on {sorted(listening)}"
                )
    assert checked >= 10  # the connections and URLs below are among them


def test_the_workers_scale_nothing_in_them_is_per_container(compose):
    for name in SCALED_SERVICES:
        svc = compose["services"][name]
        assert "container_name" not in svc, f"{name}: a container_name allows one replica only"
        assert "hostname" not in svc, f"{name}: a fixed hostname would be shared by every replica"
        assert not svc.get("ports"), f"{name}: a host port clashes between replicas"
    assert "celery worker" in command_text(compose["services"]["airflow-worker"])


def test_airflow_runs_the_celery_executor_everywhere_with_one_reachable_broker_and_result_backend(compose):
    services = compose["services"]
    brokers, backends = set(), set()
    for name in AIRFLOW_SERVICES | image_services(compose):
        env = service_env(compose, name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        brokers.add(env["AIRFLOW__CELERY__BROKER_URL"])
        backends.add(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert len(brokers) == 1 and len(backends) == 1, (
        "every Airflow service must use the same broker and backend"
    )
    broker, backend = urlsplit(brokers.pop()), urlsplit(backends.pop())
    assert broker.scheme == "redis" and "healthcheck" in services[broker.hostname]
    assert backend.scheme.startswith("db+postgresql") and backend.hostname == "postgres"
    worker_needs = services["airflow-worker"]["depends_on"]
    assert worker_needs[broker.hostname]["condition"] == "service_healthy"
    assert worker_needs["airflow-init"]["condition"] == "service_completed_successfully"


def test_every_airflow_service_uses_the_shared_warehouse_not_an_embedded_one(compose, monkeypatch):
    import dataclasses

    from lienthong.db import distributed_executor, warehouse_url
    from lienthong.settings import load_settings

    for name in AIRFLOW_SERVICES | image_services(compose):
        env = service_env(compose, name)
        assert env.get("LIENTHONG_DATABASE_URL"), f"{name}: no LIENTHONG_DATABASE_URL"
        url = urlsplit(env["LIENTHONG_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.path) == ("postgresql", "postgres", "/warehouse"), name
        use_env(monkeypatch, env)
        settings = dataclasses.replace(load_settings(), airflow_executor=env["AIRFLOW__CORE__EXECUTOR"])
        assert distributed_executor(settings.airflow_executor) == "CeleryExecutor"
        assert warehouse_url(settings) == env["LIENTHONG_DATABASE_URL"]
    # without it, under this executor, lienthong would refuse to start (an embedded warehouse per worker)
    with pytest.raises(RuntimeError, match="LIENTHONG_DATABASE_URL is not set"):
        warehouse_url(dataclasses.replace(settings, database_url=None))


def test_every_agency_connection_the_dags_use_is_defined_and_reaches_the_sandbox(compose, monkeypatch):
    from lienthong.connections import get_connection
    from lienthong.settings import load_settings
    from sandbox.land_db import READER_ROLE

    env = service_env(compose, "airflow-worker")
    use_env(monkeypatch, env)
    settings = load_settings()
    dag_text = "\n".join(p.read_text() for p in (REPO / "dags").glob("*.py"))
    dag_ids = set(re.findall(r'^CONN_ID = "(\w+)"', dag_text, re.M)) | set(
        re.findall(r'get_connection\("(\w+)"\)', dag_text)
    )
    land_ids = {settings.land_conn_id(code) for code in settings.land_provinces}
    assert {settings.population_conn_id, settings.business_conn_id} <= dag_ids and land_ids
    for conn_id in dag_ids | land_ids:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, f"connection {conn_id} is not defined"

    sandbox = compose["services"]["sandbox"]
    command, secrets = command_text(sandbox), service_env(compose, "sandbox")
    assert option(command, "--host") == "0.0.0.0" and option(command, "--advertise-host") == "sandbox"
    population = get_connection(settings.population_conn_id)
    assert population.base_url() == f"http://sandbox:{option(command, '--population-port')}"
    assert (population.login, population.password) == (
        secrets["SANDBOX_CLIENT_ID"],
        secrets["SANDBOX_CLIENT_SECRET"],
    )
    business = get_connection(settings.business_conn_id)
    assert business.base_url() == f"http://sandbox:{option(command, '--business-port')}"
    assert business.password == secrets["SANDBOX_API_KEY"]
    for code in settings.land_provinces:
        land = get_connection(settings.land_conn_id(code))
        assert (land.conn_type, land.host, str(land.port)) == (
            "postgres",
            "sandbox",
            option(command, "--land-port"),
        )
        assert (land.schema, land.login, land.password) == (
            f"land_{code}",
            READER_ROLE,
            secrets["SANDBOX_LAND_PASSWORD"],
        )
    # the sandbox generates and serves exactly the provinces the land DAG maps over
    assert option(command, "--land-provinces") == "${LIENTHONG_LAND_PROVINCES}"
    assert secrets["LIENTHONG_LAND_PROVINCES"] == env["LIENTHONG_LAND_PROVINCES"]


def test_the_sandbox_serve_tool_is_told_to_listen_for_other_containers_on_its_declared_ports(compose):
    sandbox = compose["services"]["sandbox"]
    command = command_text(sandbox)
    wanted = {int(option(command, flag)) for flag in ("--population-port", "--business-port", "--land-port")}
    assert wanted == declared_ports(sandbox)
    assert not sandbox.get("ports"), "the agency systems are for the other containers, not the host"


def test_init_creates_every_pool_the_dags_use(compose):
    pools = json.loads((REPO / "config" / "airflow-pools.json").read_text())
    dag_text = "\n".join(p.read_text() for p in (REPO / "dags").glob("*.py"))
    used = set(re.findall(r'^\w*POOL = "(\w+)"', dag_text, re.M)) | set(re.findall(r'pool="(\w+)"', dag_text))
    assert used and used <= set(pools), f"pools the DAGs use but init does not create: {used - set(pools)}"
    assert "airflow pools import /opt/lienthong/config/airflow-pools.json" in command_text(
        compose["services"]["airflow-init"]
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "WORKDIR /opt/lienthong" in dockerfile and re.search(
        r"^COPY .*\bconfig \./config$", dockerfile, re.M
    )


def _spark_image_version(image: str) -> str:
    m = re.fullmatch(r"apache/spark:(\d+\.\d+\.\d+)-scala[\d.]+-java17-ubuntu", image)
    assert m, f"not the official Apache Spark image on Java 17: {image}"
    return m.group(1)


def test_spark_master_and_worker_run_the_version_the_image_pins_for_its_pyspark(compose):
    from packaging.requirements import Requirement

    services = compose["services"]
    master, worker = services["spark-master"], services["spark-worker"]
    versions = {
        _spark_image_version(interpolate(master["image"])),
        _spark_image_version(interpolate(worker["image"])),
    }
    versions.add(interpolate(str(compose["x-airflow-common"]["build"]["args"]["SPARK_VERSION"])))
    versions.add(re.search(r"^ARG SPARK_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M).group(1))
    assert len(versions) == 1, f"the cluster and the driver's pyspark differ: {versions}"
    (version,) = versions
    pyproject = (REPO / "pyproject.toml").read_text()
    pyspark = Requirement(re.search(r'"(pyspark[^"]*)"', pyproject).group(1))
    assert pyspark.specifier.contains(version), f"Spark {version} is outside the project's {pyspark}"


def test_the_spark_worker_joins_the_master_and_shares_the_drivers_data_folder_and_user(compose):
    services = compose["services"]
    master, worker = services["spark-master"], services["spark-worker"]
    master_command = command_text(master)
    assert "org.apache.spark.deploy.master.Master" in master_command
    assert int(option(master_command, "--port")) in declared_ports(master)
    assert option(master_command, "--host") == "spark-master" == master["hostname"]
    worker_command = command_text(worker)
    assert "org.apache.spark.deploy.worker.Worker" in worker_command
    url = urlsplit(re.search(r"spark://\S+", worker_command).group(0))
    assert url.hostname == "spark-master" and url.port in declared_ports(master)
    assert worker["depends_on"]["spark-master"]["condition"] == "service_healthy"
    # executors read and write the scoring's scratch folder, private to Airflow's user, under the data folder
    data_dir = service_env(compose, "airflow-worker")["LIENTHONG_DATA_DIR"]
    assert f"lienthong-data:{data_dir}" in worker["volumes"]
    assert interpolate(worker["user"]) == interpolate(services["airflow-worker"]["user"])
    assert "spark-daemon.sh" in " ".join(worker["entrypoint"])
    assert services["airflow-worker"]["depends_on"]["spark-master"]["condition"] == "service_healthy"


def test_the_linkage_engine_in_the_workers_finds_the_spark_master_through_its_connection(
    compose, monkeypatch
):
    from lienthong.reconcile.sparkengine import resolve_master
    from lienthong.settings import load_settings

    use_env(monkeypatch, service_env(compose, "airflow-worker"))
    monkeypatch.delenv("LIENTHONG_SPARK_MASTER", raising=False)
    settings = load_settings()
    assert settings.linkage_engine == "spark"
    master, conf = resolve_master(settings)
    assert master == "spark://spark-master:7077"
    assert set(conf) == {"spark.executor.memory", "spark.driver.memory"}


def test_the_image_has_java_17_for_the_spark_driver():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"apt-get install .*openjdk-17-jre-headless", dockerfile)
    assert '"pyspark==${SPARK_VERSION}"' in dockerfile


def _compose_cli() -> list[str] | None:
    """`docker compose` (the plugin) or the older `docker-compose`: `config` needs no engine."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file_and_resolves_what_these_checks_read(compose, tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; the structural checks ran")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **REQUIRED_ENV}
    no_dotenv = tmp_path / "empty.env"  # a developer's .env must not change what is compared below
    no_dotenv.write_text("")
    out = subprocess.run(
        [*cli, "--env-file", str(no_dotenv), "-f", str(REPO / "docker-compose.yml"), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    worker = resolved["services"]["airflow-worker"]
    assert "container_name" not in worker and "hostname" not in worker
    # compose's own interpolation gives what this file's `interpolate` does
    for key, value in service_env(compose, "airflow-worker").items():
        assert str(worker["environment"][key]) == value, key
