"""Staging the land datasets by province against staging them whole, on a generated country (issue 21).

    .venv/bin/python benchmarks/bench_stage_provinces.py --provinces 5 --citizens 1000000
    .venv/bin/python benchmarks/bench_stage_provinces.py --provinces 5 --citizens 5000000 --datasets citizen \
        --result benchmarks/results/stage-shares-5-5000000.json

Uses the country `bench_partitions.py` prepared (`benchmarks/.work/partitions-<P>-<N>/`: generated, served by
the sandbox and landed by the real connectors; prepared here the same way when missing). Each land dataset
(parcel, land_holder, certificate) is staged from every landing as the first load does (a rebuild), into a
scratch data folder whose raw zone is the country's, twice:

- **whole**: `staging.stage_json_source` in one process (above `LIENTHONG_STAGE_CHUNK_ROWS` raw rows, in hash
  buckets of the identity, one after another);
- **by province**: `stagestep.plan_stage` (a process), then each province's part (`stagestep.stage_part`)
  in a process of its own, as the integrate DAG's mapped `stage_part_<dataset>` tasks run on Celery
  workers, then the commit of the parts (`stagestep._commit_parts`, a process).

`--datasets citizen` (or enterprise, legal_representative) measures a national source instead, whose first
load is staged in hash shares of the record identity (`LIENTHONG_STAGE_CHUNK_ROWS` raw rows each), every
share reading all the landings. Each step's seconds and peak RSS (VmHWM of its own process) are reported, and the two results are compared:
equal rows in both tables (but for `_staged_version`, which names each province's commit) and equal counts.
Writes `benchmarks/results/stage-provinces-<P>-<N>.json`.
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

LAND = ("parcel", "land_holder", "certificate")
RESULTS = Path(__file__).resolve().parent / "results"


def _data_dir(provinces: int, citizens: int, form: str) -> Path:
    """A scratch data folder for one form, its raw zone the country's."""
    return _root(provinces, citizens) / f"stage-{form}" / "data"


def child(step: str, dataset: str, provinces: int, citizens: int, province: str | None) -> dict[str, Any]:
    """One step in this process, with `LIENTHONG_DATA_DIR` set by the parent."""
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source

    s = load_settings()
    c = contract(dataset)
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    if step == "whole":
        files = StagePlan.from_contract(c).raw_files(s.raw_dir)
        res = stage_json_source(c, files, run_id="bench", staged_dir=s.staged_dir, quarantine_dir=s.quarantine_dir,
                                full=True, raw_dir=s.raw_dir)
        out = _summary(res.as_dict())
    elif step == "plan":
        from lienthong.stagestep import plan_stage

        out = plan_stage(dataset, "bench", s)
    elif step == "part":
        from lienthong.stagestep import stage_part

        part = stage_part(dataset, "bench", str(province), s)
        out = {k: part[k] for k in ("raw_rows", "rows_in", "rows_staged", "rows_quarantined")}
    elif step == "commit":
        from lienthong.stagestep import _commit_parts, _to_stage

        _, new, why = _to_stage(dataset, s, False)
        res = _commit_parts(c, "bench", s, new, why)
        if res is None:
            raise RuntimeError(f"{dataset}: the province parts were not committed (see the log)")
        out = _summary(res.as_dict())
    return {**out, "seconds": round(time.monotonic() - t0, 2), "peak_rss_mib": rss_mib()}


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("mode", "raw_rows", "rows_in", "rows_staged", "rows_quarantined", "staged_path",
                                   "quarantine_path")}


