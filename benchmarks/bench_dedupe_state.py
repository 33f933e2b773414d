"""The reconciliation's dedupe step whole vs from the dedupe state after a 1 % change (issue 19), on a reconciled
data dir's staged tables, read only.

    .venv/bin/python benchmarks/bench_dedupe_state.py [--data benchmarks/.work/incr-2000000] [--repeat 3]

The state of citizen, enterprise and land_holder is built (`dupstate.update`, mode `full`) at the version
before each table's newest change commit, into a scratch folder beside the data dir (never inside it). The
newest versions are loaded into one DuckDB session as the reconciliation loads them (`run._load_staged`).
Then, back to back in one process, `--repeat` times: the step as it was (the citizens read from the session,
`dedupe.*_duplicates` on the three tables read from it: `whole_s`) and the step from the state (the citizens
read the same way, `dupstate.duplicates` with the older versions as bases, on a fresh copy of the built
state: `change_s`), each result checked equal to the whole one. Writes
benchmarks/results/dedupe-state-<N>.json (`--result`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from _memory import rss_mib

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import dedupe, dupstate
from lienthong.reconcile.run import _arrow, _load_staged

ALIVE = "NOT coalesce(deleted, false)"


def _older(path: Path) -> int:
    """The version before the newest commit that changed rows (a MERGE of more than a validation's handful)."""
    for commit in zones.open_table(path).history(20):
        metrics = commit.get("operationMetrics") or {}
        if commit.get("operation") == "MERGE" and int(metrics.get("num_source_rows", 0)) > 1000:
            return int(commit["version"]) - 1
    raise SystemExit(f"{path}: no change commit found")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("benchmarks/.work/incr-2000000"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--result", type=Path)
    a = ap.parse_args()
    new, old = {}, {}
    for dataset in dupstate.RULES:
        path = a.data / "staged" / dataset
        new[dataset] = zones.ref(path, zones.version(path) or 0)
        old[dataset] = zones.ref(path, _older(path))
    scratch = Path(tempfile.mkdtemp(prefix="dedupe-state-", dir=a.data.parent))
    out: dict[str, Any] = {"data": str(a.data), "new": new, "old": old, "runs": []}
    try:
        t0 = time.monotonic()
        for dataset in dupstate.RULES:
            dupstate.update(scratch / "built", dataset, old[dataset], {dataset: []})
        out["full_build_at_old_s"] = round(time.monotonic() - t0, 3)
        with session(purpose="bench-dedupe") as con:
            t0 = time.monotonic()
            out["rows"] = _load_staged(con, new)
            out["load_staged_s"] = round(time.monotonic() - t0, 3)
            for i in range(a.repeat):
                t0 = time.monotonic()
                cit = _arrow(con, "citizen")
                whole = {"citizen": dedupe.citizen_duplicates(cit),
                         "enterprise": dedupe.enterprise_duplicates(_arrow(con, "enterprise")),
                         "land_holder": dedupe.holder_duplicates(_arrow(con, "land_holder", ALIVE))}
                whole_s = time.monotonic() - t0
                del cit
                run = scratch / f"run{i}"
                shutil.copytree(scratch / "built", run)
                t0 = time.monotonic()
                cit = _arrow(con, "citizen")
                dups, metrics = dupstate.duplicates(new, {d: [old[d]] for d in new}, run, whole={
                    "citizen": partial(dedupe.citizen_duplicates, cit),
                    "enterprise": lambda: dedupe.enterprise_duplicates(_arrow(con, "enterprise")),
                    "land_holder": lambda: dedupe.holder_duplicates(_arrow(con, "land_holder", ALIVE))})
                change_s = time.monotonic() - t0
                del cit
                shutil.rmtree(run)
                row = {"whole_s": round(whole_s, 3), "change_s": round(change_s, 3),
                       "ratio": round(change_s / whole_s, 4),
                       "equal": all(dups[d].equals(whole[d]) for d in whole), "per_dataset": metrics}
                out["runs"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "per_dataset"}),
                      {d: (m["mode"], m["seconds"]) for d, m in metrics.items()}, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best_whole = min(r["whole_s"] for r in out["runs"])
    best_change = min(r["change_s"] for r in out["runs"])
    out["best"] = {"whole_s": best_whole, "change_s": best_change, "ratio": round(best_change / best_whole, 4),
                   "all_equal": all(r["equal"] for r in out["runs"])}
    out["peak_rss_mib"] = rss_mib()
    print(json.dumps(out["best"]), "peak RSS MiB", out["peak_rss_mib"])
    result = a.result or Path("benchmarks/results") / f"dedupe-state-{a.data.name.rsplit('-', 1)[-1]}.json"
    result.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
