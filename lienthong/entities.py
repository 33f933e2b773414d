"""The entity registry: stable, opaque IDs for the real-world entities reconciliation finds.

Owns the mapping from source records (a citizen, a legal representative, a land holder, an enterprise, a
parcel: `(kind, dataset, record_key)`) to entity IDs that do not move when the clustering is recomputed, the
rules that carry an ID from one clustering to the next (kept, merged, split, continued, retired, created), the
event log saying why an ID changed, and the three Delta tables that hold it all under
`<integrated_dir>/_registry/` (`entity_member`, `entity`, `entity_event`).

A citizen's personal ID is an attribute of a record, not the identity: when a record's key changes (an ID
correction) or a record merges with its duplicate, the entity stays. Reconciliation hands over the current
clustering (`CLUSTER_SCHEMA`: cluster keys are arbitrary and change from run to run); `assign` works out
which entity each cluster is, `commit` writes the difference.

The rules (per kind), as `assign` applies them:

1. A record's prior entity is the active entity its previous member row names.
2. Heir: an entity's heir cluster is the cluster holding most of its previous members (tie: smallest
   cluster_key).
3. A cluster takes, among the entities whose heir it is, the one with most members in it (tie: smallest
   created_seq, then entity_id); the others are merged into it (status 'merged', `merged_into`).
4. A cluster that takes no entity but holds records known before is split off: a new entity, event 'split'
   from the prior entity with most records in it (tie: smallest created_seq, then entity_id).
5. A cluster of records none of which was known before continues an entity that lost all its members this
   run when they share a continuity key (a legacy ID, a name|birth|household key) and the match is unique
   both ways (event 'continued'); otherwise it is a new entity (event 'created').
6. An entity that lost all its members and was not continued is retired.
7. A new ID is the kind's letter ('P' person, 'E' enterprise, 'L' land parcel), '-', and the first 16 chars
   of the lower-case base32 of sha256(f"{kind}|{seed}|{n}"), seed the cluster's smallest (as text)
   f"{dataset}:{record_key}", n = 0, 1, ... until the ID was never used: a merged or retired ID is never
   handed out again. `created_seq` goes on from the previous maximum, in (kind, seed) order.

A record that moves from one entity to another without a merge or a split (its old entity keeps its heir
cluster) makes no event: its member row says it (`since_run`), the log records entity-level changes only.

Locality: an entity's fate depends only on the clusters holding its records (and the continuity rule only
pairs entities that lost every record with clusters of records never seen, all of which a change touches).
So `assign` may run on a closed subset: `touched_closure` computes the clusters a change touches, every
entity with a record in them, those entities' other clusters, and so on to a fixed point; `assign` on that
subset (with the FULL previous entity table, which new IDs and `created_seq` are drawn against) gives the
same events and the same changed rows as on everything, and `apply` puts the subset's result back into the
full tables.

Scale: at 5M records (2.5M entities, 2 threads, 2 GB DuckDB limit) a first run takes about 64 s, a 1 % change
run 53 s on everything or 39 s through the closure (the closure itself is a full scan); the Assignment's
tables are Arrow tables in the caller's memory (the full member table and, on a first run, a diff as large).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lienthong import duck, zones

if TYPE_CHECKING:
    import duckdb

    from lienthong.settings import Settings

log = logging.getLogger(__name__)

KIND_PREFIX = {"person": "P", "enterprise": "E", "parcel": "L"}
STATUSES = ("active", "merged", "retired")
EVENTS = ("created", "continued", "split", "merged", "retired")  # also the order of a run's events (seq)

_KEYS = pa.list_(pa.string())

CLUSTER_SCHEMA = pa.schema([
    ("kind", pa.string()),
    ("cluster_key", pa.string()),
    ("dataset", pa.string()),
    ("record_key", pa.string()),
    ("continuity", _KEYS),
])
MEMBER_SCHEMA = pa.schema([
    ("kind", pa.string()),
    ("dataset", pa.string()),
    ("record_key", pa.string()),
    ("entity_id", pa.string()),
    ("continuity", _KEYS),
    ("since_run", pa.string()),
])
ENTITY_SCHEMA = pa.schema([
    ("entity_id", pa.string()),
    ("kind", pa.string()),
    ("status", pa.string()),
    ("created_run", pa.string()),
    ("created_seq", pa.int64()),
    ("updated_run", pa.string()),
    ("merged_into", pa.string()),
    ("members", pa.int64()),
])
EVENT_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("seq", pa.int64()),
    ("event", pa.string()),
    ("kind", pa.string()),
    ("entity_id", pa.string()),
    ("other_entity_id", pa.string()),
    ("evidence", pa.string()),
])
KEY_SCHEMA = pa.schema([("kind", pa.string()), ("dataset", pa.string()), ("record_key", pa.string())])

MEMBER_TABLE, ENTITY_TABLE, EVENT_TABLE = "entity_member", "entity", "entity_event"
_MEMBER_KEY, _MEMBER_PARTITIONS = "record_key", ["kind", "dataset"]
_ENTITY_KEY, _ENTITY_PARTITIONS = "entity_id", ["kind"]
_RUN_PROPERTY = "lienthong.run_id"  # the commit property zones writes the run id under

EVIDENCE_RECORDS = 100  # record keys an event's evidence lists at most (the counts are always complete)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_RADIX32 = "0123456789ABCDEFGHIJKLMNOPQRSTUV"


def _member_schema_with_op() -> pa.Schema:
    return MEMBER_SCHEMA.append(pa.field(zones.OP, pa.string()))


def _entity_schema_with_op() -> pa.Schema:
    return ENTITY_SCHEMA.append(pa.field(zones.OP, pa.string()))


@dataclass(frozen=True)
class Assignment:
    """One run's result. `members` and `entities` are the full new tables (merged and retired entities stay
    forever; None when the caller did not ask for them, `assign(..., whole_tables=False)`: the committed
    versions hold them); `events` is the run's log; `changed_members` / `changed_entities` are the rows that
    differ from the previous tables, with a `_op` column ('upsert', or 'delete' for a member whose record is
    gone), ready for `zones.merge`."""

    members: pa.Table | None
    entities: pa.Table | None
    events: pa.Table
    changed_members: pa.Table
    changed_entities: pa.Table


def empty_members() -> pa.Table:
    return MEMBER_SCHEMA.empty_table()


def empty_entities() -> pa.Table:
    return ENTITY_SCHEMA.empty_table()


def _require(table: pa.Table, schema: pa.Schema, what: str) -> None:
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}")


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, schema: pa.Schema) -> pa.Table:
    return con.execute(sql).to_arrow_table().rename_columns(schema.names).cast(schema)


def _new_id_sql(source: str) -> str:
    """SELECT over `source` (kind, cluster_key, seed, n) adding the candidate ID of rule 7. Base32 in SQL:
    16 chars are 80 bits, the first 20 hex digits of the digest: two 40-bit integers written in radix 32
    (DuckDB's digits 0-9A-V), each digit then mapped onto RFC 4648's alphabet."""
    prefix = "CASE kind " + " ".join(f"WHEN '{k}' THEN '{p}'" for k, p in KIND_PREFIX.items()) + " END"
    chars = " || ".join(f"translate(to_base(('0x' || substr(hx, {start}, 10))::BIGINT, 32, 8), '{_RADIX32}', '{_B32}')"
                        for start in (1, 11))
    return f"""
        WITH h AS (SELECT *, sha256(kind || '|' || seed || '|' || n::VARCHAR) AS hx FROM {source})
        SELECT kind, cluster_key, seed, n, {prefix} || '-' || {chars} AS entity_id FROM h"""


def _records(alias: str = "") -> str:
    """The list of `dataset:record_key` an event's evidence names (sorted, at most EVIDENCE_RECORDS)."""
    a = f"{alias}." if alias else ""
    return (f"list_slice(list({a}dataset || ':' || {a}record_key ORDER BY {a}dataset || ':' || {a}record_key), "
            f"1, {EVIDENCE_RECORDS})")


def assign(previous_members: pa.Table | str, previous_entities: pa.Table | str, clusters: pa.Table | str,
           run_id: str, *,
           settings: Settings | None = None, whole: bool = False, whole_tables: bool = True) -> Assignment:
    """The entities of clustering `clusters` (CLUSTER_SCHEMA), carried over from the previous registry
    (MEMBER_SCHEMA, ENTITY_SCHEMA) by the rules in the module docstring. Pure: the same inputs give
    byte-identical outputs (every output sorted by its key).

    Set-based SQL in one DuckDB session (bounded by the settings' memory limit, spilling beyond it); the only
    loop is the rounds of new-ID collision bumping, which end after one round unless a hash collides.

    The previous tables may also be given as stored versions (zone references, what `stored_refs` returns),
    and the clustering as a Parquet file: DuckDB reads them, none is loaded whole into Python.

    An active entity with no row in `previous_members` is left as it is: that is what lets `assign` run on a
    closed subset of members and clusters (see `touched_closure`) with the full entity table.

    The rules run on the part of the registry the clustering touches (`_restrict_to_closure`, the closure of
    `touched_closure` found in the same session), so a run's cost beyond one scan follows the change; the rest
    of the members are carried over as they are. `whole` runs them on everything (the reference the tests
    compare the closure with); the result is the same.

    `whole_tables=False` leaves the full new members and entities out of the result (None): only the changed
    rows and the events are fetched into Python, so a caller that commits the assignment and then reads the
    committed versions (`update(..., whole_tables=False)`, the reconciliation) never holds the whole registry.
    The session then builds no full copy of them either (the members and entities outside the closure are
    their previous rows, never changed ones).
    """
    if not run_id:
        raise ValueError("run_id: a non-empty string")
    if isinstance(clusters, pa.Table):
        _require(clusters, CLUSTER_SCHEMA, "clusters")
    with duck.session(settings, purpose="entities", on_disk=True) as con:
        for name, previous, schema, what in (("pm_in_raw", previous_members, MEMBER_SCHEMA, "previous_members"),
                                             ("pe_in_raw", previous_entities, ENTITY_SCHEMA, "previous_entities")):
            if isinstance(previous, pa.Table):
                _require(previous, schema, what)
                con.register(name, previous.select(schema.names))
            else:  # a stored version (`update`): DuckDB reads its files, within the session's memory limit
                zones.register(con, name, previous)
        if isinstance(clusters, pa.Table):
            con.register("cl_in_raw", clusters.select(CLUSTER_SCHEMA.names))
        else:  # a Parquet file of them (the reconciliation writes its clustering to one)
            zones.register(con, "cl_in_raw", clusters)
        con.execute("SET VARIABLE run_id = ?", [run_id])
        _prepare(con)
        scoped = not whole and _restrict_to_closure(con)
        _carry_over(con)
        _new_ids(con)
        _outputs(con, whole_entities=whole_tables)
        if scoped and whole_tables:
            # the members outside the closure, as they were, and the closure's new rows
            con.execute("""CREATE TABLE nm_all AS
                SELECT kind, dataset, record_key, entity_id, continuity, since_run FROM pm_all
                ANTI JOIN se ON se.entity_id = pm_all.entity_id
                ANTI JOIN nm ON nm.kind = pm_all.kind AND nm.dataset = pm_all.dataset
                    AND nm.record_key = pm_all.record_key
                UNION ALL SELECT kind, dataset, record_key, entity_id, continuity, since_run FROM nm""")
            con.execute("DROP TABLE nm")
            con.execute("ALTER TABLE nm_all RENAME TO nm")
        _drop_intermediates(con, keep=("nm", "ne", "ev", "cm", "cent"))
        # largest first, each dropped from the session once fetched: DuckDB's copy (and its sort) is freed as
        # Python's is made, and the largest sort runs while Python holds none of the others
        # When every row of a new table changed (a first run: every member and entity is new), the changed
        # rows are that table plus `_op`: made from the same buffers, not fetched and held twice.
        all_changed = {
            "cm": whole_tables and _count(con, "SELECT count(*) FROM cm") == _count(con, "SELECT count(*) FROM nm")
                  and _count(con, "SELECT count(*) FROM cm WHERE _op <> 'upsert'") == 0,
            "cent": whole_tables and _count(con, "SELECT count(*) FROM cent") == _count(con, "SELECT count(*) FROM ne")}
        fetched: dict[str, pa.Table] = {}
        for table, sql, schema in (
                ("nm", "SELECT kind, dataset, record_key, entity_id, continuity, since_run FROM nm "
                       "ORDER BY kind, dataset, record_key", MEMBER_SCHEMA),
                ("ne", "SELECT * FROM ne ORDER BY entity_id", ENTITY_SCHEMA),
                ("cm", "SELECT * FROM cm ORDER BY kind, dataset, record_key", _member_schema_with_op()),
                ("cent", "SELECT * FROM cent ORDER BY entity_id", _entity_schema_with_op()),
                ("ev", "SELECT * FROM ev ORDER BY seq", EVENT_SCHEMA)):
            if table in ("nm", "ne") and not whole_tables:
                con.execute(f"DROP TABLE {table}")
                continue
            same_as = {"cm": "nm", "cent": "ne"}.get(table)
            if same_as is not None and same_as in fetched and all_changed[table]:
                rows = fetched[same_as]
                fetched[table] = rows.append_column(schema.field(zones.OP),
                                                    pa.repeat(pa.scalar("upsert", pa.string()), rows.num_rows))
            else:
                fetched[table] = _fetch(con, sql, schema)
            con.execute(f"DROP TABLE {table}")
        return Assignment(members=fetched.get("nm"), entities=fetched.get("ne"), events=fetched["ev"],
                          changed_members=fetched["cm"], changed_entities=fetched["cent"])


def _drop_intermediates(con: duckdb.DuckDBPyConnection, keep: tuple[str, ...]) -> None:
    """Drop the session's tables but `keep`, so their memory is free before the outputs are
    fetched into Python (the moment of the assignment's peak: DuckDB's tables and the Arrow copies at once)."""
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
        if name not in keep:
            con.execute(f'DROP TABLE "{name}"')


def _prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Typed, checked inputs: continuity keys sorted and distinct (so equal sets compare equal)."""
    kinds = ", ".join(f"'{k}'" for k in KIND_PREFIX)
    con.execute("""CREATE TABLE cl AS
        SELECT kind::VARCHAR AS kind, cluster_key::VARCHAR AS cluster_key, dataset::VARCHAR AS dataset,
               record_key::VARCHAR AS record_key,
               list_sort(list_distinct(coalesce(continuity::VARCHAR[], []::VARCHAR[]))) AS continuity
        FROM cl_in_raw""")
    con.execute("""CREATE TABLE pm_in AS
        SELECT kind::VARCHAR AS kind, dataset::VARCHAR AS dataset, record_key::VARCHAR AS record_key,
               entity_id::VARCHAR AS entity_id, continuity::VARCHAR[] AS continuity, since_run::VARCHAR AS since_run
        FROM pm_in_raw""")
    con.execute("""CREATE TABLE pe AS
        SELECT entity_id::VARCHAR AS entity_id, kind::VARCHAR AS kind, status::VARCHAR AS status,
               created_run::VARCHAR AS created_run, created_seq::BIGINT AS created_seq,
               updated_run::VARCHAR AS updated_run, merged_into::VARCHAR AS merged_into, members::BIGINT AS members
        FROM pe_in_raw""")
    checks = [
        (f"clusters: a row without a key or with a kind other than {list(KIND_PREFIX)}",
         f"""SELECT concat_ws(' ', kind, cluster_key, dataset, record_key) FROM cl
             WHERE kind IS NULL OR kind NOT IN ({kinds}) OR cluster_key IS NULL OR dataset IS NULL
                   OR record_key IS NULL"""),
        ("clusters: a record in more than one row",
         "SELECT concat_ws(' ', kind, dataset, record_key) FROM cl GROUP BY ALL HAVING count(*) > 1"),
        ("previous_members: a record in more than one row",
         "SELECT concat_ws(' ', kind, dataset, record_key) FROM pm_in GROUP BY ALL HAVING count(*) > 1"),
        ("previous_members: a row without a key or an entity_id",
         """SELECT concat_ws(' ', kind, dataset, record_key) FROM pm_in
            WHERE kind IS NULL OR dataset IS NULL OR record_key IS NULL OR entity_id IS NULL"""),
        ("previous_entities: an entity_id in more than one row",
         "SELECT entity_id FROM pe GROUP BY ALL HAVING count(*) > 1"),
    ]
    union = " UNION ALL ".join(f"SELECT {i} AS i, * FROM ({sql} LIMIT 1)" for i, (_, sql) in enumerate(checks))
    row = con.execute(f"SELECT * FROM ({union}) ORDER BY i LIMIT 1").fetchone()
    if row is not None:
        raise ValueError(f"{checks[row[0]][0]}: {row[1]}")


def _restrict_to_closure(con: duckdb.DuckDBPyConnection) -> bool:
    """Narrow the session's `cl` and `pm_in` to the closure a change touches (what `touched_closure`
    computes, with the records whose continuity keys changed found by comparison), keeping every previous
    member row as `pm_all` and the closure's entities as `se`. False (nothing narrowed) on a first run."""
    if _count(con, "SELECT count(*) FROM pm_in") == 0:
        return False
    # one row per current record: its cluster, its previous entity, whether its continuity keys moved (a
    # stored list is sorted and distinct as `_prepare` makes it; one that is not only widens the closure)
    con.execute("""CREATE TABLE cm_join AS
        SELECT c.kind, c.cluster_key, m.entity_id,
               m.entity_id IS NOT NULL AND c.continuity IS DISTINCT FROM m.continuity AS moved_keys
        FROM cl c LEFT JOIN pm_in m ON m.kind = c.kind AND m.dataset = c.dataset AND m.record_key = c.record_key""")
    con.execute("""CREATE TABLE edge AS
        SELECT DISTINCT kind, cluster_key, entity_id FROM cm_join WHERE entity_id IS NOT NULL""")
    # seeds: clusters that are not exactly one entity's previous records, or hold a record whose keys moved
    con.execute("""CREATE TABLE sc AS
        WITH csz AS (
            SELECT kind, cluster_key, count(*) AS size, count(entity_id) AS known, min(entity_id) AS e,
                   max(entity_id) AS e_max, bool_or(moved_keys) AS moved_keys
            FROM cm_join GROUP BY kind, cluster_key),
        esz AS (SELECT entity_id, count(*) AS total FROM pm_in GROUP BY entity_id)
        SELECT kind, cluster_key FROM csz LEFT JOIN esz ON esz.entity_id = csz.e
        WHERE csz.known < csz.size OR csz.e <> csz.e_max OR esz.total <> csz.size OR csz.moved_keys""")
    # member rows naming no active entity of their kind (a registry `assign` did not write, e.g. edited by
    # hand): rule 1 treats their records as unknown, so their clusters and entities are seeds too
    con.execute("""CREATE TABLE stale AS SELECT m.kind, m.dataset, m.record_key, m.entity_id FROM pm_in m
        ANTI JOIN pe ON pe.entity_id = m.entity_id AND pe.kind = m.kind AND pe.status = 'active'""")
    con.execute("""INSERT INTO sc SELECT DISTINCT c.kind, c.cluster_key FROM cl c
        SEMI JOIN stale s ON s.kind = c.kind AND s.dataset = c.dataset AND s.record_key = c.record_key""")
    con.execute("""CREATE TABLE se AS
        SELECT m.entity_id FROM pm_in m
        ANTI JOIN cl c ON c.kind = m.kind AND c.dataset = m.dataset AND c.record_key = m.record_key
        UNION SELECT entity_id FROM stale""")
    con.execute("DROP TABLE cm_join")
    con.execute("DROP TABLE stale")
    _close(con)
    con.execute("DROP TABLE edge")
    con.execute("ALTER TABLE pm_in RENAME TO pm_all")
    con.execute("CREATE TABLE pm_in AS SELECT * FROM pm_all SEMI JOIN se ON se.entity_id = pm_all.entity_id")
    con.execute("ALTER TABLE cl RENAME TO cl_all")
    con.execute("""CREATE TABLE cl AS SELECT * FROM cl_all
                   SEMI JOIN sc ON sc.kind = cl_all.kind AND sc.cluster_key = cl_all.cluster_key""")
    con.execute("DROP TABLE cl_all")
    log.info("entity registry: the change touches %d of the clusters and %d entities",
             _count(con, "SELECT count(*) FROM (SELECT DISTINCT kind, cluster_key FROM sc)"),
             _count(con, "SELECT count(*) FROM se"))
    return True


