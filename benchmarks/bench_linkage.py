"""Reconciliation (linkage + golden records + findings) time, peak RSS and accuracy at several province sizes.

Works on what the connector benchmark landed: for each size N, `benchmarks/.work/run-N` (raw zone) and
`benchmarks/.work/data-N/truth` (ground truth), i.e. after `bench_connectors.py --citizens N`. The six
datasets are staged first when that run has no staged zone yet (timed apart). Each size runs in its own
child process, so its peak RSS is its own.

    .venv/bin/python benchmarks/bench_linkage.py --sizes 200000,1000000

Writes benchmarks/results/linkage.json (or `--out`): per size, seconds per step (dedupe, each link type,
golden records, findings), the exact / legacy / probabilistic split per link type, findings by type, peak
RSS, and precision / recall / F1 per link type against the ground truth; plus the growth ratio
time(N)/time(N0) against N/N0 (1.0 per doubling = linear).

`--baseline` adds, per size, a `baseline` block: person linkage (representatives -> citizens, land holders
-> citizens) by our `link_people` against a Splink model set up the way Splink's own examples set one up,
on the same left / right person tables that reconciliation gives `link_people`, each in its own child
process (seconds, peak RSS, candidate pairs, precision / recall / F1, and the differences):

    .venv/bin/python benchmarks/bench_linkage.py --sizes 100000 --baseline --out benchmarks/results/linkage-baseline-100000.json

The baseline ("Splink default") follows Splink's DuckDB example "Linking without deduplication"
(docs/demos/examples/duckdb/link_only.ipynb in moj-analytical-services/splink: two tables of people,
link_only), with Splink's FEBRL4 example (docs/demos/examples/duckdb/febrl4.ipynb: two tables of people
with an ID number) for what the first does not cover:

- comparisons, library defaults, column for column as in link_only: `NameComparison(given_name)`
  (first_name), `NameComparison(family_name)` (surname), `DateOfBirthComparison(birth_date)` (dob),
  `ExactMatch(commune)` with term-frequency adjustment (city, as the example does), and for email (our
  sources have none) FEBRL4's ID comparison `DamerauLevenshteinAtThresholds(id_number, [1, 2])`. Term
  frequencies: commune, and the exact level of each name (NameComparison's own default in Splink 5), taken
  from the two input tables. Nothing of ours: no birth year, legacy ID, street, sorted name tokens or
  commune aliases;
- blocking: FEBRL4's person rules (given + family name, the two swapped, birth date, ID number). The
  link_only example blocks on first name alone and surname alone; on Vietnamese names (44 family names,
  "nguyen" 39 %) those make 0.13 and 1.4 billion pairs for the land holders at 100k citizens, against
  Splink's own advice (tutorial 03) of at most ~20 million in DuckDB on a laptop, so they cannot run;
- prior: `estimate_probability_two_random_records_match` on FEBRL4's deterministic rules (ID; names +
  birth date), recall 0.8; u: `estimate_u_using_random_sampling(max_pairs=1e6, seed=1)` (link_only);
  m: EM blocked on names then on birth date (tutorial 04), then on the ID (link_only's email pass); a pass
  with no pairs (birth date, for land holders who only have a birth year) is skipped;
- a link: the best-scoring registry record at match probability >= 0.95 (no margin rule, no review band).

Contenders (modes): `ours` (`link_people`), `splink_all` (the baseline links every left record, as a
Splink user starting from the tutorial would: the headline comparison of the whole linkage) and
`splink_after_exact` (our exact ID / legacy-ID passes first, then the same baseline model, trained the
same way on every left record, scores what they leave, as `link_people` does: compares the models alone).
Candidate pairs are the pairs the blocking rules generate (what the model scores), counted exactly by
Splink outside the timed part; for `ours` and `splink_after_exact` over the records the exact passes left.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")




def _latest_staged(run_dir: Path, dataset: str) -> Path | None:
    files = sorted((run_dir / "staged" / dataset).glob("*/*.parquet"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def child(size: int) -> dict:
    import pyarrow.parquet as pq

    run_dir = WORK / f"run-{size}"
    os.environ["LIENTHONG_DATA_DIR"] = str(run_dir)
    from lienthong.contracts import contract
    from lienthong.linkscore import link_accuracy
    from lienthong.reconcile.run import reconcile_tables
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source

    settings = load_settings()
    t0 = time.monotonic()
    staged_now = []
    for ds in DATASETS:
        if _latest_staged(run_dir, ds) is None:
            c = contract(ds)
            stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id=f"bench-{ds}-{time.time_ns()}",
                              staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            staged_now.append(ds)
    stage_s = time.monotonic() - t0
    staged = {ds: pq.read_table(_latest_staged(run_dir, ds)) for ds in DATASETS}
    t1 = time.monotonic()
    tables, found, metrics = reconcile_tables(staged, settings)
    total = time.monotonic() - t1
    accuracy = link_accuracy(tables, staged["citizen"], staged["enterprise"], WORK / f"data-{size}" / "truth")
    return {
        "citizens": size,
        "rows": {ds: t.num_rows for ds, t in staged.items()},
        "staged_first_s": round(stage_s, 1) if staged_now else None,
        "reconcile_s": round(total, 2),
        "steps_s": metrics["seconds"],
        "links": metrics["links"],
        "findings": dict(collections.Counter(f.type for f in found)),
        "integrated_rows": {n: t.num_rows for n, t in tables.items()},
        "accuracy": accuracy,
        "peak_rss_mib": rss_mib(),
    }


# ---- person linkage: ours against Splink's default set-up (--baseline) ----------------------------------
LINK_TYPES = ("representative_citizen", "holder_citizen")
BASELINE_MODES = ("ours", "splink_all", "splink_after_exact")
ACCEPT = 0.95


def _person_inputs(size: int) -> tuple[pa.Table, dict[str, pa.Table], pa.Table]:
    """The registry and the two left tables exactly as `reconcile_tables` builds them for `link_people`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lienthong.reconcile import sources

    run_dir = WORK / f"run-{size}"
    cit = pq.read_table(_latest_staged(run_dir, "citizen"))
    reps = pq.read_table(_latest_staged(run_dir, "legal_representative"))
    holders = pq.read_table(_latest_staged(run_dir, "land_holder"))
    holders = holders.filter(pc.invert(pc.fill_null(holders["deleted"], False)))
    person_holders = holders.filter(pc.equal(holders["holder_type"], "CA_NHAN"))
    lefts = {"representative_citizen": sources.representatives_as_people(reps),
             "holder_citizen": sources.holders_as_people(person_holders)}
    return sources.citizens_as_people(cit), lefts, cit


