"""Publish throughput against a bare COPY of the same rows, measured in the same run; then a 1 % change.

For each size, N synthetic citizen_profile rows (valid 12-digit IDs, Vietnamese names, dates, ~10 % with
enterprises and ~40 % with parcels as nested lists) are built in DuckDB, then:

(a) `lienthong.publish.publish()` end to end into a fresh database `bench_publish_<N>` (row hashes and content
    hash, Parquet folder + signed manifest and the row hashes on a thread, one transaction: a new generation
    table, COPY from Arrow, its index, ANALYZE, the version view, the view switch, the publication record;
    CURRENT pointer, the Delta feed table, retention). Its phases are timed by wrapping the module's helpers in
    this process (publish.py is not changed): `_copy_arrow` (our COPY), inside it `_nested_as_json` and the
    cursor's `copy_expert` (the server side of our COPY), `row_hashes`, `_write_parquet_version`,
    `_write_hashes`, `_publish_rows` (the database's rows and feed), `load_full` / `change` / `apply_change` /
    `store`, and from there to the pointer move (switch, record, commit).
(b) bare: the same rows written once (untimed) to a CSV file exactly as publish serialises them (nested
    columns as JSON text), then `COPY <table> FROM STDIN WITH (FORMAT csv)` of that file through psycopg2
    `copy_expert` into a plain table with the contract's DDL and no primary key, created in the same
    transaction (as publish does). Run twice (before and after the publish); the faster is the floor.
(c) change: the next version with `--change-fraction` of the rows changed (renamed, removed, new people),
    published from its change into the same database, phases timed the same way.

Reported per size: seconds, rows/s, `bare_copy_s / publish_total_s` and `bare_copy_s / our_copy_s`, and the
growth of publish time with size (exponent k of t ~ N^k between consecutive sizes). A CHECKPOINT precedes
each timed step so WAL flushing of the previous one is not charged to it.

    .venv/bin/python benchmarks/bench_publish.py                  # --sizes 100000,300000,1000000
    .venv/bin/python benchmarks/bench_publish.py --sizes 50000,200000 --keep

Uses the embedded warehouse under benchmarks/.work/publish (or the server of LIENTHONG_DATABASE_URL), a
database per size (dropped at the end unless --keep), and stops the embedded server only if it started it.
Writes benchmarks/results/publish.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work" / "publish"
RESULTS = REPO / "benchmarks" / "results"
DATASET = "citizen_profile"



def progress(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_profiles(n: int, marker: str = "VN", seed: int = 1):
    """`n` citizen_profile rows in the contract's shape (`sandbox.profiles`, shared with the atomicity tests)."""
    from sandbox.profiles import PREFIXES
    from sandbox.profiles import synthetic_profiles as generate

    if n > len(PREFIXES) * 1_000_000:
        raise SystemExit(f"at most {len(PREFIXES)} million rows")
    return generate(n, marker, seed)


# --- database -----------------------------------------------------------------------------------------