def _carry_over(con: duckdb.DuckDBPyConnection) -> None:
    """Rules 1 to 6: which cluster keeps, merges, splits off, continues or retires which entity."""
    # rule 1: the prior entity of a previous record (active entities only)
    con.execute("""CREATE TABLE pm AS
        SELECT m.kind, m.dataset, m.record_key, m.entity_id, e.created_seq
        FROM pm_in m JOIN pe e ON e.entity_id = m.entity_id AND e.kind = m.kind AND e.status = 'active'""")
    con.execute("""CREATE TABLE cur AS
        SELECT c.kind, c.cluster_key, c.dataset, c.record_key, c.continuity, p.entity_id AS prior
        FROM cl c LEFT JOIN pm p ON p.kind = c.kind AND p.dataset = c.dataset AND p.record_key = c.record_key""")
    # how many of each entity's previous records each cluster holds
    con.execute("""CREATE TABLE ec AS
        SELECT c.kind, c.prior AS entity_id, c.cluster_key, count(*) AS n, any_value(e.created_seq) AS created_seq
        FROM cur c JOIN pe e ON e.entity_id = c.prior GROUP BY c.kind, c.prior, c.cluster_key""")
    # rule 2: heirs
    con.execute("""CREATE TABLE heir AS
        SELECT * FROM ec QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY n DESC, cluster_key) = 1""")
    # rule 3: the entity a cluster takes; the other entities whose heir it is merge into it
    con.execute("""CREATE TABLE taken AS
        SELECT * FROM heir
        QUALIFY row_number() OVER (PARTITION BY kind, cluster_key ORDER BY n DESC, created_seq, entity_id) = 1""")
    con.execute("""CREATE TABLE merged AS
        SELECT h.kind, h.entity_id, h.cluster_key, h.n, t.entity_id AS merged_into
        FROM heir h JOIN taken t ON t.kind = h.kind AND t.cluster_key = h.cluster_key
        WHERE h.entity_id <> t.entity_id""")
    con.execute("""CREATE TABLE cs AS
        SELECT kind, cluster_key, count(*) AS size, count(prior) AS known,
               min(dataset || ':' || record_key) AS seed
        FROM cur GROUP BY kind, cluster_key""")
    # rule 4: clusters of known records that take no entity split off from the prior entity most in them
    con.execute("""CREATE TABLE split_src AS
        SELECT ec.kind, ec.cluster_key, ec.entity_id AS other_entity_id, ec.n
        FROM ec ANTI JOIN taken t ON t.kind = ec.kind AND t.cluster_key = ec.cluster_key
        QUALIFY row_number() OVER (PARTITION BY ec.kind, ec.cluster_key
                                   ORDER BY ec.n DESC, ec.created_seq, ec.entity_id) = 1""")
    # rule 5: entities that lost every record, clusters of records never seen, paired by a shared continuity
    # key when the pair is unique both ways
    con.execute("""CREATE TABLE orphan AS
        SELECT DISTINCT p.kind, p.entity_id FROM pm p ANTI JOIN ec ON ec.entity_id = p.entity_id""")
    con.execute("""CREATE TABLE pairs AS
        WITH rk AS (
            SELECT DISTINCT m.kind, m.entity_id, unnest(m.continuity) AS ckey
            FROM pm_in m SEMI JOIN orphan o ON o.entity_id = m.entity_id),
        ck AS (
            SELECT DISTINCT c.kind, c.cluster_key, unnest(c.continuity) AS ckey
            FROM cur c SEMI JOIN cs ON cs.kind = c.kind AND cs.cluster_key = c.cluster_key AND cs.known = 0)
        SELECT rk.kind, rk.entity_id, ck.cluster_key, min(rk.ckey) AS ckey, list(rk.ckey ORDER BY rk.ckey) AS keys
        FROM rk JOIN ck ON ck.kind = rk.kind AND ck.ckey = rk.ckey
        GROUP BY rk.kind, rk.entity_id, ck.cluster_key""")
    con.execute("""CREATE TABLE cont AS
        SELECT * FROM pairs
        QUALIFY count(*) OVER (PARTITION BY kind, entity_id) = 1
            AND count(*) OVER (PARTITION BY kind, cluster_key) = 1""")
    # rule 6
    con.execute("""CREATE TABLE retired AS
        SELECT o.kind, o.entity_id FROM orphan o ANTI JOIN cont c ON c.entity_id = o.entity_id""")
    # clusters that need a new entity: split off (rule 4) or created (rule 5)
    con.execute("""CREATE TABLE need AS
        SELECT cs.kind, cs.cluster_key, cs.seed FROM cs
        ANTI JOIN taken t ON t.kind = cs.kind AND t.cluster_key = cs.cluster_key
        ANTI JOIN cont c ON c.kind = cs.kind AND c.cluster_key = cs.cluster_key""")


