"""Which rows of a dataset built from the integrated zone changed since its last published version, found
where the rows are built, so that the publish task hands `publish.Touched` rows instead of every row.

Owns the row digests kept beside the last published version of each such dataset
(`published/<dataset>/_rowhash/v<N>.build.parquet`: the key columns and a 64-bit digest of every row the
builder's query selected) and the rule for trusting them. A build runs the dataset's query
(`profiles.SQL_FROM_INTEGRATED`) in DuckDB into a session table, digests every row there, and compares with
the kept digests of version N by key: the keys whose digest differs, is new or is gone are the touched keys,
and only their rows leave DuckDB. Every other row is version N's row.

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
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.contracts import Contract
from lienthong.duck import session
from lienthong.publish import HASHES_DIR, Touched, version_name

log = logging.getLogger(__name__)

DIGEST = "_digest"
SUFFIX = ".build.parquet"


@dataclass
class Built:
    """A build of a dataset's rows for publishing: every row (`rows`), or the touched ones (`touched`); the
    digests of every row now (kept for the version published) and why this form was chosen."""

    dataset: str
    digests: pa.Table
    stamp: str
    reason: str
    rows: pa.Table | None = None
    touched: Touched | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        form = "touched" if self.touched is not None else "every_row"
        out: dict[str, Any] = {"form": form, "reason": self.reason, "rows_now": self.digests.num_rows,
                               "seconds": round(self.seconds, 3)}
        if self.touched is not None:
            out |= {"since_version": self.touched.since, "touched_keys": self.touched.keys.num_rows,
                    "touched_rows": self.touched.rows.num_rows}
        return out


def digests_path(ds_dir: Path, version: int) -> Path:
    return Path(ds_dir) / HASHES_DIR / f"{version_name(version)}{SUFFIX}"


def stamp(sql: str, contract: Contract) -> str:
    """What the digests depend on besides the rows: the query, the contract version and DuckDB's version."""
    import duckdb

    text = "\n".join([sql, contract.id, str(contract.version), duckdb.__version__])
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_expression(con: Any, table: str) -> str:
    """DuckDB's hash of the row with the null-ness of each list column; MD5 of its JSON when a list sits
    inside a struct or a list (a nested NULL and empty list would hash alike)."""
    types = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()
    lists = [name for name, kind in types if kind.endswith("[]")]
    nested = any(kind.count("[]") > 1 or ("STRUCT" in kind and "[]" in kind.split("STRUCT", 1)[1].rsplit(")", 1)[0])
                 for _, kind in types)
    if nested:
        return f"md5(to_json({table}))"
    flags = "".join(f', "{name}" IS NULL' for name in lists)
    return f"hash({table}{flags})"


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


def build(dataset: str, contract: Contract, paths: dict[str, str], ds_dir: Path,
          last: dict[str, Any] | None) -> Built:
    """Build `dataset`'s rows from the zone tables `paths`: the touched rows since `last` (the last
    publication, `publish.last_publication`) when its kept digests can be used, else every row."""
    from lienthong import profiles

    t0 = time.monotonic()
    sql = profiles.SQL_FROM_INTEGRATED[dataset](contract)
    want = stamp(sql, contract)
    keys = contract.primary_key
    on = ", ".join(f'"{k}"' for k in keys)
    reason = "no version published yet" if last is None else _usable(digests_path(ds_dir, last["version"]), last, want)
    if not keys:
        reason = "the dataset has no primary key"
    with session(purpose="profile-change") as con:
        profiles.register(con, paths)
        con.execute(f"CREATE TEMP TABLE _rows AS {sql}")
        digest = _digest_expression(con, "_rows")
        con.execute(f"CREATE TEMP TABLE _now AS SELECT {on}, {digest} AS {DIGEST} FROM _rows")
        digests = con.execute("SELECT * FROM _now").fetch_arrow_table()
        if reason is not None:
            rows = con.execute("SELECT * FROM _rows").fetch_arrow_table()
            log.info("%s: built every row (%d) because %s", dataset, rows.num_rows, reason)
            return Built(dataset, digests, want, reason, rows=profiles.shaped(rows, contract),
                         seconds=time.monotonic() - t0)
        assert last is not None
        kept = digests_path(ds_dir, last["version"])
        con.execute(f"CREATE TEMP VIEW _before AS SELECT * FROM read_parquet('{kept}')")
        touched_keys = con.execute(f"""SELECT {on} FROM _now n FULL JOIN _before b USING ({on})
                                       WHERE n.{DIGEST} IS DISTINCT FROM b.{DIGEST} ORDER BY {on}""").fetch_arrow_table()
        con.register("_touched", touched_keys)
        rows = con.execute(f"SELECT * FROM _rows SEMI JOIN _touched USING ({on}) ORDER BY {on}").fetch_arrow_table()
    seconds = time.monotonic() - t0
    log.info("%s: %d of %d rows touched since version %s (digests compared in %.1f s)", dataset,
             touched_keys.num_rows, digests.num_rows, last["version"], seconds)
    return Built(dataset, digests, want, f"digests of version {last['version']}",
                 touched=Touched(profiles.shaped(rows, contract), touched_keys, last["version"]), seconds=seconds)


def keep(built: Built, ds_dir: Path, version: int, content_hash: str) -> Path:
    """Keep the build's digests as those of `version` (published from it, or found unchanged), and drop the
    digests of earlier versions (only the last version's are ever compared with)."""
    path = digests_path(ds_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = built.digests.replace_schema_metadata({"lienthong.stamp": built.stamp, "lienthong.content_hash": content_hash,
                                                   "lienthong.version": str(version)})
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    for other in path.parent.glob(f"v[0-9]*{SUFFIX}"):
        if other != path:
            other.unlink(missing_ok=True)
    return path
