"""Read rates of the change feed: in PostgreSQL through an agency's function, and over the lookup service.

Publishes N synthetic citizen_profile rows (`sandbox.profiles`) as version 1 in database `bench_feed` (the
embedded warehouse under benchmarks/.work/feed, or the server of LIENTHONG_DATABASE_URL), then `--versions`
more versions with `--change-fraction` of the rows changed each (`bench_publish.changed_rows`: renames,
removals, new people), each published from its change, then applies schemas/agencies.yaml. Measured:

- PostgreSQL: `SELECT * FROM agency_<name>.citizen_profile_changes(1)` logged in as the agency's role, read
  through a server-side cursor (10,000 rows a fetch), for the tax department (columns visible or masked) and
  the statistics office (its citizen ID pseudonymized with a keyed HMAC per row);
- HTTP: `GET /v1/datasets/citizen_profile/changes?since=1&limit=5000`, page after page until `next` is null, as
  the tax department against `python -m lienthong.singlewindow` on a free localhost port (each page read
  through the agency's views and recorded in the access log with its persons);
- and, for scale, each version's publish time.

    .venv/bin/python benchmarks/bench_feed.py --rows 1000000 --versions 3 --change-fraction 0.01

Secrets (agency passwords, pseudonymization key, API key, release signing key) are made for the run and
passed through the environment only. Writes benchmarks/results/feed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "feed"
RESULTS = REPO / "benchmarks" / "results"
DATASET = "citizen_profile"
PG_AGENCIES = ("tax_department", "statistics_office")
API_AGENCY, API_PURPOSE = "tax_department", "tax_registration"
PAGE = 5_000

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import start_service  # noqa: E402  (the benchmarks folder is not a package)
from bench_publish import changed_rows, progress, synthetic_profiles  # noqa: E402


def read_pg(url: str, agency: str, role: str, password: str) -> dict:
    import psycopg2

    conn = psycopg2.connect(url, user=role, password=password)
    try:
        t0 = time.perf_counter()
        rows = 0
        with conn.cursor(name="bench_feed") as cur:
            cur.itersize = 10_000
            cur.execute(f'SELECT * FROM "agency_{agency}"."{DATASET}_changes"(1)')
            while batch := cur.fetchmany(10_000):
                rows += len(batch)
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds) if seconds else None}


def read_api(base: str, api_key: str) -> dict:
    import requests

    session = requests.Session()
    headers = {"X-API-Key": api_key, "X-Purpose": API_PURPOSE, "X-Case-Id": "BENCH-FEED"}
    after, rows, pages = None, 0, 0
    t0 = time.perf_counter()
    while True:
        params = {"since": 1, "limit": PAGE, **({"after": after} if after else {})}
        r = session.get(f"{base}/v1/datasets/{DATASET}/changes", params=params, headers=headers, timeout=120)
        r.raise_for_status()
        body = r.json()
        rows += body["count"]
        pages += 1
        after = body["next"]
        if after is None:
            break
    seconds = time.perf_counter() - t0
    return {"rows": rows, "pages": pages, "page_rows": PAGE, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds) if seconds else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=3, help="versions published from a change after the first")
    parser.add_argument("--change-fraction", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=RESULTS / "feed.json")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LIENTHONG_DATA_DIR", str(WORK / "data"))
    from lienthong.access import PASSWORD_ENV_PREFIX, apply_access, load_agencies
    from lienthong.contracts import contract
    from lienthong.db import ensure_database, stop_embedded, warehouse_url
    from lienthong.publish import publish
    from lienthong.releases import new_key
    from lienthong.settings import load_settings

    settings = load_settings()
    embedded = settings.database_url is None
    os.environ["LIENTHONG_PSEUDONYM_KEY"] = secrets.token_urlsafe(32)
    os.environ.setdefault("LIENTHONG_RELEASE_SIGNING_KEY", new_key()[0])
    agencies = load_agencies()
    for name in agencies:
        os.environ[PASSWORD_ENV_PREFIX + name.upper()] = secrets.token_urlsafe(18)
    api_key = secrets.token_urlsafe(24)
    published_dir = WORK / "published"
    import shutil

    shutil.rmtree(published_dir, ignore_errors=True)
    publishes = []
    try:
        server = warehouse_url(settings)
        import psycopg2

        conn = psycopg2.connect(server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS bench_feed")
        conn.close()
        url = ensure_database(server, "bench_feed")
        c = contract(DATASET)
        rows = synthetic_profiles(args.rows)
        for v in range(args.versions + 1):
            if v:
                rows = changed_rows(rows, args.change_fraction, seed=11 + v)
            t0 = time.perf_counter()
            result = publish(c, {}, run_id=f"bench-feed-{v}", gate_passed=True, published_dir=published_dir,
                             lineage={}, quality={}, url=url, rows=rows, retention=args.versions + 2)
            publishes.append({"version": result.version, "seconds": round(time.perf_counter() - t0, 3),
                              "changes": result.changes})
            progress(f"version {result.version} published in {publishes[-1]['seconds']}s ({result.changes})")
        apply_access(url)
        pg = {a: read_pg(url, a, agencies[a].role, os.environ[PASSWORD_ENV_PREFIX + a.upper()]) for a in PG_AGENCIES}
        progress(f"PostgreSQL feed reads: {pg}")
        env = {**os.environ, "LIENTHONG_DATABASE_URL": url,
               "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps({API_AGENCY: api_key})}
        proc, base = start_service(env, WORK / "service.log")
        try:
            read_api(base, api_key)  # warm-up: the pool opened, code paths hot
            api = read_api(base, api_key)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        progress(f"API feed read: {api}")
    finally:
        if embedded:
            stop_embedded(settings.embedded_pgdata)
    result = {
        "benchmark": "change feed read rates (citizen_profile): agency function in PostgreSQL, and the lookup "
                     "service's /v1/datasets/{name}/changes",
        "rows": args.rows, "versions_after_first": args.versions, "change_fraction": args.change_fraction,
        "machine_cpus": os.cpu_count(), "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_feed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "publishes": publishes, "postgres": pg, "api": {API_AGENCY: api},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
