"""The change feed of a published dataset: the rows that changed from one published version to the next, in
the shape of Delta Lake's change data feed (`_change_type` insert / update_preimage / update_postimage /
delete, `_commit_version`, `_commit_timestamp`), keyed by the dataset's primary key, plus `_seq`, the row's
place in its version's changes (deletes and pre-images before post-images and inserts, by key).

Owns the change of a new version from the previous one and the PostgreSQL relations that keep the feed,
written in the publish transaction so a reader sees a version and its changes together or neither. The change
is found from row hashes (`row_hashes`: key and two 64-bit hashes of the whole row, kept beside each version),
not by reading the previous version. The images are not copied: they are the row versions the dataset's
generation table already holds (`lienthong.pubtables`: a pre-image or a delete is the row version a version
closed, a post-image or an insert the one it opened), so the feed itself keeps only which keys changed how.

- `published.<dataset>__change_keys`: per version kept, the keys it changed, with `_change_type` and `_seq`
  (narrow rows: what a version adds to the feed costs its change in keys, not in whole rows);
- `published.<dataset>__changes`: a view, the change rows themselves (the contract's columns and the four
  meta columns), the keys joined to their row versions through the generation's (key, version) index;
- `published.<dataset>__feed`: one row per version whose changes are kept (version, committed_at, change
  rows, contract version). Its first row is where the feed starts: a consumer holding version `s` can follow
  the feed when `first <= s <= current`; older copies start again from a snapshot.

The feed starts (again) at the first version, and when the dataset's columns change (another contract
version): the changes between two column sets are not rows of either. Retention follows the versions kept
(`publish`'s retention): the feed starts at the oldest version still kept.

Applying the feed to a copy at version `s` (delete each delete and pre-image, insert each insert and
post-image, in `(_commit_version, _seq)` order) gives version `m` exactly; with masked columns or a row filter
the same holds for the agency's view of both, since each image is masked and filtered as the view's rows
are (an image outside the filter is simply absent, so a row leaving the filter is a delete for the agency).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lienthong.contracts import Contract
from lienthong.duck import session

CHANGE_TYPES = ("delete", "update_preimage", "update_postimage", "insert")  # also their order in a version
META_COLUMNS = {"_change_type": "text NOT NULL", "_commit_version": "integer NOT NULL",
                "_commit_timestamp": "timestamptz NOT NULL", "_seq": "bigint NOT NULL"}
CHANGES_SUFFIX, FEED_SUFFIX, KEYS_SUFFIX = "__changes", "__feed", "__change_keys"
CLOSING = ("delete", "update_preimage")  # a row version the change closes; the others open one


def changes_table(dataset: str) -> str:
    return dataset + CHANGES_SUFFIX


def feed_table(dataset: str) -> str:
    return dataset + FEED_SUFFIX


def keys_table(dataset: str) -> str:
    return dataset + KEYS_SUFFIX


# what an agency's schema holds for the feed of a dataset (lienthong.access builds them)
def change_log_view(dataset: str) -> str:
    return dataset + "_change_log"


def window_view(dataset: str) -> str:
    return dataset + "_feed_window"


def agency_function(dataset: str) -> str:
    return dataset + "_changes"


HASHES = ("_h1", "_h2")  # per row: DuckDB's hash of the whole row, unsalted and salted


def row_hashes(rows: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The key columns of every row and two 64-bit hashes of the whole row (`HASHES`): what the next version
    is compared with (kept beside each version, `hashes_path`), and what the content hash sums."""
    key_list = "".join(f'"{k}", ' for k in keys)
    with session(purpose="publish-hash") as con:
        con.register("t", rows)
        return con.execute(f"SELECT {key_list}hash(t) AS _h1, hash(t, 'lienthong') AS _h2 FROM t").fetch_arrow_table()


def digest(hashes: pa.Table, contract: Contract) -> str:
    """The content hash of a version from its `row_hashes`: per row, two 64-bit DuckDB hashes of the whole
    row (one salted); over the rows their sums (in 128-bit integers), their XOR and the count, then SHA-256 of
    those with the contract id and version. Order does not matter, any changed value changes it. A change
    detector, not a signature (the manifest's per-file SHA-256 and its signature verify the files). Stable
    while DuckDB's hash is (DuckDB is pinned)."""
    with session(purpose="publish-hash") as con:
        con.register("h", hashes.select(list(HASHES)))
        row = con.execute("SELECT count(*), sum(_h1::HUGEINT), bit_xor(_h1), sum(_h2::HUGEINT) FROM h").fetchone()
    return hashlib.sha256(f"{contract.id}@{contract.version}:{row}".encode()).hexdigest()


