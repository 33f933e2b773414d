"""Connector throughput against the sandbox, as a ratio to a bare loop over the same pages.

For each agency system: a bare loop that fetches the same pages (or rows) and does nothing with them — the
source's own limit — and the real connector run (retry, auth, landing, watermark). Each measurement runs in
its own child process so its peak RSS is its own. Sizes default to the issue's: 1M citizens, 100k
enterprises, 1M parcels (home province; the second province's land registry is a quarter of that).

    .venv/bin/python benchmarks/bench_connectors.py [--citizens 1000000] [--sizes 200000,1000000]

Writes benchmarks/results/connectors.json (one entry per size) and prints a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results" / "connectors.json"
MODES = ["population-bare", "population-connector", "business-bare", "business-connector", "land-bare", "land-bare-query",
         "land-connector"]


# ---- children -------------------------------------------------------------------------------------------
def child(mode: str, endpoints_file: Path, data_dir: Path) -> dict:
    import requests

    from lienthong.db import warehouse_url
    from lienthong.runs import Ledger
    from lienthong.settings import load_settings
    from sandbox.runner import read_endpoints

    ep = read_endpoints(endpoints_file.parent)
    os.environ.update(ep.airflow_conn_env())
    os.environ["LIENTHONG_DATA_DIR"] = str(data_dir)
    settings = load_settings()
    store = Ledger(warehouse_url(settings))  # watermarks and run records of the connector runs
    run_id = f"bench-{mode}-{time.time_ns()}"
    # Import what the connector runs before the clock starts, as the bare loops do (a second or two of
    # imports is not throughput, and it would weigh on small sizes only). airflow.sdk is what
    # lienthong.connections reads connections with: loaded in any Airflow task already; pandas is what
    # pyarrow imports at its first pa.array() call when it is installed (it is, with Great Expectations).
    for module in ("airflow.sdk", "pandas", "connectors.business.ingest", "connectors.land.ingest", "connectors.population.client",
                   "lienthong.contracts"):
        importlib.import_module(module)

    t0 = time.monotonic()
    rows = 0
    if mode == "population-bare":
        s = requests.Session()
        tok = s.post(ep.population_url + "/oauth2/token", data={"grant_type": "client_credentials", "client_id": ep.client_id,
                                                                 "client_secret": ep.client_secret, "scope": "citizens.read"}).json()["access_token"]
        params = {"updated_since": "1970-01-01T00:00:00Z", "page_size": 1000}
        while True:
            page = s.get(ep.population_url + "/api/v1/citizens", params=params, headers={"Authorization": f"Bearer {tok}"}).json()
            rows += len(page["items"])
            if page["next_page_token"] is None:
                break
            params["page_token"] = page["next_page_token"]
    elif mode == "population-connector":
        from connectors.base.ingest import run_ingestion
        from connectors.base.schema import SourceSchema
        from connectors.population.client import ENTITY, INCREMENTAL, SOURCE, PopulationRegistryClient
        from lienthong.contracts import contract

        client = PopulationRegistryClient(ep.population_url, ep.client_id, ep.client_secret)
        res = run_ingestion(store=store, source=SOURCE, entity=ENTITY, run_id=run_id, raw_dir=settings.raw_dir, incremental=INCREMENTAL,
                            pages=lambda since: client.iter_citizen_pages("1970-01-01T00:00:00Z", 1000), scope=run_id,
                            schema=SourceSchema.from_contract(contract("citizen")))
        rows = res.rows
    elif mode == "business-bare":
        s = requests.Session()
        offset = 0
        while True:
            body = s.get(ep.business_url + "/dkkd/v2/doanh-nghiep", params={"tuNgay": "01/01/1970", "offset": offset, "limit": 500},
                         headers={"X-API-Key": ep.api_key}).content
            n = body.count(b"<DoanhNghiep>")
            rows += n
            offset += n
            if n < 500:
                break
    elif mode == "business-connector":
        from connectors.business.ingest import ingest

        rows = ingest(run_id, settings, store=store)["rows"]
    elif mode == "land-bare":
        import psycopg2

        for _province, dsn in sorted(ep.land_dsns.items()):
            with psycopg2.connect(dsn) as conn:
                for table in ("thua_dat", "chu_su_dung", "giay_chung_nhan"):
                    with conn.cursor(name=f"bare_{table}") as cur:
                        cur.itersize = 5000
                        cur.execute(f"SELECT * FROM {table} ORDER BY cap_nhat_luc, id")
                        while batch := cur.fetchmany(5000):
                            rows += len(batch)
    elif mode == "land-bare-query":
        # The rows fetched by the connector's own query (each column as text, see connectors.land.render):
        # isolates our rendering and landing cost from what the source spends on that query.
        from connectors.land.extract import TABLES, LandRegistryExtractor, keyset_query

        for _province, dsn in sorted(ep.land_dsns.items()):
            with LandRegistryExtractor(dsn) as extractor:
                extractor.check_schema()
                for table in TABLES:
                    query, params = keyset_query(table, None, extractor.columns[table])
                    with extractor.conn.cursor(name=f"barequery_{table}") as cur:
                        cur.itersize = 5000
                        cur.execute(query, params)
                        while batch := cur.fetchmany(5000):
                            rows += len(batch)
    elif mode == "land-connector":
        from connectors.land.ingest import ingest

        for province in sorted(ep.land_dsns):
            summary = ingest(run_id, province, settings, store=store)
            rows += sum(t["rows"] for t in summary["tables"].values())
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.monotonic() - t0
    return {"mode": mode, "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
            "peak_rss_mib": rss_mib()}


# ---- parent ---------------------------------------------------------------------------------------------
def measure(citizens: int, modes: list[str], enterprise_ratio: float = 0.1, repeats: int = 1) -> dict:
    """One size: every mode in its own child process, `repeats` rounds in turn (bare, connector, bare, ...),
    so a ratio compares runs made seconds apart on the same (shared, noisy) machine; the figures reported
    are the medians of the rounds, each round's ratios are kept too."""
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    data = WORK / f"data-{citizens}"
    cfg = GeneratorConfig(citizens=citizens, enterprise_ratio=enterprise_ratio, parcel_ratio=1.0)
    print(f"generating {citizens} citizens ...", flush=True)
    gen = generate(cfg, data)
    bench_dir = WORK / f"run-{citizens}"
    os.environ["LIENTHONG_DATA_DIR"] = str(bench_dir)
    os.environ.pop("LIENTHONG_DATABASE_URL", None)  # a previous size's warehouse (stopped): this size's own
    settings = load_settings()
    url = warehouse_url(settings)
    os.environ["LIENTHONG_DATABASE_URL"] = url
    results: list[dict] = []
    try:
        print("starting the sandbox (loads the land registries) ...", flush=True)
        with run_sandbox(data, WORK / f"sbx-{citizens}") as _ep:
            for round_no in range(repeats):
                # The first round's landing is the raw zone later stages read; later rounds land aside.
                data_dir = bench_dir if round_no == 0 else WORK / f"run-{citizens}-repeat"
                for mode in modes:
                    _forget_watermarks(url)  # every connector run here is a full extract
                    r = _run_child(mode, WORK / f"sbx-{citizens}" / "endpoints.json", data_dir)
                    r["round"] = round_no
                    print(f"  {mode:<22} {r['rows']:>9} rows  {r['seconds']:>8.1f} s  {r['rows_per_s']:>10.0f} rows/s"
                          f"  RSS {r['peak_rss_mib']:>7.0f} MiB", flush=True)
                    results.append(r)
                shutil.rmtree(WORK / f"run-{citizens}-repeat", ignore_errors=True)
    finally:
        stop_embedded(settings.embedded_pgdata)
    return {"citizens": citizens, "source_rows": gen.get("counts"), "repeats": repeats, "results": results,
            **summarise(results)}


