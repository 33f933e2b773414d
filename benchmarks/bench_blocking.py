"""The model's blocking keys on a synthetic country against its ground truth: which true pairs each key finds,
and how far into the registry each key reaches from a partition.

    .venv/bin/python benchmarks/bench_blocking.py --provinces 5 --citizens 1000000 \\
        [--result benchmarks/results/blocking-5-1000000.json]

Works on the country `bench_partitions.py` prepares (`benchmarks/.work/partitions-<P>-<N>/`, prepared here when
missing): its registry version, its left records and the generator's truth (`sb/truth/links.parquet`: the
person behind every citizen, land-holder and representative record).

Only the left records the exact passes leave need the blocking keys (`people.exact_pairs_sql`; the model
scores only those, and `partitions.candidates` follows the blocking keys only from them). For those records,
and for each key set (`current`: `people.BLOCKING_KEYS`; `before`: the keys before the change that dropped
the birth date alone, `PREVIOUS_BLOCKING_KEYS`), it reports:

- `found`: the records whose true person has a registry record sharing a key of the set with them, by left
  dataset, and among them those held outside the person's home province (`cross_province`). A true pair no
  key finds is never scored: blocking is where recall is lost first;
- per key: the records it finds (`finds`), those it alone finds within its set (`only`), and the registry rows
  it reaches from the records of each partition (`reach`, distinct registry rows);
- `reach`: distinct registry rows the set reaches from each partition's records, and from all of them.

A partition's candidates (`partitions.candidates`) are these rows plus the rows sharing an ID with any of its
records. Counting is in one DuckDB session; nothing is timed.

And when `bench_partitions.py` has linked the country (`state/links-whole.parquet`, with the keys and models of
that run), `accuracy`: per left dataset, in the person's home province or outside it, the records whose
person is in the registry (`linkable`), the accepted links to a record of that person (`true`) and to any
other (`false`), precision, recall and F1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from bench_partitions import RESULTS, _root, country_arguments, prepare

# The blocking keys before they were narrowed: a key on the birth date alone reached a quarter of a 5M
# registry from one province's left-over records (results/partitions-5-5000000.json).
PREVIOUS_BLOCKING_KEYS: tuple[tuple[str, ...], ...] = (
    ("name_fold", "birth_year"),
    ("name_sorted", "birth_year"),
    ("name_fold", "commune"),
    ("name_fold", "street"),
    ("birth_date",),
    ("family_name", "given_name", "commune"),
    ("family_name", "birth_year", "street"),
    ("substr(id_number, 1, 6)", "given_name"),
    ("substr(id_number, 7, 6)",),
    ("legacy_id",),
)
TRUTH_DATASET = {"land_holder": "land_holder", "legal_representative": "representative"}


def report(root: Path, registry_ref: str, sets: dict[str, tuple[tuple[str, ...], ...]]) -> dict[str, Any]:
    """The module docstring's figures for each key set in `sets`, on the prepared country at `root`."""
    from lienthong import zones
    from lienthong.duck import session
    from lienthong.reconcile.partitions import _key_columns, key_condition, partition_of
    from lienthong.reconcile.people import exact_pairs_sql

    keys = list(dict.fromkeys(k for s in sets.values() for k in s))
    left = pq.read_table(root / "state" / "left.parquet")
    left = left.append_column("part", partition_of(left, pq.read_table(root / "state" / "head_offices.parquet")))
    truth = pq.read_table(root / "sb" / "truth" / "links.parquet",
                          columns=["dataset", "record_key", "person_id", "cross_province"])
    mapping = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in TRUTH_DATASET.items())
    with session(purpose="bench-blocking") as con:
        zones.register(con, "registry", registry_ref)
        con.register("left_in", left)
        con.register("truth", truth)
        con.execute(f"""CREATE TABLE rest AS
            SELECT l.*, t.person_id, coalesce(t.cross_province, false) AS cross_province
            FROM left_in l LEFT JOIN truth t ON t.record_key = l.unique_id AND t.dataset = CASE l.dataset {mapping} END
            WHERE l.unique_id NOT IN (SELECT left_id FROM ({exact_pairs_sql('left_in', 'registry')}))""")
        con.execute("""CREATE TABLE registry_truth AS SELECT r.*, t.person_id FROM registry r
                       JOIN truth t ON t.dataset = 'citizen' AND t.record_key = r.unique_id""")
        shares = ", ".join(f"({key_condition(k)}) IS TRUE AS k{i}" for i, k in enumerate(keys))
        con.execute(f"""CREATE TABLE true_pairs AS SELECT l.unique_id, l.dataset, l.cross_province, {shares}
                        FROM rest l JOIN registry_truth r ON r.person_id = l.person_id""")
        for i, k in enumerate(keys):
            cols = ", ".join(_key_columns((k,)))
            con.execute(f"""CREATE TABLE reach{i} AS SELECT DISTINCT r._key, l.part FROM registry r
                            JOIN (SELECT DISTINCT part, {cols} FROM rest) l ON {key_condition(k)}""")
        counts = con.execute("SELECT count(*), count(DISTINCT unique_id) FILTER (WHERE person_id IS NOT NULL) "
                             "FROM rest").fetchone() or (0, 0)
        linkable = con.execute("SELECT count(DISTINCT unique_id) FROM true_pairs").fetchone()
        out: dict[str, Any] = {"left_rows": left.num_rows, "left_after_exact": counts[0],
                               "left_after_exact_with_truth": counts[1],
                               "left_after_exact_linkable": linkable[0] if linkable else 0, "sets": {}}

        def found(condition: str) -> dict[str, dict[str, int]]:
            rows = con.execute(f"""SELECT dataset, count(DISTINCT unique_id),
                                          count(DISTINCT unique_id) FILTER (WHERE cross_province)
                                   FROM true_pairs WHERE {condition} GROUP BY 1 ORDER BY 1""").fetchall()
            return {d: {"records": n, "cross_province": c} for d, n, c in rows}

        for name, key_set in sets.items():
            idx = [keys.index(k) for k in key_set]
            union = " UNION ".join(f"SELECT * FROM reach{i}" for i in idx)
            per_key = {}
            for i in idx:
                others = " OR ".join(f"k{j}" for j in idx if j != i) or "false"
                finds, only = con.execute(f"""SELECT count(DISTINCT unique_id) FILTER (WHERE k{i}),
                    count(DISTINCT unique_id) FILTER (WHERE k{i} AND NOT ({others})) FROM true_pairs""").fetchone() or (0, 0)
                reach = dict(con.execute(f"SELECT part, count(*) FROM reach{i} GROUP BY 1 ORDER BY 1").fetchall())
                per_key["+".join(keys[i])] = {"finds": finds, "only": only, "reach": reach}
            total = con.execute(f"SELECT count(DISTINCT _key) FROM ({union})").fetchone()
            out["sets"][name] = {
                "keys": ["+".join(k) for k in key_set],
                "found": found(" OR ".join(f"k{i}" for i in idx)),
                "reach": dict(con.execute(f"SELECT part, count(*) FROM ({union}) GROUP BY 1 ORDER BY 1").fetchall()),
                "reach_all": total[0] if total else 0,
                "per_key": per_key,
            }
    return out


