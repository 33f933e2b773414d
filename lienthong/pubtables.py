"""A published dataset in PostgreSQL as row versions in a base table and small change tables, so a new version
costs its change and writes no page of the large table.

Owns the tables and views of `published.<dataset>` (the publish transaction calls these; `lienthong.publish`
orchestrates). A *generation* `G = published.<dataset>__r<NNNNNN>` is:

- `G` itself, the *base*: the contract's columns plus `_from_version` and `_to_version`, written once, by a
  full load (`load_full`) or a compaction (`compact`), never by a change;
- `G_d`, the *delta*: the row versions opened by the versions since (same columns); a change closes one of
  them in place (`_to_version`; the table is small, so the pages it writes are few);
- `G_x`, the *closings*: (key, `_to_version`) of the base rows a later version closed (a key has at most one
  current base row, so the key names it);
- `G_rows`, a view: every row version with its effective `_to_version` (the base's, else its closing's).

A row version is in version `v` when `_from_version <= v` and (`_to_version` is null or `_to_version > v`).
A generation starts at the first version, again when the dataset's columns change (another contract
version), and when a compaction rewrites it; its number is the version it started at.

- `published.<dataset>__v<NNNNNN>`: a view per version kept, the rows of that version over `G_rows` (what
  the ledger's `publication.table_name` names, and what the session log's checks read);
- `published.<dataset>`: the stable view, the current rows (`current_select`: the base rows no closing
  names, and the open delta rows).

A version from the change (`apply_change`): the version's changed keys are already in the feed
(`lienthong.feed`); the delta rows they replace or delete are closed by one UPDATE of the delta, the base rows
by one INSERT of closings written from the change's keys alone (the delta and the base's closed rows are
read once, for the Delta feed), and one COPY adds the new images
to the delta, all checked against the change's counts (a current row missing, or one already there, fails
the publish). The feed's change rows are these row versions themselves (`feed`'s view `<dataset>__changes`,
over `G_rows`), not copies. Readers see the old version or the new one: it is one transaction, and MVCC does
the rest. Why not UPDATE the base in place, as the first layout did: every version then left dead tuples and
index entries all over the large table for VACUUM, and had to keep its pages 10 % empty for the updates. The
change costs about the same either way (at 2M rows, 1.3 s for 1 %): what it pays for is reading the replaced
rows' images for the feed, key by key, not writing pages (docs/benchmarks.md, "The base and change tables").

Compaction (`compact`, after the version is served, in a transaction of its own): once the delta and the
closings hold more than `COMPACT_SHARE` of the base's rows, the row versions the kept versions and the feed
still read are written into a new generation by the server (INSERT ... SELECT, no client round trip), and
every view is pointed at it before the old one is dropped (at 2M rows 8.5-9.8 s, due about every 33 versions of
1 %). That is the price of keeping the change out of the base.

Indexes of a generation: unique (key, `_from_version`) on the base and the delta (serves the current rows
and every version's: a key has few versions), the closings' primary key (the key), the contract's
`indexes` and the person-list GIN indexes (`lienthong.sessions.index_person_lists`) on the base and the delta.
Two current rows of one key are kept out by `apply_change`'s checks (what it closed and added, and no key
inserted twice).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
from psycopg2 import sql
from psycopg2.extensions import TRANSACTION_STATUS_INERROR

from lienthong import feed, sessions
from lienthong.contracts import Contract

log = logging.getLogger(__name__)

FROM, TO = "_from_version", "_to_version"
DELTA_FILLFACTOR = 90  # the delta's rows are closed in place: room for the new tuple on its page
INDEX_BUILD_MEMORY = "256MB"
# compact once the delta and the closings hold more rows than this share of the base's
COMPACT_SHARE = 0.5
# how long a compaction (or retention, `lienthong.publish`) waits for the locks on the views it repoints or
# drops and the generation it drops: a reader holding them (a long agency transaction) makes it give up rather
# than queue every new reader behind it
MAINTENANCE_LOCK_TIMEOUT = "5s"


def version_view(dataset: str, version: int) -> str:
    return f"{dataset}__v{version:06d}"


def generation_table(dataset: str, first_version: int) -> str:
    return f"{dataset}__r{first_version:06d}"


def delta_table(generation: str) -> str:
    return generation + "_d"


def closings_table(generation: str) -> str:
    return generation + "_x"


def rows_view(generation: str) -> str:
    return generation + "_rows"


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _cols(names: list[str], alias: str = "") -> sql.Composable:
    prefix = sql.SQL(alias + ".") if alias else sql.SQL("")
    return sql.SQL(", ").join(prefix + sql.Identifier(n) for n in names)


def _same_key(keys: list[str], a: str, b: str) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(sql.Identifier(a), sql.Identifier(k),
                                                                  sql.Identifier(b), sql.Identifier(k)) for k in keys)


def current_generation(cur: Any, schema: str, dataset: str) -> tuple[str, list[str]] | None:
    """(table, its contract columns) of the newest generation of `dataset`, or None."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ %s ORDER BY c.relname DESC LIMIT 1""",
                (schema, "^" + dataset + r"__r[0-9]{6}$"))
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute("""SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0
                   AND NOT a.attisdropped ORDER BY a.attnum""", (f'"{schema}"."{row[0]}"',))
    return row[0], [r[0] for r in cur.fetchall() if r[0] not in (FROM, TO)]


