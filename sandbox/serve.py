"""`python -m sandbox.serve`: run the sandbox agency systems in the foreground until Ctrl-C or SIGTERM.

Owns: the command line only; `sandbox.runner.run_sandbox` does the work. Prints where each system
listens; the credentials go to `STATE/endpoints.json` (mode 0600), never to the terminal.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import psycopg2.extensions

from sandbox.faults import FaultSwitches, parse_fault_args
from sandbox.runner import ENDPOINTS_FILE, run_sandbox

log = logging.getLogger("sandbox.serve")


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

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with run_sandbox(args.data, args.state, faults=faults, provinces=provinces) as endpoints:
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


def _without_password(dsn: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params.pop("password", None)
    return psycopg2.extensions.make_dsn(**params)


if __name__ == "__main__":
    sys.exit(main())
