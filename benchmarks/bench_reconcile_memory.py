"""Memory of one reconciliation over time: where its peak resident set comes from.

    .venv/bin/python benchmarks/bench_reconcile_memory.py --data-dir DIR [--relink] [--label L] [--result PATH]

Runs `lienthong.reconcile.run.reconcile` in this process on a data dir that `bench_incremental.py` left
(its staged zone and embedded warehouse; started and stopped here), sampling this process's resident set
every 0.5 s from a thread. `--relink` relinks every person record with the persisted models (what
`lienthong rebuild` does: the full reconcile without training); without it the run reconciles whatever
changed since the last one. Each log line of the run is kept with its time and resident set, so the
result names the step each peak falls in (`phases`: from one step's log line to the next, the highest
sample). Writes `--result` (default `benchmarks/results/reconcile-memory-<label>.json`) with the samples,
and a plot of the resident set over time with the steps marked beside it (`.png`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent

# The log line that starts each step (logger, start of its message) and the step's name: a phase runs from its
# line to the next one found.
STEPS = (
    ("lienthong.reconcile.linkstate", "link state", "link state: person links"),
    ("lienthong.reconcile.run", "reconciling", "staged read, duplicates, ID-less and organisation passes, golden records"),
    ("lienthong.reconcile.integrate", "finding rule id_not", "findings"),
    ("lienthong.reconcile.integrate", "finding rule shares", "clustering, entity assignment and commit"),
    ("lienthong.reconcile.run", "entity registry", "integrated tables with entity IDs, findings sync"),
    ("lienthong.reconcile.run", "integrated zone written", "end"),
)


class _Recorder(logging.Handler):
    def __init__(self, t0: float) -> None:
        super().__init__(logging.INFO)
        self.t0, self.lines = t0, []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"t": round(time.monotonic() - self.t0, 1), "rss_mib": rss_mib("VmRSS"),
                           "logger": record.name, "message": record.getMessage()[:300]})


def _phases(lines: list[dict], samples: list[tuple[float, float]], arrow: list[tuple[float, float]],
            end: float) -> list[dict]:
    marks = []
    for logger, start, name in STEPS:
        hit = next((ln for ln in lines if ln["logger"] == logger and ln["message"].startswith(start)
                    and all(ln["t"] >= m["from_s"] for m in marks)), None)
        if hit is not None:
            marks.append({"phase": name, "from_s": hit["t"]})
    out = []
    bounds = [0.0] + [m["from_s"] for m in marks] + [end]
    names = ["start"] + [m["phase"] for m in marks]
    for name, a, b in zip(names, bounds, bounds[1:], strict=False):
        inside = [r for t, r in samples if a <= t <= b]
        pool = [r for t, r in arrow if a <= t <= b]
        out.append({"phase": "set-up" if name == "start" else name, "from_s": a, "to_s": b,
                    "peak_rss_mib": max(inside) if inside else None,
                    "peak_arrow_mib": max(pool) if pool else None})
    return out


def _plot(samples: list[tuple[float, float]], arrow: list[tuple[float, float]], phases: list[dict], path: Path,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 4.5))
    ax.plot([t for t, _ in samples], [r / 1024 for _, r in samples], lw=1.2, label="resident set")
    ax.plot([t for t, _ in arrow], [r / 1024 for _, r in arrow], lw=1.0, color="tab:orange",
            label="of which Arrow's memory pool")
    for p in phases[1:]:
        ax.axvline(p["from_s"], color="grey", lw=0.6, ls=":")
    ax.axhline(4, color="red", lw=0.8, ls="--", label="4 GiB target")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("resident set, GiB")
    ax.set_title(title)
    labels = [f"{p['from_s']:.0f} s {p['phase']}: peak {(p['peak_rss_mib'] or 0) / 1024:.1f} GiB" for p in phases]
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="\n".join(labels),
              title_fontsize=7, alignment="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--relink", action="store_true", help="relink everything with the persisted models")
    ap.add_argument("--label", default=None, help="names the result file (default: the data dir's name)")
    ap.add_argument("--result", type=Path, default=None)
    args = ap.parse_args()
    label = args.label or args.data_dir.name
    result = args.result or REPO / "benchmarks" / "results" / f"reconcile-memory-{label}.json"
    os.environ["LIENTHONG_DATA_DIR"] = str(args.data_dir.resolve())

    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings

    s = load_settings()
    os.environ["LIENTHONG_DATABASE_URL"] = warehouse_url(s)
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = []
    arrow: list[tuple[float, float]] = []  # Arrow's memory pool at the same instants: what Python holds in Arrow
    done = threading.Event()

    def sample() -> None:
        import pyarrow as pa

        while not done.is_set():
            t = round(time.monotonic() - t0, 1)
            samples.append((t, rss_mib("VmRSS")))
            arrow.append((t, round(pa.total_allocated_bytes() / 2**20, 1)))
            done.wait(0.5)

    recorder = _Recorder(t0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().addHandler(recorder)
    threading.Thread(target=sample, daemon=True).start()
    from lienthong.reconcile.run import reconcile

    run_id = f"bench-memory-{int(time.time())}"
    try:
        out = reconcile(run_id, s, relink=args.relink)
    finally:
        done.set()
        stop_embedded(s.embedded_pgdata)
    seconds = round(time.monotonic() - t0, 1)
    phases = _phases(recorder.lines, samples, arrow, seconds)
    commit = os.environ.get("BENCH_CODE_COMMIT")
    record = {
        "data_dir": str(args.data_dir), "relink": args.relink, "run_id": run_id, "seconds": seconds,
        "peak_rss_mib": rss_mib("VmHWM"), "unchanged": bool(out.get("unchanged")),
        "link_state": {k: (out.get("link_state") or {}).get(k) for k in ("mode", "counts")},
        "rows": {n: o.get("rows") for n, o in (out.get("outputs") or {}).items()},
        "written": {n: o.get("written") for n, o in (out.get("outputs") or {}).items()},
        "duckdb_memory": s.duckdb_memory, "phases": phases, "log": recorder.lines, "samples": samples,
        "arrow_samples": arrow,
        "code": {"commit": commit}, "machine": {"cpus": os.cpu_count(), "loadavg_after": list(os.getloadavg())},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    _plot(samples, arrow, phases, result.with_suffix(".png"),
          f"reconcile {'relink' if args.relink else 'run'} on {label}: peak {record['peak_rss_mib'] / 1024:.1f} GiB")
    for p in phases:
        print(f"{p['from_s']:7.1f} s  {p['phase']:60s} peak {p['peak_rss_mib']} MiB (Arrow {p['peak_arrow_mib']})")
    print(f"peak {record['peak_rss_mib']} MiB in {seconds} s -> {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