def _scorer(size: int, staged_citizens: pa.Table):
    """score(link_type, links) -> precision / recall / F1 of accepted links, judged as lienthong.linkscore
    judges the integrated tables (a link is right when the citizen it names is a record of the same true
    person; recall over records whose person has a record in the staged registry)."""
    from lienthong.linkscore import _score, _truth_maps

    truth = _truth_maps(WORK / f"data-{size}" / "truth")
    citizen_person = truth["citizen"]
    in_registry = {citizen_person[k] for k in staged_citizens["citizen_id"].to_pylist() if k in citizen_person}
    key = {"representative_citizen": "representative", "holder_citizen": "land_holder_person"}

    def score(link_type: str, links: pa.Table) -> dict:
        known = truth[key[link_type]]
        pairs = []
        for left, right, band in zip(links["left_id"].to_pylist(), links["right_id"].to_pylist(),
                                     links["band"].to_pylist(), strict=True):
            t = known.get(left)
            if t is not None:
                pairs.append((t, citizen_person.get(right) if right else None, band))
        return _score(pairs, sum(1 for t, _, _ in pairs if t in in_registry))

    return score


def _count_pairs(con, left_table: str, right_table: str, rules: list) -> int:
    """Record pairs the blocking rules generate (= pairs the model scores), counted exactly by Splink."""
    from splink import DuckDBAPI
    from splink.blocking_analysis import count_comparisons_from_blocking_rules

    if con.execute(f"SELECT count(*) FROM {left_table}").fetchone()[0] == 0:
        return 0
    db = DuckDBAPI(connection=con)
    counts = count_comparisons_from_blocking_rules(
        [db.register(left_table, dataset_display_name="left"), db.register(right_table, dataset_display_name="right")],
        blocking_rules=rules, link_type="link_only", record_sample_proportion=1.0)
    return int(counts[-1]["cumulative_comparison_count"]) if counts else 0


