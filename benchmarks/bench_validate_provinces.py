"""Validating the first load by province (or hash share) against validating it whole, on a generated country
(issue 21).

    .venv/bin/python benchmarks/bench_validate_provinces.py --provinces 5 --citizens 1000000

Uses the country `bench_partitions.py` prepared (`benchmarks/.work/partitions-<P>-<N>/`; prepared the same way
when missing). Each dataset (the land datasets, split by province; citizen, split in hash shares of
`LIENTHONG_STAGE_CHUNK_ROWS` changed rows) is first staged whole from every landing into a scratch data
folder (a rebuild, as the first load), then its staged version is validated twice, each step in a process of
its own:

- **whole**: `quality.validate` on every row, as the validate task does without parts;
- **in parts**: `validatestep.plan_validate`, each part's `validatestep.validate_part` (as the integrate DAG's
  mapped `validate_part_<dataset>` tasks run on Celery workers), then `quality.validate(parts=...)`, the
  combining validate task (the uniqueness rules on the whole version).

Both write Data Docs and the JSON results, and store nothing in the warehouse. Each step's seconds and peak
RSS (VmHWM of its own process) are reported, and the two verdicts compared: the per-rule outcomes, the gate
and the failing and flagged rows must be equal. Writes `benchmarks/results/validate-provinces-<P>-<N>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _memory import rss_mib
from bench_partitions import _root, country_arguments, prepare
from bench_stage_provinces import _makespan

DATASETS = ("parcel", "land_holder", "certificate", "citizen")
RESULTS = Path(__file__).resolve().parent / "results"


def _data_dir(provinces: int, citizens: int) -> Path:
    return _root(provinces, citizens) / "validate" / "data"


def _verdict(result: Any) -> dict[str, Any]:
    """What the comparison reads from a `quality.QualityResult`: outcomes, gate, failing and flagged rows."""
    def ordered(by_rule: dict[str, list[Any]]) -> dict[str, list[str]]:
        return {k: sorted(json.dumps(v, sort_keys=True, default=str) for v in vs) for k, vs in by_rule.items()}

    return {"gate_passed": result.gate_passed, "rows_changed": result.rows_changed, "parts": result.parts,
            "outcomes": [[o.rule, o.unexpected_staged, o.unexpected_quarantined, o.element_count, o.success]
                         for o in result.outcomes],
            "failed": ordered(result.failed_merge_keys), "flagged": ordered(result.flagged),
            "failed_rows": {k: len(v) for k, v in result.failed_rows.items()}}


def child(step: str, dataset: str, part: str | None) -> dict[str, Any]:
    """One step in this process, with `LIENTHONG_DATA_DIR` set by the parent."""
    from lienthong import quality
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.staging import quarantine_by_rule
    from lienthong.validatestep import baseline, plan_validate, planned_parts, validate_part

    s = load_settings()
    c = contract(dataset)
    summary_file = s.data_dir / f"{dataset}.staged.json"
    t0 = time.monotonic()
    out: dict[str, Any]
    if step == "stage":
        from bench_stage_provinces import child as stage_child

        out = stage_child("whole", dataset, 0, 0, None)
        summary_file.write_text(json.dumps(out))
    else:
        staged = json.loads(summary_file.read_text())
        base = baseline(dataset, "bench", staged, s)
        kw = {"run_id": "bench", "since_version": base["since"], "rows_in": base["rows_in"], "store": False,
              "quarantine_by_rule": quarantine_by_rule(staged["quarantine_path"]), "reports_dir": s.reports_dir}
        if step == "whole":
            out = _verdict(quality.validate(c, staged["staged_path"], **kw))
        elif step == "plan":
            out = plan_validate(dataset, "bench", staged, s)
        elif step == "part":
            out = validate_part(dataset, "bench", str(part), s)
        else:  # combine
            parts = planned_parts(dataset, "bench", base, c.version, s)
            if parts is None:
                raise RuntimeError(f"{dataset}: the validation parts do not hold (see the log)")
            out = _verdict(quality.validate(c, staged["staged_path"], parts=parts, **kw))
    return {**out, "seconds": round(time.monotonic() - t0, 2), "peak_rss_mib": rss_mib()}


def _run(step: str, dataset: str, args: argparse.Namespace, part: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "LIENTHONG_DATA_DIR": str(_data_dir(args.provinces, args.citizens))}
    argv = [sys.executable, __file__, "--child", step, "--dataset", dataset, "--provinces", str(args.provinces),
            "--citizens", str(args.citizens)] + (["--part", part] if part else [])
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{step} {dataset} {part or ''} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = country_arguments(__doc__.splitlines()[0], "validate-provinces-<P>-<N>.json")
    parser.add_argument("--child", choices=("stage", "whole", "plan", "part", "combine"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dataset, args.part), default=str), flush=True)
        return 0
    prepared = prepare(args.provinces, args.citizens, args.seed)
    data = _data_dir(args.provinces, args.citizens)
    shutil.rmtree(data.parent, ignore_errors=True)
    data.mkdir(parents=True)
    (data / "raw").symlink_to(_root(args.provinces, args.citizens) / "data" / "raw", target_is_directory=True)
    per_dataset: dict[str, Any] = {}
    for d in DATASETS:
        staged = _run("stage", d, args)
        print(f"{d}: staged {staged['rows_staged']:,} rows in {staged['seconds']} s", flush=True)
        whole = _run("whole", d, args)
        print(f"{d} whole: {whole['rows_changed']:,} rows in {whole['seconds']} s, peak RSS {whole['peak_rss_mib']} MiB",
              flush=True)
        plan = _run("plan", d, args)
        if not plan["partitions"]:  # the validate task validates it whole, as above
            print(f"{d}: no parts planned ({plan['reason']})", flush=True)
            per_dataset[d] = {"staged_rows": staged["rows_staged"], "stage_s": staged["seconds"], "plan": plan,
                              "whole": {k: whole[k] for k in ("seconds", "peak_rss_mib", "rows_changed", "gate_passed")}}
            continue
        parts = {p: _run("part", d, args, p) for p in plan["partitions"]}
        for p, part in parts.items():
            print(f"{d} part {p}: {part['rows_changed']:,} rows in {part['seconds']} s, peak RSS "
                  f"{part['peak_rss_mib']} MiB", flush=True)
        combine = _run("combine", d, args)
        print(f"{d} combining: {combine['seconds']} s, peak RSS {combine['peak_rss_mib']} MiB", flush=True)
        compared = ("gate_passed", "rows_changed", "outcomes", "failed", "flagged", "failed_rows")
        differing = [k for k in compared if whole[k] != combine[k]]
        print(f"{d} equal to whole: {not differing} {differing or ''}", flush=True)
        per_dataset[d] = {
            "staged_rows": staged["rows_staged"], "stage_s": staged["seconds"],
            "whole": {k: whole[k] for k in ("seconds", "peak_rss_mib", "rows_changed", "gate_passed")},
            "plan": plan,
            "parts": {p: {k: v[k] for k in ("seconds", "peak_rss_mib", "rows_changed", "failing")} for p, v in parts.items()},
            "combine": {k: combine[k] for k in ("seconds", "peak_rss_mib", "parts")},
            "equal": not differing, "differing": differing,
            "failing_rows_compared": sum(len(v) for v in whole["failed"].values()) + sum(len(v) for v in whole["flagged"].values()),
            "largest_part_peak_rss_mib": max((p["peak_rss_mib"] for p in parts.values()), default=None),
            "largest_part_s": max((p["seconds"] for p in parts.values()), default=None),
            "parts_s_sum": round(sum(p["seconds"] for p in parts.values()), 2),
            "in_parts_s_with_w_workers": {
                w: round(plan["seconds"] + _makespan([p["seconds"] for p in parts.values()], w) + combine["seconds"], 2)
                for w in sorted({1, 2, max(len(parts), 1)})},
        }
    result = {"provinces": prepared["provinces"], "citizens": args.citizens, "datasets": per_dataset,
              "all_equal": all(v.get("equal", True) for v in per_dataset.values()),
              "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    path = Path(args.result) if args.result else RESULTS / f"validate-provinces-{args.provinces}-{args.citizens}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {path}", flush=True)
    shutil.rmtree(data.parent, ignore_errors=True)
    return 0 if result["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
