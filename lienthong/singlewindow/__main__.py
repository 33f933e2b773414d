"""Serve the single-window lookup service with uvicorn: `python -m lienthong.singlewindow --port 8600`.

Configuration comes from the environment only (never the command line, which other users can see):
LIENTHONG_DATABASE_URL (else the embedded warehouse), LIENTHONG_SINGLEWINDOW_KEYS (JSON agency -> API key),
LIENTHONG_AGENCY_PASSWORD_<AGENCY> for each agency with a key, and the LIENTHONG_SINGLEWINDOW_* tunables
(pool sizes, timeouts, back-off: see the README). Uvicorn's access log is off: request lines carry personal
IDs; the service writes its own line per request (no key) and the audit record in the database.

With `--workers N`, the start-up check (do N workers' pools fit the server?) runs once here, before any worker
starts: a configuration that does not fit stops with the settings to change named, instead of workers
failing and being restarted in a loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lienthong.settings import passed_env

# Passed to the worker processes, which build the app through `_factory`.
WORKERS_ENV = "LIENTHONG_SINGLEWINDOW_WORKERS"
LOG_LEVEL_ENV = "LIENTHONG_SINGLEWINDOW_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lienthong.singlewindow", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8600, help="port (default 8600; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="database connections per agency and worker (default: LIENTHONG_SINGLEWINDOW_POOL_SIZE, 4)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    import uvicorn

    from lienthong.singlewindow.pools import StartupError

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.pool_size is not None:
        os.environ["LIENTHONG_SINGLEWINDOW_POOL_SIZE"] = str(args.pool_size)
    try:
        if args.workers > 1:
            from lienthong.singlewindow.app import preflight

            preflight(args.workers)
            os.environ[WORKERS_ENV] = str(args.workers)
            os.environ[LOG_LEVEL_ENV] = args.log_level
            uvicorn.run("lienthong.singlewindow.__main__:_factory", factory=True, host=args.host, port=args.port,
                        workers=args.workers, access_log=False, log_level=args.log_level)
            return
        from lienthong.singlewindow.app import create_app

        app = create_app()
    except StartupError as exc:
        sys.exit(f"lienthong.singlewindow: not started: {exc}")
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=args.log_level)


def _factory():
    """The app of one worker process (`--workers N`)."""
    logging.basicConfig(level=(passed_env(LOG_LEVEL_ENV) or "info").upper(), format=LOG_FORMAT)
    from lienthong.singlewindow.app import create_app

    return create_app(workers=int(passed_env(WORKERS_ENV) or "1"))


if __name__ == "__main__":
    main()
