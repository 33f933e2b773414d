"""Duplicate clusters inside each source as persistent state, brought up to date from the staged change.

Owns one Delta table per source under `<integrated>/_state/` (through `lienthong.zones`):
`dedupe_citizen`, `dedupe_enterprise`, `dedupe_land_holder`. A row per staged record the duplicate rules
consider (`lienthong.reconcile.dedupe`: citizens with a birth date, holders not deleted, a name that folds),
keyed by the staged `_merge_key` (`_key`): its record key, its group (`_group`: the rule's grouping values,
the folded name included, as a JSON array of text, so equal groups are equal strings and nothing else is;
`_gkey`, a 63-bit hash of it, to look groups up), its survivor-order values (`_o0`, `_o1`, ...: the rule's
ORDER BY expressions, evaluated) and its cluster as last computed (`survivor_key`, `cluster_size`). The rules
themselves stay in `dedupe`, whose functions remain the whole computation this module must equal (`RULES`
restates their SQL; the fingerprint covers both modules' source, the name folding's and DuckDB's version).

The table is a log: a full build writes every row with `_seq` 0, the rows in a cluster first (a change run
reads those whole and of the others only `_key` and `_gkey`, so Parquet's row-group statistics skip most of
the table); a change run appends, with a `_seq` above every earlier one, the rows of the records it
recomputed and a tombstone (`_live` false) for each record gone. The current state is, per `_key`, its row of
highest `_seq` when live. Appending costs what changed; a MERGE would rewrite the whole table, since a 1 %
change touches every file. When the appended rows outgrow `COMPACT_FRACTION` of the base, the run writes the
current state whole again (`_seq` 0).

Why a change run equals the whole computation: a record's cluster (survivor and size) is a function of the
records sharing its group, nothing else. A run takes the records whose staged row may differ between the
version the state reflects and the new one (`_touched`: new, changed and gone ones), folds the names of those
rows only, and recomputes every group such a record left (its group in the state) or joins (its group now),
with all its members: those in a cluster, and the single records of a group a changed record joins. A group
that is neither holds exactly the records it held, with the same rows, so its clusters stand. Groups are
found by `_gkey` but partitioned by `_group`: two groups sharing a hash are both recomputed, each on its
own. The result is ordered as `dedupe` orders it (survivor key, record key: both unique, so the order is
total). Which rows may differ: between two versions of one staged table, the rows written since the older
one (`_staged_version`, set by staging on every row a commit writes and kept by a MERGE's copies: validation
relies on it the same way) and the keys the new version lacks (looked for only when the row counts say some
are gone); between versions of two tables (a zone restored or moved), every row compared on `_merge_key` and
`_record_hash` both ways.

What "the version the state reflects" is, and why a run killed at any point is covered: every commit to a
state table names, in its commit properties, the staged version (`lienthong.dedupe.staged`) its rows
reflect and the rules' fingerprint (`lienthong.dedupe.rules`), in the same atomic Delta commit as the rows.
A run killed before its commit left the table as it was (naming the older version, which it reflects); one
killed after it left a table naming the killed run's inputs, which it reflects. Either way the next run
compares the new staged version against the version the state names, never against a version it assumes. The
three tables are independent: a run killed between two of their commits leaves each naming its own version.
That version must be one of the run's `bases` (the last successful reconciliation's inputs and those of
every run started after it that did not finish: the ledger records a run's inputs before it writes any
state) and still readable; otherwise, or when there is no state, or the fingerprint differs, the source is
rebuilt whole (mode `full`). With `bases` None (a first run, a relink, a caller outside the ledger: the
rebuild check, a retraining, tests) the result is the whole computation of `dedupe` and no state is written.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import dedupe, stagedchange
from lienthong.reconcile.dedupe import DUPLICATE_SCHEMA
from lienthong.settings import Settings
from lienthong.standardize import text
from lienthong.standardize.text import fold_key

log = logging.getLogger(__name__)

STATE_DIR = "_state"
RULES_VERSION = "1"  # bump when a rule below changes meaning without its source text changing
COMPACT_FRACTION = 0.1  # appended rows beyond this share of the base: the next commit rewrites the table
STAGED_PROPERTY, RULES_PROPERTY = "lienthong.dedupe.staged", "lienthong.dedupe.rules"


@dataclass(frozen=True)
class Rule:
    """One source's duplicate rule, as `dedupe` states it: the staged columns it reads, the record key, which
    rows take part, the grouping expressions and the survivor order (over the columns and `name_fold`)."""

    dataset: str
    name_column: str
    columns: tuple[str, ...]
    key: str
    where: str
    group: tuple[str, ...]
    order: tuple[str, ...]


RULES: dict[str, Rule] = {
    "citizen": Rule(
        "citizen", "full_name",
        ("citizen_id", "legacy_id", "full_name", "birth_date", "birth_date_precision", "sex",
         "residence_commune_code_2025", "household_id", "source_updated_at"),
        "citizen_id", "birth_date IS NOT NULL",
        ("name_fold", "birth_date", "birth_date_precision", "sex", "residence_commune_code_2025",
         "coalesce(household_id, '')"),
        ("legacy_id IS NULL", "source_updated_at", "citizen_id")),
    "enterprise": Rule(
        "enterprise", "name",
        ("enterprise_code", "name", "founded_on", "head_office_commune_code_2025", "source_updated_at"),
        "enterprise_code", "true",
        ("name_fold", "founded_on", "coalesce(head_office_commune_code_2025, '')"),
        ("source_updated_at", "enterprise_code")),
    "land_holder": Rule(
        "land_holder", "name",
        ("province_code", "holder_id", "holder_type", "name", "document_number", "address", "deleted"),
        "province_code || ':' || holder_id", "NOT coalesce(deleted, false)",
        ("name_fold", "province_code", "holder_type", "coalesce(document_number, 'addr:' || coalesce(address, ''))"),
        ("holder_id",)),
}


def fingerprint() -> str:
    """What the state's rows depend on besides the staged rows: the rules (this module's and `dedupe`'s
    source), the name folding (`lienthong.standardize.text`'s source and Python's Unicode database) and the
    engine that serialises the groups (DuckDB's version)."""
    h = hashlib.sha256(RULES_VERSION.encode())
    for module in (dedupe, text):
        h.update(inspect.getsource(module).encode())
    h.update(repr(sorted((k, vars(r)) for k, r in RULES.items())).encode())
    h.update(unicodedata.unidata_version.encode())
    h.update(duckdb.__version__.encode())
    return h.hexdigest()[:24]


def table_path(integrated_dir: Path, dataset: str) -> Path:
    return Path(integrated_dir) / STATE_DIR / f"dedupe_{dataset}"


@dataclass
class Update:
    """One source's duplicates and what it took: mode (whole | full | change), counts, seconds."""

    duplicates: pa.Table
    mode: str
    counts: dict[str, Any]
    seconds: float
    reason: str | None = None


# --- SQL over the rule ----------------------------------------------------------------------------------------


def _prepared(rule: Rule, source: str) -> str:
    """The state's columns (without `_seq`, `_live` and the cluster) of the rows of `source` (the rule's
    columns, `_merge_key` and `name_fold`) that take part."""
    group = ", ".join(f"CAST({g} AS VARCHAR)" for g in rule.group)
    orders = ", ".join(f"{o} AS _o{i}" for i, o in enumerate(rule.order))
    return f"""SELECT _merge_key AS _key, CAST({rule.key} AS VARCHAR) AS record_key,
                      CAST(to_json([{group}]) AS VARCHAR) AS _group,
                      CAST(hash(CAST(to_json([{group}]) AS VARCHAR)) >> 1 AS BIGINT) AS _gkey, {orders}
               FROM {source} WHERE name_fold IS NOT NULL AND ({rule.where})"""


def _clustered(rule: Rule, source: str) -> str:
    """The rows of `source` (prepared) with their cluster: survivor by the rule's order, size of the group."""
    order = ", ".join(f"_o{i}" for i in range(len(rule.order)))
    return f"""SELECT *, first(record_key ORDER BY {order}) OVER w AS survivor_key, count(*) OVER w AS cluster_size
               FROM {source} WINDOW w AS (PARTITION BY _group)"""


def _order_columns(rule: Rule) -> str:
    return ", ".join(f"_o{i}" for i in range(len(rule.order)))


def _with_fold(con: Any, rule: Rule, name: str, query: str) -> None:
    """Register as `name` the rows `query` returns, with `name_fold` (the rule's name folded)."""
    rows = con.execute(query).fetch_arrow_table()
    con.register(name, rows.append_column("name_fold", fold_key(rows[rule.name_column].combine_chunks())))


def _output(con: Any, relation: str) -> pa.Table:
    return con.execute(f"""SELECT record_key, survivor_key, cluster_size FROM ({relation}) WHERE cluster_size > 1
                           ORDER BY survivor_key, record_key""").fetch_arrow_table().cast(DUPLICATE_SCHEMA)


# --- the state's commits --------------------------------------------------------------------------------------


def _properties(path: Path) -> dict[str, str] | None:
    """The commit properties of the table's newest commit that names a staged version (None: no such commit)."""
    for commit in zones.open_table(path).history(100):
        if commit.get(STAGED_PROPERTY):
            return {k: str(v) for k, v in commit.items() if isinstance(k, str) and k.startswith("lienthong.")}
    return None



def _full_reason(path: Path, dataset: str, bases: dict[str, list[str]], rules: str) -> tuple[str | None, str | None]:
    """(why the source is rebuilt whole or None, the staged version the state reflects)."""
    if not zones.is_table(path):
        return "no state yet", None
    props = _properties(path)
    if props is None:
        return "the state names no staged version", None
    if props.get(RULES_PROPERTY) != rules:
        return "the rules or the name folding changed since the state was built", None
    reflected = props[STAGED_PROPERTY]
    if reflected not in bases.get(dataset, []):
        return f"the state reflects {reflected}, not one of the run's bases", None
    if not zones.readable(reflected):
        return f"staged version {reflected} is gone", None
    return None, reflected


def _metadata(mode: str, staged: str, rules: str) -> dict[str, str]:
    return {"lienthong.mode": mode, STAGED_PROPERTY: staged, RULES_PROPERTY: rules}


def _state_columns(rule: Rule) -> str:
    return f"_key, _seq, _live, record_key, _group, _gkey, {_order_columns(rule)}, survivor_key, cluster_size"


def _state_rows(con: Any, rule: Rule, relation: str, seq: int) -> pa.Table:
    return con.execute(f"""SELECT _key, CAST({seq} AS BIGINT) AS _seq, true AS _live, record_key, _group, _gkey,
                                  {_order_columns(rule)}, survivor_key, CAST(cluster_size AS BIGINT) AS cluster_size
                           FROM ({relation}) ORDER BY cluster_size = 1, _gkey, _key""").fetch_arrow_table()


# --- one source -----------------------------------------------------------------------------------------------


def _full(path: Path, rule: Rule, staged: str, rules: str, settings: Settings | None, reason: str) -> Update:
    t0 = time.monotonic()
    with session(settings, purpose="dedupe-state") as con:
        zones.register(con, "n", staged)
        cols = ", ".join(f'"{c}"' for c in (*rule.columns, "_merge_key"))
        _with_fold(con, rule, "staged_rows", f"SELECT {cols} FROM n")
        prepared = f"({_prepared(rule, 'staged_rows')})"
        con.execute(f"CREATE TEMP TABLE clustered AS {_clustered(rule, prepared)}")
        con.unregister("staged_rows")
        out = _output(con, "SELECT * FROM clustered")
        zones.create(path, _state_rows(con, rule, "SELECT * FROM clustered", 0), run_id="reconcile",
                     metadata=_metadata("dedupe-full", staged, rules))
        rows = int((con.execute("SELECT count(*) FROM clustered").fetchone() or (0,))[0])
    return Update(out, "full", {"state_rows": rows, "duplicates": out.num_rows}, round(time.monotonic() - t0, 3),
                  reason)


def _touched(con: Any, rule: Rule, staged: str, reflected: str) -> str:
    """Fill table `touched` (`_key`) with the records whose staged row may differ between `reflected` (view
    `b`) and `staged` (view `n`), found by `stagedchange.changed_keys`, and table `changed_n` with their rows
    in `n` (the rule's columns and `_merge_key`); returns how they were found."""
    found_by = stagedchange.changed_keys(con, staged, reflected, new_view="n", old_view="b", target="touched_mk")
    con.execute("CREATE TEMP TABLE touched AS SELECT _merge_key AS _key FROM touched_mk")
    con.execute("DROP TABLE touched_mk")
    cols = ", ".join(f'n."{c}"' for c in (*rule.columns, "_merge_key"))
    con.execute(f"CREATE TEMP TABLE changed_n AS SELECT {cols} FROM n SEMI JOIN touched t ON n._merge_key = t._key")
    return found_by


def _change(path: Path, rule: Rule, staged: str, reflected: str, rules: str, settings: Settings | None) -> Update:
    t0 = time.monotonic()
    state_ref = zones.ref(path, zones.version(path) or 0)
    seq = (zones.version(path) or 0) + 1  # above every `_seq` written so far (each commit made a version)
    cols = _state_columns(rule)
    with session(settings, purpose="dedupe-state") as con:
        zones.register(con, "n", staged)
        zones.register(con, "b", reflected)
        zones.register(con, "st", state_ref)
        found_by = _touched(con, rule, staged, reflected)
        touched = int((con.execute("SELECT count(*) FROM touched").fetchone() or (0,))[0])
        # the current state: per key its row of highest _seq, when live
        con.execute(f"""CREATE TEMP TABLE recent AS SELECT {cols} FROM st WHERE _seq > 0
                        QUALIFY row_number() OVER (PARTITION BY _key ORDER BY _seq DESC) = 1""")
        con.execute(f"""CREATE TEMP VIEW cur AS
                        SELECT {cols} FROM st ANTI JOIN recent USING (_key) WHERE st._seq = 0
                        UNION ALL SELECT {cols} FROM recent WHERE _live""")
        # the changed rows, their names folded (only theirs), in the state's shape
        _with_fold(con, rule, "changed_rows", "SELECT * FROM changed_n")
        con.execute(f"CREATE TEMP TABLE upd AS {_prepared(rule, 'changed_rows')}")
        con.unregister("changed_rows")
        # The state is written clustered rows first (`_state_rows`): the rows in a cluster are read whole (their
        # row groups only); of the others only `_key` and `_gkey`, to find the changed ones (whose group they
        # leave) and those in a group a changed record joins (read whole after).
        con.execute(f"CREATE TEMP TABLE held AS SELECT {cols} FROM cur WHERE cluster_size > 1")
        con.execute("""CREATE TEMP TABLE singles AS SELECT _key, _gkey FROM cur
                       WHERE cluster_size = 1 AND (_key IN (SELECT _key FROM touched) OR _gkey IN (SELECT _gkey FROM upd))""")
        # the groups a changed record left or joins (by `_gkey`, a hash of the group: two groups sharing one
        # are both recomputed, each on its own, since the clusters are partitioned by `_group` itself)
        con.execute("""CREATE TEMP TABLE affected AS
                       SELECT _gkey FROM held SEMI JOIN touched USING (_key)
                       UNION SELECT _gkey FROM singles SEMI JOIN touched USING (_key)
                       UNION SELECT _gkey FROM upd""")
        con.execute("CREATE TEMP TABLE joiners AS SELECT _key FROM singles ANTI JOIN touched USING (_key)")
        order = _order_columns(rule)
        shape = f"_key, record_key, _group, _gkey, {order}"
        joiners = int((con.execute("SELECT count(*) FROM joiners").fetchone() or (0,))[0])
        joining = (f"""UNION ALL SELECT {shape} FROM (SELECT * FROM cur WHERE cluster_size = 1)
                       SEMI JOIN joiners USING (_key)""" if joiners else "")
        con.execute(f"""CREATE TEMP TABLE members AS
                        SELECT {shape} FROM held SEMI JOIN affected USING (_gkey) ANTI JOIN touched USING (_key)
                        {joining}
                        UNION ALL SELECT {shape} FROM upd""")
        con.execute(f"CREATE TEMP TABLE recomputed AS {_clustered(rule, 'members')}")
        out = _output(con, """SELECT record_key, survivor_key, cluster_size
                               FROM held ANTI JOIN affected USING (_gkey)
                               UNION ALL SELECT record_key, survivor_key, cluster_size FROM recomputed""")
        # the log's new rows: every recomputed record, a tombstone for every record the state holds no more
        appended = _state_rows(con, rule, "SELECT * FROM recomputed", seq)
        gone = con.execute(f"""SELECT _key, CAST({seq} AS BIGINT) AS _seq, false AS _live
                               FROM (SELECT _key FROM held UNION ALL SELECT _key FROM singles)
                                 SEMI JOIN touched USING (_key) ANTI JOIN upd USING (_key)
                               ORDER BY _key""").fetch_arrow_table()
        appended = pa.concat_tables([appended, gone], promote_options="default").cast(appended.schema)
        base_rows = int((con.execute("SELECT count(*) FROM st WHERE _seq = 0").fetchone() or (0,))[0])
        recent_rows = int((con.execute("SELECT count(*) FROM st WHERE _seq > 0").fetchone() or (0,))[0])
        compact = recent_rows + appended.num_rows > COMPACT_FRACTION * max(base_rows, 1)
        if compact:  # the current state whole again, every row at _seq 0
            con.register("appended", appended)
            current = f"""SELECT {cols} FROM cur ANTI JOIN appended USING (_key)
                          UNION ALL SELECT {cols} FROM appended WHERE _live"""
            zones.create(path, _state_rows(con, rule, current, 0), run_id="reconcile",
                         metadata=_metadata("dedupe-compact", staged, rules))
        else:  # an append commit, also when nothing changed: it names the new staged version
            zones.append(path, appended, run_id="reconcile", metadata=_metadata("dedupe-change", staged, rules))
    counts = {"touched": touched, "found_by": found_by, "joiners": joiners, "recomputed": appended.num_rows - gone.num_rows,
              "gone": gone.num_rows, "duplicates": out.num_rows, "compacted": compact}
    return Update(out, "change", counts, round(time.monotonic() - t0, 3))


def update(integrated_dir: Path, dataset: str, staged: str, bases: dict[str, list[str]], *,
           settings: Settings | None = None) -> Update:
    """Dataset `dataset`'s duplicates at staged version `staged`, bringing its state there: from the change
    since the version the state reflects, or whole (mode `full`) when the module docstring says so."""
    rule, path, rules = RULES[dataset], table_path(integrated_dir, dataset), fingerprint()
    reason, reflected = _full_reason(path, dataset, bases, rules)
    if reason is not None or reflected is None:
        log.info("dedupe state %s: built whole (%s)", dataset, reason)
        return _full(path, rule, staged, rules, settings, reason or "no state")
    result = _change(path, rule, staged, reflected, rules, settings)
    log.info("dedupe state %s: %d records changed, %d recomputed, %d gone (%.2f s)", dataset,
             result.counts["touched"], result.counts["recomputed"], result.counts["gone"], result.seconds)
    return result


def duplicates(staged: Mapping[str, pa.Table | str], bases: dict[str, list[str]] | None, integrated_dir: Path, *,
               whole: Mapping[str, Callable[[], pa.Table]],
               settings: Settings | None = None) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The duplicates of citizens, enterprises and land holders (dataset -> `dedupe.DUPLICATE_SCHEMA` table)
    and what each took. `whole[dataset]()` is the whole computation (`dedupe`), used when `bases` is None or
    the input is an Arrow table rather than a staged version; otherwise the state is brought up to date."""
    out, metrics = {}, {}
    for dataset in RULES:
        t0 = time.monotonic()
        source = staged[dataset]
        if bases is None or not isinstance(source, str):
            out[dataset] = whole[dataset]()
            metrics[dataset] = {"mode": "whole", "seconds": round(time.monotonic() - t0, 3)}
            continue
        result = update(integrated_dir, dataset, source, bases, settings=settings)
        out[dataset] = result.duplicates
        metrics[dataset] = {"mode": result.mode, "counts": result.counts, "seconds": result.seconds}
        if result.reason:
            metrics[dataset]["reason"] = result.reason
    return out, metrics


def maintain(integrated_dir: Path, *, retention_hours: int, run_id: str) -> None:
    """Compact the state tables' files and vacuum what no version within the retention needs."""
    for dataset in RULES:
        zones.maintain(table_path(integrated_dir, dataset), retention_hours=retention_hours, run_id=run_id)