def hashes_of_version(ds_dir: Path, version: int, contract: Contract, schema: pa.Schema) -> pa.Table | None:
    """`row_hashes` of a published version read back from its Parquet folders (`lienthong.snapshots`: its
    base snapshot and deltas), when its hashes were not kept; None when it has none or other columns."""
    from lienthong import snapshots

    try:
        m = snapshots.manifest(ds_dir, version)
        rows = snapshots.read_version(ds_dir, version, contract.primary_key)
    except (OSError, ValueError, KeyError):
        return None
    if not m.get("files") or not _same_columns(rows.schema, schema):
        return None
    return row_hashes(rows.cast(schema), contract.primary_key)


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type.equals(y.type) for x, y in zip(a, b, strict=True))


@dataclass
class Change:
    """What a version changes, as the publisher sends it: the new images (`post`: the contract's columns and
    `_change_type` insert or update_postimage) and the keys of the rows replaced or removed (`gone`: key
    columns and `_change_type` update_preimage or delete), whose old images the database already holds."""

    post: pa.Table
    gone: pa.Table

    @property
    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for column in (self.post["_change_type"], self.gone["_change_type"]):
            for item in pc.value_counts(column).to_pylist():  # per type, not per row
                found[item["values"]] = found.get(item["values"], 0) + item["counts"]
        return {t: found.get(t, 0) for t in CHANGE_TYPES}


def change(previous: pa.Table, current: pa.Table, rows: pa.Table, contract: Contract) -> Change:
    """The change from the version whose `row_hashes` are `previous` to `rows` (whose hashes are `current`):
    a key in both with other hashes is an update, in `previous` only a delete, in `current` only an insert."""
    on = " AND ".join(f'o."{k}" = n."{k}"' for k in contract.primary_key)
    keys = ", ".join(f'"{k}"' for k in contract.primary_key)
    with session(purpose="publish-feed") as con:
        con.register("o", previous)
        con.register("n", current)
        con.register("r", rows)
        con.execute(f"""CREATE TEMP TABLE kinds AS
            SELECT {", ".join(f'coalesce(n."{k}", o."{k}") AS "{k}"' for k in contract.primary_key)},
                   CASE WHEN o._h1 IS NULL THEN 'insert' WHEN n._h1 IS NULL THEN 'delete' ELSE 'update' END AS kind
            FROM o FULL OUTER JOIN n ON {on}
            WHERE o._h1 IS NULL OR n._h1 IS NULL OR o._h1 <> n._h1 OR o._h2 <> n._h2""")
        post = con.execute(f"""SELECT r.*, CASE k.kind WHEN 'insert' THEN 'insert' ELSE 'update_postimage' END
                                      AS _change_type
                               FROM r JOIN kinds k USING ({keys}) WHERE k.kind <> 'delete'
                               ORDER BY {keys}""").fetch_arrow_table()
        gone = con.execute(f"""SELECT {keys}, CASE kind WHEN 'delete' THEN 'delete' ELSE 'update_preimage' END
                                      AS _change_type
                               FROM kinds WHERE kind <> 'insert' ORDER BY {keys}""").fetch_arrow_table()
    return Change(post.select([*rows.column_names, "_change_type"]), gone)


def counts(change: Change | None) -> dict[str, int] | None:
    """{change type: rows} of a version's changes (None: the feed started at this version)."""
    return None if change is None else change.counts