def has_change_tables(cur: Any, schema: str, generation: str) -> bool:
    """Whether `generation` has its delta and its rows view (a generation of the earlier layout, one table
    updated in place, has not: the next version then starts a new generation)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                (f'"{schema}"."{delta_table(generation)}"', f'"{schema}"."{rows_view(generation)}"'))
    return bool(cur.fetchone()[0])


def _create_tables(cur: Any, contract: Contract, schema: str, name: str, first_version: int) -> None:
    """The base `name`, its delta and its closings, empty."""
    for table in (name, delta_table(name)):
        cur.execute(contract.postgres_ddl(table, schema, extra={FROM: "integer NOT NULL", TO: "integer"},
                                          primary_key=False))
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
            _ident(schema, table), sql.Identifier(FROM), sql.Literal(first_version)))
    cur.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
        _ident(schema, delta_table(name)), sql.Literal(DELTA_FILLFACTOR)))
    keys = contract.primary_key
    if keys:
        types = {f.name: f.postgres_type() for f in contract.fields}
        cur.execute(sql.SQL("CREATE TABLE {} ({}, {} integer NOT NULL, PRIMARY KEY ({}))").format(
            _ident(schema, closings_table(name)),
            sql.SQL(", ").join(sql.SQL("{} {} NOT NULL").format(sql.Identifier(k), sql.SQL(types[k])) for k in keys),
            sql.Identifier(TO), _cols(keys)))


def _create_rows_view(cur: Any, contract: Contract, schema: str, name: str) -> None:
    cols = [f.name for f in contract.fields]
    keys = contract.primary_key
    if keys:
        base = sql.SQL("SELECT {}, b.{fr}, COALESCE(b.{to}, x.{to}) AS {to} FROM {b} b LEFT JOIN {x} x "
                       "ON {on} AND b.{to} IS NULL").format(
            _cols(cols, "b"), b=_ident(schema, name), x=_ident(schema, closings_table(name)),
            on=_same_key(keys, "x", "b"), fr=sql.Identifier(FROM), to=sql.Identifier(TO))
    else:
        base = sql.SQL("SELECT {}, {}, {} FROM {}").format(_cols(cols), sql.Identifier(FROM), sql.Identifier(TO),
                                                           _ident(schema, name))
    cur.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS {} UNION ALL SELECT {}, {}, {} FROM {}").format(
        _ident(schema, rows_view(name)), base, _cols(cols), sql.Identifier(FROM), sql.Identifier(TO),
        _ident(schema, delta_table(name))))
    cur.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(_ident(schema, rows_view(name)), sql.Literal(
        f"{contract.id}: every row version of generation {name} (base, closings and delta)")))


def _finish(cur: Any, contract: Contract, schema: str, name: str) -> None:
    """The generation's indexes, its rows view and its statistics, once its base is loaded."""
    # the index build sorts every key: with PostgreSQL's default 64MB it spills to disk (at 2M rows 3.1 s,
    # against 2.0 s with 256MB, measured); for this transaction only
    cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_BUILD_MEMORY,))
    for table in (name, delta_table(name)):
        _index(cur, contract, schema, table)
    _create_rows_view(cur, contract, schema, name)
    for table in (name, delta_table(name)):
        cur.execute(sql.SQL("ANALYZE {}").format(_ident(schema, table)))