def _new_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Rule 7: IDs for the clusters in `need`, bumping n until an ID is unused. In a round, a candidate
    already used is bumped; of candidates equal to each other, the smallest seed keeps it."""
    con.execute("CREATE TABLE newid (kind VARCHAR, cluster_key VARCHAR, seed VARCHAR, entity_id VARCHAR)")
    con.execute("CREATE TABLE pending AS SELECT kind, cluster_key, seed, 0 AS n FROM need")
    while True:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE prop AS
            SELECT *, entity_id IN (SELECT entity_id FROM pe UNION ALL SELECT entity_id FROM newid) AS used,
                   row_number() OVER (PARTITION BY entity_id ORDER BY seed, kind, cluster_key) AS rank
            FROM ({_new_id_sql('pending')})""")
        con.execute("INSERT INTO newid SELECT kind, cluster_key, seed, entity_id FROM prop WHERE NOT used AND rank = 1")
        if _count(con, "SELECT count(*) FROM prop WHERE used OR rank > 1") == 0:
            break
        con.execute("""CREATE OR REPLACE TEMP TABLE pending AS
            SELECT kind, cluster_key, seed, n + 1 AS n FROM prop WHERE used OR rank > 1""")
    con.execute("""CREATE TABLE fresh_entity AS
        SELECT n.kind, n.cluster_key, n.entity_id, s.other_entity_id,
               (SELECT coalesce(max(created_seq), 0) FROM pe) + row_number() OVER (ORDER BY n.kind, n.seed) AS created_seq
        FROM newid n LEFT JOIN split_src s ON s.kind = n.kind AND s.cluster_key = n.cluster_key""")


