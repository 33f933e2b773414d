"""Standardize + validate throughput per dataset, the share of time spent in Great Expectations, peak RSS.

Works on the raw zone a connector benchmark landed (default: benchmarks/.work/run-1000000, i.e. after
`bench_connectors.py --citizens 1000000`), so it measures staging on what the real connectors wrote. Each
dataset runs in its own child process, so peak RSS is its own.

    .venv/bin/python benchmarks/bench_integrate.py [--data-dir benchmarks/.work/run-1000000] [--profile citizen]

Writes benchmarks/results/integrate.json; `--profile DATASET` also writes a cProfile of that dataset's
staging to benchmarks/results/integrate-<dataset>.prof and prints the top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")




def child(dataset: str, data_dir: Path, profile: bool) -> dict:
    os.environ["LIENTHONG_DATA_DIR"] = str(data_dir)
    from lienthong.contracts import contract
    from lienthong.db import warehouse_url
    from lienthong.quality import validate
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source

    settings = load_settings()
    url = warehouse_url(settings)
    c = contract(dataset)
    files = StagePlan.from_contract(c).raw_files(settings.raw_dir)
    run_id = f"bench-{dataset}-{time.time_ns()}"
    t0 = time.monotonic()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    staged = stage_json_source(c, files, run_id=run_id, staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
    t_stage = time.monotonic() - t0
    if profile:
        prof.disable()
        out = RESULTS / f"integrate-{dataset}.prof"
        prof.dump_stats(out)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    t1 = time.monotonic()
    verdict = validate(c, staged.staged_path, run_id=run_id, rows_in=staged.rows_in,
                       quarantine_by_rule=staged.quarantine_by_rule, warehouse_url=url)
    t_validate = time.monotonic() - t1
    total = t_stage + t_validate
    return {
        "dataset": dataset, "raw_rows": staged.raw_rows, "rows_in": staged.rows_in, "rows_staged": staged.rows_staged,
        "rows_quarantined": staged.rows_quarantined, "repairs": sum(staged.repairs.values()),
        "findings": sum(staged.findings.values()), "stage_s": round(t_stage, 2), "validate_s": round(t_validate, 2),
        "gx_share": round(t_validate / total, 3), "s_per_million_rows": round(total / max(staged.rows_in, 1) * 1e6, 1),
        "gate_passed": verdict.gate_passed, "peak_rss_mib": rss_mib(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=REPO / "benchmarks" / ".work" / "run-1000000")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--profile", default="")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.profile == args.child)))
        return 0
    results = []
    for ds in args.datasets.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", ds, "--data-dir", str(args.data_dir), "--profile", args.profile],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        if args.profile == ds:
            print(out.stderr[-6000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{ds:<22} in {r['rows_in']:>9}  stage {r['stage_s']:>7.1f}s  validate {r['validate_s']:>6.1f}s  "
              f"GX share {r['gx_share']:.0%}  {r['s_per_million_rows']:>6.1f} s/M rows  RSS {r['peak_rss_mib']:>6.0f} MiB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "integrate.json").write_text(json.dumps({"data_dir": str(args.data_dir), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