def _drop_generation(cur: Any, schema: str, name: str, cascade: bool) -> None:
    how = sql.SQL(" CASCADE" if cascade else "")
    cur.execute(sql.SQL("DROP VIEW IF EXISTS {}{}").format(_ident(schema, rows_view(name)), how))
    for table in (closings_table(name), delta_table(name), name):
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}{}").format(_ident(schema, table), how))


def load_full(cur: Any, contract: Contract, schema: str, version: int, table: pa.Table,
              copy: Callable[[Any, pa.Table, str], None]) -> tuple[str, int]:
    """A new generation starting at `version` holding `table`'s rows; returns its name and the rows the
    server says its COPY loaded (what a count of the new table would say, without reading it again)."""
    name = generation_table(contract.name, version)
    _drop_generation(cur, schema, name, cascade=False)  # a leftover of an attempt that never committed
    _create_tables(cur, contract, schema, name, version)
    copy(cur, table, f'"{schema}"."{name}"')
    loaded = cur.rowcount
    _finish(cur, contract, schema, name)
    return name, loaded


def _index(cur: Any, contract: Contract, schema: str, name: str) -> None:
    keys = [sql.Identifier(k) for k in contract.primary_key]
    target = _ident(schema, name)
    if keys:  # one index serves the current rows and every version's (a key has few versions)
        cur.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} ({}, {})").format(
            sql.Identifier(f"{name}_version"), target, sql.SQL(", ").join(keys), sql.Identifier(FROM)))
    for i, cols in enumerate(contract.custom.get("indexes") or []):
        cur.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{name}_ix{i}"), target, sql.SQL(", ").join(map(sql.Identifier, cols))))
    sessions.index_person_lists(cur, contract, name, schema)