def _outputs(con: duckdb.DuckDBPyConnection, *, whole_entities: bool = True) -> None:
    """The new member and entity tables, the run's events, and the rows that changed.

    `whole_entities=False`: `ne` holds only the entities the run may have changed (those in scope and the new
    ones), not the others copied as they are: a caller that fetches only the changed rows needs no more (an
    entity out of scope is its previous row, never a changed one)."""
    # the entity of each current cluster
    con.execute("""CREATE TABLE ca AS
        SELECT kind, cluster_key, entity_id, 'kept' AS how FROM taken
        UNION ALL SELECT kind, cluster_key, entity_id, 'continued' FROM cont
        UNION ALL SELECT kind, cluster_key, entity_id, 'new' FROM fresh_entity""")
    con.execute("""CREATE TABLE nm AS
        SELECT c.kind, c.dataset, c.record_key, a.entity_id, c.continuity,
               CASE WHEN c.prior = a.entity_id THEN p.since_run ELSE getvariable('run_id') END AS since_run,
               c.prior, c.cluster_key
        FROM cur c JOIN ca a ON a.kind = c.kind AND a.cluster_key = c.cluster_key
        LEFT JOIN pm_in p ON p.kind = c.kind AND p.dataset = c.dataset AND p.record_key = c.record_key""")
    con.execute("""CREATE TABLE cnt AS
        SELECT entity_id, count(*) AS n, count(*) FILTER (WHERE prior = entity_id) AS stayed
        FROM nm GROUP BY entity_id""")
    con.execute("CREATE TABLE pcnt AS SELECT entity_id, count(*) AS n FROM pm GROUP BY entity_id")
    # entities in scope (active with a previous record here) and the new ones
    con.execute("""CREATE TABLE scope_e AS
        SELECT e.entity_id, e.kind,
               CASE WHEN m.entity_id IS NOT NULL THEN 'merged' WHEN r.entity_id IS NOT NULL THEN 'retired'
                    ELSE 'active' END AS status,
               e.created_run, e.created_seq,
               CASE WHEN m.entity_id IS NOT NULL OR r.entity_id IS NOT NULL
                         OR coalesce(c.n, 0) <> coalesce(c.stayed, 0) OR p.n <> coalesce(c.stayed, 0)
                    THEN getvariable('run_id') ELSE e.updated_run END AS updated_run,
               m.merged_into,
               CASE WHEN m.entity_id IS NOT NULL OR r.entity_id IS NOT NULL THEN 0 ELSE coalesce(c.n, 0) END AS members
        FROM pe e JOIN pcnt p ON p.entity_id = e.entity_id
        LEFT JOIN merged m ON m.entity_id = e.entity_id
        LEFT JOIN retired r ON r.entity_id = e.entity_id
        LEFT JOIN cnt c ON c.entity_id = e.entity_id""")
    unchanged = "SELECT * FROM pe ANTI JOIN scope_e s ON s.entity_id = pe.entity_id UNION ALL" if whole_entities else ""
    con.execute(f"""CREATE TABLE ne AS
        {unchanged} SELECT * FROM scope_e
        UNION ALL
        SELECT f.entity_id, f.kind, 'active', getvariable('run_id'), f.created_seq, getvariable('run_id'),
               NULL, c.n
        FROM fresh_entity f JOIN cnt c ON c.entity_id = f.entity_id""")
    _events(con)
    con.execute("""CREATE TABLE cm AS
        SELECT n.kind, n.dataset, n.record_key, n.entity_id, n.continuity, n.since_run, 'upsert' AS _op
        FROM nm n LEFT JOIN pm_in p ON p.kind = n.kind AND p.dataset = n.dataset AND p.record_key = n.record_key
        WHERE p.record_key IS NULL OR n.entity_id IS DISTINCT FROM p.entity_id
              OR n.continuity IS DISTINCT FROM p.continuity OR n.since_run IS DISTINCT FROM p.since_run
        UNION ALL
        SELECT p.*, 'delete' FROM pm_in p
        ANTI JOIN cl c ON c.kind = p.kind AND c.dataset = p.dataset AND c.record_key = p.record_key""")
    con.execute("""CREATE TABLE cent AS
        SELECT n.*, 'upsert' AS _op FROM ne n
        ANTI JOIN pe p ON p.entity_id = n.entity_id AND p.kind IS NOT DISTINCT FROM n.kind
            AND p.status IS NOT DISTINCT FROM n.status AND p.created_run IS NOT DISTINCT FROM n.created_run
            AND p.created_seq IS NOT DISTINCT FROM n.created_seq AND p.updated_run IS NOT DISTINCT FROM n.updated_run
            AND p.merged_into IS NOT DISTINCT FROM n.merged_into AND p.members IS NOT DISTINCT FROM n.members""")


