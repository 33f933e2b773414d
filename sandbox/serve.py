"""`python -m sandbox.serve`: run the sandbox agency systems in the foreground until Ctrl-C or SIGTERM.

Owns: the command line only; `sandbox.runner.run_sandbox` does the work. Prints where each system
listens; the credentials go to `STATE/endpoints.json` (mode 0600), never to the terminal.

By default everything listens on 127.0.0.1 (free ports) and the land PostgreSQL on its Unix socket only. For
other containers (docker-compose): `--host 0.0.0.0 --advertise-host <service name>` with fixed ports
(`--population-port`, `--business-port`, `--land-port`). Credentials are fresh per start unless the
environment gives them (`SANDBOX_CLIENT_ID`, `SANDBOX_CLIENT_SECRET`, `SANDBOX_API_KEY`,
`SANDBOX_LAND_PASSWORD`: all or none but the client id), so that clients configured beforehand can log in;
secrets never on the command line, where `ps` shows them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import psycopg2.extensions

from sandbox.faults import FaultSwitches, parse_fault_args
from sandbox.runner import ENDPOINTS_FILE, Listen, SandboxCredentials, run_sandbox

log = logging.getLogger("sandbox.serve")

# The environment variables of given credentials (SandboxCredentials field -> variable).
CREDENTIAL_ENV = {
    "client_id": "SANDBOX_CLIENT_ID",
    "client_secret": "SANDBOX_CLIENT_SECRET",
    "api_key": "SANDBOX_API_KEY",
    "land_password": "SANDBOX_LAND_PASSWORD",
}
DEFAULT_CLIENT_ID = "lienthong-platform"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.serve",
        description="Serve the generated sandbox data as the population, business and land registries.",
    )
    parser.add_argument("--data", required=True, type=Path, help="the generator's output folder (OUT)")
    parser.add_argument(
        "--state", required=True, type=Path, help="folder for the land PostgreSQL and endpoints.json"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="[SERVER.]NAME=VALUE",
        help="a startup fault switch, e.g. rate_limit_every=5 or business.truncate_body_every=3 "
        "(repeatable; SERVER is population or business, default both)",
    )
    parser.add_argument("--provinces", help="comma-separated province codes (default: every land/<code>/)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the servers bind (default 127.0.0.1; 0.0.0.0 for other containers or machines)",
    )
    parser.add_argument(
        "--advertise-host",
        help="host name the URLs and DSNs in endpoints.json give (default: --host, or this machine's name "
        "when --host is 0.0.0.0), e.g. the docker-compose service name",
    )
    parser.add_argument(
        "--population-port", type=int, default=0, help="population registry port (default: a free one)"
    )
    parser.add_argument(
        "--business-port", type=int, default=0, help="business registry port (default: a free one)"
    )
    parser.add_argument(
        "--land-port",
        type=int,
        help="also serve the land databases over TCP on --host at this port, to the read-only role with its "
        "password (default: the Unix socket only)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        per_server = parse_fault_args(args.fault)
        faults = {server: FaultSwitches.from_mapping(values) for server, values in per_server.items()}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    provinces = [p.strip() for p in args.provinces.split(",") if p.strip()] if args.provinces else None
    try:
        credentials = credentials_from_env(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    listen = Listen(
        host=args.host,
        advertise=args.advertise_host,
        population_port=args.population_port,
        business_port=args.business_port,
        land_port=args.land_port,
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with run_sandbox(
        args.data, args.state, faults=faults, provinces=provinces, listen=listen, credentials=credentials
    ) as endpoints:
        print(f"population registry  {endpoints.population_url}  (OAuth2 client {endpoints.client_id})")
        print(f"business registry    {endpoints.business_url}")
        for code, dsn in endpoints.land_dsns.items():
            print(f"land registry {code:<6} {_without_password(dsn)}")
        for server, switches in faults.items():
            defaults = FaultSwitches().as_dict()
            active = {k: v for k, v in switches.as_dict().items() if v != defaults[k]}
            if active:
                print(f"faults {server}: {active}")
        print(f"credentials          {args.state / ENDPOINTS_FILE}")
        print(
            "control              POST <url>/_sandbox/faults | /_sandbox/reset | /_sandbox/touch, GET /_sandbox/stats"
        )
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping...", flush=True)
    return 0


def credentials_from_env(environ: Mapping[str, str]) -> SandboxCredentials | None:
    """Credentials given by the environment (`CREDENTIAL_ENV`), or None for fresh ones. The three secrets come
    together or not at all: a half-given set would leave some client unable to log in."""
    given = {name: environ.get(var, "") for name, var in CREDENTIAL_ENV.items()}
    secrets_given = [name for name in ("client_secret", "api_key", "land_password") if given[name]]
    if not secrets_given:
        return None
    missing = [
        CREDENTIAL_ENV[name] for name in ("client_secret", "api_key", "land_password") if not given[name]
    ]
    if missing:
        raise ValueError(f"credentials from the environment need {', '.join(missing)} as well")
    return SandboxCredentials(
        client_id=given["client_id"] or DEFAULT_CLIENT_ID,
        client_secret=given["client_secret"],
        api_key=given["api_key"],
        land_password=given["land_password"],
    )


def _without_password(dsn: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params.pop("password", None)
    return psycopg2.extensions.make_dsn(**params)


if __name__ == "__main__":
    sys.exit(main())
