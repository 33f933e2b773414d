"""Reconciliation (linkage + golden records + findings) time, peak RSS and accuracy at several province sizes.

Works on what the connector benchmark landed: for each size N, `benchmarks/.work/run-N` (raw zone) and
`benchmarks/.work/data-N/truth` (ground truth), i.e. after `bench_connectors.py --citizens N`. The six
datasets are staged first when that run has no staged zone yet (timed apart). Each size runs in its own
child process, so its peak RSS is its own.

    .venv/bin/python benchmarks/bench_linkage.py --sizes 200000,1000000

Writes benchmarks/results/linkage.json: per size, seconds per step (dedupe, each link type, golden records,
findings), the exact / legacy / probabilistic split per link type, findings by type, peak RSS, and
precision / recall / F1 per link type against the ground truth; plus the growth ratio time(N)/time(N0)
against N/N0 (1.0 per doubling = linear).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _latest_staged(run_dir: Path, dataset: str) -> Path | None:
    files = sorted((run_dir / "staged" / dataset).glob("*/*.parquet"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def child(size: int) -> dict:
    import pyarrow.parquet as pq

    run_dir = WORK / f"run-{size}"
    os.environ["LIENTHONG_DATA_DIR"] = str(run_dir)
    from lienthong.contracts import contract
    from lienthong.reconcile.run import reconcile_tables
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source
    from sandbox.accuracy import link_accuracy

    settings = load_settings()
    t0 = time.monotonic()
    staged_now = []
    for ds in DATASETS:
        if _latest_staged(run_dir, ds) is None:
            c = contract(ds)
            stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id=f"bench-{ds}-{time.time_ns()}",
                              staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            staged_now.append(ds)
    stage_s = time.monotonic() - t0
    staged = {ds: pq.read_table(_latest_staged(run_dir, ds)) for ds in DATASETS}
    t1 = time.monotonic()
    tables, found, metrics = reconcile_tables(staged, settings)
    total = time.monotonic() - t1
    accuracy = link_accuracy(tables, staged["citizen"], staged["enterprise"], WORK / f"data-{size}" / "truth")
    return {
        "citizens": size,
        "rows": {ds: t.num_rows for ds, t in staged.items()},
        "staged_first_s": round(stage_s, 1) if staged_now else None,
        "reconcile_s": round(total, 2),
        "steps_s": metrics["seconds"],
        "links": metrics["links"],
        "findings": dict(collections.Counter(f.type for f in found)),
        "integrated_rows": {n: t.num_rows for n, t in tables.items()},
        "accuracy": accuracy,
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--child", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        if not (WORK / f"run-{size}" / "raw").exists():
            print(f"no raw zone for {size}: run bench_connectors.py --citizens {size} first", file=sys.stderr)
            return 1
        out = subprocess.run([sys.executable, __file__, "--child", str(size)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-4000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        acc = r["accuracy"]
        print(f"{size:>9} citizens: reconcile {r['reconcile_s']:>7.1f}s  RSS {r['peak_rss_mib']:>6.0f} MiB  "
              f"rep F1 {acc['representative_citizen']['f1']:.4f}  holder F1 {acc['holder_citizen']['f1']:.4f}  "
              f"auto-accepted precision {acc['all_auto_accepted_precision']:.5f}", flush=True)
    base = results[0]
    for r in results:
        r["growth"] = {"size_ratio": round(r["citizens"] / base["citizens"], 2),
                       "time_ratio": round(r["reconcile_s"] / base["reconcile_s"], 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "linkage.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
