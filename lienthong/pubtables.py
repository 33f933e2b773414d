"""A published dataset in PostgreSQL as one table of row versions, so a new version costs its change.

Owns the tables and views of `published.<dataset>` (the publish transaction calls these; `lienthong.publish`
orchestrates):

- `published.<dataset>__r<NNNNNN>`: a *generation* table, the contract's columns plus `_from_version` and
  `_to_version` (null while the row is current). A row is in version `v` when `_from_version <= v` and
  (`_to_version` is null or `_to_version > v`). A generation starts at the first version and again when the
  dataset's columns change (another contract version); its number is the version it started at.
- `published.<dataset>__v<NNNNNN>`: a view per version kept, the rows of that version (what the ledger's
  `publication.table_name` names, and what the session log's checks read);
- `published.<dataset>`: the stable view, the current rows (`_to_version IS NULL`).

A version from the change (`apply_change`): the version's changed keys are already in the feed
(`lienthong.feed`); one UPDATE closes the row versions they replace or delete (and returns them, for the
Delta feed), one COPY adds the new images as row versions opened by the version, both checked against the
change's counts (a current row missing, or one already there, fails the publish). The feed's change rows are
these row versions themselves (`feed`'s view `<dataset>__changes`), not copies. Readers
see the old version or the new one: it is one transaction, and MVCC does the rest. A full version
(`load_full`): a new generation table, COPY, its indexes, ANALYZE.

Indexes of a generation: unique (key, `_from_version`), which serves the current rows and every version's (a
key has few versions); the contract's `indexes` and the person-list GIN indexes
(`lienthong.sessions.index_person_lists`), each once per generation instead of once per version. Two current
rows of one key are kept out by `apply_change`'s checks (what it closed and added, and no key inserted twice).
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
FILLFACTOR = 90
INDEX_BUILD_MEMORY = "256MB"


def version_view(dataset: str, version: int) -> str:
    return f"{dataset}__v{version:06d}"


def generation_table(dataset: str, first_version: int) -> str:
    return f"{dataset}__r{first_version:06d}"


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


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


def load_full(cur: Any, contract: Contract, schema: str, version: int, table: pa.Table,
              copy: Callable[[Any, pa.Table, str], None]) -> str:
    """A new generation starting at `version` holding `table`'s rows; returns its name."""
    name = generation_table(contract.name, version)
    full = f'"{schema}"."{name}"'
    cur.execute(f"DROP TABLE IF EXISTS {full}")  # a leftover of an attempt at this version that never committed
    cur.execute(contract.postgres_ddl(name, schema, extra={FROM: "integer NOT NULL", TO: "integer"},
                                      primary_key=False))
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
        _ident(schema, name), sql.Identifier(FROM), sql.Literal(version)))
    cur.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(_ident(schema, name), sql.Literal(FILLFACTOR)))
    copy(cur, table, full)
    # the index build sorts every key: with PostgreSQL's default 64MB it spills to disk (at 2M rows 3.1 s,
    # against 2.0 s with 256MB, measured); for this transaction only
    cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_BUILD_MEMORY,))
    _index(cur, contract, schema, name)
    cur.execute(f"ANALYZE {full}")
    return name


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
    close the row versions the deletes and pre-images name, add `post` (the new images) as row versions
    opened by `version`. `counts` (by change type) must match what was closed and added, and no key may then
    be current twice, else the current rows were not the previous version and this fails. Returns the
    closed rows as the feed shows them (CSV, `lienthong.feeddelta.from_csv`), read once, by the UPDATE."""
    keys = contract.primary_key
    target, changed = _ident(schema, generation), _ident(schema, feed.keys_table(contract.name))
    on = sql.SQL(" AND ").join(sql.SQL("r.{k} = c.{k}").format(k=sql.Identifier(k)) for k in keys)
    closing = io.BytesIO()
    returning = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(f.name)) for f in contract.fields)
    cur.copy_expert(sql.SQL("""COPY (UPDATE {t} r SET {to} = {v} FROM {c} c
                           WHERE c._commit_version = {v} AND c._change_type IN ('delete', 'update_preimage')
                             AND {on} AND r.{to} IS NULL
                           RETURNING {cols}, c._change_type, c._commit_version, {at}::timestamptz, c._seq)
                           TO STDOUT WITH (FORMAT csv)""").format(
        t=target, c=changed, on=on, to=sql.Identifier(TO), v=sql.Literal(version), cols=returning,
        at=sql.Literal(committed_at.isoformat())).as_string(cur), closing)
    closed, expected_closed = cur.rowcount, counts["delete"] + counts["update_preimage"]
    opened = post.select([f.name for f in contract.fields])
    if opened.num_rows:
        copy(cur, opened.append_column(pa.field(FROM, pa.int32()), pa.repeat(pa.scalar(version, pa.int32()), opened.num_rows)),
             f'"{schema}"."{generation}"')
    added, expected_added = opened.num_rows, counts["insert"] + counts["update_postimage"]
    # a key inserted while a current row of it remains (the current rows were not the previous version)
    cur.execute(sql.SQL("""SELECT count(*) FROM (SELECT 1 FROM {t} r JOIN {c} c ON {on}
                           WHERE c._commit_version = %(v)s AND c._change_type = 'insert' AND r.{to} IS NULL
                           GROUP BY {keys} HAVING count(*) > 1) d""").format(
        t=target, c=changed, on=on, to=sql.Identifier(TO),
        keys=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(k)) for k in keys)), {"v": version})
    (doubled,) = cur.fetchone()
    if (closed, added, doubled) != (expected_closed, expected_added, 0):
        raise RuntimeError(f"{contract.name} v{version}: the change closed {closed} current rows and added {added} "
                           f"({doubled} keys now twice), expected {expected_closed} and {expected_added}: the "
                           "table's current rows are not the previous version (nothing is published)")
    return closing.getvalue()


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


def create_version_view(cur: Any, contract: Contract, schema: str, generation: str, version: int) -> str:
    """The view of version `version`'s rows; returns its name."""
    name = version_view(contract.name, version)
    cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in contract.fields)
    cur.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(_ident(schema, name)))
    cur.execute(sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} WHERE {fr} <= {v} AND ({to} IS NULL OR {to} > {v})").format(
        _ident(schema, name), cols, _ident(schema, generation), v=sql.Literal(version),
        fr=sql.Identifier(FROM), to=sql.Identifier(TO)))
    return name


def current_select(contract: Contract, schema: str, generation: str) -> str:
    """The stable view's query: the current rows of the generation, the contract's columns."""
    cols = ", ".join(f'"{f.name}"' for f in contract.fields)
    return f'SELECT {cols} FROM "{schema}"."{generation}" WHERE "{TO}" IS NULL'


def expire(cur: Any, dataset: str, schema: str, oldest_kept: int) -> None:
    """Versions before `oldest_kept` are gone: the rows no kept version shows, and the generations no kept
    version reads (never the newest)."""
    cur.execute("""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ %s ORDER BY c.relname""",
                (schema, "^" + dataset + r"__r[0-9]{6}$"))
    generations = [r[0] for r in cur.fetchall()]
    for i, name in enumerate(generations):
        newest = i == len(generations) - 1
        next_start = None if newest else int(generations[i + 1][-6:])
        if next_start is not None and next_start <= oldest_kept:
            cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(_ident(schema, name)))
            continue
        cur.execute(sql.SQL("DELETE FROM {} WHERE {to} IS NOT NULL AND {to} <= %s").format(
            _ident(schema, name), to=sql.Identifier(TO)), (oldest_kept,))
