"""The ID-less holder step of a reconciliation, whole against incremental (`lienthong.reconcile.idlessstate`), on
a reconciled data dir (e.g. `benchmarks/.work/incr-2000000`, which `bench_incremental.py` leaves: a full run
and a change run of 1 % of the source records), read only.

    .venv/bin/python benchmarks/bench_idless_incremental.py --data benchmarks/.work/incr-2000000

In one process, back to back, each world loaded into a DuckDB session the way `reconcile.run._integrate` loads
it (staged citizen, land_holder, certificate, parcel; citizen duplicates; the person holders; the model's
holder links from the link state's newest version):

1. `before`: the staged versions the change run started from (per table, the newest version written by
   another run than the newest one's); the model links with 1 % of them moved (score nudged) so the change
   also touches the gate. `idlessstate.update` with no state: mode `full` (the pass whole + the state written);
2. `after`: the newest staged versions and the link state's links; `idlessstate.update` with bases = the
   `before` citizen version: mode `change`;
3. `today`: the pass as `_integrate` ran it before it kept state (`idless_inputs`, `registry_with_places`,
   `link_idless` over everything) on the `after` world; its links and review lists must equal step 2's.

Each step is timed with `idless.combine` (the step's last part, the same in both modes) and without. The state
goes to a scratch folder (`--scratch`, default a temporary folder), never into the data dir. Writes
benchmarks/results/idless-incremental-<N citizens>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
INPUTS = ("citizen", "land_holder", "certificate", "parcel")


def _rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _current_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def _versions(table: Path) -> tuple[int, int]:
    """(the version the newest run started from, the newest version)."""
    from lienthong import zones

    history = zones.open_table(table).history(50)
    newest = history[0]
    for commit in history[1:]:
        if commit.get("lienthong.run_id") != newest.get("lienthong.run_id"):
            return int(commit["version"]), int(newest["version"])
    raise SystemExit(f"{table}: no version of an earlier run")


def _world(refs: dict[str, str], settings: Any) -> dict[str, Any]:
    import pyarrow as pa  # noqa: F401

    from lienthong.duck import session
    from lienthong.reconcile import dedupe, run

    with session(settings, purpose="integrate") as con:
        run._load_staged(con, refs)
        cit = run._arrow(con, "citizen")
        holders = run._arrow(con, "land_holder", "NOT coalesce(deleted, false) AND holder_type = 'CA_NHAN'")
        world = {"citizens": cit, "person_holders": holders, "certificates": run._arrow(con, "certificate"),
                 "parcels": run._arrow(con, "parcel")}
    world["duplicates"] = dedupe.citizen_duplicates(cit)
    return world


def _nudged(links: Any, share: float, seed: int) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    pick = pa.array(rng.random(links.num_rows) < share)
    score = pc.if_else(pick, pc.multiply(links["score"], 0.999), links["score"])
    return links.set_column(links.schema.get_field_index("score"), "score", score)


def _step(world: dict[str, Any], model_links: Any, refs: dict[str, str], bases: list[str], scratch: Path,
          settings: Any) -> tuple[Any, dict[str, Any]]:
    from lienthong.reconcile import idless, idlessstate
    from lienthong.reconcile.people import LinkBands

    bands = LinkBands(accept=settings.match_accept, review=settings.match_review)
    rss0 = _current_rss_mib()
    t0 = time.monotonic()
    result = idlessstate.update(scratch, person_holders=world["person_holders"], certificates=world["certificates"],
                                parcels=world["parcels"], citizens=world["citizens"], model_links=model_links,
                                duplicates=world["duplicates"], citizen_ref=refs["citizen"], bases=bases,
                                bands=bands, settings=settings, run_id="bench-idless-incremental")
    t1 = time.monotonic()
    combined = idless.combine(result.links, model_links, settings=settings)
    t2 = time.monotonic()
    return result, {"mode": result.mode, "seconds_pass": round(t1 - t0, 3), "seconds_combine": round(t2 - t1, 3),
                    "seconds_step": round(t2 - t0, 3), "parts": result.seconds, "counts": result.counts,
                    "links": result.links.num_rows, "review": result.review.num_rows, "combined": combined.num_rows,
                    "rss_before_mib": rss0, "rss_after_mib": _current_rss_mib(), "peak_rss_mib": _rss_mib()}


def _today(world: dict[str, Any], model_links: Any, settings: Any) -> tuple[Any, Any, dict[str, Any]]:
    from lienthong.reconcile import idless
    from lienthong.reconcile.people import LinkBands

    bands = LinkBands(accept=settings.match_accept, review=settings.match_review)
    t0 = time.monotonic()
    left = idless.idless_inputs(world["person_holders"], world["certificates"], world["parcels"], settings=settings)
    t1 = time.monotonic()
    registry = idless.registry_with_places(world["citizens"])
    t2 = time.monotonic()
    links, review = idless.link_idless(left, registry, bands, model_links=model_links,
                                       duplicates=world["duplicates"], settings=settings)
    t3 = time.monotonic()
    idless.combine(links, model_links, settings=settings)
    t4 = time.monotonic()
    return links, review, {"seconds_step": round(t4 - t0, 3), "seconds_pass": round(t3 - t0, 3),
                           "parts": {"idless_inputs": round(t1 - t0, 3), "registry_with_places": round(t2 - t1, 3),
                                     "link_idless": round(t3 - t2, 3), "combine": round(t4 - t3, 3)},
                           "peak_rss_mib": _rss_mib()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "benchmarks" / ".work" / "incr-2000000")
    p.add_argument("--moved-links", type=float, default=0.01, help="share of the model links moved in `before`")
    p.add_argument("--scratch", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    data = args.data.resolve()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-idless-incr-"))
    os.environ["LIENTHONG_DATA_DIR"] = str(scratch)  # spill folders and the state go here, not into `data`
    from lienthong import zones
    from lienthong.reconcile import linkstate, run
    from lienthong.settings import load_settings

    settings = load_settings()
    before, after = {}, {}
    for name in INPUTS:
        old, new = _versions(data / "staged" / name)
        before[name], after[name] = zones.ref(data / "staged" / name, old), zones.ref(data / "staged" / name, new)
    links_table = data / "integrated" / linkstate.STATE_DIR / linkstate.LINKS
    model_after = run._person_links(zones.ref(links_table, zones.version(links_table) or 0))["holder_citizen"]
    model_before = _nudged(model_after, args.moved_links, seed=7)
    out: dict[str, Any] = {"data": str(data), "before": before, "after": after, "moved_links": args.moved_links,
                           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    t = time.monotonic()
    world = _world(before, settings)
    out["load_before_seconds"] = round(time.monotonic() - t, 3)
    out["citizens"] = world["citizens"].num_rows
    _, out["full"] = _step(world, model_before, before, [], scratch, settings)
    print("full", json.dumps(out["full"]), flush=True)
    del world
    t = time.monotonic()
    world = _world(after, settings)
    out["load_after_seconds"] = round(time.monotonic() - t, 3)
    result, out["change"] = _step(world, model_after, after, [before["citizen"]], scratch, settings)
    print("change", json.dumps(out["change"]), flush=True)
    links, review, out["today"] = _today(world, model_after, settings)
    print("today", json.dumps(out["today"]), flush=True)
    out["equal_to_whole"] = (result.links.equals(links.cast(result.links.schema))
                             and result.review.equals(review.cast(result.review.schema)))
    out["ratio_change_over_full_step"] = round(out["change"]["seconds_step"] / out["full"]["seconds_step"], 4)
    out["ratio_change_over_today_step"] = round(out["change"]["seconds_step"] / out["today"]["seconds_step"], 4)
    out["ratio_change_over_today_pass"] = round(out["change"]["seconds_pass"] / out["today"]["seconds_pass"], 4)
    out["load_average_after"] = os.getloadavg()
    target = args.out or RESULTS / f"idless-incremental-{out['citizens']}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("equal_to_whole", "ratio_change_over_full_step",
                                           "ratio_change_over_today_step", "ratio_change_over_today_pass")}))
    print(f"written {target}")
    return 0 if out["equal_to_whole"] else 1


if __name__ == "__main__":
    sys.exit(main())
