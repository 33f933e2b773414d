"""Run every pipeline benchmark, in order, at one province size, and record one summary file.

    .venv/bin/python benchmarks/run_all.py --citizens 2000000        # or: make bench [SCALE=small|province|N]

Stages (each an existing script, run as a subprocess; this file only orchestrates):

1. generator   bench_generator.py --citizens N               (generator defaults; files in a temp folder)
2. connectors  bench_connectors.py --citizens N --enterprise-ratio R   (all modes, bare loops included, so
               the connector / bare ratios come from the same run; data-N, run-N and sbx-N under .work)
3. integrate   bench_integrate.py --data-dir .work/run-N    (stage + validate, per dataset)
4. linkage     bench_linkage.py --sizes N --baseline         (reconciliation + accuracy on the staged zone; with
               --baseline, person linkage against Splink's default set-up on the same tables, up to
               --baseline-max-citizens, default 100k: the default blocking's candidate pairs grow with N^2)
5. publish     bench_publish.py --sizes min(N, 1M)
6. incremental bench_incremental.py --citizens N             (a full pipeline run, 1 % of every source's records
               changed in the sandbox, an incremental run; seconds per stage, rows fetched vs changed;
               incr-N under .work, the sandbox in sbx-N)

Per stage it records wall seconds, the script's own result JSON, a throughput figure, the largest peak RSS
the script reported, and afterwards the disk used by .work/*-N. Output: benchmarks/results/bench-N.json.

Not clobbering the committed results: generator, connectors, publish and incremental take an output path
and write into benchmarks/.work/bench-N/; integrate and linkage always write results/integrate.json and
results/linkage.json, so those two files are copied aside before the stage and restored after it (their
content for this run is kept in bench-N.json). The folders .work/data-N, run-N, sbx-N and incr-N are removed
first (`--keep-work` keeps them) so that the raw zone holds this run only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
WORK_DIRS = ("data", "run", "sbx", "incr")  # .work/<d>-N: generated sources, pipeline zones, land sandbox, incremental run


def _max_rss(obj) -> float:
    """The largest `peak_rss_mib` anywhere in a script's result JSON."""
    if isinstance(obj, dict):
        return max([float(obj.get("peak_rss_mib") or 0)] + [_max_rss(v) for v in obj.values()])
    if isinstance(obj, list):
        return max([_max_rss(v) for v in obj] + [0.0])
    return 0.0


def _throughput(stage: str, r: dict) -> dict:
    if stage == "generator":
        return {"source_rows_per_s": r["rows_per_second"], "citizens_per_s": r["citizens_per_second"]}
    if stage == "connectors":
        run = r["runs"][0]
        return {**{mode: m["rows_per_s"] for mode, m in run["medians"].items()},
                "ratio_connector_to_bare": run["ratio_connector_to_bare"]}
    if stage == "integrate":
        return {d["dataset"]: round(d["rows_in"] / max(d["stage_s"] + d["validate_s"], 1e-9)) for d in r["results"]}
    if stage == "linkage":
        x = r["results"][0]
        out = {"citizens_per_s": round(x["citizens"] / x["reconcile_s"])}
        if "baseline" in x:
            c = x["baseline"]["comparison"]
            out.update({f"vs_{mode}": {"f1_ours_minus_baseline": v["f1_ours_minus_baseline"],
                                       "time_baseline_over_ours": v["time_baseline_over_ours"]} for mode, v in c.items()})
        return out
    if stage == "incremental":
        st = {x["stage"]: x for x in r["stages"]}
        ingest = [st[k] for k in ("ingest_population", "ingest_business", "ingest_land")]
        f = r["fetched_vs_changed"].values()
        return {"full_s": st["total"]["full_s"], "incremental_s": st["total"]["incremental_s"],
                "ratio": st["total"]["ratio"],
                "ingest_ratio": round(sum(x["incremental_s"] for x in ingest) / max(sum(x["full_s"] for x in ingest), 1e-9), 3),
                "rows_changed": sum(x["rows_changed"] for x in f), "rows_fetched": sum(x["fetched"] for x in f),
                "all_fetches_as_expected": r["all_fetches_as_expected"]}
    if stage == "publish":
        return {str(s["rows"]): s["rows_per_s"] for s in r["sizes"]}
    return {}