def apply_change(cur: Any, contract: Contract, schema: str, generation: str, version: int,
                 counts: dict[str, int], post: pa.Table, copy: Callable[[Any, pa.Table, str], None],
                 committed_at: datetime) -> bytes:
    """Version `version` from the previous one, its changed keys already in the feed (`lienthong.feed.store`):
    close the row versions the deletes and pre-images name (in the delta in place, in the base by a closing
    row), add `post` (the new images) to the delta as row versions opened by `version`. `counts` (by change
    type) must match what was closed and added, and no key may then be current twice, else the current rows
    were not the previous version and this fails. Returns the closed rows as the feed shows them (CSV,
    `lienthong.feeddelta.from_csv`), read by the statements that close them."""
    keys = contract.primary_key
    base, delta = _ident(schema, generation), _ident(schema, delta_table(generation))
    closings, changed = _ident(schema, closings_table(generation)), _ident(schema, feed.keys_table(contract.name))
    names = [f.name for f in contract.fields]
    fr, to, v = sql.Identifier(FROM), sql.Identifier(TO), sql.Literal(version)
    meta = sql.SQL("c._change_type, c._commit_version, {}::timestamptz, c._seq").format(
        sql.Literal(committed_at.isoformat()))
    closing_change = sql.SQL("c._commit_version = {v} AND c._change_type IN ('delete', 'update_preimage')").format(v=v)
    out = io.BytesIO()
    cur.copy_expert(sql.SQL("""COPY (UPDATE {d} r SET {to} = {v} FROM {c} c WHERE {closing} AND {on} AND r.{to} IS NULL
                                    RETURNING {cols}, {meta}) TO STDOUT WITH (FORMAT csv)""").format(
        d=delta, c=changed, closing=closing_change, on=_same_key(keys, "r", "c"), to=to, v=v,
        cols=_cols(names, "r"), meta=meta).as_string(cur), out)
    closed = cur.rowcount
    # the base rows: the keys the delta did not close are closed in the base, a closing row each, written
    # without reading the base; then the closed rows are read once, for the feed
    cur.execute(sql.SQL("""INSERT INTO {x} ({keys}, {to}) SELECT {ckeys}, {v} FROM {c} c WHERE {closing}
                           AND NOT EXISTS (SELECT 1 FROM {d} r WHERE {don} AND r.{to} = {v})""").format(
        x=closings, keys=_cols(keys), ckeys=_cols(keys, "c"), c=changed, closing=closing_change, d=delta,
        don=_same_key(keys, "r", "c"), to=to, v=v))
    closings_added = cur.rowcount
    if closings_added:
        # statistics as the tables now are (a small table the planner last saw empty it would otherwise scan
        # once per key: measured 33 s instead of 1 s for a 1 % change at 2M rows); readers plan with them too
        cur.execute(sql.SQL("ANALYZE {}").format(closings))
        cur.copy_expert(sql.SQL("""COPY (SELECT {cols}, {meta} FROM {c} c JOIN {x} x ON {xon} AND x.{to} = {v}
                                         JOIN {b} b ON {bon} AND b.{to} IS NULL WHERE {closing})
                                   TO STDOUT WITH (FORMAT csv)""").format(
            cols=_cols(names, "b"), meta=meta, c=changed, x=closings, xon=_same_key(keys, "x", "c"),
            b=base, bon=_same_key(keys, "b", "x"), closing=closing_change, to=to, v=v).as_string(cur), out)
        closed += cur.rowcount  # fewer than the closings when one names a key with no current row: refused below
    expected_closed = counts["delete"] + counts["update_preimage"]
    opened = post.select(names)
    if opened.num_rows:
        copy(cur, opened.append_column(pa.field(FROM, pa.int32()), pa.repeat(pa.scalar(version, pa.int32()), opened.num_rows)),
             f'"{schema}"."{delta_table(generation)}"')
        # only the columns a lookup joins on (every column's statistics, jsonb lists included, cost 4 times
        # as much and grow with the delta)
        cur.execute(sql.SQL("ANALYZE {} ({}, {}, {})").format(delta, _cols(keys), fr, to))
    added, expected_added = opened.num_rows, counts["insert"] + counts["update_postimage"]
    # a key inserted while a current row of it remains (the current rows were not the previous version);
    # driven from the inserted keys, each looked up in the base and the delta (a join to the current rows'
    # UNION ALL would not be parameterized by the key, and would read the whole base)
    cur.execute(sql.SQL("""SELECT count(*) FROM {c} c WHERE c._commit_version = %(v)s AND c._change_type = 'insert'
                             AND (SELECT count(*) FROM {b} b WHERE {bon} AND b.{to} IS NULL
                                    AND NOT EXISTS (SELECT 1 FROM {x} x WHERE {xon}))
                               + (SELECT count(*) FROM {d} r WHERE {don} AND r.{to} IS NULL) > 1""").format(
        c=changed, b=base, d=delta, x=closings, bon=_same_key(keys, "b", "c"), xon=_same_key(keys, "x", "b"),
        don=_same_key(keys, "r", "c"), to=to), {"v": version})
    (doubled,) = cur.fetchone()
    if (closed, added, doubled) != (expected_closed, expected_added, 0):
        raise RuntimeError(f"{contract.name} v{version}: the change closed {closed} current rows and added {added} "
                           f"({doubled} keys now twice), expected {expected_closed} and {expected_added}: the "
                           "table's current rows are not the previous version (nothing is published)")
    return out.getvalue()


