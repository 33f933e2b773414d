"""Single-window lookup latency and throughput over real HTTP on localhost.

Builds a published citizen_profile of N synthetic citizens (valid 12-digit IDs, a few nested enterprises and
parcels) in database `bench_lookup` (the embedded warehouse under benchmarks/.work/lookup, or the server of
LIENTHONG_DATABASE_URL), applies schemas/agencies.yaml, starts `python -m lienthong.singlewindow` on a free
port, and runs a bounded concurrent load of GET /v1/citizens/{id}/profile over random existing IDs as the
single-window desk: with `wrk` (apt-get install wrk) when installed, else a Python thread client. The
secrets (agency passwords, pseudonymization key, API key) are generated for the run and passed through the
environment only.

    .venv/bin/python benchmarks/bench_lookup.py --rows 100000 --duration 20 --connections 16

Writes benchmarks/results/lookup.json: requests/s, client-side p50/p90/p99 latency, non-2xx count, the
service's own latency from the access log (validation + read, before the audit insert), and the access-log
row count against the requests served (every lookup is logged before it is answered).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "lookup"
RESULTS = REPO / "benchmarks" / "results"
AGENCY = "single_window_desk"
PURPOSE = "one_stop_procedure"  # one of the desk's purposes for citizen_profile (schemas/agencies.yaml)

WRK_SCRIPT = r"""
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local key = os.getenv("BENCH_API_KEY")
local counter = 0
setup = function(thread) thread:set("tid", counter); counter = counter + 1 end
init = function(args) math.randomseed(os.time() * 100 + (tid or 0)) end
request = function()
  return wrk.format("GET", "/v1/citizens/" .. ids[math.random(#ids)] .. "/profile",
                    {["X-API-Key"] = key, ["X-Purpose"] = "one_stop_procedure", ["X-Case-Id"] = "BENCH-" .. (tid or 0)})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def publish_synthetic(url: str, n: int) -> list[str]:
    """published.citizen_profile__v000001 (contract DDL + primary key) behind the view; returns the IDs."""
    from psycopg2 import sql

    from lienthong.contracts import contract
    from lienthong.db import connect
    from lienthong.publish import _copy_arrow
    from sandbox.profiles import synthetic_profiles

    c = contract("citizen_profile")
    rows = synthetic_profiles(n, seed=7)
    table = "citizen_profile__v000001"
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS published")
        cur.execute("DROP VIEW IF EXISTS published.citizen_profile CASCADE")
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("published", table)))
        cur.execute(c.postgres_ddl(table, "published", primary_key=False))
        _copy_arrow(cur, rows, f'published."{table}"')
        cur.execute(f'ALTER TABLE published."{table}" ADD PRIMARY KEY (citizen_id)')
        cur.execute(f'ANALYZE published."{table}"')
        cur.execute(f'CREATE VIEW published.citizen_profile AS SELECT * FROM published."{table}"')
    return rows.column("citizen_id").to_pylist()


