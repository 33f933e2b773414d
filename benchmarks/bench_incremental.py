"""An incremental run against a full one: change 1 % of the source records, run the pipeline again from
the watermarks, and compare every stage.

    .venv/bin/python benchmarks/bench_incremental.py --citizens 100000 [--changed 0.01] [--result PATH]

On a generated province (`benchmarks/.work/data-N`, reused when `run_all.py` / `bench_connectors.py` left one
there, else generated with the same settings: enterprise ratio 0.075, parcel ratio 1.0), with the sandbox up
for the whole benchmark:

1. full run: ingest all three sources (population API, business API, every province's land registry), stage
   and validate the six datasets, reconcile. The pipeline functions the DAGs call (`lienthong.pipeline`),
   into a fresh data folder `benchmarks/.work/incr-N` (own raw zone, own warehouse, so no watermark from
   another benchmark);
2. change `--changed` of the source records in each system, as an edit in the agency system would: the
   population and business APIs' `POST /_sandbox/touch` (the record's update time becomes one second after
   the newest the registry holds), `sandbox.land_db.touch_land` on each province's three tables (update time = now);
3. incremental run: the same steps; ingestion starts from the watermarks the full run left, staging and
   validation re-run over the whole raw zone, reconciliation over the whole staged zone.

Each run is a child process of its own (its peak RSS is its own; the parent holds the sandbox). Records, per
stage, seconds for both runs and their ratio; per source, rows fetched by the incremental run against the
records changed, and the rows a correct incremental walk must fetch besides them: the records at the
watermark's own instant (population: `updated_since` is inclusive), on the watermark's day (business: `tuNgay`
has day granularity), or inside the land connector's 15-minute overlap window before the watermark.

Writes benchmarks/results/incremental.json (or `--result`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results" / "incremental.json"
DATASETS = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")
LAND_TABLES = ("thua_dat", "chu_su_dung", "giay_chung_nhan")
STAGES = ("ingest_population", "ingest_business", "ingest_land", "stage", "validate", "reconcile")


def _log(msg: str) -> None:
    print(f"[incremental] {msg}", file=sys.stderr, flush=True)




# ---- child: one pipeline run ----------------------------------------------------------------------------
def child(label: str, provinces: list[str]) -> dict:
    """One run of the pipeline (the functions the DAG tasks call), timed per step."""
    from lienthong import pipeline

    run_id = f"bench-incr-{label}-{time.time_ns()}"
    steps: dict[str, dict] = {}

    def timed(name: str, fn, *args):
        t0 = time.monotonic()
        out = fn(*args)
        seconds = time.monotonic() - t0
        steps[name] = {"seconds": round(seconds, 3), "rss_mib": rss_mib("VmRSS")}
        return out, steps[name]

    for source, fn in (("population", pipeline.ingest_population), ("business", pipeline.ingest_business)):
        r, s = timed(f"ingest_{source}", fn, run_id)
        # walk_s: the connector's own walk (watermark to landing commit), without imports and client set-up
        s.update(rows=r["rows"], pages=r["pages"], requests=r.get("requests"), walk_s=r.get("seconds"),
                 watermark_from=r.get("watermark_from"), watermark_to=r.get("watermark_to"))
        _log(f"{label}: ingest_{source} {r['rows']} rows, {r['pages']} pages in {s['seconds']:.1f} s")
    for province in provinces:
        r, s = timed(f"ingest_land_{province}", pipeline.ingest_land, run_id, province)
        s.update(rows=r["rows"], walk_s=r.get("seconds"),
                 tables={t: {"rows": v["rows"], "read_from": v["read_from"], "watermark_to": v["watermark_to"]}
                         for t, v in r["tables"].items()})
        _log(f"{label}: ingest_land {province} {r['rows']} rows in {s['seconds']:.1f} s")
    for ds in DATASETS:
        summary, s = timed(f"stage_{ds}", pipeline.stage, ds, run_id)
        s.update(rows_in=summary["rows_in"], rows_staged=summary["rows_staged"], rows_quarantined=summary["rows_quarantined"],
                 raw_rows=summary["raw_rows"])
        verdict, v = timed(f"validate_{ds}", pipeline.validate, ds, run_id, summary)
        v.update(gate_passed=verdict["gate_passed"])
        _log(f"{label}: {ds} staged {summary['rows_staged']} of {summary['raw_rows']} raw rows in {s['seconds']:.1f} s, "
             f"validated in {v['seconds']:.1f} s (gate {'passed' if verdict['gate_passed'] else 'FAILED'})")
    rec, s = timed("reconcile", pipeline.reconcile, run_id)
    s.update(rows={n: o["rows"] for n, o in rec["outputs"].items()})
    _log(f"{label}: reconcile in {s['seconds']:.1f} s")

    def total(prefix: str) -> float:
        return round(sum(v["seconds"] for k, v in steps.items() if k.startswith(prefix)), 3)

    stages = {"ingest_population": total("ingest_population"), "ingest_business": total("ingest_business"),
              "ingest_land": total("ingest_land_"), "stage": total("stage_"), "validate": total("validate_"),
              "reconcile": total("reconcile")}
    return {"run": label, "run_id": run_id, "stages_s": stages, "total_s": round(sum(stages.values()), 3), "steps": steps,
            "peak_rss_mib": rss_mib()}


# ---- parent: the sandbox, the changes, the comparison -----------------------------------------------------
def _changes(keys: list[str], touched: set[str], at_boundary: list[bool], boundary: str) -> dict:
    """What an incremental run should fetch from one registry: the touched rows, plus the untouched rows the
    inclusive watermark returns again (`at_boundary`)."""
    return {"records_touched": len(touched),
            "rows_changed": sum(1 for k in keys if k in touched),
            "boundary_rows": sum(1 for k, b in zip(keys, at_boundary, strict=True) if b and k not in touched),
            "boundary": boundary}


def _touch(base_url: str, ids: list[str]) -> set[str]:
    """Update `ids` through a sandbox server's `/_sandbox/touch`; the ids it says it touched."""
    import requests

    resp = requests.post(base_url + "/_sandbox/touch", json={"ids": ids}, timeout=60)
    resp.raise_for_status()
    return set(resp.json()["touched"])


