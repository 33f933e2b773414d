"""Start and stop the whole sandbox: both HTTP agency servers and the land-registry PostgreSQL.

Owns: `run_sandbox` (a context manager), the uvicorn-in-a-thread server handle the tests also use for
one-off apps, the credentials of a start (fresh random ones unless given: `SandboxCredentials`),
`endpoints.json` (0600, it holds those credentials) and `SandboxEndpoints.airflow_conn_env()`, the
connections in the form Airflow reads from `AIRFLOW_CONN_<ID>` environment variables (JSON form,
Airflow >= 2.3).

Where it listens (`Listen`): by default the HTTP servers on 127.0.0.1 on free ports and the land PostgreSQL
on its Unix socket only (the local stack, the demo, the tests). For other machines or containers
(docker-compose) it binds a given address on fixed ports, the land PostgreSQL on TCP too
(`land_db.listen_tcp`: only the read-only role, with its password), and hands out URLs and DSNs naming the
host the others reach it by.
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
from sandbox.land_db import admin_dsn, listen_tcp, load_land, provinces_in

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


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class Listen:
    """Where the sandbox listens and the name its URLs and DSNs give.

    `host` is the HTTP servers' bind address (`0.0.0.0`: every interface, for other containers); `advertise`
    the host name the others reach it by (default: `host`, or this machine's name when `host` is a wildcard).
    Port 0 is a free port. `land_port` None keeps the land PostgreSQL on its Unix socket only; a port makes it
    listen on `host` at that port as well, for the read-only role with its password."""

    host: str = "127.0.0.1"
    advertise: str | None = None
    population_port: int = 0
    business_port: int = 0
    land_port: int | None = None

    @property
    def advertised(self) -> str:
        if self.advertise:
            return self.advertise
        return socket.getfqdn() if self.host in WILDCARD_HOSTS else self.host


@dataclass(frozen=True)
class SandboxCredentials:
    """What the sandbox accepts: fresh random values per start (`fresh`), or given ones (a deployment whose
    clients are configured before the sandbox starts, e.g. docker-compose's `AIRFLOW_CONN_*`)."""

    client_id: str
    client_secret: str = field(repr=False)
    api_key: str = field(repr=False)
    land_password: str = field(repr=False)

    @classmethod
    def fresh(cls) -> SandboxCredentials:
        return cls(
            client_id="sandbox-" + secrets.token_hex(4),
            client_secret=secrets.token_urlsafe(32),
            api_key=secrets.token_urlsafe(32),
            land_password=secrets.token_urlsafe(24),
        )


class ServerThread:
    """One ASGI app served by uvicorn in a background thread (on 127.0.0.1 unless `host` says otherwise). The
    socket is bound here, before the thread starts, so the port is known and no other process can take it in
    between. `url` names `advertise` (default: the bound address) as clients elsewhere reach it."""

    def __init__(
        self, app: FastAPI, name: str, host: str = "127.0.0.1", port: int = 0, advertise: str | None = None
    ) -> None:
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self._advertise = advertise
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"sandbox-{name}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{_url_host(self._advertise or self.host)}:{self.port}"

    @property
    def local_url(self) -> str:
        """The URL this process reaches the server by (a wildcard bind answers on loopback)."""
        if self.host in WILDCARD_HOSTS:
            return f"http://{'[::1]' if ':' in self.host else '127.0.0.1'}:{self.port}"
        return f"http://{_url_host(self.host)}:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerThread:
        install_log_filter()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"sandbox {self.name} server exited while starting")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.local_url + "/_sandbox/stats", timeout=1).ok:
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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _land_server(pgdata: Path, listen: Listen) -> str:
    """Start (or reuse) the land registries' embedded PostgreSQL (on TCP too when `listen.land_port` is set);
    return its admin URL (always over the Unix socket)."""
    url = embedded_uri(pgdata)
    if listen.land_port is None:
        return url
    return listen_tcp(pgdata, url, host=listen.host or "0.0.0.0", port=listen.land_port)


def _reached_at(dsn: str, host: str, port: int) -> str:
    """The same DSN naming the host and port other machines connect to."""
    params = psycopg2.extensions.parse_dsn(dsn)
    params.update(host=host, port=str(port))
    return psycopg2.extensions.make_dsn(**params)


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
    listen: Listen | None = None,
    credentials: SandboxCredentials | None = None,
) -> Iterator[SandboxEndpoints]:
    """Run the sandbox over the generated files in `data_dir` until the block exits.

    `state_dir` holds the land registries' own embedded PostgreSQL (separate from the warehouse) and
    `endpoints.json`. `faults` are the startup fault switches (see `sandbox.faults.switches_per_server`).
    `provinces` defaults to every province with land files. `listen` says where to listen (default: 127.0.0.1,
    free ports, land on its Unix socket); `credentials` default to fresh random ones.
    """
    data_dir = Path(data_dir)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    switches = switches_per_server(faults)
    listen = listen or Listen()
    creds = credentials or SandboxCredentials.fresh()
    client_id, client_secret, api_key = creds.client_id, creds.client_secret, creds.api_key
    advertised = listen.advertised
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
                host=listen.host,
                port=listen.population_port,
                advertise=advertised,
            ),
            ServerThread(
                business_api.create_app(
                    data_dir, api_keys={api_key}, faults=FaultState(switches["business"])
                ),
                "business",
                host=listen.host,
                port=listen.business_port,
                advertise=advertised,
            ),
        ]
        for server in servers:
            stack.callback(server.stop)
            server.start()

        land_dsns: dict[str, str] = {}
        admin_dsns: dict[str, str] = {}
        if codes:
            stack.callback(stop_embedded, pgdata)
            server_url = _land_server(pgdata, listen)
            land_dsns = load_land(data_dir, codes, server_url, reader_password=creds.land_password)
            if listen.land_port is not None:
                land_dsns = {
                    code: _reached_at(dsn, advertised, listen.land_port) for code, dsn in land_dsns.items()
                }
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
