"""Which rows of a dataset built from the integrated zone changed since its last published version, found
where the rows are built, so that the publish task hands `publish.Touched` rows instead of every row.

Owns the row digests kept beside the last published version of each such dataset
(`published/<dataset>/_rowhash/v<N>.build.parquet`: the key columns and a 64-bit digest of every row the
builder's query selected, and in its metadata the input table versions that build read), the rule for
trusting them, and the scope of a build from the change (`_scope`: the driving keys the rows changed in those
inputs since can reach, `profiles.AFFECTS`; the query runs for those keys only). A build runs the dataset's query
(`profiles.SQL_FROM_INTEGRATED`) once in DuckDB, with each row's digest, and streams it in batches: a row
whose digest is among the kept digests of version N is version N's row and is dropped from the batch; the
others (changed or new), and the keys and digests of all, are kept. The keys of version N missing now are
gone. Those keys are the touched keys; only their rows are held, and handed to publish as `publish.Touched`.
Held in Python: the keys and digests of every row (about 30 bytes a row) and the touched rows; in DuckDB,
the query's own working set and the kept digests (an earlier form that kept the rows in a session table ran
out of DuckDB's memory at 2M citizens).

Why the result equals publishing every row: a row's digest is a function of the whole row the query selected
(every column, nested lists included), so a row that differs from version N's has another digest, except
by a 64-bit hash collision (about 5e-20 per changed row). The digest is DuckDB's `hash()` of the row
(0.14 s for 2M nested rows, against 1.0 s for an MD5 of its JSON), with the null-ness of each list column
added: DuckDB hashes an empty list and a NULL list alike. A query whose rows hold a list inside a struct or a
list (where that flag cannot be added) is digested by MD5 of the row's JSON instead.

The digests are trusted only when they describe version N exactly: the file names version N, and its
metadata holds version N's content hash and the stamp of what made it (the query's text, the contract
version, DuckDB's version: a change of any of them changes every digest, or could). Otherwise, or
without a last version, every row is published, and the digests of this build are kept for the version
published (or found unchanged). They are written after the version is recorded: a kill before that leaves
the version without digests, and the next run publishes every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lienthong import profiles, zones
from lienthong.contracts import Contract
from lienthong.duck import session
from lienthong.publish import HASHES_DIR, Touched, version_name
from lienthong.staging import write_atomic

log = logging.getLogger(__name__)

DIGEST = "_digest"
SUFFIX = ".build.parquet"
INPUTS = "lienthong.inputs"  # metadata of the kept digests: the table versions their build read
INPUT_HASHES = "inputs"  # beside them: the digests of each input table's version a build read last
# A build from the change runs the query for its scope when the scope holds at most this share of the last
# version's rows; a wider change runs it for every key (as fast, without the scope's joins).
MAX_SCOPE_SHARE = 0.5


@dataclass
class Built:
    """A build of a dataset's rows for publishing: every row (`rows`), or the touched ones (`touched`); the
    digests of every row now (kept for the version published) and why this form was chosen."""

    dataset: str
    digests: pa.Table
    stamp: str
    reason: str
    inputs: dict[str, dict[str, Any]]
    rows: pa.Table | None = None
    touched: Touched | None = None
    seconds: float = 0.0
    built_rows: int | None = None
    scope: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        form = "touched" if self.touched is not None else "every_row"
        out: dict[str, Any] = {"form": form, "reason": self.reason, "rows_now": self.digests.num_rows,
                               "seconds": round(self.seconds, 3)}
        if self.touched is not None:
            out |= {"since_version": self.touched.since, "touched_keys": self.touched.keys.num_rows,
                    "touched_rows": self.touched.rows.num_rows, "built_rows": self.built_rows, "scope": self.scope}
        return out


def digests_path(ds_dir: Path, version: int) -> Path:
    return Path(ds_dir) / HASHES_DIR / f"{version_name(version)}{SUFFIX}"


def stamp(sql: str, contract: Contract) -> str:
    """What the digests depend on besides the rows: the query, the contract version and DuckDB's version."""
    import duckdb

    text = "\n".join([sql, contract.id, str(contract.version), duckdb.__version__])
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_expression(con: Any, body: str, alias: str) -> str:
    """DuckDB's hash of a row of `body` (as `alias`) with the null-ness of each list column; MD5 of its JSON
    when a list sits inside a struct or a list (a nested NULL and empty list would hash alike)."""
    types = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE ({body}))").fetchall()
    lists = [name for name, kind in types if kind.endswith("[]")]
    nested = any(kind.count("[]") > 1 or ("STRUCT" in kind and "[]" in kind.split("STRUCT", 1)[1].rsplit(")", 1)[0])
                 for _, kind in types)
    if nested:
        return f"md5(to_json({alias}))"
    flags = "".join(f', {alias}."{name}" IS NULL' for name in lists)
    return f"hash({alias}{flags})"