def _pick(values: list, fraction: float) -> list:
    """`fraction` of the distinct values, evenly spread over their sorted order (deterministic)."""
    distinct = sorted(set(v for v in values if v is not None))
    n = max(1, round(len(distinct) * fraction))
    step = len(distinct) / n
    return [distinct[int(i * step)] for i in range(n)]


def _change_sources(data: Path, ep, fraction: float, now: datetime) -> dict:
    """Touch `fraction` of each system's records; return, per source, the rows changed and the rows a
    correct incremental walk fetches besides them (its inclusive boundary), both counted on the source."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from connectors.business.client import parse_update_time
    from connectors.land.ingest import DEFAULT_OVERLAP
    from sandbox.land_db import touch_land

    out: dict[str, dict] = {}
    # population: the touched records move to one second after the registry's newest update; the walk from
    # the watermark (inclusive) also returns the records at the watermark's own instant
    cit = pq.read_table(data / "population" / "citizens.parquet", columns=["soDinhDanh", "capNhatLuc"])
    touched = _touch(ep.population_url, _pick(cit["soDinhDanh"].to_pylist(), fraction))
    stamps = [datetime.fromisoformat(s) for s in cit["capNhatLuc"].to_pylist()]
    newest = max(stamps)
    keys = cit["soDinhDanh"].to_pylist()
    out["population"] = _changes(keys, touched, [s == newest for s in stamps],
                                 f"rows already at the newest update time {newest.isoformat()} (updated_since is inclusive)")
    _log(f"population: touched {len(touched)} citizens ({out['population']['rows_changed']} rows)")
    # business: the same, but the walk filter is a local date: the watermark's whole day comes again
    ent = pq.read_table(data / "business" / "enterprises.parquet", columns=["MaSoDN", "NgayCapNhat"])
    touched = _touch(ep.business_url, _pick(ent["MaSoDN"].to_pylist(), fraction))
    local_days = [s.split(" ")[0] for s in ent["NgayCapNhat"].to_pylist()]
    newest_day = max(local_days, key=lambda d: parse_update_time(d + " 00:00:00"))
    keys = ent["MaSoDN"].to_pylist()
    out["business"] = _changes(keys, touched, [d == newest_day for d in local_days],
                               f"rows updated on the newest day {newest_day} (tuNgay has day granularity)")
    _log(f"business: touched {len(touched)} enterprises ({out['business']['rows_changed']} rows)")
    # land: an edit now, in each province's three tables; the connector re-reads a 15-minute overlap
    for province, dsn in sorted(ep.land_admin_dsns.items()):
        for table in LAND_TABLES:
            t = pq.read_table(data / "land" / province / f"{table}.parquet", columns=["id", "cap_nhat_luc"])
            chosen = _pick(t["id"].to_pylist(), fraction)
            changed = touch_land(dsn, table, chosen, now)
            chosen_set = set(chosen)
            newest = pc.max(t["cap_nhat_luc"]).as_py()
            window = newest - DEFAULT_OVERLAP
            boundary = sum(1 for i, s in zip(t["id"].to_pylist(), t["cap_nhat_luc"].to_pylist(), strict=True)
                           if s >= window and i not in chosen_set)
            out[f"land/{province}/{table}"] = {
                "records_touched": changed, "rows_changed": changed, "boundary_rows": boundary,
                "boundary": f"rows updated in the {int(DEFAULT_OVERLAP.total_seconds() // 60)} min overlap before the watermark"}
        _log(f"land {province}: touched {', '.join(str(out[f'land/{province}/{t}']['rows_changed']) for t in LAND_TABLES)} rows")
    return out


def _run_child(label: str, citizens: int, provinces: list[str], env: dict) -> dict:
    _log(f"{label} run: start")
    out = subprocess.run([sys.executable, __file__, "--child", label, "--citizens", str(citizens), "--provinces",
                          ",".join(provinces)], stdout=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the {label} run failed (exit {out.returncode})")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    _log(f"{label} run: {r['total_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    return r


def measure(citizens: int, fraction: float, enterprise_ratio: float) -> dict:
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings
    from sandbox.runner import run_sandbox

    data = WORK / f"data-{citizens}"
    if (data / "config.json").exists():
        _log(f"reusing the generated province in {data.relative_to(REPO)}")
    else:
        from sandbox.generator import GeneratorConfig, generate

        _log(f"generating {citizens} citizens into {data.relative_to(REPO)} ...")
        generate(GeneratorConfig(citizens=citizens, enterprise_ratio=enterprise_ratio, parcel_ratio=1.0), data)
    config = json.loads((data / "config.json").read_text())
    work = WORK / f"incr-{citizens}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh raw zone and warehouse: the first run is a full one
    work.mkdir(parents=True)
    os.environ["LIENTHONG_DATA_DIR"] = str(work)
    settings = load_settings()
    os.environ["LIENTHONG_DATABASE_URL"] = warehouse_url(settings)
    try:
        _log("starting the sandbox (loads the land registries) ...")
        with run_sandbox(data, WORK / f"sbx-{citizens}") as ep:
            os.environ.update(ep.airflow_conn_env())
            provinces = sorted(ep.land_dsns)
            full = _run_child("full", citizens, provinces, dict(os.environ))
            _log(f"changing {fraction:.1%} of the records in each system ...")
            changes = _change_sources(data, ep, fraction, datetime.now(UTC) - timedelta(seconds=1))
            incremental = _run_child("incremental", citizens, provinces, dict(os.environ))
    finally:
        stop_embedded(settings.embedded_pgdata)

    stages = []
    for name in STAGES:
        f, i = full["stages_s"][name], incremental["stages_s"][name]
        stages.append({"stage": name, "full_s": f, "incremental_s": i, "ratio": round(i / f, 3) if f else None})
    stages.append({"stage": "total", "full_s": full["total_s"], "incremental_s": incremental["total_s"],
                   "ratio": round(incremental["total_s"] / full["total_s"], 3)})
    fetched: dict[str, dict] = {}
    steps_f, steps_i = full["steps"], incremental["steps"]
    for source, change in changes.items():
        if source in ("population", "business"):
            got, full_rows = steps_i[f"ingest_{source}"]["rows"], steps_f[f"ingest_{source}"]["rows"]
        else:
            _, province, table = source.split("/")
            got = steps_i[f"ingest_land_{province}"]["tables"][table]["rows"]
            full_rows = steps_f[f"ingest_land_{province}"]["tables"][table]["rows"]
        expected = change["rows_changed"] + change["boundary_rows"]
        fetched[source] = {**change, "fetched": got, "expected": expected, "as_expected": got == expected,
                           "full_run_rows": full_rows, "fetched_share_of_full": round(got / full_rows, 4) if full_rows else None}
    same_staged = {ds: (steps_f[f"stage_{ds}"]["rows_staged"], steps_i[f"stage_{ds}"]["rows_staged"]) for ds in DATASETS}
    return {
        "citizens": citizens,
        "changed_fraction": fraction,
        "source": {"data_dir": str(data.relative_to(REPO)), "enterprise_ratio": config.get("enterprise_ratio"),
                   "parcel_ratio": config.get("parcel_ratio"), "counts": config.get("counts")},
        "stages": stages,
        "fetched_vs_changed": fetched,
        "all_fetches_as_expected": all(v["as_expected"] for v in fetched.values()),
        "staged_rows_full_vs_incremental": same_staged,
        "staged_rows_equal": all(a == b for a, b in same_staged.values()),
        "runs": {"full": full, "incremental": incremental},
        "peak_rss_mib": max(full["peak_rss_mib"], incremental["peak_rss_mib"]),
        "machine": {"cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01, help="share of each system's records changed (0.01 = 1 %%)")
    ap.add_argument("--enterprise-ratio", type=float, default=0.075, help="only when data-N has to be generated")
    ap.add_argument("--result", type=Path, default=RESULTS, help="where to write the JSON results")
    ap.add_argument("--child", choices=("full", "incremental"))
    ap.add_argument("--provinces", default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, [p for p in args.provinces.split(",") if p])))
        return 0
    if not 0 < args.changed <= 1:
        ap.error("--changed must be in (0, 1]")
    WORK.mkdir(parents=True, exist_ok=True)
    r = measure(args.citizens, args.changed, args.enterprise_ratio)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(r, indent=2) + "\n")
    print(f"{'stage':<18} {'full s':>9} {'incr. s':>9} {'ratio':>7}")
    for s in r["stages"]:
        print(f"{s['stage']:<18} {s['full_s']:>9.1f} {s['incremental_s']:>9.1f} {s['ratio'] if s['ratio'] is not None else '-':>7}")
    print(f"{'source':<24} {'changed':>8} {'boundary':>9} {'fetched':>8} {'full run':>9}")
    for source, f in r["fetched_vs_changed"].items():
        print(f"{source:<24} {f['rows_changed']:>8} {f['boundary_rows']:>9} {f['fetched']:>8} {f['full_run_rows']:>9}"
              f"{'' if f['as_expected'] else '  (expected ' + str(f['expected']) + ')'}")
    print(f"staged rows equal in both runs: {r['staged_rows_equal']}; peak RSS {r['peak_rss_mib']:.0f} MiB")
    print(f"results: {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