KEYED_JOIN_SHARE = 0.05  # a change up to this share of the rows is joined to the table key by key


@contextlib.contextmanager
def keyed_joins(cur: Any, change_rows: int, rows: int) -> Iterator[None]:
    """Within the block, join a change to the table through the key's index when it is small beside the
    table (`KEYED_JOIN_SHARE`). PostgreSQL's planner, pricing random reads at 4x sequential ones, scans all
    rows for a hash join even for 1 % of them (measured at 2M rows: 0.59 s against 0.23 s key by key, cold),
    which makes a version's cost follow the table instead of the change."""
    if change_rows > KEYED_JOIN_SHARE * max(rows, 1):
        yield
        return
    cur.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
    saved = cur.fetchone()
    cur.execute("SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)")
    try:
        yield
    finally:  # as they were (a failed statement leaves the transaction to roll back, and them with it)
        if cur.connection.get_transaction_status() != TRANSACTION_STATUS_INERROR:
            cur.execute("SELECT set_config('enable_hashjoin', %s, true), set_config('enable_mergejoin', %s, true)", saved)


def _version_select(contract: Contract, schema: str, generation: str, version: int) -> sql.Composable:
    return sql.SQL("SELECT {} FROM {} WHERE {fr} <= {v} AND ({to} IS NULL OR {to} > {v})").format(
        _cols([f.name for f in contract.fields]), _ident(schema, rows_view(generation)), v=sql.Literal(version),
        fr=sql.Identifier(FROM), to=sql.Identifier(TO))


def create_version_view(cur: Any, contract: Contract, schema: str, generation: str, version: int) -> str:
    """The view of version `version`'s rows; returns its name."""
    name = version_view(contract.name, version)
    cur.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(_ident(schema, name)))
    cur.execute(sql.SQL("CREATE VIEW {} AS {}").format(_ident(schema, name),
                                                        _version_select(contract, schema, generation, version)))
    return name


def current_select(contract: Contract, schema: str, generation: str) -> str:
    """The stable view's query: the current rows of the generation (the base rows no closing names, and the
    open delta rows). Written out rather than over `G_rows`, so that the planner sees an anti-join it can run
    as one hash anti-join over the base, or key by key."""
    cols = ", ".join(f'"{f.name}"' for f in contract.fields)
    keys = contract.primary_key
    base = f'SELECT {cols} FROM "{schema}"."{generation}" b WHERE b."{TO}" IS NULL'
    if keys:
        same = " AND ".join(f'x."{k}" = b."{k}"' for k in keys)
        base += f' AND NOT EXISTS (SELECT 1 FROM "{schema}"."{closings_table(generation)}" x WHERE {same})'
    return f'{base} UNION ALL SELECT {cols} FROM "{schema}"."{delta_table(generation)}" WHERE "{TO}" IS NULL'


def base_rows(cur: Any, schema: str, generation: str | None) -> int:
    """The rows of `generation`'s base as the statistics have them (0 when there is none): what sizes a change
    against the table (`keyed_joins`, `compact`) without counting it."""
    cur.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                (f'"{schema}"."{generation or ""}"',))
    found = cur.fetchone()
    return int(found[0]) if found else 0


def change_table_rows(cur: Any, schema: str, generation: str) -> int:
    """The rows in `generation`'s delta and closings, counted (they are small)."""
    cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}) + (SELECT count(*) FROM {})").format(
        _ident(schema, delta_table(generation)), _ident(schema, closings_table(generation))))
    return int(cur.fetchone()[0])