def _load(con, left: pa.Table, right: pa.Table) -> None:
    from lienthong.reconcile.people import PERSON_COLUMNS

    con.register("left_in", left.select(PERSON_COLUMNS))
    con.register("right_in", right.select(PERSON_COLUMNS))
    con.execute("CREATE TABLE l AS SELECT * FROM left_in")
    con.execute("CREATE TABLE r AS SELECT * FROM right_in")


def _ours(left: pa.Table, right: pa.Table) -> tuple[pa.Table, dict]:
    """`link_people` as reconciliation calls it (timed), then its candidate pairs counted (not timed)."""
    import duckdb
    import pyarrow.compute as pc

    from lienthong.reconcile.people import LinkBands, _settings, link_people
    from lienthong.settings import load_settings

    s = load_settings()
    t0 = time.monotonic()
    result = link_people(left, right, LinkBands(accept=s.match_accept, review=s.match_review))
    seconds = time.monotonic() - t0
    links = result.links
    exact = links.filter(pc.is_in(links["method"], value_set=pa.array(["exact_id", "legacy_id"])))
    con = duckdb.connect()
    _load(con, left, right)
    con.register("exact_ids", exact.select(["left_id"]))
    con.execute("CREATE TABLE l_rest AS SELECT * FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_ids)")
    pairs = _count_pairs(con, "l_rest", "r", _settings().blocking_rules_to_generate_predictions)
    con.close()
    return links, {"seconds": round(seconds, 2), "steps_s": {k: round(v, 2) for k, v in result.seconds.items()},
                   "counts": result.counts, "candidate_pairs": pairs, "candidate_pairs_scope": "left records the exact passes left"}


