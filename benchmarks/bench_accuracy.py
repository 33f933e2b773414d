"""Link accuracy of the newest reconciliation in a data dir, against the sandbox's ground truth.

    .venv/bin/python benchmarks/bench_accuracy.py --data-dir DIR --truth DIR [--result PATH]

Reads the integrated outputs and the staged inputs the newest successful reconciliation recorded in the
ledger of `--data-dir` (its embedded warehouse is started and stopped), scores them with
`lienthong.linkscore.link_accuracy` (representatives, person and organisation land holders, ID-less person
holders as their own row) and writes the figures with the run's link-state mode and models to `--result`
(default `benchmarks/results/accuracy.json`). Used after `bench_incremental.py`, whose work folder keeps the
data dir and the sandbox's truth, to show the accuracy of the incremental path at scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--truth", required=True, type=Path)
    ap.add_argument("--result", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.json")
    args = ap.parse_args()
    os.environ["LIENTHONG_DATA_DIR"] = str(args.data_dir)

    from lienthong import runs, zones
    from lienthong.db import connect, stop_embedded, warehouse_url
    from lienthong.linkscore import link_accuracy
    from lienthong.settings import load_settings

    s = load_settings()
    try:
        with connect(warehouse_url(s)) as conn:
            last = runs.latest_reconcile_run(conn)
        if last is None:
            print(f"no reconciliation in {args.data_dir}", file=sys.stderr)
            return 1
        metrics = last.metrics or {}
        inputs = {name: info["staged_path"] for name, info in metrics["inputs"].items()}
        tables = {name: zones.read_table(out["path"]) for name, out in (last.outputs or {}).items()}
        acc = link_accuracy(tables, zones.read_table(inputs["citizen"]), zones.read_table(inputs["enterprise"]),
                            args.truth, staged_holders=zones.read_table(inputs["land_holder"]))
    finally:
        stop_embedded(s.embedded_pgdata)
    out = {"reconcile_run": last.run_id, "link_state": {k: (metrics.get("link_state") or {}).get(k)
                                                        for k in ("mode", "models")},
           "citizens": tables["person_master"].num_rows, "accuracy": acc,
           "date": datetime.now(UTC).isoformat(timespec="seconds")}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    for name, row in acc.items():
        if isinstance(row, dict):
            print(f"{name:28s} " + " ".join(f"{k} {row[k]}" for k in ("records", "precision", "recall", "f1") if k in row))
    print(f"results: {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