def run_stage(name: str, cmd: list[str], out: Path, protect: Path | None = None) -> dict:
    """Run one script; read its result file `out`. `protect`: a committed result file to restore afterwards."""
    saved = None
    if protect is not None and protect.exists():
        saved = protect.with_suffix(protect.suffix + ".run_all-saved")
        shutil.copy2(protect, saved)
    print(f"[run_all] {name}: start  ({' '.join(cmd[1:])})", flush=True)
    t0 = time.monotonic()
    try:
        rc = subprocess.run(cmd, cwd=REPO).returncode
        seconds = time.monotonic() - t0
        result = json.loads(out.read_text()) if rc == 0 and out.exists() else None
    finally:
        if saved is not None:
            shutil.move(saved, protect)
    print(f"[run_all] {name}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.1f} s", flush=True)
    entry = {"seconds": round(seconds, 1), "exit_code": rc, "command": " ".join(["python", *map(_rel, cmd[1:])])}
    if result is not None:
        entry.update(throughput=_throughput(name, result), peak_rss_mib=_max_rss(result) or None, result=result)
    return entry


def _rel(arg: str) -> str:
    return arg.replace(str(REPO) + "/", "")


def _du_mib(path: Path) -> float | None:
    if not path.exists():
        return None
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()
    return round(int(out[0]) / 1024, 1) if out else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=2_000_000)
    ap.add_argument("--enterprise-ratio", type=float, default=0.075, help="0.075: 150k enterprises per 2M citizens")
    ap.add_argument("--keep-work", action="store_true", help="do not remove .work/{data,run,sbx,incr}-N first")
    ap.add_argument("--only", help="comma-separated subset of: generator,connectors,integrate,linkage,publish,incremental")
    ap.add_argument("--baseline-max-citizens", type=int, default=100_000,
                    help="compare linkage with Splink's default set-up up to this size (its candidate pairs grow with N^2)")
    args = ap.parse_args()
    n = args.citizens
    py = sys.executable
    tmp = WORK / f"bench-{n}"
    tmp.mkdir(parents=True, exist_ok=True)
    if not args.keep_work:
        for d in WORK_DIRS:
            shutil.rmtree(WORK / f"{d}-{n}", ignore_errors=True)
    publish_rows = min(n, 1_000_000)
    baseline = n <= args.baseline_max_citizens
    stages = {
        "generator": ([py, str(BENCH / "bench_generator.py"), "--citizens", str(n), "--result", str(tmp / "generator.json")],
                      tmp / "generator.json", None),
        # three rounds per mode up to 1M citizens (medians); one at province scale, where a round takes 10 min
        "connectors": ([py, str(BENCH / "bench_connectors.py"), "--citizens", str(n), "--enterprise-ratio",
                        str(args.enterprise_ratio), "--repeats", "3" if n <= 1_000_000 else "1",
                        "--results", str(tmp / "connectors.json")], tmp / "connectors.json", None),
        "integrate": ([py, str(BENCH / "bench_integrate.py"), "--data-dir", str(WORK / f"run-{n}")],
                      RESULTS / "integrate.json", RESULTS / "integrate.json"),
        "linkage": ([py, str(BENCH / "bench_linkage.py"), "--sizes", str(n), *(["--baseline"] if baseline else [])],
                    RESULTS / "linkage.json", RESULTS / "linkage.json"),
        "publish": ([py, str(BENCH / "bench_publish.py"), "--sizes", str(publish_rows), "--out", str(tmp / "publish.json")],
                    tmp / "publish.json", None),
        "incremental": ([py, str(BENCH / "bench_incremental.py"), "--citizens", str(n), "--enterprise-ratio",
                         str(args.enterprise_ratio), "--result", str(tmp / "incremental.json")], tmp / "incremental.json", None),
    }
    only = set(args.only.split(",")) if args.only else set(stages)
    summary: dict = {"citizens": n, "enterprise_ratio": args.enterprise_ratio, "parcel_ratio": 1.0,
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {},
                     "linkage_baseline": "run (bench_linkage.py --baseline)" if baseline else
                     f"not run: above --baseline-max-citizens {args.baseline_max_citizens}"}
    t0 = time.monotonic()
    failed = False
    for name, (cmd, out, protect) in stages.items():
        if name not in only:
            continue
        if out.exists() and protect is None:
            out.unlink()  # a stale file from an earlier run must not pass for this one
        summary["stages"][name] = entry = run_stage(name, cmd, out, protect)
        if entry["exit_code"] != 0:
            failed = True
            break
    summary["total_seconds"] = round(time.monotonic() - t0, 1)
    summary["disk_mib"] = {f"{d}-{n}": _du_mib(WORK / f"{d}-{n}") for d in WORK_DIRS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / f"bench-{n}.json"
    dest.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[run_all] total {summary['total_seconds']:.1f} s; disk {summary['disk_mib']}")
    for name, e in summary["stages"].items():
        print(f"[run_all] {name:<11} {e['seconds']:>8.1f} s  peak RSS {e.get('peak_rss_mib') or 0:>7.0f} MiB  {e.get('throughput')}")
    print(f"[run_all] results: {dest.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