def _usable(path: Path, last: dict[str, Any], want: str) -> str | None:
    """Why the kept digests of the last version cannot be used (None: they can)."""
    if not path.exists():
        return f"no row digests kept for version {last['version']}"
    meta = pq.read_schema(path).metadata or {}
    if meta.get(b"lienthong.stamp", b"").decode() != want:
        return "the query, the contract or DuckDB changed since the digests were kept"
    if meta.get(b"lienthong.content_hash", b"").decode() != last["content_hash"]:
        return f"the kept digests do not describe version {last['version']}"
    return None


def _table_id(reference: str) -> str | None:
    """The Delta table id of a table version (a table made again at the same path has another), None when it
    is not a table version or cannot be read any more (vacuumed, removed)."""
    return None if zones.split_ref(reference)[1] is None else zones.table_id(reference)


def _inputs(dataset: str, paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The table versions a build of `dataset` read (the tables its query reads), kept with its digests so that
    the next build can find what changed since."""
    return {name: {"ref": paths[name], "table_id": _table_id(paths[name])}
            for name in profiles.AFFECTS[dataset] if name in paths}


def _input_hashes_path(ds_dir: Path, name: str) -> Path:
    return Path(ds_dir) / HASHES_DIR / INPUT_HASHES / f"{name}.parquet"


def _hash_rows(con: Any, name: str, view: str, target: str) -> None:
    """Session table `target`: per row of `view` (input table `name`), its digest (`_h`, as `_digest_expression`
    makes it for the whole row) and the columns the scope queries read (`profiles.LINK_COLUMNS`)."""
    digest = _digest_expression(con, f"SELECT * FROM {view}", "t")
    cols = ", ".join(f't."{c}"' for c in profiles.LINK_COLUMNS[name])
    con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT {digest} AS _h, {cols} FROM {view} t")


def _old_hashes(con: Any, name: str, then: dict[str, Any], ds_dir: Path, target: str) -> bool:
    """Session table `target`: `_hash_rows` of the version read then, from the cache the build that read the
    version after it kept (when it names that version of that table), else from the version itself. Returns
    whether the cache served."""
    cache = _input_hashes_path(ds_dir, name)
    if cache.exists():
        meta = pq.read_schema(cache).metadata or {}
        if (meta.get(b"lienthong.ref", b"").decode() == then["ref"]
                and meta.get(b"lienthong.table_id", b"").decode() == then["table_id"]):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM read_parquet({zones.sql_text(cache)})")
            return True
    zones.register(con, f"o_{name}", then["ref"])
    _hash_rows(con, name, f"o_{name}", target)
    con.execute(f"DROP VIEW o_{name}")
    return False


def _staged_change(con: Any, name: str, then: str, now: str) -> bool:
    """Session table `d_<name>` for a staged input (a table staging writes, with `_merge_key` and
    `_staged_version`): the link columns of the old and new rows of the keys `stagedchange.changed_keys`
    finds (the rows staging wrote since the version then, and the keys gone; it reads those columns only).
    False, and nothing made, for a table that is not staged."""
    from lienthong.reconcile import stagedchange

    if not {"_merge_key", "_staged_version"} <= {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}:
        return False
    zones.register(con, f"o_{name}", then)
    stagedchange.changed_keys(con, now, then, new_view=name, old_view=f"o_{name}", target="k_diff")
    cols = ", ".join(f'"{c}"' for c in profiles.LINK_COLUMNS[name])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE d_{name} AS
                    SELECT {cols} FROM o_{name} SEMI JOIN k_diff USING (_merge_key)
                    UNION ALL SELECT {cols} FROM {name} SEMI JOIN k_diff USING (_merge_key)""")
    con.execute("DROP TABLE k_diff")
    con.execute(f"DROP VIEW o_{name}")
    return True