def fresh_database(server_url: str, name: str) -> str:
    from lienthong.db import ensure_database

    drop_database(server_url, name)
    return ensure_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def checkpoint(url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


# --- (a) publish, phases timed by wrapping its helpers ------------------------------------------------


class Timings:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + dt


@contextlib.contextmanager
def instrumented_publish(timings: Timings):
    """Wrap publish.py's module-level helpers (looked up at call time) to time its phases; undone on exit."""
    import psycopg2.extensions

    from lienthong import publish as P

    class TimedCursor(psycopg2.extensions.cursor):
        def copy_expert(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super().copy_expert(*args, **kwargs)
            finally:
                timings.add("server_copy_s", time.perf_counter() - t0)

    def timed(key: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings.add(key, time.perf_counter() - t0)
                timings.marks[key + ":end"] = time.perf_counter()
        return wrapper

    def marked(key: str, fn):
        def wrapper(*args, **kwargs):
            timings.marks[key] = time.perf_counter()
            return fn(*args, **kwargs)
        return wrapper

    original_connect = P.connect

    @contextlib.contextmanager
    def connect(url=None, **kwargs):
        with original_connect(url, **kwargs) as conn:
            conn.cursor_factory = TimedCursor
            yield conn

    from lienthong import feed as F
    from lienthong import pubtables as T

    saved = {name: getattr(P, name) for name in
             ("connect", "_copy_arrow", "_nested_as_json", "_write_parquet_version", "_write_hashes",
              "cleanup_orphans", "_switch_view", "_set_current", "_apply_retention", "_publish_rows",
              "_next_from_touched", "_sync_delta_feed", "_compact")}
    saved_other = [(F, "change", F.change), (F, "row_hashes", F.row_hashes), (F, "store", F.store),
                   (T, "apply_change", T.apply_change), (T, "load_full", T.load_full)]
    F.change = timed("change_s", F.change)
    F.row_hashes = timed("row_hashes_s", F.row_hashes)
    F.store = timed("feed_store_s", F.store)
    T.apply_change = timed("apply_change_s", T.apply_change)
    T.load_full = timed("load_full_s", T.load_full)
    P._publish_rows = timed("rows_and_feed_s", P._publish_rows)
    P.connect = connect
    P._copy_arrow = timed("our_copy_s", P._copy_arrow)
    P._nested_as_json = timed("nested_to_json_s", P._nested_as_json)
    P._write_hashes = timed("hashes_write_s", P._write_hashes)
    P._write_parquet_version = timed("parquet_write_s", P._write_parquet_version)
    P.cleanup_orphans = timed("cleanup_orphans_s", P.cleanup_orphans)
    P._switch_view = marked("switch_view", P._switch_view)
    P._set_current = marked("set_current", P._set_current)
    P._apply_retention = timed("retention_s", P._apply_retention)
    P._next_from_touched = timed("touched_s", P._next_from_touched)  # its row hashes and change included
    P._sync_delta_feed = timed("delta_feed_sync_s", P._sync_delta_feed)
    P._compact = timed("compact_s", P._compact)  # whether it is due, and the compaction when it is
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(P, name, fn)
        for module, name, fn in saved_other:
            setattr(module, name, fn)


def run_publish(url: str, rows, published_dir: Path, run_id: str = "bench", touched=None,
                expect_rows: int | None = None) -> dict:
    from lienthong.contracts import contract
    from lienthong.publish import publish

    timings = Timings()
    with instrumented_publish(timings):
        t0 = time.perf_counter()
        result = publish(contract(DATASET), {}, run_id=run_id, gate_passed=True, published_dir=published_dir,
                         lineage={"benchmark": "bench_publish"}, quality={}, url=url, rows=rows, touched=touched)
        total = time.perf_counter() - t0
    assert result.status == "published" and result.rows == (rows.num_rows if rows is not None else expect_rows), result
    s, m = timings.seconds, timings.marks
    out = {"publish_total_s": total, **s, "changes": result.changes, "compacted": result.compacted}
    out["client_side_copy_s"] = s.get("our_copy_s", 0.0) - s.get("server_copy_s", 0.0)
    # in the database after the rows and the feed: the version's view, the switch, the record, the commit
    out["switch_record_commit_s"] = m["set_current"] - m["rows_and_feed_s:end"]
    # the Parquet folder and the row hashes are written on a thread during rows_and_feed_s: not added again
    accounted = ("cleanup_orphans_s", "rows_and_feed_s", "switch_record_commit_s", "retention_s",
                 "delta_feed_sync_s", "compact_s", *(("touched_s",) if "touched_s" in s else ("row_hashes_s", "change_s")))
    out["other_s"] = total - sum(out.get(k, 0.0) for k in accounted)  # last_publication, content hash, ...
    return out


def changed_rows(rows, fraction: float, seed: int = 11):
    """The next version: `fraction` of the rows changed (half renamed or moved, a quarter removed, a quarter
    replaced by new people), in DuckDB (no per-row Python)."""
    return changed_and_touched(rows, fraction, seed)[0]


def changed_and_touched(rows, fraction: float, seed: int = 11, version: int = 0):
    """(every row of the next version, `publish.Touched` for it relative to `version`): the touched keys are
    the changed, removed and new ones and as many unchanged ones again (a caller's touched set is a superset
    of the change, e.g. every citizen of a household one member of which changed)."""
    import duckdb

    from lienthong.contracts import contract

    con = duckdb.connect()
    con.register("r", rows)
    n = rows.num_rows
    fresh = synthetic_profiles(max(1, int(n * fraction / 4)), seed=seed + 1)
    con.register("fresh", fresh)
    cut = int(1_000_000 * fraction)
    table = con.execute(f"""
        SELECT * REPLACE (CASE WHEN hash(citizen_id, {seed}) % 1000000 < {cut // 2}
                               THEN full_name || ' Văn' ELSE full_name END AS full_name)
        FROM r WHERE NOT (hash(citizen_id, {seed}) % 1000000 BETWEEN {cut // 2} AND {cut * 3 // 4})
        UNION ALL BY NAME
        SELECT * FROM fresh WHERE citizen_id NOT IN (SELECT citizen_id FROM r)
        ORDER BY citizen_id""").fetch_arrow_table()
    table = table.select(rows.column_names).cast(contract(DATASET).arrow_schema())
    from lienthong.publish import Touched

    con.register("n", table)
    keys = con.execute(f"""
        SELECT citizen_id FROM r WHERE hash(citizen_id, {seed}) % 1000000 < {cut * 3 // 4 + cut // 2}
        UNION SELECT citizen_id FROM fresh WHERE citizen_id NOT IN (SELECT citizen_id FROM r)""").fetch_arrow_table()
    con.register("k", keys)
    now = con.execute("SELECT n.* FROM n SEMI JOIN k USING (citizen_id) ORDER BY citizen_id").fetch_arrow_table()
    return table, Touched(rows=now.cast(table.schema), keys=keys, since=version)


def run_compaction(url: str, version: int, changed_versions: int) -> dict:
    """(d) the compaction a publish runs once the change tables outgrow `pubtables.COMPACT_SHARE` of the base,
    forced here (share 0) after `changed_versions` versions from the change and timed alone (after a
    CHECKPOINT, as the other steps); with the change tables' growth per version, how often it is due at the
    default share and its cost spread over those versions."""
    from lienthong import pubtables
    from lienthong.contracts import contract
    from lienthong.db import connect

    c = contract(DATASET)
    with connect(url) as conn, conn.cursor() as cur:
        generation, _ = pubtables.current_generation(cur, "published", DATASET)
        base_rows = pubtables.base_rows(cur, "published", generation)
        change_rows = pubtables.change_table_rows(cur, "published", generation)
    checkpoint(url)
    with connect(url) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        new = pubtables.compact(cur, c, "published", version, oldest_kept=None, share=0.0)
        cur.execute(f'SELECT count(*) FROM published."{new}"')
        (carried,) = cur.fetchone()
        conn.commit()
        took = time.perf_counter() - t0
    per_version = change_rows / changed_versions
    between = pubtables.COMPACT_SHARE * base_rows / per_version
    return {"compact_s": round(took, 3), "base_rows": base_rows, "change_table_rows": change_rows,
            "change_table_rows_per_version": round(per_version), "row_versions_carried": carried,
            "versions_between_compactions": round(between, 1),
            "amortized_per_version_s": round(took / between, 4)}


# --- (b) bare COPY of the same rows from a file -------------------------------------------------------


def write_csv(rows, path: Path) -> int:
    """The rows as publish serialises them (nested columns as JSON text via DuckDB, Arrow CSV, no header)."""
    import pyarrow.csv as pacsv

    from lienthong.publish import COPY_BATCH_ROWS, _nested_as_json

    opts = pacsv.WriteOptions(include_header=False)
    writer = None
    with open(path, "wb") as fh:
        for batch in rows.to_batches(max_chunksize=COPY_BATCH_ROWS):
            converted = _nested_as_json(batch)
            if writer is None:
                writer = pacsv.CSVWriter(fh, converted.schema, write_options=opts)
            writer.write_table(converted)
        if writer is not None:
            writer.close()
    return path.stat().st_size


def run_bare(url: str, csv_path: Path, columns: list[str], attempt: int) -> dict:
    from lienthong.contracts import contract
    from lienthong.db import connect

    table = f"bare_copy_{attempt}"
    cols = ", ".join(f'"{c}"' for c in columns)
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS public."{table}"')
    checkpoint(url)
    with connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur, open(csv_path, "rb") as fh:
            cur.execute(contract(DATASET).postgres_ddl(table, "public", primary_key=False))
            t1 = time.perf_counter()
            cur.copy_expert(f'COPY public."{table}" ({cols}) FROM STDIN WITH (FORMAT csv)', fh)
            t2 = time.perf_counter()
        conn.commit()
        t3 = time.perf_counter()
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM public."{table}"')
        (loaded,) = cur.fetchone()
        cur.execute(f'DROP TABLE public."{table}"')
    return {"bare_copy_s": t2 - t1, "bare_total_s": t3 - t0, "loaded": loaded}


# --- main -----------------------------------------------------------------------------------------------


def bench_size(server_url: str, n: int, change_fraction: float) -> dict:
    progress(f"{n:,} rows: generating")
    t0 = time.perf_counter()
    rows = synthetic_profiles(n)
    gen_s = time.perf_counter() - t0
    db = f"bench_publish_{n}"
    url = fresh_database(server_url, db)
    size_dir = WORK / f"n{n}"
    shutil.rmtree(size_dir, ignore_errors=True)
    size_dir.mkdir(parents=True)
    csv_path = size_dir / "rows.csv"
    t0 = time.perf_counter()
    csv_bytes = write_csv(rows, csv_path)
    csv_s = time.perf_counter() - t0
    progress(f"{n:,} rows: generated in {gen_s:.1f}s, CSV {csv_bytes / 1e6:.0f} MB written in {csv_s:.1f}s")

    bare_runs = []
    progress(f"{n:,} rows: bare COPY #1")
    bare_runs.append(run_bare(url, csv_path, rows.column_names, 1))
    progress(f"{n:,} rows: bare COPY #1 {bare_runs[-1]['bare_copy_s']:.2f}s; publish()")
    checkpoint(url)
    pub = run_publish(url, rows, size_dir / "published")
    progress(f"{n:,} rows: publish {pub['publish_total_s']:.2f}s (our COPY {pub['our_copy_s']:.2f}s); bare COPY #2")
    bare_runs.append(run_bare(url, csv_path, rows.column_names, 2))
    assert all(b["loaded"] == n for b in bare_runs), bare_runs
    bare = min(bare_runs, key=lambda b: b["bare_copy_s"])
    progress(f"{n:,} rows: bare COPY #2 {bare_runs[-1]['bare_copy_s']:.2f}s")

    from lienthong.db import connect

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT pg_total_relation_size('published.{DATASET}__r000001')")
        (pg_bytes,) = cur.fetchone()
    change = touched_change = compaction = None
    if change_fraction:
        next_rows = changed_rows(rows, change_fraction)
        checkpoint(url)
        change = run_publish(url, next_rows, size_dir / "published", run_id="bench-change")
        progress(f"{n:,} rows: a {change_fraction:.0%} change published in {change['publish_total_s']:.2f}s "
                 f"({change['changes']}); full {pub['publish_total_s']:.2f}s")
        # the next version from its touched keys only (publish.Touched): what a caller that knows its change gives
        after, touched = changed_and_touched(next_rows, change_fraction, seed=23, version=2)
        checkpoint(url)
        touched_change = run_publish(url, None, size_dir / "published", run_id="bench-touched", touched=touched,
                                     expect_rows=after.num_rows)
        touched_change["touched_keys"] = touched.keys.num_rows
        progress(f"{n:,} rows: a {change_fraction:.0%} change from {touched.keys.num_rows:,} touched keys published "
                 f"in {touched_change['publish_total_s']:.2f}s ({touched_change['changes']})")
        compaction = run_compaction(url, version=3, changed_versions=2)
        progress(f"{n:,} rows: compaction {compaction['compact_s']:.2f}s, due every "
                 f"{compaction['versions_between_compactions']:.0f} versions of this size")
    parquet_bytes = sum(p.stat().st_size for p in (size_dir / "published").rglob("*.parquet"))
    shutil.rmtree(size_dir, ignore_errors=True)

    r = {k: round(v, 3) if isinstance(v, float) else v for k, v in pub.items()}
    return {
        "rows": n,
        "generate_s": round(gen_s, 2),
        "csv_mb": round(csv_bytes / 1e6, 1),
        "parquet_mb": round(parquet_bytes / 1e6, 1),
        "table_mb_with_pk": round(pg_bytes / 1e6, 1),
        "bare_copy_s": round(bare["bare_copy_s"], 3),
        "bare_copy_runs_s": [round(b["bare_copy_s"], 3) for b in bare_runs],
        "bare_total_s": round(bare["bare_total_s"], 3),
        "publish": r,
        "rows_per_s": {
            "bare_copy": round(n / bare["bare_copy_s"]),
            "our_copy": round(n / pub["our_copy_s"]),
            "publish_total": round(n / pub["publish_total_s"]),
        },
        "ratio_bare_copy_to_publish_total": round(bare["bare_copy_s"] / pub["publish_total_s"], 3),
        "ratio_bare_copy_to_our_copy": round(bare["bare_copy_s"] / pub["our_copy_s"], 3),
        "ratio_bare_copy_to_our_server_copy": round(bare["bare_copy_s"] / pub["server_copy_s"], 3),
        "change": None if change is None else {
            "fraction": change_fraction,
            "publish": {k: round(v, 3) if isinstance(v, float) else v for k, v in change.items()},
            "ratio_change_to_full_publish": round(change["publish_total_s"] / pub["publish_total_s"], 3),
        },
        "touched_change": None if touched_change is None else {
            "fraction": change_fraction,
            "publish": {k: round(v, 3) if isinstance(v, float) else v for k, v in touched_change.items()},
            "ratio_change_to_full_publish": round(touched_change["publish_total_s"] / pub["publish_total_s"], 3),
        },
        "compaction": None if compaction is None else {
            **compaction,
            "ratio_to_full_publish": round(compaction["compact_s"] / pub["publish_total_s"], 3),
            "amortized_ratio_to_full_publish": round(
                compaction["amortized_per_version_s"] / pub["publish_total_s"], 4),
        },
    }


def growth(results: list[dict]) -> list[dict]:
    """Exponent k in t ~ N^k between consecutive sizes (1.0 = linear)."""
    out = []
    for a, b in zip(results, results[1:], strict=False):
        k = math.log(b["rows"] / a["rows"])
        out.append({
            "from_rows": a["rows"], "to_rows": b["rows"],
            "publish_total_exponent": round(math.log(b["publish"]["publish_total_s"] / a["publish"]["publish_total_s"]) / k, 3),
            "our_copy_exponent": round(math.log(b["publish"]["our_copy_s"] / a["publish"]["our_copy_s"]) / k, 3),
            "bare_copy_exponent": round(math.log(b["bare_copy_s"] / a["bare_copy_s"]) / k, 3),
        })
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated row counts")
    parser.add_argument("--keep", action="store_true", help="keep the bench_publish_<N> databases")
    parser.add_argument("--change-fraction", type=float, default=0.01,
                        help="then publish the next version with this share of rows changed (0: no change run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "publish.json")
    args = parser.parse_args(argv)
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})

    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LIENTHONG_DATA_DIR", str(WORK / "data"))
    if not os.environ.get("LIENTHONG_RELEASE_SIGNING_KEY"):  # releases are signed: a key of this run's own
        from lienthong.releases import new_key

        os.environ["LIENTHONG_RELEASE_SIGNING_KEY"] = new_key()[0]
    import logging

    import psycopg2

    logging.basicConfig(level=logging.WARNING)
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings

    settings = load_settings()
    embedded = settings.database_url is None
    started_here = embedded and not (settings.embedded_pgdata / "postmaster.pid").exists()
    results: list[dict] = []
    server_version = 0
    try:
        server_url = warehouse_url(settings)
        conn = psycopg2.connect(server_url)
        server_version = conn.server_version
        conn.close()
        for n in sizes:
            results.append(bench_size(server_url, n, args.change_fraction))
            r = results[-1]
            progress(f"{n:,} rows: publish {r['publish']['publish_total_s']:.2f}s, our COPY {r['publish']['our_copy_s']:.2f}s, "
                     f"bare COPY {r['bare_copy_s']:.2f}s -> bare/publish {r['ratio_bare_copy_to_publish_total']:.2f}, "
                     f"bare/our COPY {r['ratio_bare_copy_to_our_copy']:.2f}")
            if not args.keep:
                drop_database(server_url, f"bench_publish_{n}")
    finally:
        if started_here:
            stop_embedded(settings.embedded_pgdata)
            progress("stopped the embedded server this run started")

    result = {
        "benchmark": "publish() end to end vs a bare COPY FROM STDIN of the same rows (citizen_profile, nested as JSON text)",
        "server": ("embedded PostgreSQL" if embedded else "LIENTHONG_DATABASE_URL")
                  + f" {server_version // 10000}.{server_version % 10000}",
        "machine_cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_publish.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "notes": [
            "bare_copy_s: the faster of two COPY FROM STDIN runs (before and after the publish) of a pre-written "
            "CSV into a table created in the same transaction, no primary key; the floor",
            "our_copy_s: publish._copy_arrow (nested->JSON in DuckDB + Arrow CSV + copy_expert per 100k batch); "
            "server_copy_s: its copy_expert calls only",
            "publish_total_s also includes content hash, Parquet + signed manifest, the generation's indexes, "
            "ANALYZE, count check, version view, view switch, record, commit, CURRENT and retention",
            "change: the next version with change_fraction of the rows changed, published from its change "
            "(row hashes joined with the last version's; the changed keys into the feed; the replaced row "
            "versions closed by one UPDATE whose rows come back through COPY ... RETURNING for the Delta feed, "
            "counted in server_copy_s; the new images COPYed in as row versions)",
            "parquet_write_s and hashes_write_s run on a thread while rows_and_feed_s loads the database",
            "touched_change: the version after that, published from its touched keys only (publish.Touched: the "
            "changed, removed and new keys and as many unchanged ones), the other rows' hashes kept from the last "
            "version; the caller's work of finding the touched keys is not in it",
        ],
        "sizes": results,
        "growth": growth(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
