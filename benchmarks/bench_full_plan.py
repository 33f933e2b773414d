"""Memory and time of a full relink's plan task (`plan_person_links` when everything is relinked by province):
the link state's registry and left records committed from the staged zone, and the plan's left records
written by partition (`linkstate.prepare_full`, `linkwork.write_plan`).

    .venv/bin/python benchmarks/bench_full_plan.py --provinces 5 --citizens 5000000 \\
        [--baseline-src DIR --baseline-label L] [--result benchmarks/results/full-plan-5-5000000.json]

Works on the country `bench_partitions.py` prepared (`benchmarks/.work/partitions-<P>-<N>/`: its staged zone
and its models; run that first). Each variant runs in a child process of its own, so that its peak resident
set (VmHWM) is its own; the child samples its resident set every 0.25 s. The plan is the one of a model
change (every link type has a model, so nothing is trained): `prepare_full`, then `write_plan`, into the
country's integrated folder, made for the child and removed afterwards. `--baseline-src` runs the same child against another source
tree (e.g. a `git worktree` of an earlier commit, put first on the child's import path), to compare the code
before a change with the code now on the same country in the same run.

Writes `--result` (JSON: per variant the peak RSS, the seconds of each step, the rows) and a plot of each
variant's resident set over time beside it (`.png`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"


def _root(provinces: int, citizens: int) -> Path:
    return WORK / f"partitions-{provinces}-{citizens}"


def child(provinces: int, citizens: int) -> dict[str, Any]:
    """One plan of a full relink on the prepared country, in this process."""
    root = _root(provinces, citizens)
    prepared = json.loads((root / "prepared.json").read_text())
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 2), rss_mib("VmRSS")))
            time.sleep(0.25)

    import lienthong
    from lienthong.reconcile import linkstate, linkwork, models
    from lienthong.settings import load_settings

    settings = load_settings()
    loaded = {t: models.load(argparse.Namespace(path=m["path"], sha256=m["sha256"], link_type=t,
                                                model_id=m["model_id"]))
              for t, m in prepared["models"].items()}
    inputs = dict(prepared["staged"])
    baseline = rss_mib("VmRSS")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t1 = time.monotonic()
    full, trained = linkstate.prepare_full(settings.integrated_dir, inputs, loaded, run_id="bench-full-plan",
                                           reason="bench: another model", settings=settings)
    t2 = time.monotonic()
    prepare_peak = rss_mib()
    plan = linkwork.write_plan(settings, "bench-full-plan", {"bench": True}, full, inputs)
    t3 = time.monotonic()
    stop.set()
    thread.join()
    return {"source": str(Path(lienthong.__file__).resolve().parent.parent), "baseline_rss_mib": baseline,
            "peak_rss_mib": rss_mib(), "prepare_peak_rss_mib": prepare_peak,
            "seconds": {"prepare_full": round(t2 - t1, 2), "write_plan": round(t3 - t2, 2),
                        "total": round(t3 - t1, 2)},
            "counts": full.counts, "trained": sorted(trained), "left_records": plan["left_records"],
            "partitions": plan["sizes"], "samples": samples}


def _run_child(args: argparse.Namespace, src: Path) -> dict[str, Any]:
    # the plan writes the link state and the plan under the country's integrated folder, which the prepared
    # country does not have (`bench_partitions.py` keeps its own under `state/`): made here, removed after
    integrated = _root(args.provinces, args.citizens) / "data" / "integrated"
    if integrated.exists():
        raise SystemExit(f"{integrated} exists: not this benchmark's; remove it first")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--provinces", str(args.provinces),
                              "--citizens", str(args.citizens)], stdout=subprocess.PIPE, text=True, env=env, cwd=src)
    finally:
        shutil.rmtree(integrated, ignore_errors=True)
    if out.returncode != 0:
        raise SystemExit(f"child for {src} failed (exit {out.returncode})")
    return json.loads([ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")][-1])


def _plot(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, run in runs.items():
        xs, ys = zip(*run["samples"], strict=True) if run["samples"] else ((), ())
        ax.plot(xs, [y / 1024 for y in ys], label=f"{label}: peak {run['peak_rss_mib'] / 1024:.2f} GiB, "
                                                    f"{run['seconds']['total']:.0f} s")
    ax.set_xlabel("seconds since the plan started")
    ax.set_ylabel("resident set, GiB")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--provinces", type=int, default=5)
    p.add_argument("--citizens", type=int, default=5_000_000)
    p.add_argument("--baseline-src", help="another source tree to run the same child against (runs first)")
    p.add_argument("--baseline-label", default="before")
    p.add_argument("--label", default="now")
    p.add_argument("--result")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.provinces, args.citizens)))
        return
    runs: dict[str, dict[str, Any]] = {}
    if args.baseline_src:
        runs[args.baseline_label] = _run_child(args, Path(args.baseline_src).resolve())
    runs[args.label] = _run_child(args, REPO)
    for label, run in runs.items():
        print(f"{label} ({run['source']}): peak {run['peak_rss_mib']:.0f} MiB (prepare {run['prepare_peak_rss_mib']:.0f}),"
              f" {run['seconds']}, {run['left_records']} left records, registry {run['counts']['registry']}")
    result = Path(args.result or REPO / "benchmarks" / "results" / f"full-plan-{args.provinces}-{args.citizens}.json")
    result.parent.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    result.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "code": head,
                                  "what": "plan of a full relink (prepare_full + write_plan), each variant in a child",
                                  "runs": runs}, indent=1))
    _plot(runs, result.with_suffix(".png"),
          f"Plan of a full relink, {args.provinces} provinces, {args.citizens:,} citizens")
    print(f"results: {result}")


if __name__ == "__main__":
    main()