# Records per bucket when an event's evidence lists are built (`_in_buckets`).
EVIDENCE_BUCKET_ROWS = 200_000


def _in_buckets(con: duckdb.DuckDBPyConnection, table: str, source: str, key: str, sql: str) -> None:
    """Table `table` from `sql`, a grouped query over table `source` whose WHERE holds `{bucket}`, run once
    per bucket of about `EVIDENCE_BUCKET_ROWS` rows of `source` by the hash of `key` (its rows' group key, or
    a part of it, so a group is in one bucket). A list aggregate keeps every group's values in memory
    outside DuckDB's buffer manager and cannot spill: over every new cluster of a first run (1M
    citizens) it ran out of a 512 MB limit, in buckets it does not (docs/architecture.md, "Memory: every
    large operator can spill")."""
    rows = int((con.execute(f"SELECT count(*) FROM {source}").fetchone() or (0,))[0])
    n = max(1, -(-rows // EVIDENCE_BUCKET_ROWS))
    for b in range(n):
        part = sql.format(bucket="true" if n == 1 else f"hash({key}) % {n} = {b}")
        con.execute(f"CREATE TABLE {table} AS {part}" if b == 0 else f"INSERT INTO {table} {part}")


def _events(con: duckdb.DuckDBPyConnection) -> None:
    """The run's events, numbered by (kind, event, entity_id); evidence is compact JSON with sorted lists."""
    # the records of each (cluster, prior entity) an event names: new and continued clusters' records, the
    # records a split took from its source, the records a merged entity brought
    _in_buckets(con, "crec", "cur", "c.kind, c.cluster_key", f"""
        SELECT c.kind, c.cluster_key, {_records('c')} AS records, count(*) AS n FROM cur c
        SEMI JOIN (SELECT kind, cluster_key FROM fresh_entity UNION ALL SELECT kind, cluster_key FROM cont) x
            ON x.kind = c.kind AND x.cluster_key = c.cluster_key
        WHERE {{bucket}}
        GROUP BY c.kind, c.cluster_key""")
    _in_buckets(con, "prec", "cur", "c.kind, c.cluster_key", f"""
        SELECT c.kind, c.cluster_key, c.prior, {_records('c')} AS records FROM cur c
        SEMI JOIN (SELECT kind, cluster_key, other_entity_id AS prior FROM split_src
                   UNION ALL SELECT kind, cluster_key, entity_id FROM merged) x
            ON x.kind = c.kind AND x.cluster_key = c.cluster_key AND x.prior = c.prior
        WHERE {{bucket}}
        GROUP BY c.kind, c.cluster_key, c.prior""")
    _in_buckets(con, "erec", "pm", "p.kind, p.entity_id", f"""
        SELECT p.kind, p.entity_id, {_records('p')} AS records, count(*) AS n FROM pm p
        SEMI JOIN (SELECT entity_id FROM retired UNION ALL SELECT entity_id FROM cont) x
            ON x.entity_id = p.entity_id
        WHERE {{bucket}}
        GROUP BY p.kind, p.entity_id""")
    con.execute("""CREATE TABLE ev_raw AS
        SELECT f.kind, 'created' AS event, f.entity_id, NULL::VARCHAR AS other_entity_id,
               json_object('records', r.records, 'members', r.n)::VARCHAR AS evidence
        FROM fresh_entity f JOIN crec r ON r.kind = f.kind AND r.cluster_key = f.cluster_key
        WHERE f.other_entity_id IS NULL
        UNION ALL
        SELECT f.kind, 'split', f.entity_id, f.other_entity_id,
               json_object('records', r.records, 'members', r.n, 'from_records', p.records,
                           'from_members', s.n)::VARCHAR
        FROM fresh_entity f JOIN crec r ON r.kind = f.kind AND r.cluster_key = f.cluster_key
        JOIN split_src s ON s.kind = f.kind AND s.cluster_key = f.cluster_key
        JOIN prec p ON p.kind = f.kind AND p.cluster_key = f.cluster_key AND p.prior = f.other_entity_id
        UNION ALL
        SELECT c.kind, 'continued', c.entity_id, NULL,
               json_object('continuity_key', c.ckey, 'continuity_keys', c.keys, 'old_records', o.records,
                           'new_records', r.records, 'members', r.n)::VARCHAR
        FROM cont c JOIN crec r ON r.kind = c.kind AND r.cluster_key = c.cluster_key
        JOIN erec o ON o.entity_id = c.entity_id
        UNION ALL
        SELECT m.kind, 'merged', m.entity_id, m.merged_into,
               json_object('records', p.records, 'members', m.n)::VARCHAR
        FROM merged m JOIN prec p ON p.kind = m.kind AND p.cluster_key = m.cluster_key AND p.prior = m.entity_id
        UNION ALL
        SELECT r.kind, 'retired', r.entity_id, NULL, json_object('records', o.records, 'members', o.n)::VARCHAR
        FROM retired r JOIN erec o ON o.entity_id = r.entity_id""")
    order = "CASE event " + " ".join(f"WHEN '{e}' THEN {i}" for i, e in enumerate(EVENTS)) + " END"
    con.execute(f"""CREATE TABLE ev AS
        SELECT getvariable('run_id') AS run_id, row_number() OVER (ORDER BY kind, {order}, entity_id) AS seq,
               event, kind, entity_id, other_entity_id, evidence
        FROM ev_raw""")


def _key_table(keys: pa.Table | Iterable[tuple[str, str, str]]) -> pa.Table:
    if isinstance(keys, pa.Table):
        _require(keys, KEY_SCHEMA, "changed_record_keys")
        return keys.select(KEY_SCHEMA.names).cast(KEY_SCHEMA)
    rows = list(keys)
    return pa.table([pa.array([r[i] for r in rows], pa.string()) for i in range(3)], schema=KEY_SCHEMA)


def touched_closure(previous_members: pa.Table, clusters: pa.Table,
                    changed_record_keys: pa.Table | Iterable[tuple[str, str, str]], *,
                    settings: Settings | None = None) -> tuple[pa.Table, pa.Table]:
    """(members_subset, clusters_subset): the smallest closed part of the registry a change touches, on which
    `assign` (with the full previous entity table) gives what it gives on everything.

    Seeds: the clusters holding a changed record, the entities of changed records' previous member rows, and
    what a comparison finds by itself: clusters holding a record with no member row, entities with a member
    row whose record is in no cluster, and clusters whose records are not exactly one entity's previous
    records. So a record moved between clusters needs no listing; a record whose continuity keys changed
    (and nothing else) does, or its member row keeps the old keys. Then the fixed point: every entity with a
    record in a chosen cluster, every cluster holding a record of a chosen entity. Member rows are taken to
    name active entities, as `assign` writes them."""
    _require(previous_members, MEMBER_SCHEMA, "previous_members")
    if isinstance(clusters, pa.Table):
        _require(clusters, CLUSTER_SCHEMA, "clusters")
    with duck.session(settings, purpose="entities") as con:
        con.register("pm_in", previous_members)
        con.register("cl_in", clusters)
        con.register("ck", _key_table(changed_record_keys))
        con.execute("""CREATE TABLE edge AS
            SELECT DISTINCT c.kind, c.cluster_key, m.entity_id FROM cl_in c
            JOIN pm_in m ON m.kind = c.kind AND m.dataset = c.dataset AND m.record_key = c.record_key""")
        con.execute("""CREATE TABLE sc AS
            WITH csz AS (
                SELECT c.kind, c.cluster_key, count(*) AS size, count(m.entity_id) AS known,
                       count(DISTINCT m.entity_id) AS ents, any_value(m.entity_id) AS e
                FROM cl_in c LEFT JOIN pm_in m
                    ON m.kind = c.kind AND m.dataset = c.dataset AND m.record_key = c.record_key
                GROUP BY c.kind, c.cluster_key),
            esz AS (SELECT entity_id, count(*) AS total FROM pm_in GROUP BY entity_id)
            SELECT kind, cluster_key FROM csz LEFT JOIN esz ON esz.entity_id = csz.e
            WHERE csz.known < csz.size OR csz.ents <> 1 OR esz.total <> csz.size
            UNION
            SELECT c.kind, c.cluster_key FROM cl_in c
            SEMI JOIN ck ON ck.kind = c.kind AND ck.dataset = c.dataset AND ck.record_key = c.record_key""")
        con.execute("""CREATE TABLE se AS
            SELECT m.entity_id FROM pm_in m
            SEMI JOIN ck ON ck.kind = m.kind AND ck.dataset = m.dataset AND ck.record_key = m.record_key
            UNION
            SELECT m.entity_id FROM pm_in m
            ANTI JOIN cl_in c ON c.kind = m.kind AND c.dataset = m.dataset AND c.record_key = m.record_key""")
        _close(con)
        members = con.execute("""SELECT m.* FROM pm_in m SEMI JOIN se ON se.entity_id = m.entity_id
                                 ORDER BY m.kind, m.dataset, m.record_key""").to_arrow_table()
        subset = con.execute("""SELECT c.* FROM cl_in c SEMI JOIN sc ON sc.kind = c.kind AND sc.cluster_key = c.cluster_key
                                ORDER BY c.kind, c.cluster_key, c.dataset, c.record_key""").to_arrow_table()
    return members.cast(previous_members.schema), subset.cast(clusters.schema)


def _close(con: duckdb.DuckDBPyConnection) -> None:
    """The fixed point of the session's seeds `sc` (clusters) and `se` (entities) over `edge` (kind,
    cluster_key, entity_id): every entity with a record in a chosen cluster, every cluster holding a record of
    a chosen entity."""
    while True:
        added = _count(con, """INSERT INTO se SELECT DISTINCT e.entity_id FROM edge e
            SEMI JOIN sc ON sc.kind = e.kind AND sc.cluster_key = e.cluster_key
            ANTI JOIN se ON se.entity_id = e.entity_id""")
        added += _count(con, """INSERT INTO sc SELECT DISTINCT e.kind, e.cluster_key FROM edge e
            SEMI JOIN se ON se.entity_id = e.entity_id
            ANTI JOIN sc ON sc.kind = e.kind AND sc.cluster_key = e.cluster_key""")
        if added == 0:
            break


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def apply(previous_members: pa.Table, previous_entities: pa.Table, partial: Assignment, *,
          settings: Settings | None = None) -> Assignment:
    """The full result of a run that assigned only its closure: `partial`'s member rows (and deletions)
    replace the previous rows of the same records, its entity rows replace the previous rows of the same
    entities. Events and changed rows are the partial's, which are already the run's whole difference."""
    with duck.session(settings, purpose="entities") as con:
        con.register("pm", previous_members.select(MEMBER_SCHEMA.names))
        con.register("pe", previous_entities.select(ENTITY_SCHEMA.names))
        con.register("nm", partial.members)
        con.register("cm", partial.changed_members)
        con.register("ne", partial.entities)
        members = _fetch(con, """
            SELECT * FROM pm
            ANTI JOIN (SELECT kind, dataset, record_key FROM nm UNION ALL
                       SELECT kind, dataset, record_key FROM cm WHERE _op = 'delete') x
                ON x.kind = pm.kind AND x.dataset = pm.dataset AND x.record_key = pm.record_key
            UNION ALL SELECT * FROM nm
            ORDER BY kind, dataset, record_key""", MEMBER_SCHEMA)
        entities = _fetch(con, """
            SELECT * FROM pe ANTI JOIN ne ON ne.entity_id = pe.entity_id
            UNION ALL SELECT * FROM ne ORDER BY entity_id""", ENTITY_SCHEMA)
    return Assignment(members, entities, partial.events, partial.changed_members, partial.changed_entities)


# --- storage ------------------------------------------------------------------------------------------------


def registry_dir(settings: Settings) -> Path:
    """Where the registry's three tables live: `<integrated_dir>/_registry`."""
    return settings.integrated_dir / "_registry"


def _paths(directory: str | Path) -> dict[str, Path]:
    return {name: Path(directory) / name for name in (EVENT_TABLE, ENTITY_TABLE, MEMBER_TABLE)}


def _version_before(path: Path, run_id: str) -> int | None:
    """The newest version of the table at `path` not written by `run_id` (skipping that run's trailing
    commits only); None when the run created the table."""
    newest = zones.version(path)
    for commit in zones.open_table(path).history(50):
        if commit.get(_RUN_PROPERTY) != run_id:
            return int(commit["version"])
        newest = int(commit["version"]) - 1
    return newest if newest is not None and newest >= 0 else None


def _read(ref: str, schema: pa.Schema, order: list[str]) -> pa.Table:
    # delta-rs' MERGE writes text as string_view: cast back to the registry's schema; sorted as `assign`
    # sorts, so a stored table compares equal to the assignment that wrote it. DuckDB reads, casts and sorts
    # (within its session's memory limit, spilling beyond it): only the result is held in Python, not the
    # read, the cast and the sorted copies of millions of members side by side.
    with duck.session(purpose="entities") as con:
        zones.register(con, "stored", ref)
        columns = ", ".join(f'"{c}"' for c in schema.names)
        keys = ", ".join(f'"{c}"' for c in order)
        return con.execute(f"SELECT {columns} FROM stored ORDER BY {keys}").fetch_arrow_table().cast(schema)


def stored_refs(directory: str | Path, version: Mapping[str, int | str] | None = None, *,
                before_run: str | None = None) -> tuple[str | None, str | None]:
    """(members, entities) as zone references to the versions `load` reads (None: nothing stored)."""
    paths = _paths(directory)
    out: list[str | None] = []
    for name in (MEMBER_TABLE, ENTITY_TABLE):
        path = paths[name]
        if not zones.is_table(path):
            out.append(None)
            continue
        pinned: int | None
        if version is not None and name in version:
            given = version[name]
            pinned = given if isinstance(given, int) else zones.split_ref(given)[1]
        elif before_run is not None:
            pinned = _version_before(path, before_run)
            if pinned is None:
                out.append(None)
                continue
        else:
            pinned = zones.version(path)
        out.append(zones.ref(path, pinned if pinned is not None else 0))
    return out[0], out[1]


def load(directory: str | Path, version: Mapping[str, int | str] | None = None, *,
         before_run: str | None = None) -> tuple[pa.Table, pa.Table]:
    """(members, entities) as stored: the newest versions, the versions `version` names per table
    (`{"entity_member": 12, "entity": "<path>@v9"}`, e.g. the refs `commit` returned), or, with
    `before_run`, the versions before that run's own trailing commits (what a rerun of a killed run must
    start from). Empty tables with the schemas when nothing is stored yet."""
    refs = stored_refs(directory, version, before_run=before_run)
    out = []
    for ref, schema, order in ((refs[0], MEMBER_SCHEMA, ["kind", "dataset", "record_key"]),
                               (refs[1], ENTITY_SCHEMA, ["entity_id"])):
        out.append(schema.empty_table() if ref is None else _read(ref, schema, order))
    return out[0], out[1]


def _ensure(path: Path, schema: pa.Schema, run_id: str, partition_by: list[str] | None) -> None:
    if not zones.is_table(path):
        zones.create(path, schema.empty_table(), run_id=run_id, partition_by=partition_by)


def commit(directory: str | Path, assignment: Assignment, run_id: str) -> dict[str, str]:
    """Write one run's assignment: the run's events, then the changed entity rows, then the changed member
    rows (each one Delta commit; members and entities as a MERGE of the difference only, tables created on
    first use). Returns the refs of the three tables after the commit, keyed by table name.

    A kill between commits: after the events, the log names changes the entity and member tables do not hold
    yet; after the entities, the member table still points records at their previous entities (some now
    'merged'). Readers that pin the refs a finished commit returned never see either state. A rerun of the
    same run repairs it: it starts from `load(..., before_run=run_id)`, i.e. the tables as they were before
    this run's commits, so `assign` computes the same assignment; the run's events are written as a replace
    of that run's rows (one commit, never doubled), and the entity and member MERGEs upsert rows equal to
    what the killed attempt wrote. `update` does exactly that. Only the newest run can be rerun: a run that
    a later run followed (in any of the three tables) is refused, since its rerun would start from the later
    state."""
    bad = assignment.events.filter(pa.compute.not_equal(assignment.events["run_id"], run_id))
    if bad.num_rows:
        raise ValueError(f"commit of run {run_id!r}: the assignment's events belong to run {bad['run_id'][0]}")
    paths = _paths(directory)
    events = paths[EVENT_TABLE]
    _refuse_rewriting_history(paths.values(), run_id)
    if not zones.is_table(events):
        zones.create(events, assignment.events, run_id=run_id)
    elif assignment.events.num_rows:
        from deltalake import CommitProperties, write_deltalake

        # replaceWhere: the run's earlier events (a killed attempt's) and the new ones swap in one commit
        write_deltalake(str(events), assignment.events, mode="overwrite", predicate=f"run_id = {zones.sql_text(run_id)}",
                        commit_properties=CommitProperties(custom_metadata={_RUN_PROPERTY: run_id}))
    _ensure(paths[ENTITY_TABLE], ENTITY_SCHEMA, run_id, _ENTITY_PARTITIONS)
    zones.merge(paths[ENTITY_TABLE], assignment.changed_entities, key=_ENTITY_KEY, run_id=run_id,
                partition_by=_ENTITY_PARTITIONS)
    _ensure(paths[MEMBER_TABLE], MEMBER_SCHEMA, run_id, _MEMBER_PARTITIONS)
    zones.merge(paths[MEMBER_TABLE], assignment.changed_members, key=_MEMBER_KEY, run_id=run_id,
                partition_by=_MEMBER_PARTITIONS)
    refs = {name: zones.ref(path, zones.version(path) or 0) for name, path in paths.items()}
    log.info("entity registry %s: run %s committed %d events, %d entity and %d member rows", directory, run_id,
             assignment.events.num_rows, assignment.changed_entities.num_rows, assignment.changed_members.num_rows)
    return refs


def _refuse_rewriting_history(paths: Iterable[Path], run_id: str) -> None:
    """A rerun repairs the newest run only: rerunning a run that later runs have followed would replace its
    events with ones computed from the later state. Looks at the last 50 commits of each table."""
    for path in paths:
        if not zones.is_table(path):
            continue
        commits = zones.open_table(path).history(50)
        trailing = True
        for c in commits:
            if c.get("lienthong.mode") == "rollback":
                break  # what came before was undone (`rollback`): not history a rerun could rewrite
            if c.get(_RUN_PROPERTY) != run_id:
                trailing = False
            elif not trailing:
                raise ValueError(f"entity registry {path.parent}: run {run_id!r} was committed to {path.name} "
                                 f"before run {commits[0].get(_RUN_PROPERTY)!r}; only the newest run can be rerun")


def rollback(directory: str | Path, run_ids: Iterable[str]) -> dict[str, int]:
    """Undo what runs that did not finish wrote: each registry table whose history holds a commit of one of
    `run_ids` is restored (one new commit, delta-rs `restore`) to its version before the oldest such commit.
    A reconciliation calls this with the runs started since the last successful one, so an assignment
    never starts from a half-written registry (events of a killed run, entities merged whose members still
    point at them) whether or not the killed run is retried under its own id. Returns {table: version
    restored to}; tables with nothing to undo are not touched."""
    runs = set(run_ids)
    out: dict[str, int] = {}
    if not runs:
        return out
    for name, path in _paths(directory).items():
        if not zones.is_table(path):
            continue
        table = zones.open_table(path)
        target: int | None = None
        for commit in table.history():  # newest first
            if commit.get(_RUN_PROPERTY) in runs:
                target = int(commit["version"]) - 1
        if target is None:
            continue
        if target < 0:
            raise RuntimeError(f"entity registry {path}: created by an unfinished run ({sorted(runs)}); "
                               "remove the table to start the registry again")
        from deltalake import CommitProperties

        table.restore(target, commit_properties=CommitProperties(custom_metadata={"lienthong.mode": "rollback"}))
        out[name] = target
        log.warning("entity registry %s: rolled back to version %d (commits of unfinished runs %s)", path, target,
                    sorted(runs))
    return out


def update(directory: str | Path, clusters: pa.Table | str, run_id: str, *,
           settings: Settings | None = None, whole_tables: bool = True) -> tuple[Assignment, dict[str, str]]:
    """One run end to end: load the registry as it was before this run, assign, commit. Safe to rerun.
    `whole_tables=False`: the result holds no full member and entity tables (`assign`); the refs returned
    name the committed versions, which hold them."""
    members, entities = stored_refs(directory, before_run=run_id)
    result = assign(members if members is not None else empty_members(),
                    entities if entities is not None else empty_entities(), clusters, run_id, settings=settings,
                    whole_tables=whole_tables)
    return result, commit(directory, result, run_id)


def _run_order(path: Path) -> dict[str, int]:
    """run_id -> the version of the newest commit that wrote it (the order the runs' events were written)."""
    order: dict[str, int] = {}
    for c in zones.open_table(path).history():
        run = c.get(_RUN_PROPERTY)
        if run is not None:
            order[str(run)] = max(order.get(str(run), -1), int(c["version"]))
    return order


def _chain(con: duckdb.DuckDBPyConnection, entity_id: str) -> list[tuple[str, str, str | None]]:
    """(entity_id, status, merged_into) of the entity and every entity it was merged into, in order."""
    rows = con.execute("""
        WITH RECURSIVE chain(entity_id, status, merged_into, depth) AS (
            SELECT entity_id, status, merged_into, 0 FROM entity WHERE entity_id = ?
            UNION ALL
            SELECT e.entity_id, e.status, e.merged_into, c.depth + 1 FROM chain c
            JOIN entity e ON e.entity_id = c.merged_into
            WHERE c.status = 'merged' AND c.depth < 10000)
        SELECT entity_id, status, merged_into FROM chain ORDER BY depth""", [entity_id]).fetchall()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def resolve(directory: str | Path, entity_id: str, *, settings: Settings | None = None) -> str:
    """The entity an ID stands for now: follows `merged_into` to the active entity (or to a retired one,
    when the entity it ended in lost all its records). KeyError for an ID the registry never gave."""
    path = _paths(directory)[ENTITY_TABLE]
    if not zones.is_table(path):
        raise KeyError(entity_id)
    with duck.session(settings, purpose="entities") as con:
        zones.register(con, "entity", path)
        chain = _chain(con, entity_id)
    if not chain:
        raise KeyError(entity_id)
    return chain[-1][0]


def history(directory: str | Path, entity_id: str, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The events touching the entity, then those touching each entity it was merged into (so a consumer
    holding an old ID can follow it through a merge), oldest first: by the order the runs were committed (the
    events table's commit log; a run whose commit the log no longer holds sorts first, by run_id), then seq.
    Each event is a dict of EVENT_SCHEMA's columns, `evidence` parsed, plus `chain`: the entity of the chain
    (the given one first) it was selected for."""
    paths = _paths(directory)
    if not zones.is_table(paths[ENTITY_TABLE]):
        raise KeyError(entity_id)
    with duck.session(settings, purpose="entities") as con:
        zones.register(con, "entity", paths[ENTITY_TABLE])
        chain = [c[0] for c in _chain(con, entity_id)]
        if not chain:
            raise KeyError(entity_id)
        if not zones.is_table(paths[EVENT_TABLE]):
            return []
        zones.register(con, "event", paths[EVENT_TABLE])
        con.register("chain", pa.table({"entity_id": chain, "pos": list(range(len(chain)))}))
        rows = con.execute("""
            SELECT e.run_id, e.seq, e.event, e.kind, e.entity_id, e.other_entity_id, e.evidence,
                   min(c.pos) AS pos
            FROM event e JOIN chain c ON c.entity_id = e.entity_id OR c.entity_id = e.other_entity_id
            GROUP BY ALL""").fetchall()
    order = _run_order(paths[EVENT_TABLE])
    names = EVENT_SCHEMA.names
    out = []
    for row in sorted(rows, key=lambda r: (order.get(r[0], -1), r[0] if r[0] not in order else "", r[1])):
        event = dict(zip(names, row[:-1], strict=True))
        event["evidence"] = json.loads(event["evidence"]) if event["evidence"] else {}
        event["chain"] = chain[row[-1]]
        out.append(event)
    return out
