"""Serve the single-window lookup service with uvicorn: `python -m lienthong.singlewindow --port 8600`.

Configuration comes from the environment only (never the command line, which other users can see):
LIENTHONG_DATABASE_URL (else the embedded warehouse), LIENTHONG_SINGLEWINDOW_KEYS (JSON agency -> API key),
LIENTHONG_AGENCY_PASSWORD_<AGENCY> for each agency with a key. Uvicorn's access log is off: request lines
carry personal IDs; the service writes its own line per request (no key) and the audit record in the database.
"""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lienthong.singlewindow", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8600, help="port (default 8600; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--pool-size", type=int, default=8, help="database connections per agency and worker")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.workers > 1:
        import os

        os.environ["LIENTHONG_SINGLEWINDOW_POOL_SIZE"] = str(args.pool_size)
        uvicorn.run("lienthong.singlewindow.__main__:_factory", factory=True, host=args.host, port=args.port,
                    workers=args.workers, access_log=False, log_level=args.log_level)
        return
    from lienthong.singlewindow.app import create_app

    uvicorn.run(create_app(pool_size=args.pool_size), host=args.host, port=args.port, access_log=False,
                log_level=args.log_level)


def _factory():
    import os

    from lienthong.singlewindow.app import create_app

    return create_app(pool_size=int(os.environ.get("LIENTHONG_SINGLEWINDOW_POOL_SIZE", "8")))


if __name__ == "__main__":
    main()