def splink_default_settings():
    """The baseline model (see the module docstring for where each line comes from)."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("family_name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=False),
            cl.ExactMatch("commune").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("id_number", [1, 2]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "family_name"),
            "l.given_name = r.family_name and l.family_name = r.given_name",
            block_on("birth_date"),
            block_on("id_number"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def _splink_default(left: pa.Table, right: pa.Table, *, after_exact: bool) -> tuple[pa.Table, dict]:
    """The baseline on one link type. Trained on every left record against the registry, as Splink's
    examples train; with `after_exact`, our exact passes link first and the same model scores the rest."""
    import duckdb
    from splink import DuckDBAPI, Linker, block_on

    from lienthong.reconcile.people import LINK_SCHEMA, _exact_links

    con = duckdb.connect()
    t0 = time.monotonic()
    _load(con, left, right)
    steps: dict[str, float] = {}
    if after_exact:
        _exact_links(con)  # our exact ID / legacy-ID passes: table exact_links
        con.execute("CREATE TABLE l_model AS SELECT * FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_links)")
    else:
        con.execute("CREATE VIEW l_model AS SELECT * FROM l")
    steps["exact"] = time.monotonic() - t0
    n_model = con.execute("SELECT count(*) FROM l_model").fetchone()[0]
    settings = splink_default_settings()
    t_pairs = time.monotonic()
    pairs = _count_pairs(con, "l_model", "r", settings.blocking_rules_to_generate_predictions)
    em_pairs = {name: _count_pairs(con, "l", "r", [rule]) for name, rule in (
        ("names", block_on("given_name", "family_name")), ("birth_date", block_on("birth_date")),
        ("id_number", block_on("id_number")))}
    not_timed = time.monotonic() - t_pairs  # counting pairs is not part of the linkage
    t1 = time.monotonic()
    db = DuckDBAPI(connection=con)
    linker = Linker([db.register("l", dataset_display_name="left"), db.register("r", dataset_display_name="right")],
                    settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("id_number"), block_on("given_name", "family_name", "birth_date")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    model: dict = {"em_passes": {}}
    for name, rule in (("names", block_on("given_name", "family_name")), ("birth_date", block_on("birth_date")),
                       ("id_number", block_on("id_number"))):
        # A pass with no blocked pairs (birth date, for land holders who have a birth year only) is skipped
        # before it starts: Splink would raise, and a failed session leaves its own prior in the model.
        if em_pairs[name] == 0:
            model["em_passes"][name] = "skipped: no blocked pairs"
            continue
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
        model["em_passes"][name] = f"trained on {em_pairs[name]} pairs"
    trained = linker.misc.save_model_to_json()
    model["probability_two_random_records_match"] = trained["probability_two_random_records_match"]
    steps["training"] = time.monotonic() - t1
    t2 = time.monotonic()
    if n_model:
        scorer = linker if not after_exact else Linker(
            [db.register("l_model", dataset_display_name="left_rest"), db.register("r", dataset_display_name="right_all")],
            trained, log_level=logging.ERROR)
        pred = scorer.inference.predict(threshold_match_probability=ACCEPT)
        left_name = "left_rest" if after_exact else "left"
        con.execute(f"""
            CREATE TABLE best AS
            SELECT CASE WHEN source_dataset_l = '{left_name}' THEN unique_id_l ELSE unique_id_r END AS left_id,
                   CASE WHEN source_dataset_l = '{left_name}' THEN unique_id_r ELSE unique_id_l END AS right_id,
                   match_probability AS score, match_weight AS weight
            FROM {pred.physical_name}
        """)
        con.execute("CREATE TABLE best1 AS SELECT * FROM best "
                    "QUALIFY row_number() OVER (PARTITION BY left_id ORDER BY weight DESC, right_id) = 1")
    else:
        con.execute("CREATE TABLE best1 (left_id VARCHAR, right_id VARCHAR, score DOUBLE)")
    steps["predict"] = time.monotonic() - t2
    exact_sql = "SELECT left_id, right_id, method, score, band FROM exact_links UNION ALL " if after_exact else ""
    links = con.execute(f"""
        {exact_sql}
        SELECT l.unique_id AS left_id, b.right_id, 'probabilistic' AS method, b.score,
               CASE WHEN b.right_id IS NULL THEN 'reject' ELSE 'accept' END AS band
        FROM l_model l LEFT JOIN best1 b ON b.left_id = l.unique_id
    """).to_arrow_table()
    seconds = time.monotonic() - t0 - not_timed
    con.close()
    bands = links["band"].to_pylist()
    counts = {"left": left.num_rows, "right": right.num_rows, "model_records": n_model,
              "exact_accept": left.num_rows - n_model, "accepted": sum(1 for b in bands if b == "accept")}
    links = links.cast(pa.schema([f for f in LINK_SCHEMA if f.name in links.schema.names]))
    return links, {"seconds": round(seconds, 2), "steps_s": {k: round(v, 2) for k, v in steps.items()},
                   "counts": counts, "candidate_pairs": pairs,
                   "candidate_pairs_scope": "left records after our exact passes" if after_exact else "every left record",
                   "model": model}


def link_child(mode: str, size: int) -> dict:
    """One contender on both person link types, in a process of its own (its peak RSS is its own)."""
    os.environ["LIENTHONG_DATA_DIR"] = str(WORK / f"run-{size}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("splink").setLevel(logging.ERROR)  # "level not observed, unable to train m": expected here
    right, lefts, cit = _person_inputs(size)
    score = _scorer(size, cit)
    out: dict = {"mode": mode, "citizens": size, "link_types": {}}
    for link_type, left in lefts.items():
        print(f"  [{mode}] {link_type}: {left.num_rows} records against {right.num_rows} ...", file=sys.stderr, flush=True)
        if mode == "ours":
            links, info = _ours(left, right)
        else:
            links, info = _splink_default(left, right, after_exact=mode == "splink_after_exact")
        info["accuracy"] = score(link_type, links)
        out["link_types"][link_type] = info
        a = info["accuracy"]
        print(f"  [{mode}] {link_type}: {info['seconds']:.1f} s, {info['candidate_pairs']} candidate pairs, "
              f"P {a['precision']:.4f} R {a['recall']:.4f} F1 {a['f1']:.4f}", file=sys.stderr, flush=True)
    out["seconds"] = round(sum(v["seconds"] for v in out["link_types"].values()), 2)
    out["peak_rss_mib"] = rss_mib()
    return out


def baseline(size: int) -> dict:
    """Run the three contenders one after the other; the `baseline` block of one size's results."""
    runs = {}
    for mode in BASELINE_MODES:
        print(f"{size:>9} citizens: person linkage, {mode} ...", flush=True)
        out = subprocess.run([sys.executable, __file__, "--link-child", mode, "--size", str(size)],
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise SystemExit(f"person linkage {mode} at {size} failed (exit {out.returncode})")
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    ours = runs["ours"]
    comparison: dict = {}
    for mode in ("splink_all", "splink_after_exact"):
        other = runs[mode]
        comparison[mode] = {
            "f1_ours_minus_baseline": {lt: round(ours["link_types"][lt]["accuracy"]["f1"] - other["link_types"][lt]["accuracy"]["f1"], 6)
                                       for lt in LINK_TYPES},
            "precision_ours_minus_baseline": {
                lt: round(ours["link_types"][lt]["accuracy"]["precision"] - other["link_types"][lt]["accuracy"]["precision"], 6)
                for lt in LINK_TYPES},
            "recall_ours_minus_baseline": {
                lt: round(ours["link_types"][lt]["accuracy"]["recall"] - other["link_types"][lt]["accuracy"]["recall"], 6)
                for lt in LINK_TYPES},
            "time_baseline_over_ours": round(other["seconds"] / max(ours["seconds"], 1e-9), 2),
            "peak_rss_baseline_over_ours": round(other["peak_rss_mib"] / max(ours["peak_rss_mib"], 1e-9), 2),
            "candidate_pairs_baseline_over_ours": {
                lt: round(other["link_types"][lt]["candidate_pairs"] / max(ours["link_types"][lt]["candidate_pairs"], 1), 2)
                for lt in LINK_TYPES},
        }
    return {"definition": "Splink default: see the docstring of benchmarks/bench_linkage.py "
                          "(Splink's link_only and FEBRL4 examples; threshold 0.95)",
            "sources": ["https://github.com/moj-analytical-services/splink/blob/master/docs/demos/examples/duckdb/link_only.ipynb",
                        "https://github.com/moj-analytical-services/splink/blob/master/docs/demos/examples/duckdb/febrl4.ipynb",
                        "https://github.com/moj-analytical-services/splink/blob/master/docs/demos/tutorials/04_Estimating_model_parameters.ipynb"],
            "ours": ours, "splink_all": runs["splink_all"], "splink_after_exact": runs["splink_after_exact"],
            "comparison": comparison}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--baseline", action="store_true", help="also compare person linkage with Splink's default set-up")
    ap.add_argument("--child", type=int)
    ap.add_argument("--link-child", choices=BASELINE_MODES)
    ap.add_argument("--size", type=int)
    ap.add_argument("--out", type=Path, default=RESULTS / "linkage.json", help="where to write the JSON results")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    if args.link_child:
        print(json.dumps(link_child(args.link_child, args.size)))
        return 0
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        if not (WORK / f"run-{size}" / "raw").exists():
            print(f"no raw zone for {size}: run bench_connectors.py --citizens {size} first", file=sys.stderr)
            return 1
        out = subprocess.run([sys.executable, __file__, "--child", str(size)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-4000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        acc = r["accuracy"]
        print(f"{size:>9} citizens: reconcile {r['reconcile_s']:>7.1f}s  RSS {r['peak_rss_mib']:>6.0f} MiB  "
              f"rep F1 {acc['representative_citizen']['f1']:.4f}  holder F1 {acc['holder_citizen']['f1']:.4f}  "
              f"auto-accepted precision {acc['all_auto_accepted_precision']:.5f}", flush=True)
        if args.baseline:
            r["baseline"] = b = baseline(size)
            for mode, c in b["comparison"].items():
                print(f"{size:>9} citizens: ours vs {mode}: F1 ours - baseline {c['f1_ours_minus_baseline']}, "
                      f"time baseline / ours {c['time_baseline_over_ours']}, "
                      f"peak RSS baseline / ours {c['peak_rss_baseline_over_ours']}", flush=True)
    base = results[0]
    for r in results:
        r["growth"] = {"size_ratio": round(r["citizens"] / base["citizens"], 2),
                       "time_ratio": round(r["reconcile_s"] / base["reconcile_s"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