def accuracy(root: Path) -> dict[str, Any] | None:
    """The accepted links of `state/links-whole.parquet` against the truth (module docstring); None when the
    country was not linked yet."""
    import duckdb

    links = root / "state" / "links-whole.parquet"
    if not links.exists():
        return None
    mapping = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in TRUTH_DATASET.items())
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"""CREATE TABLE t AS SELECT dataset, record_key, person_id, coalesce(cross_province, false) AS crossing
                    FROM read_parquet('{root / "sb" / "truth" / "links.parquet"}')""")
    con.execute("CREATE TABLE registered AS SELECT DISTINCT person_id FROM t WHERE dataset = 'citizen'")
    # one row per left record: a registry ID held by two citizen records (registered twice by mistake) is true
    # when either of them is the record's person
    rows = con.execute(f"""
        WITH x AS (
          SELECT l.dataset, l.band, coalesce(lt.crossing, false) AS crossing,
                 lt.person_id IN (SELECT person_id FROM registered) AS linkable,
                 EXISTS (SELECT 1 FROM t rt WHERE rt.dataset = 'citizen' AND rt.record_key = l.right_id
                                              AND rt.person_id = lt.person_id) AS right_person
          FROM read_parquet('{links}') l
          LEFT JOIN t lt ON lt.record_key = l.left_id AND lt.dataset = CASE l.dataset {mapping} END)
        SELECT dataset, crossing, count(*) FILTER (WHERE linkable),
               count(*) FILTER (WHERE band = 'accept' AND right_person),
               count(*) FILTER (WHERE band = 'accept' AND NOT right_person)
        FROM x GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    out: dict[str, Any] = {"links": str(links.name), "modified": time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime(links.stat().st_mtime))}
    for dataset, cross, n, tp, fp in rows:
        precision, recall = tp / max(tp + fp, 1), tp / max(n, 1)
        out[f"{dataset}_{'cross_province' if cross else 'in_province'}"] = {
            "linkable": n, "true": tp, "false": fp, "precision": round(precision, 5), "recall": round(recall, 5),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 5)}
    return out


def main() -> int:
    args = country_arguments(__doc__ or "", "blocking-<P>-<N>.json").parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    prepared = prepare(args.provinces, args.citizens, args.seed)
    root = _root(args.provinces, args.citizens)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    from lienthong.reconcile.people import BLOCKING_KEYS

    t0 = time.monotonic()
    out = report(root, prepared["registry_ref"], {"current": BLOCKING_KEYS, "before": PREVIOUS_BLOCKING_KEYS})
    out["accuracy"] = accuracy(root)
    for name, s in out["sets"].items():
        print(f"{name}: found {s['found']}, reach {s['reach_all']} {s['reach']}", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"),
              "what": "true pairs the blocking keys find, and registry rows they reach, for the left records the exact "
                      "passes leave (benchmarks/bench_blocking.py)",
              "country": {k: prepared[k] for k in ("provinces", "citizens", "seed", "registry_rows", "left_rows",
                                                   "partitions")},
              "seconds": round(time.monotonic() - t0, 1), **out}
    path = args.result or RESULTS / f"blocking-{args.provinces}-{args.citizens}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
