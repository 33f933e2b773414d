"""Land holders with no document number ("ID-less holders"): linkage today against the deterministic
unique-name pass (`lienthong.reconcile.idless`) in front of it.

For each size N: generate a province (`sandbox.generator`, default noise), serve it with the sandbox, land it
with the real connectors, stage the six datasets (`benchmarks/.work/idless-N/`, kept for the next run), then
link the person land holders to the citizens two ways on the same inputs:

- `today`: `people.link_people` on every person holder (what `reconcile_tables` does);
- `with_idless`: `idless.link_idless` on the ID-less holders first; `link_people` on the rest (every holder
  the pass did not link: those it sent to review and those with no unique candidate), its links kept for them.

Both are judged against `<sandbox data>/truth/links.parquet` as `lienthong.linkscore` judges the integrated
tables: precision / recall / F1 of accepted links, for the ID-less holders and for all person holders; plus,
for the pass alone, the precision of its accepted `unique_name` links by rule (province + birth year, parcel
commune), how often the model agrees with them, and its review lists.

    .venv/bin/python benchmarks/bench_idless.py --sizes 4000,100000

Writes benchmarks/results/idless-holders.json (or `--out`). No timing is asserted; seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")
SEED = 20261120
# The extra province of the integration test's kind: many more ID-less holders at a small size.
HIGH_MISSING_ID, HIGH_SEED = 0.4, 11


def prepare(size: int, seed: int = SEED, noise: dict[str, float] | None = None, root: Path | None = None) -> Path:
    """Generate (default noise, or `noise` over it), serve, land and stage one province once; returns its
    folder (staged/<dataset>.parquet, sb/truth/links.parquet)."""
    from lienthong import pipeline, zones
    from lienthong.contracts import contract
    from lienthong.db import stop_embedded
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.generator.config import NOISE_DEFAULTS
    from sandbox.runner import run_sandbox

    root = root or WORK / f"idless-{size}"
    out = root / "staged"
    if all((out / f"{ds}.parquet").exists() for ds in DATASETS):
        return root
    data = root / "sb"
    print(f"{size}: generating ...", file=sys.stderr, flush=True)
    generate(GeneratorConfig(citizens=size, seed=seed, noise={**NOISE_DEFAULTS, **(noise or {})}), data)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    try:
        with run_sandbox(data, root / "sbx") as ep:
            os.environ.update(ep.airflow_conn_env())
            print(f"{size}: landing ...", file=sys.stderr, flush=True)
            pipeline.ingest_population("idless")
            pipeline.ingest_business("idless")
            for province in ep.land_dsns:
                pipeline.ingest_land("idless", province)
        settings = load_settings()
        out.mkdir(parents=True, exist_ok=True)
        for ds in DATASETS:
            print(f"{size}: staging {ds} ...", file=sys.stderr, flush=True)
            c = contract(ds)
            res = stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id="idless",
                                    staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            table = zones.read_table(str(res.staged_path))
            table = table.sort_by([(k, "ascending") for k in c.primary_key])
            pq.write_table(table, out / f"{ds}.parquet")
    finally:
        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)
    return root


def staged_tables(root: Path) -> dict[str, pa.Table]:
    return {ds: pq.read_table(root / "staged" / f"{ds}.parquet") for ds in DATASETS}


def _judge(root: Path, citizens: pa.Table) -> Any:
    """judge(links, keys=None) -> precision / recall / F1 of accepted links as `lienthong.linkscore` judges
    the integrated tables (right when the citizen linked is a record of the holder's true person; recall over
    holders whose person has a record in the staged registry), over the holders in `keys` (all if None)."""
    from lienthong.linkscore import _score, _truth_maps

    truth = _truth_maps(root / "sb" / "truth")
    citizen_person, holder_person = truth["citizen"], truth["land_holder_person"]
    in_registry = {citizen_person[k] for k in citizens["citizen_id"].to_pylist() if k in citizen_person}

    def judge(links: pa.Table, keys: set[str] | None = None) -> dict[str, Any]:
        pairs = []
        for left, right, band in zip(links["left_id"].to_pylist(), links["right_id"].to_pylist(),
                                     links["band"].to_pylist(), strict=True):
            t = holder_person.get(left)
            if t is None or (keys is not None and left not in keys):
                continue
            pairs.append((t, citizen_person.get(right) if right else None, band))
        return _score(pairs, sum(1 for t, _, _ in pairs if t in in_registry))

    return judge


def _people_py() -> dict[str, Any]:
    """Which person linkage was measured: the file imported, and whether it is the committed one."""
    import hashlib
    import subprocess

    from lienthong.reconcile import people

    body = Path(people.__file__).read_bytes()
    head = subprocess.run(["git", "-C", str(REPO), "show", "HEAD:lienthong/reconcile/people.py"],
                          capture_output=True, check=False).stdout
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"commit": commit, "people_py_sha256": hashlib.sha256(body).hexdigest(),
            "people_py_is_committed_version": body == head}


def measure(root: Path, size: int) -> dict[str, Any]:
    """Every contender on one prepared province (module docstring)."""
    from lienthong.linkscore import idless_holder_keys
    from lienthong.reconcile import dedupe, idless, people, sources

    staged = staged_tables(root)
    cit = staged["citizen"]
    holders = staged["land_holder"]
    holders = holders.filter(pc.invert(pc.fill_null(holders["deleted"], False)))
    person_holders = holders.filter(pc.equal(holders["holder_type"], "CA_NHAN"))
    judge = _judge(root, cit)
    idless_keys = idless_holder_keys(person_holders)
    bands = people.LinkBands()  # the settings' defaults (match_accept 0.95, match_review 0.80)

    t0 = time.monotonic()
    registry = sources.citizens_as_people(cit)
    left_all = sources.holders_as_people(person_holders)
    cdup = dedupe.citizen_duplicates(cit)
    left = idless.idless_inputs(person_holders, staged["certificate"], staged["parcel"])
    reg = idless.registry_with_places(cit, registry)
    rule = dict(zip(left["unique_id"].to_pylist(), idless.rule_of(left).to_pylist(), strict=True))
    by_rule = {r: {k for k, v in rule.items() if v == r} for r in (idless.RULE_BIRTH_YEAR, idless.RULE_COMMUNE)}
    prepare_s = time.monotonic() - t0

    t0 = time.monotonic()
    today = people.link_people(left_all, registry, bands).links
    model_s = time.monotonic() - t0

    def report(links: pa.Table, ours: pa.Table, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        accepted = ours.filter(pc.equal(ours["band"], "accept"))
        return {
            "idless_holders": judge(links, idless_keys),
            "idless_by_rule": {r: judge(links, keys) for r, keys in by_rule.items()},
            "all_person_holders": judge(links, None),
            "unique_name": {**idless.counts(ours, left),
                            "accepted_judged": judge(accepted, None),
                            "accepted_judged_by_rule": {r: judge(accepted, keys) for r, keys in by_rule.items()},
                            "review_candidates": _sizes(ours)},
            "seconds_besides_the_model": round(seconds, 2), **(extra or {}),
        }

    out: dict[str, Any] = {"citizens": size, "rows": {ds: t.num_rows for ds, t in staged.items()},
                           "person_holders": person_holders.num_rows, "idless_person_holders": len(idless_keys),
                           "idless_with_birth_year": len(by_rule[idless.RULE_BIRTH_YEAR]),
                           "idless_without_birth_year": len(by_rule[idless.RULE_COMMUNE]),
                           "seconds": {"inputs": round(prepare_s, 2), "model_all_holders": round(model_s, 2)},
                           "contenders": {}}
    out["contenders"]["today"] = {"idless_holders": judge(today, idless_keys),
                                  "idless_by_rule": {r: judge(today, keys) for r, keys in by_rule.items()},
                                  "all_person_holders": judge(today, None)}
    for name, address in (("rule_alone_parcel_commune", False), ("rule_alone", True)):
        t0 = time.monotonic()
        ours, _ = idless.link_idless(left, reg, bands, duplicates=cdup, address=address)
        pass_s = time.monotonic() - t0
        t1 = time.monotonic()
        rest = people.link_people(idless.still_to_link(left_all, ours), registry, bands).links
        rest_s = time.monotonic() - t1
        combined = idless.combine(ours, rest)
        agree = _agreement(ours, today, cdup, bands)
        out["contenders"][name] = report(combined, ours, pass_s, {"model_on_the_rest_s": round(rest_s, 2),
                                                                "model_would_agree": agree})
    for name, address in (("gated_parcel_commune", False), ("gated", True)):
        t0 = time.monotonic()
        ours, _ = idless.link_idless(left, reg, bands, model_links=today, duplicates=cdup, address=address)
        combined = idless.combine(ours, today)
        out["contenders"][name] = report(combined, ours, time.monotonic() - t0)
    base = out["contenders"]["today"]
    for name, c in out["contenders"].items():
        if name != "today":
            c["difference_vs_today"] = {
                group: {m: round(c[group][m] - base[group][m], 6) for m in ("precision", "recall", "f1")}
                | {"accepted": c[group]["accepted"] - base[group]["accepted"],
                   "review": c[group]["review"] - base[group]["review"]}
                for group in ("idless_holders", "all_person_holders")}
    return out


def _sizes(links: pa.Table) -> dict[str, int]:
    """Review rows by number of candidates (the score is 1 / n)."""
    review = links.filter(pc.equal(links["band"], "review"))
    n = [round(1 / s) for s in review["score"].to_pylist()]
    return {"1": n.count(1), "2": n.count(2), "3-5": sum(1 for x in n if 3 <= x <= 5), "6+": sum(1 for x in n if x >= 6)}


def _agreement(ours: pa.Table, model: pa.Table, duplicates: pa.Table, bands: Any) -> dict[str, int]:
    """Of the rule's accepted links: how many the model (on every holder) ranks first at >= review, first but
    lower, or not first."""
    survivor = dict(zip(duplicates["record_key"].to_pylist(), duplicates["survivor_key"].to_pylist(), strict=True))
    best = {r["left_id"]: r for r in model.to_pylist()}
    out = {"first_at_or_above_review": 0, "first_below_review": 0, "not_first": 0}
    for r in ours.filter(pc.equal(ours["band"], "accept")).to_pylist():
        m = best.get(r["left_id"])
        if m is None or m["right_id"] is None or \
                survivor.get(m["right_id"], m["right_id"]) != survivor.get(r["right_id"], r["right_id"]):
            out["not_first"] += 1
        elif (m["score"] or 0.0) >= bands.review:
            out["first_at_or_above_review"] += 1
        else:
            out["first_below_review"] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4000,100000")
    ap.add_argument("--high-missing-id", type=int, default=4000,
                    help="also a province of this size with 40 %% of the person holders' IDs missing (0: none)")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "idless-holders.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("splink").setLevel(logging.ERROR)
    runs: list[tuple[str, int, Path]] = []
    for size in [int(s) for s in args.sizes.split(",")]:
        runs.append(("default_noise", size, prepare(size)))
    if args.high_missing_id:
        n = args.high_missing_id
        runs.append((f"missing_id_{HIGH_MISSING_ID}", n, prepare(n, seed=HIGH_SEED, noise={"missing_id": HIGH_MISSING_ID},
                                                                   root=WORK / f"idless-missing-{n}")))
    if args.prepare_only:
        return 0
    results = []
    for label, size, root in runs:
        os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
        print(f"{label} {size}: measuring ...", file=sys.stderr, flush=True)
        r = {"province": label, **measure(root, size)}
        results.append(r)
        for name, c in r["contenders"].items():
            i, a = c["idless_holders"], c["all_person_holders"]
            print(f"{label:>22} {size:>7} {name:>26}: ID-less P {i['precision']:.4f} R {i['recall']:.4f} "
                  f"F1 {i['f1']:.4f} review {i['review']:>4} | all P {a['precision']:.5f} R {a['recall']:.5f} "
                  f"F1 {a['f1']:.5f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "code": _people_py(),
        "command": "benchmarks/bench_idless.py " + " ".join(sys.argv[1:]),
        "contenders": CONTENDERS, "results": results}, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


CONTENDERS = {
    "today": "people.link_people on every person holder (reconcile_tables today)",
    "rule_alone_parcel_commune": "idless.link_idless without the model and without the address (the rule as first "
                                 "specified: name + birth year in the province, else name in a parcel's commune); "
                                 "its accepted links kept; link_people on the others; combine",
    "rule_alone": "the same with the address (no-birth-year holders also at their own address; namesakes narrowed "
                  "to the one at the holder's address)",
    "gated_parcel_commune": "link_people on every person holder; link_idless with its links (accept only where the "
                            "model ranks the same person first at >= review), without the address; combine",
    "gated": "the same with the address: what reconcile_tables should run",
}


if __name__ == "__main__":
    sys.exit(main())
