"""The 100M projection of the person linkage by province, from the per-partition measurements of
`bench_partitions.py` (every `benchmarks/results/partitions-*.json` present).

    .venv/bin/python benchmarks/project_partitions.py [--citizens 100000000] [--provinces 34] \\
        [--largest 14000000] [--workers 1,10,34] [--out benchmarks/results/partitions-projection.json]

Per measured partition (a province's `link_province` task; the `unknown` partition left out): its left
records L, its candidate registry rows C, its time and its peak RSS. Fitted by least squares:
time = a + b·L + c·C and RSS = a + b·L + c·C, no coefficient negative. The share of the registry a province's candidates reach is
reported against the registry's size (it grows with the country: some blocking keys are not local to a
province). Projected for a country of `--citizens` in `--provinces` provinces, an average province and the
largest (`--largest` citizens), each with left records in the measured proportion to citizens, under two
assumptions for C:

- `keys_as_now`: C is the share of the national registry the largest measured country's provinces reached
  (the highest share measured; it only grows with the country);
- `province_local_keys`: C is the province's own registry plus the cross-province share of its records
  (blocking keys that carry the place, which the model does not have yet);
- `keys_as_now_in_parts`: C as in `keys_as_now`, the task linked in k = ceil(max(C, L) / limit) parts
  (`partitions.candidate_parts`, `LIENTHONG_LINK_CANDIDATE_ROWS`, `--limit`): each part L / k records and
  C·(1 + overlap) / k candidates, the overlap being the measured excess of the parts' candidates over the
  province's (0 when no measured task went in parts). Time k·a + b·L + c·C·(1 + overlap) plus the second
  candidate query of a task in parts, taken as the measured share of such a task's time; peak RSS that of
  one part.

Only tasks linked in one part are fitted (a task in parts peaks with its largest part, not with its
candidates); the tasks in parts (`results/link-parts-*.json`, `bench_partitions.py --candidate-rows N`) give
the overlap and the second query's share.

And the wall time of all provinces' tasks with W workers each taking one task at a time (longest first): at
least the largest province's task. A projection, not a measurement: it extends fits of up to 5M citizens.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CROSS_PROVINCE = 0.25  # share of a province's candidates from other provinces with place-carrying keys (assumed)


def points(results: list[dict[str, Any]]) -> list[dict[str, float]]:
    out = []
    for r in results:
        total = r["country"]["registry_rows"]
        for name, p in r["partitions"].items():
            if name == "unknown" or len(p.get("parts", [None])) > 1:
                continue
            out.append({"registry": total, "left": p["left"], "candidates": p["candidates"],
                        "seconds": p["seconds"], "rss_mib": p["peak_rss_mib"], "share": p["candidates_share"]})
    return out


def in_parts(results: list[dict[str, Any]]) -> tuple[float, float]:
    """From the measured tasks linked in parts: the overlap (the parts' candidates summed over the province's,
    minus 1) and the share of such a task's time its candidate queries took beyond the first part's wait
    being the only one (`candidates_s` of the first part over the task's seconds, halved: the second query
    repeats the first). (0, 0) when none went in parts."""
    over, share = [], []
    for r in results:
        for name, p in r["partitions"].items():
            parts = p.get("parts", [])
            if name == "unknown" or len(parts) < 2:
                continue
            over.append(sum(q["candidates"] for q in parts) / p["candidates"] - 1)
            share.append(parts[0]["candidates_s"] / 2 / p["seconds"])
    return (float(np.mean(over)), float(np.mean(share))) if over else (0.0, 0.0)


def fit(pts: list[dict[str, float]], target: str) -> tuple[list[float], float]:
    """Coefficients (a, b per left record, c per candidate) of target = a + b·L + c·C, none negative (a task
    does not get cheaper with more records: unconstrained, the DuckDB session's fixed memory limit made the
    left records' coefficient negative once most tasks reached it), and R².

    Non-negative least squares by hand (numpy has none, scipy is not a dependency): with three coefficients,
    the best of the least-squares fits on every subset of them whose coefficients are all >= 0 is exact."""
    x = np.array([[1.0, p["left"], p["candidates"]] for p in pts])
    y = np.array([p[target] for p in pts])
    best: tuple[float, np.ndarray] | None = None
    for subset in itertools.chain.from_iterable(itertools.combinations(range(3), k) for k in (1, 2, 3)):
        cols = list(subset)
        sub, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (sub < 0).any():
            continue
        coef = np.zeros(3)
        coef[cols] = sub
        residual = float(((y - x @ coef) ** 2).sum())
        if best is None or residual < best[0]:
            best = (residual, coef)
    assert best is not None, "no non-negative fit"  # a single positive column always fits
    residual, coef = best
    r2 = 1 - residual / float(((y - y.mean()) ** 2).sum())
    return [float(c) for c in coef], r2


def wall(tasks: list[float], workers: int) -> float:
    """Finish time of `tasks` on `workers`, each taking the longest task left when free."""
    free = [0.0] * workers
    for t in sorted(tasks, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=100_000_000)
    ap.add_argument("--provinces", type=int, default=34)
    ap.add_argument("--largest", type=int, default=14_000_000)
    ap.add_argument("--workers", default="1,10,34")
    ap.add_argument("--limit", type=int, default=1_000_000, help="candidate rows per part (LIENTHONG_LINK_CANDIDATE_ROWS)")
    ap.add_argument("--out", type=Path, default=RESULTS / "partitions-projection.json")
    args = ap.parse_args()
    files = sorted(p for p in RESULTS.glob("partitions-*.json")
                   if p.name != args.out.name and "partitions" in json.loads(p.read_text()))  # not a projection
    results = [json.loads(p.read_text()) for p in files]
    # the runs under a candidate limit (`bench_partitions.py --candidate-rows N --result link-parts-…`)
    part_files = sorted(RESULTS.glob("link-parts-*.json"))
    pts = points(results)
    (ta, tb, tc), t_r2 = fit(pts, "seconds")
    (ma, mb, mc), m_r2 = fit(pts, "rss_mib")
    left_per_citizen = sum(p["left"] for p in pts) / sum(
        r["country"]["registry_rows"] * (r["country"]["left_rows"] - r["country"]["partitions"].get("unknown", 0))
        / r["country"]["left_rows"] for r in results)
    shares = sorted({(r["country"]["registry_rows"], max(p["candidates_share"] for n, p in r["partitions"].items()
                                                         if n != "unknown")) for r in results})
    share_now = max(s for _, s in shares)
    sizes = {"average": args.citizens / args.provinces, "largest": float(args.largest)}
    rest = (args.citizens - args.largest) / (args.provinces - 1)
    overlap, second_query = in_parts([json.loads(p.read_text()) for p in part_files])
    out: dict[str, Any] = {
        "measured_from": [f.name for f in files], "parts_from": [f.name for f in part_files], "points": len(pts),
        "fit_seconds": {"a": ta, "per_left": tb, "per_candidate": tc, "r2": t_r2},
        "fit_rss_mib": {"a": ma, "per_left": mb, "per_candidate": mc, "r2": m_r2},
        "left_per_citizen": left_per_citizen, "largest_share_by_registry": shares,
        "country": {"citizens": args.citizens, "provinces": args.provinces, "largest": args.largest},
        "parts": {"limit": args.limit, "overlap": overlap, "second_query_share": second_query},
        "scenarios": {},
    }
    for scenario in ("keys_as_now", "province_local_keys", "keys_as_now_in_parts"):
        def task(citizens: float, scenario: str = scenario) -> dict[str, float]:
            left = left_per_citizen * citizens
            cand = citizens * (1 + CROSS_PROVINCE) if scenario == "province_local_keys" else share_now * args.citizens
            if scenario != "keys_as_now_in_parts":
                return {"citizens": citizens, "left": left, "candidates": cand,
                        "seconds": ta + tb * left + tc * cand, "rss_gib": (ma + mb * left + mc * cand) / 1024}
            k = max(1, -(-int(max(cand, left)) // args.limit))
            seconds = (k * ta + tb * left + tc * cand * (1 + overlap)) / (1 - second_query)
            part_left, part_cand = left / k, cand * (1 + overlap) / k
            return {"citizens": citizens, "left": left, "candidates": cand, "parts": k, "seconds": seconds,
                    "rss_gib": (ma + mb * part_left + mc * part_cand) / 1024}

        per = {name: task(n) for name, n in sizes.items()}
        tasks = [task(args.largest)["seconds"]] + [task(rest)["seconds"]] * (args.provinces - 1)
        out["scenarios"][scenario] = {
            "tasks": per, "sum_of_tasks_s": sum(tasks),
            "wall_s_by_workers": {w: wall(tasks, int(w)) for w in args.workers.split(",")}}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(pts)} partitions from {[f.name for f in files]}")
    print(f"time = {ta:.2f} s + {tb * 1e6:.2f} s per M left + {tc * 1e6:.2f} s per M candidates (R² {t_r2:.3f})")
    print(f"RSS = {ma:.0f} MiB + {mb * 1e6 / 1024:.2f} GiB per M left + {mc * 1e6 / 1024:.2f} GiB per M candidates "
          f"(R² {m_r2:.3f})")
    print(f"largest candidate share by registry size: {shares}")
    for scenario, s in out["scenarios"].items():
        for name, t in s["tasks"].items():
            print(f"{scenario} {name}: {t['citizens'] / 1e6:.1f}M citizens, {t['left'] / 1e6:.2f}M left, "
                  f"{t['candidates'] / 1e6:.1f}M candidates" + (f" in {t['parts']} parts" if "parts" in t else "")
                  + f": {t['seconds']:.0f} s, {t['rss_gib']:.1f} GiB")
        print(f"{scenario} wall time by workers: " + ", ".join(f"W={w}: {v / 3600:.2f} h"
                                                             for w, v in s["wall_s_by_workers"].items()))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
