"""A consuming agency's own copy of a published dataset, kept current from the change feed.

What an agency runs on its side, logged in as its own role (the example DAG `consumer_tax_department` does):
the first time, it reads its view `agency_<name>.<dataset>` and the version that view shows, in one
REPEATABLE READ transaction; after that, each pull reads `agency_<name>.<dataset>_changes(<its version>)`
and the current version, again in one transaction, and applies the changes version by version (the old
images out by key, the new ones in), then records the new version. A version the feed no longer keeps
(retention) makes it start again from the view, and says so. Nothing of the platform is needed but the
agency's login: the copy holds exactly the columns, masks and rows its views give it.

The copy is a DuckDB database file: table `<dataset>` (nested lists as the JSON text PostgreSQL's jsonb gives)
and table `_feed_state` (dataset, version, rows, updated_at). Each pull is one DuckDB transaction, so a pull
killed half-way leaves the copy at its previous version, and the next pull applies the same changes again.
The feed is read through a server-side cursor, a batch at a time, and applied a version at a time: memory
follows one version's change, not the dataset.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000
META = ("_change_type", "_commit_version", "_commit_timestamp", "_seq")


@dataclass
class Pull:
    dataset: str
    version_before: int | None
    version: int
    versions_applied: int
    rows_removed: int
    rows_added: int
    restarted: str | None  # why the copy was read again from the view (None: it followed the feed)
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# PostgreSQL type OIDs of the views' columns -> the copy's DuckDB types (jsonb and anything else: text)
_TYPES = {16: "BOOLEAN", 20: "BIGINT", 21: "SMALLINT", 23: "INTEGER", 700: "REAL", 701: "DOUBLE", 1700: "DOUBLE",
          1082: "DATE", 1114: "TIMESTAMP", 1184: "TIMESTAMPTZ"}


def _plain(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, list | dict) else value


def _arrow(names: list[str], rows: list[tuple]) -> pa.Table:
    """Rows as Arrow, nested values as JSON text; DuckDB casts to the copy's column types on insert."""
    return pa.table({n: [_plain(r[i]) for r in rows] for i, n in enumerate(names)})


def _create(db: Any, dataset: str, description: Any) -> None:
    cols = ", ".join(f"{_ident(d.name)} {_TYPES.get(d.type_code, 'VARCHAR')}" for d in description
                     if d.name not in META)
    db.execute(f"CREATE TABLE {_ident(dataset)} ({cols})")


def _begin(pg: Any) -> None:
    pg.rollback()
    pg.autocommit = False
    with pg.cursor() as cur:
        # read-write: the feed function records the read in the session log (the role itself writes nothing)
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _current_version(pg: Any, schema: str, dataset: str) -> int:
    with pg.cursor() as cur:
        cur.execute(f"SELECT current_version FROM {_ident(schema)}.{_ident(dataset + '_feed_window')}")
        row = cur.fetchone()
    if row is None or row[0] is None:
        raise LookupError(f"{schema}.{dataset} has no change feed yet")
    return int(row[0])


def _batches(pg: Any, statement: str, params: Sequence[Any] = ()) -> Iterator[tuple[list[str], list[tuple]]]:
    with pg.cursor(name="lienthong_feed_copy") as cur:  # server-side: the rows come a batch at a time
        cur.itersize = BATCH_ROWS
        cur.execute(statement, params)
        while rows := cur.fetchmany(BATCH_ROWS):
            yield [d.name for d in cur.description], rows


def _snapshot(pg: Any, db: Any, schema: str, dataset: str) -> int:
    """Replace the copy with the agency's view as it stands; returns the version it shows."""
    _begin(pg)
    try:
        version = _current_version(pg, schema, dataset)
        view = f"{_ident(schema)}.{_ident(dataset)}"
        with pg.cursor() as cur:
            cur.execute(f"SELECT * FROM {view} LIMIT 0")
            description = cur.description
        db.execute(f"DROP TABLE IF EXISTS {_ident(dataset)}")
        _create(db, dataset, description)
        for names, rows in _batches(pg, f"SELECT * FROM {view}"):
            db.register("_batch", _arrow(names, rows))
            db.execute(f"INSERT INTO {_ident(dataset)} BY NAME SELECT * FROM _batch")
            db.unregister("_batch")
    finally:
        pg.rollback()
    return version