PAIRS = (("population", "population-bare", "population-connector"), ("business", "business-bare", "business-connector"),
         ("land", "land-bare", "land-connector"), ("land_same_query", "land-bare-query", "land-connector"))


def summarise(results: list[dict]) -> dict:
    """Medians over the rounds: rows/s and peak RSS per mode, and the connector / bare ratio per source
    (the median of the rounds' ratios; `ratio_rounds` lists them)."""
    modes = sorted({r["mode"] for r in results})
    per_mode = {m: [r for r in results if r["mode"] == m] for m in modes}
    medians = {m: {"rows": rs[0]["rows"], "rows_per_s": statistics.median(r["rows_per_s"] for r in rs),
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)} for m, rs in per_mode.items()}
    ratios, rounds = {}, {}
    for source, bare_mode, conn_mode in PAIRS:
        pairs = [(b, c) for b in per_mode.get(bare_mode, []) for c in per_mode.get(conn_mode, []) if b["round"] == c["round"]]
        if pairs:
            rounds[source] = [round(c["rows_per_s"] / b["rows_per_s"], 3) for b, c in pairs]
            ratios[source] = round(statistics.median(rounds[source]), 3)
    return {"medians": medians, "ratio_connector_to_bare": ratios, "ratio_rounds": rounds}


def _run_child(mode: str, endpoints: Path, data_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--endpoints", str(endpoints),
                          "--data-dir", str(data_dir)], capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{mode} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forget_watermarks(url: str) -> None:
    from lienthong.runs import Ledger

    Ledger(url).forget_watermarks()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--citizens", type=int, default=1_000_000)
    ap.add_argument("--sizes", help="comma-separated citizen counts, to see RSS against source size")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--child")
    ap.add_argument("--endpoints", type=Path)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--enterprise-ratio", type=float, default=0.1,
                    help="enterprises per citizen (0.075 gives the province scale of 150k per 2M)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON results")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of every mode, in turn; medians reported (the machine is shared and noisy)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.endpoints, args.data_dir)))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.citizens]
    runs = [measure(n, args.modes.split(","), args.enterprise_ratio, args.repeats) for n in sizes]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"runs": runs, "machine": {"cpus": os.cpu_count()}}, indent=2))
    for run in runs:
        print(f"{run['citizens']} citizens: connector / bare loop = {run['ratio_connector_to_bare']}")
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