def _run(step: str, dataset: str, provinces: int, citizens: int, form: str, province: str | None = None) -> dict:
    env = {**os.environ, "LIENTHONG_DATA_DIR": str(_data_dir(provinces, citizens, form))}
    args = [sys.executable, __file__, "--child", step, "--dataset", dataset, "--provinces", str(provinces),
            "--citizens", str(citizens)] + (["--province", province] if province else [])
    done = subprocess.run(args, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{step} {dataset} {province or ''} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _equal(whole: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Whether the two results hold the same rows (but for `_staged_version`) and counts."""
    import duckdb

    from lienthong import zones

    out: dict[str, Any] = {k: whole[k] == mine[k] for k in ("raw_rows", "rows_in", "rows_staged", "rows_quarantined")}
    con = duckdb.connect()
    for table in ("staged_path", "quarantine_path"):
        zones.register(con, "a", whole[table])
        zones.register(con, "b", mine[table])
        cols = [r[0] for r in con.execute("DESCRIBE a").fetchall() if r[0] not in ("_staged_version", "run_id")]
        sel = ", ".join(f'"{c}"' for c in cols)
        differ = con.execute(f"""SELECT count(*) FROM ((SELECT {sel} FROM a EXCEPT ALL SELECT {sel} FROM b)
                                 UNION ALL (SELECT {sel} FROM b EXCEPT ALL SELECT {sel} FROM a))""").fetchone()
        out[table.removesuffix("_path") + "_rows_differing"] = int((differ or (0,))[0])
    out["equal"] = all(v is True or v == 0 for v in out.values())
    return out


def main() -> int:
    parser = country_arguments(__doc__.splitlines()[0], "stage-provinces-<P>-<N>.json")
    parser.add_argument("--child", choices=("whole", "plan", "part", "commit"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--province", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", default=",".join(LAND), help="comma-separated (default: the land datasets)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dataset, args.provinces, args.citizens, args.province)), flush=True)
        return 0
    prepared = prepare(args.provinces, args.citizens, args.seed)
    raw = _root(args.provinces, args.citizens) / "data" / "raw"
    for form in ("whole", "provinces"):
        data = _data_dir(args.provinces, args.citizens, form)
        shutil.rmtree(data.parent, ignore_errors=True)
        data.mkdir(parents=True)
        (data / "raw").symlink_to(raw, target_is_directory=True)
    per_dataset: dict[str, Any] = {}
    for d in args.datasets.split(","):
        whole = _run("whole", d, args.provinces, args.citizens, "whole")
        print(f"{d} whole: {whole['rows_in']:,} rows in {whole['seconds']} s, peak RSS {whole['peak_rss_mib']} MiB",
              flush=True)
        plan = _run("plan", d, args.provinces, args.citizens, "provinces")
        parts = {p: _run("part", d, args.provinces, args.citizens, "provinces", p) for p in plan["partitions"]}
        for p, part in parts.items():
            print(f"{d} part {p}: {part['rows_in']:,} rows in {part['seconds']} s, peak RSS "
                  f"{part['peak_rss_mib']} MiB", flush=True)
        commit = _run("commit", d, args.provinces, args.citizens, "provinces")
        print(f"{d} commit of the parts: {commit['seconds']} s, peak RSS {commit['peak_rss_mib']} MiB", flush=True)
        check = _equal(whole, commit)
        print(f"{d} equal to whole: {check}", flush=True)
        per_dataset[d] = {
            "whole": whole, "plan": plan, "parts": parts, "commit": commit, "check": check,
            "largest_part_peak_rss_mib": max(p["peak_rss_mib"] for p in parts.values()),
            "largest_part_s": max(p["seconds"] for p in parts.values()),
            "parts_s_sum": round(sum(p["seconds"] for p in parts.values()), 2),
            "by_province_s_with_w_workers": {
                w: round(plan["seconds"] + _makespan([p["seconds"] for p in parts.values()], w) + commit["seconds"], 2)
                for w in (1, 2, len(parts))},
        }
    result = {"provinces": prepared["provinces"], "citizens": args.citizens, "datasets": per_dataset,
              "all_equal": all(v["check"]["equal"] for v in per_dataset.values()),
              "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    path = Path(args.result) if args.result else RESULTS / f"stage-provinces-{args.provinces}-{args.citizens}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {path}", flush=True)
    for form in ("whole", "provinces"):
        shutil.rmtree(_data_dir(args.provinces, args.citizens, form).parent, ignore_errors=True)
    return 0 if result["all_equal"] else 1


def _makespan(seconds: list[float], workers: int) -> float:
    """The time `workers` workers take for tasks of these durations, longest first to the least loaded."""
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


if __name__ == "__main__":
    sys.exit(main())
