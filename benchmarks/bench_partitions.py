"""Person linkage whole against province by province (`lienthong.reconcile.partitions`) on a synthetic country:
time, candidate registry rows and peak RSS per partition, and the whole run's peak RSS either way.

    .venv/bin/python benchmarks/bench_partitions.py --provinces 3 --citizens 30000 \\
        --result benchmarks/results/partitions-small.json [--spark]

Prepare (once per size, kept in `benchmarks/.work/partitions-<P>-<N>/`): generate a country of `--provinces`
provinces (`sandbox.generator.CountryConfig`, `country_provinces(P)`, `--citizens` in total, the documented
cross-province rates), serve it with the sandbox, land it with the real connectors, stage citizen, enterprise,
legal_representative and land_holder; write the link state's registry (a Delta table, `linkstate.registry_rows`)
and the left records (`linkstate.left_rows`), one Parquet file per partition (`partitions.partition_of`, the
representatives by their enterprise's head office, `partitions.head_offices`, also written); train each link type's model once on the whole data
(`partitions.train_whole`, as a first reconciliation trains it) and write it to its files (`models.write`).

Then, each in a child process of its own so that its peak RSS (VmHWM) is its own:

- `whole`: every left record linked at once against the whole registry read into memory (`linkstate.link_rows`,
  what the link state does with `LIENTHONG_LINKAGE_PARTITIONS=none`);
- `partitioned`: every left record linked by `partitions.link_partitioned` (what it does with `province`);
- one child per partition, as its province task links it: its candidates (`partitions.candidate_parts`,
  timed apart), in parts when they or its records exceed `LIENTHONG_LINK_CANDIDATE_ROWS` (`--candidate-rows`
  sets it for every child; each part's records, their Arrow size, and the resident set after it are in
  `parts`), and its links, written part by part; its left records are read by DuckDB from their file
  (`partitions.LeftFile`), one part's reaching Python at a time, as the task reads the plan's; plus, not
  timed, how many registry rows each candidate key alone reaches (which keys make a partition's candidate
  set large); `left_mib` is the Arrow size of the partition's records whole (read after the peak is taken);
- `spark` (only with `--spark`: it is slow): the `whole` child's work on the Spark engine (the settings with
  `linkage_engine="spark"`, `sparkengine`; master `LIENTHONG_SPARK_MASTER`, else `local[2]`, never the Airflow
  connection): the same left records against the whole registry read into memory, the same models. Timed
  apart: `startup_s`, starting the JVM and the SparkSession (`sparkengine.spark_session`, made once per process
  and kept, as a worker does), then `read_registry_s` and `link_s` (the exact passes still on DuckDB, the
  model's scoring on Spark); `scoring` gives per link type the candidate pairs and the time of the Spark
  scoring (`spark_s`, from the log of `sparkengine.score_rest`) within the whole scoring step (`score_s`,
  including the copy of its inputs to Parquet); the `whole` child reports its DuckDB `scoring` alike.
  `peak_rss_mib` is the Python process's only: the JVM is a process of its own, whose peak (VmHWM) is `jvm`
  (the java processes among this process's descendants, read after the linking; a remote master's executors
  are not measured). `--spark-only` runs only this child on a country already measured with the same models
  and compares it with that run's whole links; the driver's memory for a big country comes from
  `PYSPARK_SUBMIT_ARGS` (recorded as `submit_args`), e.g. `--driver-memory 6g pyspark-shell`.

`--tasks-only` runs only the per-province children (e.g. under another `--candidate-rows`), compared with the
whole links of the last full run on the same country and models.

The partitioned links and the per-partition links are checked equal to the whole ones (row for row, scores to
1e-9). The Spark links are compared with the whole (DuckDB) ones as `lienthong linkage-compare` does
(`enginecompare.agreement` and `enginecompare.differences`, left records told apart by `_key`): accepted links
per engine and shared, the agreement (accepted (left, right) pairs both engines accept / pairs either
accepts), the left records whose accepted link differs (the first ones listed, right IDs masked), the others
whose candidate or band differs, and the largest difference of match probability on the pairs both engines
link by the model (`max_abs_score_diff`: every band; `_accepted`: those both accept). The exit status is 1
when the partitioned links differ from the whole ones or the Spark agreement is below
`enginecompare.MIN_AGREEMENT` (the issue's 99.9 %). Each child's `baseline_rss_mib` is its resident set
after the imports, before any data is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
STAGED = ("citizen", "enterprise", "legal_representative", "land_holder")
SEED = 7
SCORE_TOLERANCE = 1e-9


def _root(provinces: int, citizens: int) -> Path:
    return WORK / f"partitions-{provinces}-{citizens}"


# ---- prepare ------------------------------------------------------------------------------------------------


def prepare(provinces: int, citizens: int, seed: int) -> dict[str, Any]:
    """Generate, land and stage the country, write the registry, the left records by partition and the models
    (module docstring); returns what `prepared.json` holds. Reused when it exists."""
    root = _root(provinces, citizens)
    done = root / "prepared.json"
    if done.exists():
        return json.loads(done.read_text())
    from lienthong import pipeline, zones
    from lienthong.contracts import contract
    from lienthong.db import stop_embedded
    from lienthong.reconcile import linkstate, partitions
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source
    from sandbox.generator import CountryConfig, generate
    from sandbox.generator.config import country_provinces
    from sandbox.runner import run_sandbox

    config = CountryConfig(provinces=country_provinces(provinces), citizens=citizens, seed=seed)
    data = root / "sb"
    t0 = time.monotonic()
    print(f"generating a country of {provinces} provinces, {citizens} citizens ...", file=sys.stderr, flush=True)
    generate(config, data)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    staged: dict[str, str] = {}
    try:
        with run_sandbox(data, root / "sbx") as ep:
            os.environ.update(ep.airflow_conn_env())
            print("landing ...", file=sys.stderr, flush=True)
            pipeline.ingest_population("bench")
            pipeline.ingest_business("bench")
            for province in ep.land_dsns:
                pipeline.ingest_land("bench", province)
        settings = load_settings()
        for ds in STAGED:
            print(f"staging {ds} ...", file=sys.stderr, flush=True)
            c = contract(ds)
            res = stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id="bench",
                                    staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            staged[ds] = str(res.staged_path)
        print("registry, left records and models ...", file=sys.stderr, flush=True)
        registry = linkstate.whole_registry(staged)
        state = root / "state"
        zones.create(state / linkstate.REGISTRY, registry, run_id="bench")
        registry_ref = zones.ref(state / linkstate.REGISTRY, 0)
        left = linkstate.whole_left(staged)
        pq.write_table(left, state / "left.parquet")
        offices = partitions.head_offices(staged["enterprise"])
        pq.write_table(offices, state / "head_offices.parquet")
        parts = partitions.partitions(left, offices)
        for name, rows in parts.items():
            pq.write_table(rows, state / f"left-{name}.parquet")
        trained = _train(root, left, registry_ref, settings, tuple(linkstate.LEFT_DATASETS.values()))
    finally:
        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)
    out = {"provinces": list(config.provinces), "citizens": citizens, "seed": seed, "rates": dict(config.rates),
           "staged": staged, "registry_ref": registry_ref, "registry_rows": registry.num_rows,
           "left_rows": left.num_rows, "partitions": {n: r.num_rows for n, r in parts.items()}, "models": trained,
           "prepare_s": round(time.monotonic() - t0, 1)}
    done.write_text(json.dumps(out, indent=2))
    return out


def _train(root: Path, left: pa.Table, registry_ref: str, settings: Any, link_types: tuple[str, ...]) -> dict[str, Any]:
    """Each of `link_types` with left records trained once on all of them against the whole registry
    (`partitions.train_whole`, as a first reconciliation trains it) and written under `root / "models"`:
    link type -> what `prepared.json` holds of its model."""
    from lienthong.reconcile import linkstate, models, partitions
    from lienthong.reconcile.linkstate import _rows_of

    out = {}
    for dataset, link_type in linkstate.LEFT_DATASETS.items():
        if link_type not in link_types:
            continue
        model = partitions.train_whole(_rows_of(left, dataset), registry_ref, settings)
        if model is not None:
            folder, digest = models.write(root / "models", link_type, model)
            out[link_type] = {"path": str(folder), "sha256": digest, "model_id": model.model_id}
    return out


def refresh_models(prepared: dict[str, Any], provinces: int, citizens: int) -> dict[str, Any]:
    """`prepared` with each model that blocks on other keys than `people.BLOCKING_KEYS` (prepared before the keys
    changed: the partitioned link refuses it, `partitions.check_model_keys`) trained again on the whole data as
    `prepare` trains it, written, and `prepared.json` rewritten; the country itself is kept."""
    from lienthong.reconcile import partitions
    from lienthong.settings import load_settings

    stale = []
    for link_type, model in _models(prepared).items():
        try:
            partitions.check_model_keys(model)
        except ValueError:
            stale.append(link_type)
    if not stale:
        return prepared
    root = _root(provinces, citizens)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    try:
        print(f"training {stale} again: their models block on other keys", file=sys.stderr, flush=True)
        prepared["models"] |= _train(root, pq.read_table(root / "state" / "left.parquet"), prepared["registry_ref"],
                                     load_settings(), tuple(stale))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    (root / "prepared.json").write_text(json.dumps(prepared, indent=2))
    return prepared


# ---- the children -------------------------------------------------------------------------------------------


def _models(prepared: dict[str, Any]) -> dict[str, Any]:
    from lienthong.reconcile import models

    return {t: models.load(SimpleNamespace(path=m["path"], sha256=m["sha256"], link_type=t, model_id=m["model_id"]))
            for t, m in prepared["models"].items()}


def _bands(settings: Any) -> Any:
    from lienthong.reconcile.people import LinkBands

    return LinkBands(accept=settings.match_accept, review=settings.match_review)


def _key_reach(rows: pa.Table, registry_ref: str, settings: Any) -> dict[str, int]:
    """Registry rows each candidate key alone reaches from `rows`: an ID key from every record, a blocking key
    from the records the exact passes leave (`partitions.candidates`; not timed)."""
    from lienthong.reconcile import partitions
    from lienthong.reconcile.people import CANDIDATE_KEYS, PERSON_COLUMNS

    return {"+".join(key): partitions.candidates(rows.select(PERSON_COLUMNS), registry_ref, settings, keys=(key,)).num_rows
            for key in CANDIDATE_KEYS}


class _Records(logging.Handler):
    """The log records of one logger, kept (the scoring times the engines log)."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        log = logging.getLogger(logger)
        log.setLevel(logging.INFO)
        log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def args(self, prefix: str) -> list[tuple[Any, ...]]:
        return [r.args for r in self.records if isinstance(r.msg, str) and r.msg.startswith(prefix)
                and isinstance(r.args, tuple)]