def _reconciled_change(con: Any, name: str, then: str, now: str) -> bool:
    """Session table `d_<name>` for an integrated table whose versions from `then` to `now` were written by
    change runs that recorded the keys they may differ in (`outputchange.keys_between`): the link columns of
    the old and new rows of those keys (reading those columns only). False, and nothing made, when the
    records do not cover the versions."""
    from lienthong.reconcile import outputchange

    keys = outputchange.keys_between(then, now)
    if keys is None:
        return False
    zones.register(con, f"o_{name}", then)
    con.register("_changed_keys", keys)
    key, cols = outputchange.key_sql(name), ", ".join(f'"{c}"' for c in profiles.LINK_COLUMNS[name])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE d_{name} AS
                    SELECT {cols} FROM o_{name} WHERE CAST(({key}) AS VARCHAR) IN (SELECT k FROM _changed_keys)
                    UNION ALL
                    SELECT {cols} FROM {name} WHERE CAST(({key}) AS VARCHAR) IN (SELECT k FROM _changed_keys)""")
    con.unregister("_changed_keys")
    con.execute(f"DROP VIEW o_{name}")
    return True


def _scope(con: Any, dataset: str, paths: dict[str, str], kept: Path, rows_then: int,
           ds_dir: Path) -> tuple[str | None, dict[str, Any]]:
    """Session table `profiles.SCOPE`: the hashes of the driving keys whose rows may differ from those the kept
    digests were built from (`profiles.AFFECTS` over the rows of each input table that differ between the
    version read then and now, both ways). Returns why there is no scope (None: there is) and what was compared:
    the changed rows per input table that changed, and those whose digests then came from the cache.

    A staged input's changed rows are those staging wrote since (`_staged_change`). An integrated table's are
    the rows of the keys the reconciliations that wrote its versions since recorded (`_reconciled_change`,
    `outputchange`). Without such records (a whole build, a kill between a version and its record), a table
    is compared by a 64-bit digest of the whole row, as a multiset (digest and count): one scan of the
    version now (its digests are kept for the next build, `_input_hashes_path`) and, without such a cache, one
    of the version then. Only the digests and the columns the scope queries read are held. A changed row is
    missed only if its digest collides with another row's (about 5e-20 per row, as for the rows' digests)."""
    raw = (pq.read_schema(kept).metadata or {}).get(INPUTS.encode())
    if raw is None:
        return "the kept digests do not name the table versions they were built from", {}
    before = json.loads(raw)
    changed: dict[str, int] = {}
    cached: list[str] = []
    recorded: list[str] = []
    for name in profiles.AFFECTS[dataset]:
        then, now = before.get(name), paths.get(name)
        if then is None or now is None or then.get("table_id") is None:
            return f"{name}: no table version to compare with", {}
        if _table_id(then["ref"]) != then["table_id"]:
            return f"{name}: the version read then ({then['ref']}) cannot be read any more", {}
        if then["ref"] == now:
            continue
        if _staged_change(con, name, then["ref"], now):
            changed[name] = int((con.execute(f"SELECT count(*) FROM d_{name}").fetchone() or (0,))[0])
            continue
        if _reconciled_change(con, name, then["ref"], now):
            changed[name] = int((con.execute(f"SELECT count(*) FROM d_{name}").fetchone() or (0,))[0])
            recorded.append(name)
            continue
        if _old_hashes(con, name, then, ds_dir, "h_old"):
            cached.append(name)
        _hash_rows(con, name, name, "h_now")
        if con.execute("DESCRIBE h_old").fetchall() != con.execute("DESCRIBE h_now").fetchall():
            return f"{name}: its columns changed since {then['ref']}", {}
        con.execute("""CREATE OR REPLACE TEMP TABLE h_diff AS
                       WITH o AS (SELECT _h, count(*) AS n FROM h_old GROUP BY _h),
                            w AS (SELECT _h, count(*) AS n FROM h_now GROUP BY _h)
                       (SELECT _h FROM (SELECT * FROM o EXCEPT SELECT * FROM w))
                       UNION (SELECT _h FROM (SELECT * FROM w EXCEPT SELECT * FROM o))""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE d_{name} AS
                        SELECT * EXCLUDE (_h) FROM h_old SEMI JOIN h_diff USING (_h)
                        UNION ALL SELECT * EXCLUDE (_h) FROM h_now SEMI JOIN h_diff USING (_h)""")
        changed[name] = int((con.execute(f"SELECT count(*) FROM d_{name}").fetchone() or (0,))[0])
        kept_now = con.execute("SELECT * FROM h_now").fetch_arrow_table()
        write_atomic(kept_now.replace_schema_metadata(
            {"lienthong.ref": now, "lienthong.table_id": str(_table_id(now))}), _input_hashes_path(ds_dir, name))
        for t in ("h_old", "h_now", "h_diff"):
            con.execute(f"DROP TABLE {t}")
    reached = [name for name, n in changed.items() if n]
    con.execute(f"CREATE OR REPLACE TEMP TABLE {profiles.SCOPE} AS {profiles.scope_sql(dataset, reached)}")
    keys = int((con.execute(f"SELECT count(*) FROM {profiles.SCOPE}").fetchone() or (0,))[0])
    compared = {"keys": keys, "changed_rows": changed, "then_from_cache": cached, "from_reconciliation": recorded}
    if keys > MAX_SCOPE_SHARE * rows_then:
        return f"the change reaches {keys} keys of {rows_then} rows", compared
    return None, compared


def build(dataset: str, contract: Contract, paths: dict[str, str], ds_dir: Path,
          last: dict[str, Any] | None) -> Built:
    """Build `dataset`'s rows from the zone tables `paths`: the touched rows since `last` (the last
    publication, `publish.last_publication`) when its kept digests can be used, else every row.

    With usable digests, the query runs for the scope only (`_scope`: the driving keys the change in its
    input tables reaches) when the kept digests name the table versions they were built from, else for every
    key; streamed in batches, each row's digest is looked up among the kept ones in DuckDB (a row whose
    digest is kept is version N's row), and only the other rows, with the keys and digests of all, are held in
    Python. A key outside the scope keeps its digest. Rows of version N missing now are found from the keys
    afterwards."""
    t0 = time.monotonic()
    body = profiles.SQL_FROM_INTEGRATED[dataset](contract, (0, 1), False)  # what the digests stand for
    want = stamp(body, contract)
    keys = contract.primary_key
    on = ", ".join(f'"{k}"' for k in keys)
    inputs = _inputs(dataset, paths)
    reason = "no version published yet" if last is None else _usable(digests_path(ds_dir, last["version"]), last, want)
    if not keys or not set(profiles.DRIVING_KEY[dataset]) <= set(keys):
        reason = "the dataset's primary key does not hold its driving key"
    with session(purpose="profile-change") as con:
        profiles.register(con, paths)
        digest = _digest_expression(con, body, "t")

        def with_digest(part: str) -> str:
            return f"SELECT t.*, {digest} AS {DIGEST} FROM ({part}) t"

        if reason is not None:
            schema, batches = profiles.stream(con, dataset, contract, with_digest)
            table = profiles.in_order(pa.Table.from_batches(list(batches), schema=schema), dataset)
            digests = table.select([*keys, DIGEST])
            log.info("%s: built every row (%d) because %s", dataset, table.num_rows, reason)
            return Built(dataset, digests, want, reason, inputs, rows=profiles.shaped(table, contract),
                         seconds=time.monotonic() - t0)
        assert last is not None
        kept = digests_path(ds_dir, last["version"])
        t1 = time.monotonic()
        no_scope, compared = _scope(con, dataset, paths, kept, int(last["row_count"]), ds_dir)
        scope: dict[str, Any] = {**({"reason": no_scope} if no_scope else {}), **compared,
                                 "seconds": round(time.monotonic() - t1, 3)}

        def marked(part: str) -> str:  # a row whose digest is kept is version N's row
            return (f"SELECT n.*, n.{DIGEST} IN (SELECT {DIGEST} FROM read_parquet('{kept}')) AS _kept "
                    f"FROM ({with_digest(part)}) n")

        schema, batches = profiles.stream(con, dataset, contract, marked, scoped=no_scope is None)
        digest_schema = pa.schema([schema.field(k) for k in [*keys, DIGEST]])
        changed_rows, all_digests = [], []
        if no_scope is None:  # the keys outside the scope: their rows, so their digests, are those of version N
            driving = ", ".join(f'k."{c}"' for c in profiles.DRIVING_KEY[dataset])
            all_digests.append(con.execute(
                f"SELECT k.* FROM (SELECT {on}, {DIGEST} FROM read_parquet('{kept}')) k "
                f"ANTI JOIN {profiles.SCOPE} s ON hash({driving}) = s.h").fetch_arrow_table().cast(digest_schema))
        built_rows = 0
        for batch in batches:
            built_rows += batch.num_rows
            all_digests.append(pa.Table.from_batches([batch]).select([*keys, DIGEST]))
            fresh = batch.filter(pc.invert(batch.column("_kept")))
            if fresh.num_rows:
                changed_rows.append(pa.Table.from_batches([fresh]).drop_columns(["_kept"]))
        digests = pa.concat_tables(all_digests) if all_digests else digest_schema.empty_table()
        con.register("_now", digests)
        gone = con.execute(f"SELECT {on} FROM read_parquet('{kept}') ANTI JOIN _now USING ({on})").fetch_arrow_table()
    rows = pa.concat_tables(changed_rows) if changed_rows else None
    rows = (rows.sort_by([(k, "ascending") for k in keys]) if rows is not None
            else pa.schema([f for f in schema if f.name != "_kept"]).empty_table())
    touched_keys = pa.concat_tables([rows.select(keys), gone.cast(rows.select(keys).schema)])
    seconds = time.monotonic() - t0
    log.info("%s: %d of %d rows touched since version %s (%d changed or new, %d gone; %d rows built%s; %.1f s)",
             dataset, touched_keys.num_rows, digests.num_rows, last["version"], rows.num_rows, gone.num_rows,
             built_rows, f", every key because {no_scope}" if no_scope else " for the change's scope", seconds)
    return Built(dataset, digests, want, f"digests of version {last['version']}", inputs,
                 touched=Touched(profiles.shaped(rows, contract), touched_keys, last["version"]), seconds=seconds,
                 built_rows=built_rows, scope=scope)


def keep(built: Built, ds_dir: Path, version: int, content_hash: str) -> Path:
    """Keep the build's digests as those of `version` (published from it, or found unchanged), and drop the
    digests of earlier versions (only the last version's are ever compared with)."""
    path = write_atomic(built.digests.replace_schema_metadata(
        {"lienthong.stamp": built.stamp, "lienthong.content_hash": content_hash, "lienthong.version": str(version),
         INPUTS: json.dumps(built.inputs, sort_keys=True)}),
        digests_path(ds_dir, version))
    for other in path.parent.glob(f"v[0-9]*{SUFFIX}"):
        if other != path:
            other.unlink(missing_ok=True)
    return path
