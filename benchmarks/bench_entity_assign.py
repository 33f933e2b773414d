"""The entity registry's assignment on its closure against the same rules on everything (issue 19).

    .venv/bin/python benchmarks/bench_entity_assign.py --data-dir DIR [--moved 0.01] [--result PATH]
    .venv/bin/python benchmarks/bench_entity_assign.py --data-dir DIR --first-run

`--first-run`: the assignment of a first run instead (an empty registry, the stored registry's clustering:
every member and entity new), alone in this process, and its peak resident set (VmHWM); printed, and written
to `--result` when given.

On the registry a reconciliation left in `DIR/integrated/_registry` (e.g. `benchmarks/.work/incr-2000000`,
6.4M members), two clusterings are written as Parquet files next to the results: the registry's own (no
change: every entity's records are one cluster) and one where a share `--moved` of the records (chosen by a
hash of the key) each leave for a cluster of their own. `lienthong.entities.assign` runs on each, once with
`whole=True` (the rules on every cluster) and once as a run does (the rules on the closure the change
touches), alternating, in this process, against the stored versions. The two must give the same changed
rows and events; the result records both times and their ratio, measured in the same run (the machine is
shared: compare the ratio, not the seconds). Writes `--result` (default
`benchmarks/results/entity-assign-<members>.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--moved", type=float, default=0.01, help="share of records moved to a cluster of their own")
    ap.add_argument("--result", type=Path)
    ap.add_argument("--first-run", action="store_true", help="only a first run's assignment, with its peak RSS")
    args = ap.parse_args()
    if not 0 < args.moved < 1:
        ap.error("--moved must be in (0, 1)")
    sys.path.insert(0, str(REPO))
    import duckdb

    from lienthong import entities, zones

    members_ref, entities_ref = entities.stored_refs(args.data_dir / "integrated" / "_registry")
    if members_ref is None or entities_ref is None:
        ap.error(f"{args.data_dir}: no entity registry (run a reconciliation there first)")
    if args.first_run:
        return _first_run(members_ref, args.result)
    buckets = round(1 / args.moved)
    out: dict = {"data_dir": str(args.data_dir), "moved_share": 1 / buckets, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-assign-") as scratch:
        files = {"no change": Path(scratch) / "same.parquet", "moved": Path(scratch) / "moved.parquet"}
        con = duckdb.connect()
        zones.register(con, "m", members_ref)
        out["members"] = int(con.execute("SELECT count(*) FROM m").fetchone()[0])
        for label, key in (("no change", "entity_id"),
                           ("moved", f"CASE WHEN hash(record_key) % {buckets} = 0 THEN 'moved:' || record_key "
                                     "ELSE entity_id END")):
            con.execute(f"""COPY (SELECT kind, {key} AS cluster_key, dataset, record_key, continuity FROM m)
                            TO '{files[label]}' (FORMAT parquet)""")
        con.close()
        for label, path in files.items():
            results = {}
            for whole in (True, False):
                t0 = time.monotonic()
                a = entities.assign(members_ref, entities_ref, str(path), "bench-assign", whole=whole)
                results[whole] = {"seconds": round(time.monotonic() - t0, 2),
                                  "changed_members": a.changed_members.num_rows, "events": a.events.num_rows,
                                  "same": None}
                results[whole]["_a"] = a
            same = all(getattr(results[True]["_a"], n).equals(getattr(results[False]["_a"], n))
                       for n in ("members", "entities", "events", "changed_members", "changed_entities"))
            row = {"clustering": label, "whole_s": results[True]["seconds"], "closure_s": results[False]["seconds"],
                   "closure_over_whole": round(results[False]["seconds"] / results[True]["seconds"], 3),
                   "changed_members": results[False]["changed_members"], "events": results[False]["events"],
                   "same_result": same}
            out["runs"].append(row)
            print(json.dumps(row))
            del results
    out.update(date=datetime.now(UTC).date().isoformat(), machine={"cpus": os.cpu_count(),
                                                                  "loadavg_end": os.getloadavg()})
    path = args.result or REPO / "benchmarks" / "results" / f"entity-assign-{out['members']}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return 0 if all(r["same_result"] for r in out["runs"]) else 1


def _first_run(members_ref: str, result: Path | None) -> int:
    import duckdb
    from _memory import rss_mib

    from lienthong import entities, zones

    with tempfile.TemporaryDirectory(prefix="bench-assign-") as scratch:
        path = Path(scratch) / "clustering.parquet"
        con = duckdb.connect()
        zones.register(con, "m", members_ref)
        con.execute(f"""COPY (SELECT kind, entity_id AS cluster_key, dataset, record_key, continuity FROM m)
                        TO '{path}' (FORMAT parquet)""")
        con.close()
        before = rss_mib()
        t0 = time.monotonic()
        a = entities.assign(entities.empty_members(), entities.empty_entities(), str(path), "bench-first-run")
        row = {"mode": "first run", "seconds": round(time.monotonic() - t0, 2), "peak_rss_mib": rss_mib(),
               "peak_rss_before_mib": before, "members": a.members.num_rows, "entities": a.entities.num_rows,
               "events": a.events.num_rows, "date": datetime.now(UTC).date().isoformat()}
    print(json.dumps(row))
    if result:
        result.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
