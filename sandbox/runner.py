"""Start and stop the whole sandbox: both HTTP agency servers and the land-registry PostgreSQL.

Owns: `run_sandbox` (a context manager), the uvicorn-in-a-thread server handle the tests also use for
one-off apps, fresh random credentials per start, `endpoints.json` (0600, it holds those credentials)
and `SandboxEndpoints.airflow_conn_env()`, the connections in the form Airflow reads from
`AIRFLOW_CONN_<ID>` environment variables (JSON form, Airflow >= 2.3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions
import requests
import uvicorn
from fastapi import FastAPI

from lienthong.db import embedded_uri, stop_embedded
from lienthong.settings import Settings
from sandbox import business_api, population_api
from sandbox.faults import FaultState, FaultSwitches, install_log_filter, switches_per_server
from sandbox.land_db import admin_dsn, load_land, provinces_in

log = logging.getLogger(__name__)

ENDPOINTS_FILE = "endpoints.json"
LAND_PGDATA = "land-pg"
_CONN_DEFAULTS = Settings(data_dir=Path("."), database_url=None, land_provinces=())


@dataclass
class SandboxEndpoints:
    """Where the running sandbox listens and the credentials it accepts (fresh on every start)."""

    population_url: str
    client_id: str
    client_secret: str
    business_url: str
    api_key: str
    land_dsns: dict[str, str]
    land_admin_dsns: dict[str, str] = field(default_factory=dict)  # can write: for touch_land in tests

    def airflow_conn_env(self) -> dict[str, str]:
        """`AIRFLOW_CONN_*` variables for the platform's connection ids (JSON connection form)."""
        population = urlsplit(self.population_url)
        business = urlsplit(self.business_url)
        env = {
            _conn_var(_CONN_DEFAULTS.population_conn_id): _conn_json(
                conn_type="http",
                host=population.hostname,
                port=population.port,
                schema=population.scheme,
                login=self.client_id,
                password=self.client_secret,
            ),
            _conn_var(_CONN_DEFAULTS.business_conn_id): _conn_json(
                conn_type="http",
                host=business.hostname,
                port=business.port,
                schema=business.scheme,
                password=self.api_key,
            ),
        }
        for code, dsn in self.land_dsns.items():
            params = psycopg2.extensions.parse_dsn(dsn)
            env[_conn_var(_CONN_DEFAULTS.land_conn_id_prefix + code)] = _conn_json(
                conn_type="postgres",
                host=params.get("host"),  # a socket directory for the embedded server: libpq accepts both
                port=int(params["port"]) if params.get("port") else None,
                schema=params.get("dbname"),
                login=params.get("user"),
                password=params.get("password"),
            )
        return env

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _conn_var(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


def _conn_json(**fields: Any) -> str:
    return json.dumps({k: v for k, v in fields.items() if v is not None})


class ServerThread:
    """One ASGI app served by uvicorn on 127.0.0.1 in a background thread. The socket is bound here,
    before the thread starts, so the port is known and no other process can take it in between."""

    def __init__(self, app: FastAPI, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"sandbox-{name}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerThread:
        install_log_filter()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"sandbox {self.name} server exited while starting")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/_sandbox/stats", timeout=1).ok:
                    log.info("sandbox %s server listening on %s", self.name, self.url)
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sandbox {self.name} server did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


def _land_server(pgdata: Path) -> str:
    """Start (or reuse) the land registries' embedded PostgreSQL; return its admin URL."""
    return embedded_uri(pgdata)


def write_endpoints(path: Path, endpoints: SandboxEndpoints) -> None:
    """Write the endpoints file readable by its owner only: it holds the credentials."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is ignored when the file already exists
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(endpoints.to_json(), handle, indent=2)


def read_endpoints(state_dir: Path | str) -> SandboxEndpoints:
    """The endpoints of a sandbox running with `state_dir` (e.g. one started by `python -m sandbox.serve`)."""
    data = json.loads((Path(state_dir) / ENDPOINTS_FILE).read_text(encoding="utf-8"))
    return SandboxEndpoints(**data)


@contextlib.contextmanager
def run_sandbox(
    data_dir: Path | str,
    state_dir: Path | str,
    *,
    faults: FaultSwitches | Mapping[str, Any] | None = None,
    provinces: Iterable[str] | None = None,
    token_ttl_seconds: int = 300,
) -> Iterator[SandboxEndpoints]:
    """Run the sandbox over the generated files in `data_dir` until the block exits.

    `state_dir` holds the land registries' own embedded PostgreSQL (separate from the warehouse) and
    `endpoints.json`. `faults` are the startup fault switches (see `sandbox.faults.switches_per_server`).
    `provinces` defaults to every province with land files.
    """
    data_dir = Path(data_dir)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    switches = switches_per_server(faults)
    client_id = "sandbox-" + secrets.token_hex(4)
    client_secret = secrets.token_urlsafe(32)
    api_key = secrets.token_urlsafe(32)
    codes = list(provinces) if provinces is not None else provinces_in(data_dir)
    pgdata = state_dir / LAND_PGDATA
    endpoints_path = state_dir / ENDPOINTS_FILE

    with contextlib.ExitStack() as stack:
        servers = [
            ServerThread(
                population_api.create_app(
                    data_dir,
                    clients={client_id: client_secret},
                    faults=FaultState(switches["population"]),
                    token_ttl_seconds=token_ttl_seconds,
                ),
                "population",
            ),
            ServerThread(
                business_api.create_app(
                    data_dir, api_keys={api_key}, faults=FaultState(switches["business"])
                ),
                "business",
            ),
        ]
        for server in servers:
            stack.callback(server.stop)
            server.start()

        land_dsns: dict[str, str] = {}
        admin_dsns: dict[str, str] = {}
        if codes:
            stack.callback(stop_embedded, pgdata)
            server_url = _land_server(pgdata)
            land_dsns = load_land(data_dir, codes, server_url)
            admin_dsns = {code: admin_dsn(server_url, code) for code in codes}

        endpoints = SandboxEndpoints(
            population_url=servers[0].url,
            client_id=client_id,
            client_secret=client_secret,
            business_url=servers[1].url,
            api_key=api_key,
            land_dsns=land_dsns,
            land_admin_dsns=admin_dsns,
        )
        stack.callback(endpoints_path.unlink, missing_ok=True)  # the credentials die with the servers
        write_endpoints(endpoints_path, endpoints)
        log.info(
            "sandbox up: population %s, business %s, land %s",
            endpoints.population_url,
            endpoints.business_url,
            ", ".join(codes) or "none",
        )
        yield endpoints