def _scoring(link_types: list[str], people: _Records, spark: _Records | None = None) -> dict[str, Any]:
    """Per link type (in the order `link_rows` links them): the candidate pairs scored and the scoring step's time
    (`people._probabilistic_links`), and with Spark the time of the Spark scoring within it."""
    scored = people.args("scored %s candidate pairs")  # (pairs, engine, seconds)
    on_spark = spark.args("Spark scored") if spark is not None else []  # (pairs, seconds)
    out: dict[str, Any] = {}
    for i, link_type in enumerate(link_types):
        row: dict[str, Any] = {}
        if i < len(scored):
            row |= {"pairs": int(scored[i][0]), "score_s": round(float(scored[i][2]), 2)}
        if i < len(on_spark):
            row["spark_s"] = round(float(on_spark[i][1]), 2)
        out[link_type] = row
    return out


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def _jvm_memory() -> dict[str, Any]:
    """The java processes among this process's descendants (the Spark driver's JVM, which pyspark starts as a
    child through spark-submit): pids, peak (VmHWM) and current resident set, MiB, summed."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            status = _status(pid)
            if status.get("Name") == "java" and "VmHWM" in status:
                found.append((pid, int(status["VmHWM"].split()[0]), int(status.get("VmRSS", "0 kB").split()[0])))
    if not found:
        return {"pids": [], "peak_rss_mib": None,
                "note": "no java process among this process's descendants: the JVM's memory is not measured"}
    return {"pids": [p for p, _, _ in found], "peak_rss_mib": round(sum(h for _, h, _ in found) / 1024, 1),
            "rss_mib": round(sum(r for _, _, r in found) / 1024, 1)}


def child(mode: str, provinces: int, citizens: int, partition: str | None) -> dict[str, Any]:
    root = _root(provinces, citizens)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("splink").setLevel(logging.ERROR)
    from splink import DuckDBAPI  # noqa: F401  (loaded before the baseline: every mode links with it)

    from lienthong import zones
    from lienthong.reconcile import linkstate, partitions
    from lienthong.reconcile.linkstate import link_rows
    from lienthong.reconcile.people import PERSON_COLUMNS
    from lienthong.settings import load_settings
    from lienthong.staging import atomic_writer

    if mode == "spark":  # loaded before the baseline too
        import pyspark.sql  # noqa: F401
        from splink.backends.spark import SparkAPI  # noqa: F401

    prepared = json.loads((root / "prepared.json").read_text())
    settings = load_settings()
    bands = _bands(settings)
    trained = _models(prepared)
    ref = prepared["registry_ref"]
    out: dict[str, Any] = {"mode": mode, "baseline_rss_mib": rss_mib("VmRSS")}
    state = root / "state"
    if mode == "whole":
        left = pq.read_table(state / "left.parquet")
        people_log = _Records("lienthong.reconcile.people")
        t0 = time.monotonic()
        registry = zones.read_table(ref).sort_by(linkstate.KEY)
        t1 = time.monotonic()
        links, _, counts = link_rows(left, registry, bands, settings, dict(trained))
        out |= {"left": left.num_rows, "registry": registry.num_rows, "read_registry_s": round(t1 - t0, 2),
                "link_s": round(time.monotonic() - t1, 2), "seconds": round(time.monotonic() - t0, 2), "counts": counts,
                "scoring": _scoring(list(counts), people_log)}
    elif mode == "spark":
        import dataclasses

        from lienthong.reconcile import sparkengine

        spark_settings = dataclasses.replace(settings, linkage_engine="spark",
                                             spark_master=settings.spark_master or sparkengine.DEFAULT_MASTER)
        left = pq.read_table(state / "left.parquet")
        people_log, spark_log = _Records("lienthong.reconcile.people"), _Records("lienthong.reconcile.sparkengine")
        t0 = time.monotonic()
        spark = sparkengine.spark_session(spark_settings)
        t1 = time.monotonic()
        registry = zones.read_table(ref).sort_by(linkstate.KEY)
        t2 = time.monotonic()
        links, _, counts = link_rows(left, registry, bands, spark_settings, dict(trained))
        t3 = time.monotonic()
        out |= {"engine": "spark", "master": spark_settings.spark_master, "spark_version": spark.version,
                "submit_args": os.environ.get("PYSPARK_SUBMIT_ARGS"),  # e.g. the driver's memory for a big country
                "left": left.num_rows, "registry": registry.num_rows, "startup_s": round(t1 - t0, 2),
                "read_registry_s": round(t2 - t1, 2), "link_s": round(t3 - t2, 2),
                "seconds_after_startup": round(t3 - t1, 2), "seconds": round(t3 - t0, 2), "counts": counts,
                "scoring": _scoring(list(counts), people_log, spark_log)}
        out["peak_rss_mib"] = rss_mib()
        out["jvm"] = _jvm_memory()
        sparkengine.stop()
    elif mode == "partitioned":
        left = pq.read_table(state / "left.parquet")
        # read, not derived here: deriving them loads the administrative units (~140 MiB), which a reconciliation
        # has loaded anyway (the person shapes of the citizens need them) and the `whole` child does not
        offices = pq.read_table(state / "head_offices.parquet")
        t0 = time.monotonic()
        links, _, counts = partitions.link_partitioned(left, ref, bands, settings, dict(trained), link=link_rows,
                                                       link_types=linkstate.LEFT_DATASETS, head_offices=offices)
        out |= {"left": left.num_rows, "seconds": round(time.monotonic() - t0, 2), "counts": counts}
    else:
        assert partition is not None
        source = partitions.LeftFile(state / f"left-{partition}.parquet")
        # as a province task links: its records read by DuckDB from their file, in parts when the province's
        # candidates (or records) exceed `settings.link_candidate_rows` (`partitions.candidate_parts`), one
        # part's records and candidates held at a time, each part's links written as they come
        t0 = time.monotonic()
        candidates_s, parts, reached, records = 0.0, [], 0, 0
        t = time.monotonic()
        with atomic_writer(state / f"links-p-{partition}.parquet", linkstate.LINK_STATE_SCHEMA) as write:
            for part in partitions.candidate_parts(source, ref, settings):
                t1 = time.monotonic()  # the first part waits for the province's candidate query, a later one reads its files
                candidates_s += t1 - t
                part_links, _, _ = link_rows(part.left, part.candidates, bands, settings, dict(trained))
                write(part_links)
                parts.append({"left": part.left.num_rows, "left_mib": round(part.left.nbytes / 2**20, 1),
                              "candidates": part.candidates.num_rows, "candidates_s": round(t1 - t, 2),
                              "link_s": round(time.monotonic() - t1, 2), "rss_mib": rss_mib("VmRSS")})
                t = time.monotonic()
                reached, records = part.reached, records + part.left.num_rows
                del part, part_links
        t2 = time.monotonic()
        links = None  # written part by part above
        out |= {"partition": partition, "left": records, "candidates": reached,
                "candidates_share": round(reached / prepared["registry_rows"], 4),
                "candidate_rows_limit": settings.link_candidate_rows, "parts": parts,
                "largest_part_candidates": max(p["candidates"] for p in parts),
                "candidates_s": round(candidates_s, 2), "link_s": round(t2 - t0 - candidates_s, 2),
                "seconds": round(t2 - t0, 2), "rate_records_per_s": round(records / max(t2 - t0, 1e-9), 1)}
        out["peak_rss_mib"] = rss_mib()
        rows = pq.read_table(source.path)  # after the peak is taken: what reading them whole would have held
        out["left_mib"] = round(rows.nbytes / 2**20, 1)
        # the blocking keys are followed only from the records the exact passes leave to the model
        if not os.environ.get("BENCH_SKIP_KEY_REACH"):
            out["exact_linked"] = partitions.exact_linked(rows.select(PERSON_COLUMNS), ref, settings)
            out["candidates_by_key"] = _key_reach(rows, ref, settings)
    out.setdefault("peak_rss_mib", rss_mib())
    if links is not None:
        pq.write_table(links, state / f"links-{mode if partition is None else 'p-' + partition}.parquet")
    return out


def _run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed (exit {out.returncode})")
    return json.loads([ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")][-1])


# ---- the comparison -----------------------------------------------------------------------------------------


def differences(got: pa.Table, want: pa.Table) -> int:
    """Rows that differ: in any column but the scores, or in a score by more than SCORE_TOLERANCE."""
    g, w = got.sort_by("_key").to_pylist(), want.sort_by("_key").to_pylist()
    if len(g) != len(w):
        return abs(len(g) - len(w)) or 1
    n = 0
    for a, b in zip(g, w, strict=True):
        for c in a:
            x, y = a[c], b[c]
            if c in ("score", "runner_up_score") and x is not None and y is not None:
                if abs(x - y) > SCORE_TOLERANCE:
                    n += 1
                    break
            elif x != y:
                n += 1
                break
    return n


def engine_agreement(spark: pa.Table, duckdb: pa.Table) -> dict[str, Any]:
    """The Spark links against the DuckDB ones as `lienthong linkage-compare` compares them (module docstring);
    both in the link state's shape (`linkstate.LINK_STATE_SCHEMA`)."""
    import pyarrow.compute as pc

    from lienthong.reconcile import enginecompare
    from lienthong.reconcile.linkstate import LEFT_DATASETS

    def keyed(links: pa.Table) -> pa.Table:  # left_id: the `_key` (`<dataset>|<unique_id>`), unique across datasets
        return links.set_column(links.schema.get_field_index("left_id"), "left_id", links["_key"])

    def compared(a: pa.Table, b: pa.Table) -> dict[str, Any]:
        ratio, counts = enginecompare.agreement(a, b)
        return {"accepted": {"duckdb": counts["a"], "spark": counts["b"], "both": counts["both"]},
                "agreement": round(ratio, 6)}

    a, b = keyed(duckdb), keyed(spark)
    out = compared(a, b)
    diffs, other = enginecompare.differences(a, b)
    cols = ["left_id", "right_id", "method", "band", "score"]
    j = a.select(cols).join(b.select(cols), keys=["left_id", "right_id"], join_type="inner",
                            left_suffix="_duckdb", right_suffix="_spark")
    model = j.filter(pc.and_(pc.equal(j["method_duckdb"], "probabilistic"), pc.equal(j["method_spark"], "probabilistic")))
    both = model.filter(pc.and_(pc.equal(model["band_duckdb"], "accept"), pc.equal(model["band_spark"], "accept")))

    def max_diff(t: pa.Table) -> float | None:
        d = pc.max(pc.abs(pc.subtract(t["score_duckdb"], t["score_spark"]))).as_py()
        return None if d is None else float(f"{d:.3g}")

    out |= {"min_agreement": enginecompare.MIN_AGREEMENT, "agreement_ok": out["agreement"] >= enginecompare.MIN_AGREEMENT,
            "accepted_links_differing": len(diffs), "other_links_differing": other,
            "differences": [enginecompare.masked(d) for d in diffs[:10]],
            "model_pairs_shared": model.num_rows, "max_abs_score_diff": max_diff(model),
            "model_pairs_both_accept": both.num_rows, "max_abs_score_diff_accepted": max_diff(both),
            "by_link_type": {t: compared(a.filter(pc.equal(a["dataset"], d)), b.filter(pc.equal(b["dataset"], d)))
                             for d, t in LEFT_DATASETS.items()}}
    return out