def _apply(db: Any, dataset: str, key: Sequence[str], names: list[str], rows: list[tuple]) -> tuple[int, int]:
    """One version's change rows (in their order): the old images out by key, then the new ones in."""
    kind = names.index("_change_type")
    keep = [i for i, n in enumerate(names) if n not in META]
    out = [tuple(r[i] for i in keep) for r in rows if r[kind] in ("delete", "update_preimage")]
    new = [tuple(r[i] for i in keep) for r in rows if r[kind] in ("insert", "update_postimage")]
    columns = [names[i] for i in keep]
    if out:
        gone = _arrow(columns, out).select(list(key))
        db.register("_gone", gone)
        match = " AND ".join(f"t.{_ident(k)} = g.{_ident(k)}" for k in key)
        before = db.execute(f"SELECT count(*) FROM {_ident(dataset)}").fetchone()[0]
        db.execute(f"DELETE FROM {_ident(dataset)} t WHERE EXISTS (SELECT 1 FROM _gone g WHERE {match})")
        removed = before - db.execute(f"SELECT count(*) FROM {_ident(dataset)}").fetchone()[0]
        db.unregister("_gone")
        if removed != len(out):
            raise RuntimeError(f"{dataset}: the change removes {len(out)} rows, the copy held {removed} of them: "
                               "the copy is not the version the feed starts from")
    if new:
        db.register("_new", _arrow(columns, new))
        db.execute(f"INSERT INTO {_ident(dataset)} BY NAME SELECT * FROM _new")
        db.unregister("_new")
    return len(out), len(new)


def _changes_since(pg: Any, db: Any, schema: str, dataset: str, key: Sequence[str],
                   before: int) -> tuple[int, int, int, int]:
    """Apply the feed after version `before`, a version at a time; (version now, versions applied, rows
    removed, rows added). Raises psycopg2's DataException when `before` is outside the feed's window."""
    _begin(pg)
    try:
        version = _current_version(pg, schema, dataset)
        statement = f"SELECT * FROM {_ident(schema)}.{_ident(dataset + '_changes')}(%s)"
        removed = added = applied = 0
        pending: list[tuple] = []
        names: list[str] = []
        at: int | None = None
        for names, rows in _batches(pg, statement, (before,)):
            vcol = names.index("_commit_version")
            for r in rows:
                if at is not None and r[vcol] != at:
                    out, new = _apply(db, dataset, key, names, pending)
                    removed, added, applied, pending = removed + out, added + new, applied + 1, []
                at = r[vcol]
                pending.append(r)
        if pending:
            out, new = _apply(db, dataset, key, names, pending)
            removed, added, applied = removed + out, added + new, applied + 1
        return version, applied, removed, added
    finally:
        pg.rollback()


def follow(pg: Any, schema: str, dataset: str, store: str | Path, key: Sequence[str]) -> Pull:
    """Bring the copy of `schema.dataset` in `store` (a DuckDB file) to the current version over `pg` (a
    psycopg2 connection logged in as the agency). `key`: columns identifying a row in the agency's view."""
    import duckdb
    from psycopg2 import errors

    from lienthong.duck import session

    Path(store).parent.mkdir(parents=True, exist_ok=True)
    autocommit = pg.autocommit  # given back as it came: no transaction of ours is left open on it
    try:
        with session(purpose="feed-copy", database=store) as db:
            db.execute("""CREATE TABLE IF NOT EXISTS _feed_state (dataset VARCHAR PRIMARY KEY, version INTEGER,
                          rows BIGINT, updated_at TIMESTAMPTZ)""")
            row = db.execute("SELECT version FROM _feed_state WHERE dataset = ?", [dataset]).fetchone()
            before = int(row[0]) if row else None
            restarted: str | None = None if before is not None else "first pull"
            version, applied, removed, added = before, 0, 0, 0
            db.execute("BEGIN")
            try:
                if before is not None:
                    try:
                        version, applied, removed, added = _changes_since(pg, db, schema, dataset, key, before)
                    except errors.DataException as exc:  # beyond the feed's retention (or ahead of it)
                        restarted = str(exc).strip().splitlines()[0]
                if restarted is not None:
                    version = _snapshot(pg, db, schema, dataset)
                counted = db.execute(f"SELECT count(*) FROM {_ident(dataset)}").fetchone()
                rows_now = int(counted[0]) if counted else 0
                db.execute("INSERT OR REPLACE INTO _feed_state VALUES (?, ?, ?, now())", [dataset, version, rows_now])
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # nothing of a failed pull is kept
                    db.execute("ROLLBACK")
                raise
    finally:
        pg.rollback()
        pg.autocommit = autocommit
    assert version is not None
    if restarted is not None and before is not None:
        log.warning("copy of %s.%s read again from the view at version %s: %s", schema, dataset, version, restarted)
    pull = Pull(dataset, before, version, applied, removed, added, restarted, rows_now)
    log.info("copy of %s.%s: version %s -> %s (%d version(s) applied, -%d +%d rows, %d rows)", schema, dataset,
             before, version, applied, removed, added, rows_now)
    return pull