def compact(cur: Any, contract: Contract, schema: str, version: int, oldest_kept: int | None,
            share: float = COMPACT_SHARE, lock_timeout: str | None = None) -> str | None:
    """When the current generation's delta and closings hold more than `share` of its base's rows: write the
    row versions still read (those of the versions from `oldest_kept` on, and of the feed's change rows; all
    of them when `oldest_kept` is None) into a new generation numbered `version`, point the version views,
    the feed's change view and the stable view at it, and drop the old one. Returns the new generation, or
    None when there was nothing to do. A view other than these still reading the old generation makes the
    drop fail, and the transaction with it: nothing is lost. So does a lock not granted within `lock_timeout`
    (for this transaction only; `MAINTENANCE_LOCK_TIMEOUT` by default)."""
    current = current_generation(cur, schema, contract.name)
    if current is None or not contract.primary_key or not has_change_tables(cur, schema, current[0]):
        return None
    old = current[0]
    base, change_rows = base_rows(cur, schema, old), change_table_rows(cur, schema, old)
    if change_rows <= share * max(base, 1) or old == generation_table(contract.name, version):
        return None
    new = generation_table(contract.name, version)
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout or MAINTENANCE_LOCK_TIMEOUT,))
    _drop_generation(cur, schema, new, cascade=False)
    _create_tables(cur, contract, schema, new, version)
    names = [*(f.name for f in contract.fields), FROM, TO]
    keep = sql.SQL("") if oldest_kept is None else sql.SQL(" WHERE {to} IS NULL OR {to} > {k}").format(
        to=sql.Identifier(TO), k=sql.Literal(oldest_kept))
    cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{}").format(
        _ident(schema, new), _cols(names), _cols(names), _ident(schema, rows_view(old)), keep))
    carried = cur.rowcount
    _finish(cur, contract, schema, new)
    cur.execute("""SELECT v.relname FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
                   JOIN pg_class v ON v.oid = w.ev_class JOIN pg_namespace n ON n.oid = v.relnamespace
                   WHERE d.refobjid = to_regclass(%s) AND v.relname ~ %s""",
                (f'"{schema}"."{rows_view(old)}"', "^" + contract.name + r"__v[0-9]{6}$"))
    for (view,) in cur.fetchall():
        cur.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(
            _ident(schema, view), _version_select(contract, schema, new, int(view[-6:]))))
    if feed.is_kept(cur, contract.name, schema):
        feed.create_changes_view(cur, contract, schema, rows_view(new))
    cur.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(
        _ident(schema, contract.name), sql.SQL(current_select(contract, schema, new))))
    _drop_generation(cur, schema, old, cascade=False)
    log.info("%s: compacted generation %s (%d base rows, %d in its delta and closings) into %s (%d row versions)",
             contract.name, old, base, change_rows, new, carried)
    return new


def expire(cur: Any, dataset: str, schema: str, oldest_kept: int) -> None:
    """Versions before `oldest_kept` are gone: the generations no kept version reads (never the newest), and
    the delta rows no kept version shows. The base keeps its rows closed before `oldest_kept` (deleting them
    would write its pages): no kept version shows them, and the next compaction leaves them out."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ %s ORDER BY c.relname""",
                (schema, "^" + dataset + r"__r[0-9]{6}$"))
    generations = [r[0] for r in cur.fetchall()]
    for i, name in enumerate(generations):
        newest = i == len(generations) - 1
        next_start = None if newest else int(generations[i + 1][-6:])
        if next_start is not None and next_start <= oldest_kept:
            _drop_generation(cur, schema, name, cascade=True)
            continue
        # a generation of the earlier layout (no delta) holds its closed rows itself
        target = delta_table(name) if has_change_tables(cur, schema, name) else name
        cur.execute(sql.SQL("DELETE FROM {} WHERE {to} IS NOT NULL AND {to} <= %s").format(
            _ident(schema, target), to=sql.Identifier(TO)), (oldest_kept,))