def country_arguments(description: str, result: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark on a prepared country (`prepare`): its size and seed, and `--result`
    (`result` names the default file)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provinces", type=int, default=3)
    ap.add_argument("--citizens", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--result", type=Path, help=f"default benchmarks/results/{result}")
    return ap


def _spark(size: list[str]) -> dict[str, Any]:
    """The `spark` child's result."""
    spark = _run_child(["--child", "spark", *size])
    print(f"spark ({spark['master']}): {spark['seconds']} s (start-up {spark['startup_s']} s, linking "
          f"{spark['link_s']} s), peak RSS {spark['peak_rss_mib']} MiB, JVM {spark['jvm']['peak_rss_mib']} MiB",
          flush=True)
    return spark


def _agree(spark: dict[str, Any], state: Path) -> None:
    """`spark` with its agreement with the whole DuckDB links of `state`."""
    spark["agreement"] = ag = engine_agreement(pq.read_table(state / "links-spark.parquet"),
                                               pq.read_table(state / "links-whole.parquet"))
    print(f"spark vs duckdb: accepted {ag['accepted']}, agreement {ag['agreement']:.4%}, "
          f"{ag['accepted_links_differing']} differing accepted link(s), max |score diff| "
          f"{ag['max_abs_score_diff']}", flush=True)


def _with_spark(result: dict[str, Any], spark: dict[str, Any]) -> None:
    """`result` with the Spark run and its figures in the summary."""
    ag = spark["agreement"]
    result["spark"] = spark
    result["summary"] |= {
        "spark_s": spark["seconds"], "spark_startup_s": spark["startup_s"], "spark_link_s": spark["link_s"],
        "spark_peak_rss_mib": spark["peak_rss_mib"], "spark_jvm_peak_rss_mib": spark["jvm"]["peak_rss_mib"],
        "spark_accepted": ag["accepted"], "spark_agreement": ag["agreement"],
        "spark_accepted_links_differing": ag["accepted_links_differing"],
        "spark_max_abs_score_diff": ag["max_abs_score_diff"],
    }


def main() -> int:
    ap = country_arguments(__doc__, "partitions-<P>-<N>.json")
    ap.add_argument("--spark", action="store_true",
                    help="also link on the Spark engine and compare with DuckDB (slow; the `spark` child)")
    ap.add_argument("--spark-only", action="store_true",
                    help="only the `spark` child, compared with the whole links of the last run on this country "
                         "(state/links-whole.parquet, the same models); its part of the result file is replaced")
    ap.add_argument("--candidate-rows", type=int,
                    help="LIENTHONG_LINK_CANDIDATE_ROWS for the children (default: the setting's default)")
    ap.add_argument("--skip-key-reach", action="store_true",
                    help="the province children do not count what each key reaches (a query per key: minutes at 5M)")
    ap.add_argument("--tasks-only", action="store_true",
                    help="only the per-province children, compared with the whole links of the last run on this "
                         "country (state/links-whole.parquet, the same models): e.g. another --candidate-rows")
    ap.add_argument("--child", choices=("whole", "partitioned", "partition", "spark"))
    ap.add_argument("--partition")
    args = ap.parse_args()
    if args.candidate_rows is not None:
        os.environ["LIENTHONG_LINK_CANDIDATE_ROWS"] = str(args.candidate_rows)  # the children inherit it
    if args.skip_key_reach:
        os.environ["BENCH_SKIP_KEY_REACH"] = "1"
    if args.child:
        print(json.dumps(child(args.child, args.provinces, args.citizens, args.partition)))
        return 0
    prepared = refresh_models(prepare(args.provinces, args.citizens, args.seed), args.provinces, args.citizens)
    size = ["--provinces", str(args.provinces), "--citizens", str(args.citizens)]
    if args.spark_only:
        path = args.result or RESULTS / f"partitions-{args.provinces}-{args.citizens}.json"
        result = json.loads(path.read_text())
        if result["models"] != {t: m["model_id"] for t, m in prepared["models"].items()}:
            print(f"{path} was measured with other models: run without --spark-only", file=sys.stderr)
            return 2
        spark = _spark(size)
        _agree(spark, _root(args.provinces, args.citizens) / "state")
        _with_spark(result, spark)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {path}")
        return 0 if spark["agreement"]["agreement_ok"] else 1
    print(f"{prepared['registry_rows']} citizens, {prepared['left_rows']} left records in partitions "
          f"{prepared['partitions']}", flush=True)
    whole: dict[str, Any] | None = None
    partitioned: dict[str, Any] | None = None
    if not args.tasks_only:
        whole = _run_child(["--child", "whole", *size])
        print(f"whole: {whole['seconds']} s, peak RSS {whole['peak_rss_mib']} MiB", flush=True)
        partitioned = _run_child(["--child", "partitioned", *size])
        print(f"partitioned: {partitioned['seconds']} s, peak RSS {partitioned['peak_rss_mib']} MiB", flush=True)
    parts = {}
    for name in prepared["partitions"]:
        parts[name] = p = _run_child(["--child", "partition", "--partition", name, *size])
        print(f"partition {name}: {p['left']} left records, {p['candidates']} candidates "
              f"({100 * p['candidates_share']:.1f} %) in {len(p['parts'])} part(s) (largest "
              f"{p['largest_part_candidates']}), {p['seconds']} s, peak RSS {p['peak_rss_mib']} MiB", flush=True)
    spark = _spark(size) if args.spark else None
    state = _root(args.provinces, args.citizens) / "state"
    want = pq.read_table(state / "links-whole.parquet")
    by_partition = pa.concat_tables([pq.read_table(state / f"links-p-{n}.parquet") for n in parts])
    equal = {"partitions_vs_whole_rows_differing": differences(by_partition, want), "links": want.num_rows}
    if whole is not None and partitioned is not None:
        equal |= {"partitioned_vs_whole_rows_differing":
                  differences(pq.read_table(state / "links-partitioned.parquet"), want),
                  "counts_equal": partitioned["counts"] == whole["counts"]}
    print(f"equal: {equal}", flush=True)
    if spark is not None:
        _agree(spark, state)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "what": "person linkage of every left record at once against the whole registry, against province by "
                "province against each partition's candidates; with --spark, the whole linking on the Spark engine "
                "and its agreement with DuckDB (benchmarks/bench_partitions.py)",
        "machine": {"cpus": os.cpu_count()},
        "country": {k: prepared[k] for k in ("provinces", "citizens", "seed", "rates", "registry_rows", "left_rows",
                                             "partitions", "prepare_s")},
        "models": {t: m["model_id"] for t, m in prepared["models"].items()},
        "whole": whole, "partitioned": partitioned, "partitions": parts, "equal": equal,
        "summary": {
            **({"whole_peak_rss_mib": whole["peak_rss_mib"], "partitioned_peak_rss_mib": partitioned["peak_rss_mib"],
                "whole_s": whole["seconds"], "partitioned_s": partitioned["seconds"]}
               if whole is not None and partitioned is not None else {}),
            "largest_partition_peak_rss_mib": max(p["peak_rss_mib"] for p in parts.values()),
            "largest_candidates_share": max(p["candidates_share"] for p in parts.values()),
            "candidate_rows_limit": next(iter(parts.values()))["candidate_rows_limit"],
            "largest_part_candidates": max(p["largest_part_candidates"] for p in parts.values()),
            "parts": {n: len(p["parts"]) for n, p in parts.items()},
            "sum_of_partitions_s": round(sum(p["seconds"] for p in parts.values()), 2),
        },
    }
    if spark is not None:
        _with_spark(result, spark)
    out = args.result or RESULTS / f"partitions-{args.provinces}-{args.citizens}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    ok = equal.get("partitioned_vs_whole_rows_differing", 0) == 0 and equal["partitions_vs_whole_rows_differing"] == 0
    ok = ok and (spark is None or spark["agreement"]["agreement_ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