def start_service(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    out = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lienthong.singlewindow", "--host", "127.0.0.1", "--port", "0",
                             "--log-level", "info"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the service did not start:\n{log_path.read_text(errors='replace')[-2000:]}")


def run_wrk(base: str, ids_file: Path, key: str, seconds: int, connections: int, threads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-lookup-"))
    try:
        script = tmp / "lookup.lua"
        script.write_text(WRK_SCRIPT)
        env = {**os.environ, "BENCH_IDS": str(ids_file), "BENCH_API_KEY": key}
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
                              "-s", str(script), base], env=env, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = re.search(r"WRK_JSON (\{.*\})", out.stdout)
    if not found:
        raise SystemExit(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(found.group(1))
    seconds_run = raw["duration_us"] / 1e6
    return {"tool": f"wrk -t{threads} -c{connections} -d{seconds}s", "requests": raw["requests"],
            "seconds": round(seconds_run, 2), "requests_per_s": round(raw["requests"] / seconds_run, 1),
            "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
            "non_2xx": raw["status_errors"],
            "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]}


def run_threads(base: str, ids: list[str], key: str, seconds: int, connections: int) -> dict:
    """Fallback load without wrk: `connections` threads, each with a keep-alive session, for `seconds`."""
    import requests

    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng, session, mine, errors = random.Random(seed), requests.Session(), [], 0
        session.headers.update({"X-API-Key": key, "X-Purpose": PURPOSE, "X-Case-Id": f"BENCH-{seed}"})
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = session.get(f"{base}/v1/citizens/{rng.choice(ids)}/profile", timeout=10)
            mine.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200
        with lock:
            latencies.extend(mine)
            bad[0] += errors

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3)

    return {"tool": f"python threads x{connections}, {seconds}s", "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "max_ms": round(latencies[-1], 3), "non_2xx": bad[0], "socket_errors": 0}


def access_log_stats(url: str, since_id: int) -> dict:
    from lienthong.db import connect

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("""SELECT count(*), count(*) FILTER (WHERE status_code = 200),
                              percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                              percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
                       FROM lienthong_ops.access_log WHERE id > %s AND agency = %s""", (since_id, AGENCY))
        n, ok, p50, p99 = cur.fetchone()
    return {"rows": n, "status_200": ok, "service_p50_ms": round(p50 or 0, 3), "service_p99_ms": round(p99 or 0, 3)}


def last_log_id(url: str) -> int:
    from lienthong.db import connect
    from lienthong.singlewindow.audit import ensure_access_log

    with connect(url) as conn:
        ensure_access_log(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM lienthong_ops.access_log")
            return cur.fetchone()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="published citizens (default 100000)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load (default 20)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "lookup.json")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LIENTHONG_DATA_DIR", str(WORK / "data"))
    from lienthong.access import PASSWORD_ENV_PREFIX, apply_access
    from lienthong.db import ensure_database, stop_embedded, warehouse_url
    from lienthong.settings import load_settings

    settings = load_settings()
    embedded = settings.database_url is None
    # Secrets of this run only: in this process's environment and the service's, nowhere else.
    os.environ["LIENTHONG_PSEUDONYM_KEY"] = secrets.token_urlsafe(32)
    os.environ[PASSWORD_ENV_PREFIX + AGENCY.upper()] = secrets.token_urlsafe(18)
    api_key = secrets.token_urlsafe(24)
    try:
        url = ensure_database(warehouse_url(settings), "bench_lookup")
        t0 = time.monotonic()
        ids = publish_synthetic(url, args.rows)
        load_s = time.monotonic() - t0
        apply_access(url)
        ids_file = WORK / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        env = {**os.environ, "LIENTHONG_DATABASE_URL": url, "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps({AGENCY: api_key})}
        proc, base = start_service(env, WORK / "service.log")
        try:
            use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
            # warm-up: pools opened, code paths hot (not measured)
            if use_wrk:
                run_wrk(base, ids_file, api_key, 2, args.connections, args.threads)
            else:
                run_threads(base, ids, api_key, 2, args.connections)
            before = last_log_id(url)
            load = (run_wrk(base, ids_file, api_key, args.duration, args.connections, args.threads) if use_wrk
                    else run_threads(base, ids, api_key, args.duration, args.connections))
            time.sleep(0.5)
            audit = access_log_stats(url, before)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        if embedded:
            stop_embedded(settings.embedded_pgdata)
    result = {
        "benchmark": "single-window citizen lookup over HTTP (GET /v1/citizens/{id}/profile, agency single_window_desk)",
        "published_rows": args.rows, "load_seconds": round(load_s, 2), "connections": args.connections,
        "server": f"uvicorn, 1 worker, up to {settings.singlewindow_pool_size} database connections per agency "
                  f"(opened on first use), access log written per request",
        "machine_cpus": os.cpu_count(), "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_lookup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        **load, "access_log": audit,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