def is_kept(cur: Any, dataset: str, schema: str) -> bool:
    """Whether the feed's relations are there (a version can be appended to them)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                tuple(f'"{schema}"."{n}"' for n in (changes_table(dataset), feed_table(dataset), keys_table(dataset))))
    return bool(cur.fetchone()[0])


def _drop(cur: Any, schema: str, name: str) -> None:
    """Drop `schema.name`, a table or a view (a feed kept as a table of rows before), with what depends on it."""
    cur.execute("""SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relname = %s""", (schema, name))
    row = cur.fetchone()
    if row is not None:
        cur.execute(f'DROP {"VIEW" if row[0] == "v" else "TABLE"} "{schema}"."{name}" CASCADE')


def store(cur: Any, contract: Contract, schema: str, version: int, committed_at: datetime,
          change: Change | None, copy: Callable[[Any, pa.Table, str], None], row_versions: str) -> None:
    """In the publish transaction, before the dataset's row versions are brought to `version`
    (`lienthong.pubtables.apply_change`): append `version`'s changed keys to the feed (`copy(cur, table,
    name)` loads Arrow rows); or start the feed at `version` over the relation `row_versions` (the
    generation's, `lienthong.pubtables.rows_view`) when `change` is None or the feed's relations are missing."""
    name = contract.name
    ft, kt = f'"{schema}"."{feed_table(name)}"', f'"{schema}"."{keys_table(name)}"'
    keys = contract.primary_key
    if change is None or not is_kept(cur, name, schema):
        # the agency views of the old feed go with it (CASCADE); the publish DAG's access task rebuilds them
        for old in (changes_table(name), keys_table(name), feed_table(name)):
            _drop(cur, schema, old)
        key_types = {f.name: f.postgres_type() for f in contract.fields if f.name in keys}
        cur.execute(f"""CREATE TABLE {kt} ({", ".join(f'"{k}" {key_types[k]} NOT NULL' for k in keys)},
                        _change_type text NOT NULL, _commit_version integer NOT NULL, _seq bigint NOT NULL,
                        PRIMARY KEY (_commit_version, _seq))""")
        cur.execute(f"""CREATE TABLE {ft} (version integer PRIMARY KEY, committed_at timestamptz NOT NULL,
                        changes bigint NOT NULL, contract_version text NOT NULL)""")
        cur.execute(f"COMMENT ON TABLE {ft} IS %s", (f"{contract.id}: the versions whose changes "
                                                      f"{changes_table(name)} keeps; the first is where the feed starts",))
        create_changes_view(cur, contract, schema, row_versions)
        cur.execute(f"INSERT INTO {ft} VALUES (%s, %s, 0, %s)", (version, committed_at, contract.version))
        return
    gone = numbered(change.gone.select([*keys, "_change_type"]), keys, 0)
    post = numbered(change.post.select([*keys, "_change_type"]), keys, gone.num_rows)
    changed = pa.concat_tables([gone, post])
    changed = changed.append_column(pa.field("_commit_version", pa.int32()),
                                    pa.repeat(pa.scalar(version, pa.int32()), changed.num_rows))
    if changed.num_rows:
        copy(cur, changed, kt)
        # readers page through the feed by (version, seq) joined to the row versions: without statistics of
        # the keys (autovacuum analyzes a new table only later) the planner joins every version's keys first
        cur.execute(f"ANALYZE {kt}")
    cur.execute(f"INSERT INTO {ft} VALUES (%s, %s, %s, %s)", (version, committed_at, changed.num_rows,
                                                              contract.version))


def create_changes_view(cur: Any, contract: Contract, schema: str, row_versions: str) -> None:
    """`<dataset>__changes`: each changed key with its row version in `row_versions` (the one the version
    closed for a delete or pre-image, the one it opened for an insert or post-image) and its commit time.
    Replaced in place when the row versions move to another relation (a compaction): the agency views over
    it stay."""
    name = contract.name
    on = " AND ".join(f'r."{k}" = k."{k}"' for k in contract.primary_key)
    closing = ", ".join(f"'{t}'" for t in CLOSING)
    # The row version is looked up per key (LATERAL with LIMIT 1, which the planner cannot flatten into a
    # join: exactly one row version matches): a reader paging by (version, seq) then walks the keys' primary
    # key in order and stops at its page, instead of hash-joining every row of the generation first.
    cur.execute(f"""CREATE OR REPLACE VIEW "{schema}"."{changes_table(name)}" AS
        SELECT {", ".join(f'r."{f.name}"' for f in contract.fields)}, k._change_type, k._commit_version,
               f.committed_at AS _commit_timestamp, k._seq
        FROM "{schema}"."{keys_table(name)}" k
        JOIN "{schema}"."{feed_table(name)}" f ON f.version = k._commit_version
        CROSS JOIN LATERAL (
            SELECT * FROM "{schema}"."{row_versions}" r
            WHERE {on} AND CASE WHEN k._change_type IN ({closing}) THEN r._to_version = k._commit_version
                                ELSE r._from_version = k._commit_version END
            LIMIT 1) r""")
    cur.execute(f'COMMENT ON VIEW "{schema}"."{changes_table(name)}" IS %s',
                (f"{contract.id}: the change rows of every version kept, from the row versions of {row_versions}",))


def numbered(rows: pa.Table, keys: Sequence[str], start: int) -> pa.Table:
    """`rows` in their place among a version's changes (`CHANGE_TYPES` order, then by key) with `_seq`
    counting from `start`; numbered here, in Arrow, so the database sorts no wide rows."""
    rank = pc.index_in(rows["_change_type"], value_set=pa.array(CHANGE_TYPES))
    ordered = rows.append_column("_rank", rank).sort_by([("_rank", "ascending"), *((k, "ascending") for k in keys)])
    return ordered.drop_columns(["_rank"]).append_column(
        "_seq", pa.array(range(start, start + rows.num_rows), pa.int64()))


def expire(cur: Any, dataset: str, schema: str, oldest_kept: int) -> None:
    """Drop what the feed no longer needs once versions before `oldest_kept` are gone: it then starts at
    `oldest_kept` (or later, if it started later). The row versions themselves go with the versions
    (`lienthong.pubtables.expire`): a version's pre-images were closed by it, after `oldest_kept`."""
    kt, ft = f'"{schema}"."{keys_table(dataset)}"', f'"{schema}"."{feed_table(dataset)}"'
    if not is_kept(cur, dataset, schema):
        return
    cur.execute(f"DELETE FROM {ft} WHERE version < %s", (oldest_kept,))
    cur.execute(f"DELETE FROM {kt} WHERE _commit_version <= (SELECT min(version) FROM {ft})")
