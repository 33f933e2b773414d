"""Person links as persistent state, brought up to date by linking only what changed.

Owns three Delta tables under `<integrated>/_state/` (through `lienthong.zones`), each keyed by `_key`:

- `person_registry`: every citizen in the person shape (`sources.citizens_as_people`), `_key` = citizen ID;
- `person_left`: every left person record (legal representatives; land holders of type person, not
  deleted) in the person shape with its `dataset`, `_key` = `<dataset>|<unique_id>`;
- `person_link`: the link of every left person record (`people.LINK_SCHEMA`, its `dataset`, the `model_id`
  that scored it), keyed like `person_left`.

`update` brings them from the staged versions they reflect to new ones. Why the result equals relinking
everything with the same model: with a persisted model (parameters and frozen name frequencies,
`lienthong.reconcile.models`), the link of a left record is a function of that record and of the registry
records sharing one of its candidate keys (the exact passes' IDs and the model's blocking keys,
`people.CANDIDATE_KEYS`), nothing else. So a run relinks (a) the left records whose staged rows changed and
(b) the left records sharing a candidate key with a citizen whose staged row changed (its old or its new
values), against the whole current registry; every other link stands. For the same reason the linking may run
one province at a time against the registry rows sharing a candidate key with that province's records
(`settings.linkage_partitions`, `lienthong.reconcile.partitions`), with the same links.

What "changed" is measured against: the staged versions of the last successful reconciliation AND of every
reconciliation started after it that did not finish (the ledger keeps each run's inputs from its start), so a
run killed after writing some state is covered: a row is changed when it differs from any of those versions
(by `_merge_key` and `_record_hash`). A run relinks everything (mode `full`) when there is no state yet, a
base version is gone (vacuumed), or the model differs from the one the state was linked with.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import partitions, sources, stagedchange
from lienthong.reconcile.people import (
    LINK_SCHEMA,
    PERSON_COLUMNS,
    PERSON_SCHEMA,
    LinkBands,
    LinkModel,
    link_people,
)
from lienthong.settings import Settings

log = logging.getLogger(__name__)

STATE_DIR = "_state"
REGISTRY, LEFT, LINKS = "person_registry", "person_left", "person_link"
KEY = "_key"

# left dataset -> the link type (model) that scores it
LEFT_DATASETS = {"legal_representative": "representative_citizen", "land_holder": "holder_citizen"}
PERSON_INPUTS = ("citizen", *LEFT_DATASETS)
# What the link state reads: the person inputs, and the enterprises (their head offices place representatives
# in a province, `partitions.head_offices`).
LINK_INPUTS = (*PERSON_INPUTS, "enterprise")


def link_inputs(staged: dict[str, str]) -> dict[str, str]:
    """The staged refs of `staged` (by dataset) the link state reads (`LINK_INPUTS`)."""
    return {n: staged[n] for n in LINK_INPUTS if n in staged}

REGISTRY_SCHEMA = pa.schema([pa.field(KEY, pa.string()), *PERSON_SCHEMA])
LEFT_SCHEMA = pa.schema([pa.field(KEY, pa.string()), pa.field("dataset", pa.string()), *PERSON_SCHEMA])
LINK_STATE_SCHEMA = pa.schema([pa.field(KEY, pa.string()), pa.field("dataset", pa.string()), *LINK_SCHEMA,
                               pa.field("model_id", pa.string())])


def state_dir(integrated_dir: Path) -> Path:
    return Path(integrated_dir) / STATE_DIR


def table_path(integrated_dir: Path, name: str) -> Path:
    return state_dir(integrated_dir) / name


@dataclass
class Update:
    """What `update` did: the mode, the refs of the three tables after it, and counts."""

    mode: str  # full | change | unchanged
    refs: dict[str, str]
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # link type -> model id used
    trained: dict[str, LinkModel] = field(default_factory=dict)  # link type -> model trained by this update


# --- the person shapes of staged rows ----------------------------------------------------------------------


def registry_rows(citizens: pa.Table) -> pa.Table:
    people = sources.citizens_as_people(citizens)
    return people.add_column(0, KEY, people["unique_id"]).cast(REGISTRY_SCHEMA)


def left_rows(dataset: str, staged: pa.Table) -> pa.Table:
    """The left person records of staged rows of `dataset` (holders: type person and not deleted)."""
    if dataset == "legal_representative":
        people = sources.representatives_as_people(staged)
    elif dataset == "land_holder":
        staged = staged.filter(pc.invert(pc.fill_null(staged["deleted"], False)))
        staged = staged.filter(pc.fill_null(pc.equal(staged["holder_type"], "CA_NHAN"), False))
        people = sources.holders_as_people(staged)
    else:
        raise ValueError(f"{dataset!r} is not a left person dataset ({', '.join(LEFT_DATASETS)})")
    keys = pc.binary_join_element_wise(pa.scalar(dataset), people["unique_id"], "|")
    out = people.add_column(0, "dataset", pa.array([dataset] * people.num_rows, pa.string()))
    return out.add_column(0, KEY, keys).cast(LEFT_SCHEMA)


def whole_registry(inputs: dict[str, str]) -> pa.Table:
    """Every citizen of the staged version `inputs['citizen']` in the registry's shape, in `_key` order."""
    return registry_rows(zones.read_table(inputs["citizen"])).sort_by(KEY)


def whole_left(inputs: dict[str, str]) -> pa.Table:
    """Every left person record of the staged versions `inputs` (each of LEFT_DATASETS), in `_key` order."""
    return pa.concat_tables([left_rows(d, zones.read_table(inputs[d])) for d in LEFT_DATASETS]).sort_by(KEY)


WHOLE_BATCH_ROWS = 200_000  # staged rows shaped at a time when the registry or the left records are built in batches
# The staged columns each person shape reads (`registry_rows`, `left_rows`); the builds in batches read only
# these (the partitioned reconcile test checks that their shapes are those of `whole_registry`, `whole_left`).
SHAPE_COLUMNS = {
    "citizen": ("citizen_id", "legacy_id", "full_name", "birth_date", "birth_date_precision",
                "residence_commune_code", "residence_commune_code_2025", "residence_address"),
    "legal_representative": ("enterprise_code", "position", "document_type", "document_number", "full_name",
                             "birth_date"),
    "land_holder": ("province_code", "holder_id", "holder_type", "deleted", "document_type", "document_number",
                    "address", "birth_year", "name"),
}


def _shaped(ref: str, dataset: str, shape: Callable[[pa.Table], pa.Table]) -> Iterator[pa.Table]:
    """`shape` of the rows of staged version `ref` of `dataset`, WHOLE_BATCH_ROWS at a time: a person shape is
    a function of its own row only (`sources`), so the batches' shapes together are the shape of the whole
    table. Only the columns the shape reads are decoded, one row group ahead at most (Arrow's default
    read-ahead of 16 batches in 4 files held most of a 5M-citizen table at once).

    The table version is opened here, not when the batches are read: they are read inside the Delta writer
    (`_commit_whole`), which may not call into deltalake again."""
    batches = zones.dataset(ref).to_batches(columns=list(SHAPE_COLUMNS[dataset]), batch_size=WHOLE_BATCH_ROWS,
                                            batch_readahead=1, fragment_readahead=1)
    return (shape(pa.Table.from_batches([b])) for b in batches if b.num_rows)


def registry_batches(inputs: dict[str, str]) -> Iterator[pa.Table]:
    """`whole_registry`'s rows a batch at a time, in no particular order."""
    return _shaped(inputs["citizen"], "citizen", registry_rows)


def left_batches(inputs: dict[str, str]) -> Iterator[pa.Table]:
    """`whole_left`'s rows a batch at a time, in no particular order."""
    return itertools.chain.from_iterable([_shaped(inputs[d], d, partial(left_rows, d)) for d in LEFT_DATASETS])


def sorted_batches(ref: str, schema: pa.Schema, settings: Settings | None) -> Iterator[pa.Table]:
    """The rows of table version (or Parquet file) `ref` in `_key` order, in `schema`, WHOLE_BATCH_ROWS at a
    time: sorted by DuckDB within its memory limit (spilled beyond it), never held whole in Python."""
    with session(settings, purpose="link-state") as con:
        zones.register(con, "rows_in", ref)
        reader = con.execute(f"SELECT * FROM rows_in ORDER BY {KEY}").to_arrow_reader(WHOLE_BATCH_ROWS)
        for batch in reader:
            yield pa.Table.from_batches([batch]).select(schema.names).cast(schema)


def _commit_whole(path: Path, tables: Iterable[pa.Table], schema: pa.Schema, *, run_id: str) -> tuple[str, int]:
    """`_commit(..., full=True)` of the rows of `tables` (in `schema`), streamed into the commit as they come
    (the Delta writer buffers what it writes: 1.0 GiB measured at 1M registry rows, 1.3 GiB at 2.5M and
    1.4 GiB at 5M, levelling off). Returns (the version's ref, its rows).

    The rows are committed in the order they come, not in `_key` order as a whole table is: every reader of
    the link state orders by `_key` itself (`sorted_batches`, the candidates' queries, `link_against`), and
    after a change's MERGE no table is in order anyway."""
    rows = 0

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for table in tables:
            rows += table.num_rows
            yield from table.select(schema.names).cast(schema).to_batches()

    commit = zones.create(path, pa.RecordBatchReader.from_batches(schema, counted()), run_id=run_id,
                          metadata={"lienthong.mode": "full"})
    v = commit.version if commit.version is not None else zones.version(path)
    if v is None:
        raise RuntimeError(f"link state {path}: no version after its commit")
    return zones.ref(path, v), rows


def left_record_keys(dataset: str, staged: pa.Table) -> pa.Array:
    """The `_key` of every staged row of a left dataset, valid as a left record or not (to delete it)."""
    unique = sources.representative_key(staged) if dataset == "legal_representative" else sources.holder_key(staged)
    return pc.binary_join_element_wise(pa.scalar(dataset), unique, "|")


# --- the change between staged versions ---------------------------------------------------------------------


def _changes(con: Any, name: str, bases: list[str], new: str) -> tuple[pa.Table, pa.Table]:
    """(rows of `new` that differ from at least one base version, rows of any base version not in `new`),
    compared on `_merge_key` and `_record_hash`; only the rows of the keys `stagedchange.differing_keys`
    names are read."""
    zones.register(con, f"{name}_new", new)
    views = [f"{name}_b{i}" for i in range(len(bases))]
    for view, base in zip(views, bases, strict=True):
        zones.register(con, view, base)
    if not bases:
        return con.execute(f"SELECT * FROM {name}_new").fetch_arrow_table(), \
            con.execute(f"SELECT * FROM {name}_new WHERE false").fetch_arrow_table()
    stagedchange.differing_keys(con, new, bases, new_view=f"{name}_new", base_views=views, target=f"{name}_keys")
    changed = con.execute(f"SELECT * FROM {name}_new SEMI JOIN {name}_keys USING (_merge_key)").fetch_arrow_table()
    olds = [f"""SELECT * FROM (SELECT * FROM {view} SEMI JOIN {name}_keys USING (_merge_key)) b
                ANTI JOIN (SELECT _merge_key, _record_hash FROM {name}_new SEMI JOIN {name}_keys USING (_merge_key)) n
                USING (_merge_key, _record_hash)""" for view in views]
    gone = con.execute(" UNION ".join(olds)).fetch_arrow_table()
    return changed, gone



def _moved_keys(new: pa.Table, old: pa.Table, settings: Settings) -> set[str]:
    """`_key`s whose person shape differs between `new` (current versions) and `old` (base versions): a row of
    one side that the other does not hold whole. A staged row that changed only in columns a link does not
    read (an update time, a status) moves nothing."""
    if new.num_rows == 0 or old.num_rows == 0:
        return set(new[KEY].to_pylist()) | set(old[KEY].to_pylist())
    with session(settings, purpose="link-state") as con:
        con.register("n", new)
        con.register("o", old.cast(new.schema))
        cols = ", ".join(f'"{c}"' for c in new.column_names)
        found = con.execute(f"""SELECT {KEY} FROM (SELECT {cols} FROM n EXCEPT SELECT {cols} FROM o)
                                UNION SELECT {KEY} FROM (SELECT {cols} FROM o EXCEPT SELECT {cols} FROM n)""").fetchall()
    return {r[0] for r in found}


def _with_keys(table: pa.Table, keys: set[str]) -> pa.Table:
    return table.filter(pc.is_in(table[KEY], value_set=pa.array(sorted(keys), pa.string())))


# --- which left records a change touches --------------------------------------------------------------------


_qualified = partitions.qualified


# The candidate keys of the exact passes: a left record sharing one with a changed citizen is always relinked.
ID_KEYS: tuple[tuple[str, ...], ...] = (("id_number",), ("legacy_id",))


def dirty_by_registry(con: Any, changed_people: pa.Table,
                      keys: tuple[tuple[str, ...], ...] | None = None) -> set[str]:
    """`_key`s of the left records (table `person_left` of the session) that share a candidate key
    (`keys`, by default `people.CANDIDATE_KEYS`) with any of `changed_people` (person shapes: the old and
    new values of changed citizens)."""
    from lienthong.reconcile.people import CANDIDATE_KEYS

    if changed_people.num_rows == 0:
        return set()
    con.register("reg_changed", changed_people.select(PERSON_COLUMNS))
    parts = []
    for key in keys if keys is not None else CANDIDATE_KEYS:
        parts.append(f"SELECT l.{KEY} FROM person_left l JOIN reg_changed c ON {partitions.key_condition(key, 'l', 'c')}")
    found = con.execute(" UNION ".join(parts)).fetchall()
    con.unregister("reg_changed")
    return {r[0] for r in found}


def _unmoved(con: Any, keys: set[str], previous_links: str, registry_new: pa.Table, changed_ids: set[str],
             models: dict[str, LinkModel | None], bands: LinkBands, settings: Settings) -> set[str]:
    """Of `keys` (left records sharing only blocking keys with changed citizens), those whose link provably
    stays as it is, so relinking them is skipped.

    A link depends on the record's best two candidates (the pass, the band and the margin over the runner-up
    read nothing else). It stays when: the record was linked by an exact pass (a changed citizen sharing
    its ID would have made it relink anyway); or it was linked by the model, neither its best nor its
    runner-up is a changed citizen (`changed_ids`: old and new keys, deleted ones), and every changed
    citizen's new version scores strictly below the runner-up with the same model (`registry_new` scored
    against the record: a pair below the model's threshold is no candidate at all). A record with no
    runner-up has a new candidate whenever any pair scores. Everything else is relinked."""
    if not keys:
        return set()
    con.register("prescore_keys", pa.table({KEY: pa.array(sorted(keys), pa.string())}))
    con.register("changed_ids", pa.table({"id": pa.array(sorted(changed_ids), pa.string())}))
    zones.register(con, "previous_links", previous_links)
    # the records the pre-scoring may keep: linked by an exact pass, or by the model with neither of its best
    # two candidates changed
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE prescore AS
        SELECT p.{KEY}, p.dataset, p.method IN ('exact_id', 'legacy_id') AS exact, p.runner_up_score
        FROM previous_links p SEMI JOIN prescore_keys k ON k.{KEY} = p.{KEY}
        WHERE p.method IN ('exact_id', 'legacy_id')
           OR ((p.right_id IS NULL OR p.right_id NOT IN (SELECT id FROM changed_ids))
               AND (p.runner_up_id IS NULL OR p.runner_up_id NOT IN (SELECT id FROM changed_ids)))""")
    if registry_new.num_rows == 0:  # no new version to score: no new candidate for anyone
        return {r[0] for r in con.execute(f"SELECT {KEY} FROM prescore").fetchall()}
    kept = {r[0] for r in con.execute(f"SELECT {KEY} FROM prescore WHERE exact").fetchall()}
    for (dataset,) in con.execute("SELECT DISTINCT dataset FROM prescore WHERE NOT exact ORDER BY 1").fetchall():
        model = models.get(LEFT_DATASETS[dataset])
        if model is None:
            continue  # no model to score with: relink them
        left = con.execute(f"""SELECT l.* FROM person_left l
                               SEMI JOIN prescore p ON p.{KEY} = l.{KEY} AND p.dataset = ? AND NOT p.exact
                               ORDER BY l.{KEY}""", [dataset]).fetch_arrow_table()
        con.register("prescored", link_people(left.select(PERSON_COLUMNS), registry_new.select(PERSON_COLUMNS),
                                              bands, settings=settings, model=model).links)
        kept |= {r[0] for r in con.execute(f"""
            SELECT p.{KEY} FROM prescore p JOIN person_left l ON l.{KEY} = p.{KEY}
            LEFT JOIN prescored s ON s.left_id = l.unique_id
            WHERE p.dataset = ? AND NOT p.exact
              AND (s.score IS NULL OR (p.runner_up_score IS NOT NULL AND s.score < p.runner_up_score))""",
            [dataset]).fetchall()}
        con.unregister("prescored")
    return kept


# --- the update ---------------------------------------------------------------------------------------------


def _with_op(table: pa.Table, op: str) -> pa.Table:
    return table.append_column(zones.OP, pa.array([op] * table.num_rows, pa.string()))


def _deletes(keys: set[str]) -> pa.Table:
    return pa.table({KEY: pa.array(sorted(keys), pa.string()), zones.OP: pa.array(["delete"] * len(keys), pa.string())})


def _commit(path: Path, upserts: pa.Table, deletes: set[str], *, run_id: str, full: bool) -> str:
    """One commit of the table at `path`: all of `upserts` (full: the table's whole content), else a MERGE
    of the upserts and of the deletes whose key is not upserted. Returns the version's ref."""
    if full:
        commit = zones.create(path, upserts, run_id=run_id, metadata={"lienthong.mode": "full"})
    else:
        gone = deletes - set(upserts[KEY].to_pylist())
        rows = _with_op(upserts, "upsert")
        if gone:
            rows = pa.concat_tables([rows, _deletes(gone)], promote_options="default")
        commit = zones.merge(path, rows, key=KEY, run_id=run_id, metadata={"lienthong.mode": "change"})
    v = commit.version if commit.version is not None else zones.version(path)
    if v is None:
        raise RuntimeError(f"link state {path}: no version after its commit")
    return zones.ref(path, v)


def _rows_of(left: pa.Table, dataset: str) -> pa.Table:
    """The left rows of one dataset: a slice when they are contiguous (left rows sorted by `_key`, which starts
    with the dataset), so the largest input of the linking is not copied; a filtered copy otherwise."""
    mask = pc.equal(left["dataset"], dataset)
    count = int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
    if count == 0:
        return left.slice(0, 0)
    start = int(pc.index(left["dataset"], dataset).as_py())
    rows = left.slice(start, count)
    if pc.all(pc.equal(rows["dataset"], dataset)).as_py():
        return rows
    return left.filter(mask)


def link_rows(left: pa.Table, registry: pa.Table, bands: LinkBands, settings: Settings,
              models: dict[str, LinkModel | None]) -> tuple[pa.Table, dict[str, LinkModel], dict[str, Any]]:
    """Link each left dataset's records with its model (trained here when `models` has none for it)."""
    parts, used, counts = [], {}, {}
    for dataset, link_type in LEFT_DATASETS.items():
        rows = _rows_of(left, dataset)
        if rows.num_rows == 0:
            continue
        result = link_people(rows.select(PERSON_COLUMNS), registry.select(PERSON_COLUMNS), bands,
                             settings=settings, model=models.get(link_type))
        if result.model is not None:
            used[link_type] = result.model
        counts[link_type] = result.counts
        links = result.links
        model_id = result.model.model_id if result.model is not None else None
        keys = pc.binary_join_element_wise(pa.scalar(dataset), links["left_id"], "|")
        links = links.add_column(0, "dataset", pa.array([dataset] * links.num_rows, pa.string()))
        links = links.add_column(0, KEY, keys).append_column("model_id", pa.array([model_id] * links.num_rows, pa.string()))
        parts.append(links.cast(LINK_STATE_SCHEMA))
    out = pa.concat_tables(parts) if parts else LINK_STATE_SCHEMA.empty_table()
    return out.sort_by(KEY), used, counts


def _link_partitioned(left: pa.Table, registry_ref: str, inputs: dict[str, str], bands: LinkBands,
                      settings: Settings, models: dict[str, LinkModel | None],
                      ) -> tuple[pa.Table, dict[str, LinkModel], dict[str, Any]]:
    """`link_rows` against the registry version `registry_ref`, one province at a time (`partitions`): the same
    links, the registry never read whole. Representatives go to their enterprise's head-office province
    when `inputs` names the staged `enterprise` version, else to the `unknown` partition."""
    offices = partitions.head_offices(inputs["enterprise"]) if inputs.get("enterprise") else None
    return partitions.link_partitioned(left, registry_ref, bands, settings, models, link=link_rows,
                                       link_types=LEFT_DATASETS, head_offices=offices)


def link_against(left: pa.Table, registry_ref: str, inputs: dict[str, str], bands: LinkBands, settings: Settings,
                 models: dict[str, LinkModel | None]) -> tuple[pa.Table, dict[str, LinkModel], dict[str, Any]]:
    """Link `left` against registry version `registry_ref`: by province (`settings.linkage_partitions`), or
    against the whole registry read at once."""
    if settings.linkage_partitions == "province":
        return _link_partitioned(left, registry_ref, inputs, bands, settings, models)
    return link_rows(left, zones.read_table(registry_ref).sort_by(KEY), bands, settings, models)


@dataclass
class Prepared:
    """An update up to the linking (`prepare`, or `prepare_full` for a full relink): the registry and left
    records committed, the left records to relink, the links version they are relinked from, the left records
    gone, counts so far."""

    refs: dict[str, str]  # REGISTRY and LEFT after the commits
    previous_links: str | None  # None: no links yet (a full relink)
    # LEFT_SCHEMA: the records to relink; None for a full relink planned for the province tasks (every record
    # of the version refs[LEFT], never held whole: `linkwork.write_plan` reads it in batches), and for a plan
    # reconcile takes up (its tasks have linked them)
    left: pa.Table | None
    left_deletes: set[str]
    counts: dict[str, Any]
    seconds: dict[str, float]
    model_ids: dict[str, str]
    t0: float
    full: bool = False  # every left record is relinked and the links replace the table's content


def full_reason(integrated_dir: Path, bases: dict[str, list[str]] | None, models: dict[str, LinkModel | None],
                state_models: dict[str, str] | None) -> str | None:
    """Why an update must relink everything (None: it can link the change)."""
    paths = {name: table_path(integrated_dir, name) for name in (REGISTRY, LEFT, LINKS)}
    model_ids = {t: m.model_id for t, m in models.items() if m is not None}
    return _full_reason(paths, bases, models, state_models, model_ids)


def update(
    integrated_dir: Path,
    inputs: dict[str, str],
    bases: dict[str, list[str]] | None,
    models: dict[str, LinkModel | None],
    *,
    run_id: str,
    settings: Settings,
    bands: LinkBands,
    state_models: dict[str, str] | None = None,
    work: Any = None,
) -> Update:
    """Bring the link state to the staged versions `inputs` (dataset -> staged ref; an `enterprise` ref, when
    given, places representatives in their head office's province for `settings.linkage_partitions`).

    `bases` maps each person input to the staged refs the state may reflect (see the module docstring);
    None, or a base that is gone, or `state_models` (link type -> model id the state was linked with)
    differing from `models`, relinks everything. `models` gives each link type's persisted model; a link type
    without one is trained on the whole data (full mode only) and returned in `Update.models`'s ids and
    `Update.counts['trained']`. `work` (`linkwork.Planned`): this run's plan and the links its province tasks
    wrote, used instead of preparing and linking here when it is usable."""
    t0 = time.monotonic()
    paths = {name: table_path(integrated_dir, name) for name in (REGISTRY, LEFT, LINKS)}
    model_ids = {t: m.model_id for t, m in models.items() if m is not None}
    reason = _full_reason(paths, bases, models, state_models, model_ids)
    planned = work is not None and work.reason is None
    if reason and not (planned and work.plan.get("full")):
        log.info("link state: relinking everything (%s)", reason)
        return _full(paths, inputs, models, run_id=run_id, settings=settings, bands=bands, t0=t0, reason=reason)
    if planned:
        prepared = work.prepared()
        links, link_counts = work.links()
        log.info("link state: %d left records relinked by %d province tasks (plan of run %s)",
                 sum(work.plan["partitions"].values()), len(work.plan["partitions"]), run_id)
        done = finish(integrated_dir, prepared, links, {}, link_counts, run_id=run_id, settings=settings,
                      link_seconds=0.0)
        done.counts["province_tasks"] = dict(work.plan["partitions"])  # left records linked by each task
        return done
    found = prepare(integrated_dir, inputs, bases, models, run_id=run_id, settings=settings, bands=bands)
    if isinstance(found, Update):
        return found
    t3 = time.monotonic()
    assert found.left is not None  # a change's records to relink
    links, used, link_counts = link_against(found.left, found.refs[REGISTRY], inputs, bands, settings, models)
    return finish(integrated_dir, found, links, used, link_counts, run_id=run_id, settings=settings,
                  link_seconds=time.monotonic() - t3)


def prepare(integrated_dir: Path, inputs: dict[str, str], bases: dict[str, list[str]] | None,
            models: dict[str, LinkModel | None], *, run_id: str, settings: Settings,
            bands: LinkBands) -> Prepared | Update:
    """A change update up to the linking: the changed registry and left records committed, the left records
    to relink found. An `Update` ("unchanged") when no person record changed. Only for a state that can link
    the change (`full_reason` is None)."""
    t0 = time.monotonic()
    paths = {name: table_path(integrated_dir, name) for name in (REGISTRY, LEFT, LINKS)}
    model_ids = {t: m.model_id for t, m in models.items() if m is not None}
    if bases is None:
        raise ValueError("link state: no bases to find the change against; relink everything")
    with session(settings, purpose="link-state") as con:
        changed, gone = {}, {}
        for name in PERSON_INPUTS:
            changed[name], gone[name] = _changes(con, name, bases[name], inputs[name])
    if all(changed[n].num_rows == 0 and gone[n].num_rows == 0 for n in PERSON_INPUTS):
        refs = {name: zones.ref(p, zones.version(p) or 0) for name, p in paths.items()}
        log.info("link state: no person record changed since the state's staged versions")
        return Update("unchanged", refs, {"changed": {n: 0 for n in PERSON_INPUTS}}, {"total": time.monotonic() - t0},
                      model_ids)
    t1 = time.monotonic()
    # the registry: upsert the changed citizens, delete the ones gone
    reg_new = registry_rows(changed["citizen"])
    reg_old = registry_rows(gone["citizen"])
    new_citizen_ids = set(reg_new[KEY].to_pylist())
    # a citizen whose old row is gone is deleted unless the current version still holds its ID
    still: set[str] = set()
    if reg_old.num_rows:
        with session(settings, purpose="link-state") as con:
            zones.register(con, "citizens_now", inputs["citizen"])
            con.register("old_ids", reg_old.select([KEY]))
            still = {r[0] for r in con.execute(
                f"SELECT citizen_id FROM citizens_now WHERE citizen_id IN (SELECT {KEY} FROM old_ids)").fetchall()}
    reg_deletes = set(reg_old[KEY].to_pylist()) - new_citizen_ids - still
    # A staged row that changed in columns a link does not read (an update time, a status) leaves the person
    # shape as it was: only shapes that are new or gone can move a link.
    # A key with a shape that moved takes all its versions along (new and every base's): the state may hold
    # any base's version (a run that did not finish), and each of them may have been a candidate.
    reg_keys = _moved_keys(reg_new, reg_old, settings)
    reg_moved_new = _with_keys(reg_new, reg_keys)
    reg_change = pa.concat_tables([reg_moved_new, _with_keys(reg_old, reg_keys)])
    refs = {REGISTRY: _commit(paths[REGISTRY], reg_moved_new, reg_deletes, run_id=run_id, full=False)}
    # the left records
    left_new = pa.concat_tables([left_rows(d, changed[d]) for d in LEFT_DATASETS])
    by_record = _moved_keys(left_new, pa.concat_tables([left_rows(d, gone[d]) for d in LEFT_DATASETS]), settings)
    left_moved_new = _with_keys(left_new, by_record)
    touched_left = set()
    for d in LEFT_DATASETS:
        for t in (changed[d], gone[d]):
            if t.num_rows:
                touched_left |= set(left_record_keys(d, t).to_pylist())
    left_keys_now = set(left_new[KEY].to_pylist())
    left_deletes = touched_left - left_keys_now
    refs[LEFT] = _commit(paths[LEFT], left_moved_new, left_deletes, run_id=run_id, full=False)
    seconds = {"changes": round(t1 - t0, 3), "state": round(time.monotonic() - t1, 3)}
    # which left records to relink
    t2 = time.monotonic()
    previous_links = zones.ref(paths[LINKS], zones.version(paths[LINKS]) or 0)
    with session(settings, purpose="link-state") as con:
        zones.register(con, "person_left", refs[LEFT])
        by_registry = dirty_by_registry(con, reg_change)
        by_id = dirty_by_registry(con, reg_change, ID_KEYS)
        # a record that shares only a blocking key with changed citizens keeps its link unless one of them
        # was its best or runner-up, or now scores at least as high as its runner-up (`_unmoved`)
        unmoved = _unmoved(con, by_registry - by_record - by_id - left_deletes, previous_links,
                           reg_moved_new, set(reg_change[KEY].to_pylist()) | reg_deletes, models, bands, settings)
        dirty = (by_record | by_registry) - left_deletes - unmoved
        con.register("dirty_keys", pa.table({KEY: pa.array(sorted(dirty), pa.string())}))
        left = con.execute(f"SELECT * FROM person_left WHERE {KEY} IN (SELECT {KEY} FROM dirty_keys) ORDER BY {KEY}"
                           ).fetch_arrow_table().cast(LEFT_SCHEMA)
    seconds["dirty"] = round(time.monotonic() - t2, 3)
    counts = {"changed": {n: changed[n].num_rows for n in PERSON_INPUTS},
              "gone": {n: gone[n].num_rows for n in PERSON_INPUTS},
              "registry_upserts": reg_moved_new.num_rows, "registry_deletes": len(reg_deletes),
              "registry_keys_moved": len(reg_keys),
              "left_upserts": left_moved_new.num_rows, "left_deletes": len(left_deletes),
              "relinked": len(dirty), "relinked_by_registry_change": len(by_registry - by_record - unmoved),
              "kept_after_prescoring": len(unmoved)}
    return Prepared(refs, previous_links, left, left_deletes, counts, seconds, model_ids, t0)


def prepare_full(integrated_dir: Path, inputs: dict[str, str], models: dict[str, LinkModel | None], *,
                 run_id: str, reason: str, settings: Settings) -> tuple[Prepared, dict[str, LinkModel]]:
    """A full relink up to the linking, for province tasks to link (`linkwork`): the registry and the left
    records committed whole from the staged versions `inputs`, every left record to relink. A link type
    with no model in `models` gets one trained here on the whole data (`partitions.train_missing`, what
    linking everything at once trains), never by a province; returns the Prepared and the models trained
    (for the caller to persist: the province tasks link with the persisted ones).

    A run that dies before `finish` commits the links is relinked whole by the next run: the reason this one
    relinks everything still holds then (no earlier reconciliation, another model, a base gone), as for
    `update`'s own full relink; a model persisted before the kill is then the one it links with."""
    t0 = time.monotonic()
    paths = {name: table_path(integrated_dir, name) for name in (REGISTRY, LEFT, LINKS)}
    refs, n = {}, {}
    for name, batches, schema in ((REGISTRY, registry_batches(inputs), REGISTRY_SCHEMA),
                                  (LEFT, left_batches(inputs), LEFT_SCHEMA)):
        refs[name], n[name] = _commit_whole(paths[name], batches, schema, run_id=run_id)
    seconds = {"prepare": round(time.monotonic() - t0, 3)}
    t1 = time.monotonic()
    complete = dict(models)
    if any(models.get(t) is None for t in LEFT_DATASETS.values()):
        # a first run trains on the whole data, the records read whole (in `_key` order, as linking at once
        # reads them); the plan of a model change or of a base gone holds one batch at a time
        left = pa.concat_tables([LEFT_SCHEMA.empty_table(), *sorted_batches(refs[LEFT], LEFT_SCHEMA, settings)])
        complete = partitions.train_missing(left, refs[REGISTRY], settings, models, LEFT_DATASETS)
        del left
    trained = {t: m for t, m in complete.items() if m is not None and models.get(t) is None}
    seconds["train"] = round(time.monotonic() - t1, 3)
    previous = zones.ref(paths[LINKS], v) if (v := zones.version(paths[LINKS])) is not None else None
    counts = {"registry": n[REGISTRY], "left": n[LEFT], "relinked": n[LEFT], "trained": sorted(trained),
              "reason": reason}
    prepared = Prepared(refs, previous, None, set(), counts, seconds,
                        {t: m.model_id for t, m in complete.items() if m is not None}, t0, full=True)
    return prepared, trained


def finish(integrated_dir: Path, prepared: Prepared, links: pa.Table, used: dict[str, LinkModel],
           link_counts: dict[str, Any], *, run_id: str, settings: Settings, link_seconds: float) -> Update:
    """Commit the relinked records' links (and drop the links of the left records gone): the update done."""
    links_path = table_path(integrated_dir, LINKS)
    refs = dict(prepared.refs)
    seconds = {**prepared.seconds, "link": round(link_seconds, 3)}
    if prepared.full:
        refs[LINKS] = _commit(links_path, links, set(), run_id=run_id, full=True)
        seconds["total"] = round(time.monotonic() - prepared.t0, 3)
        counts = {**prepared.counts, "links": link_counts}
        log.info("link state (full, %s): %d left records relinked against %d citizens in %.1f s",
                 counts["reason"], counts["relinked"], counts["registry"], seconds["total"])
        return Update("full", refs, counts, seconds, {t: m.model_id for t, m in used.items()} | prepared.model_ids)
    assert prepared.previous_links is not None
    changed_links = links_changed(prepared.previous_links, links, prepared.left_deletes, settings)
    refs[LINKS] = _commit(links_path, links, prepared.left_deletes, run_id=run_id, full=False)
    seconds["total"] = round(time.monotonic() - prepared.t0, 3)
    counts = {**prepared.counts, "links_changed": changed_links, "links": link_counts}
    log.info("link state (change): %d citizens and %d left records changed; relinked %d left records (%d for a "
             "registry change) in %.1f s", counts["registry_upserts"] + counts["registry_deletes"],
             counts["left_upserts"] + counts["left_deletes"], counts["relinked"],
             counts["relinked_by_registry_change"], seconds["total"])
    return Update("change", refs, counts, seconds, {t: m.model_id for t, m in used.items()} | prepared.model_ids)


LINK_OUTCOME = ("right_id", "method", "band")  # what a consumer sees of a link (the score may move a little)


def links_changed(previous: str, relinked: pa.Table, deleted: set[str], settings: Settings | None) -> dict[str, int]:
    """How the relinked records' links differ from the links the state held: new (no link before), removed
    (the record is gone), changed (another citizen, method or band), same. Only `changed`, `new` and
    `removed` are links a consumer sees move."""
    with session(settings, purpose="link-state") as con:
        zones.register(con, "before", previous)
        con.register("after", relinked.select([KEY, *LINK_OUTCOME]))
        con.register("gone", pa.table({KEY: pa.array(sorted(deleted), pa.string())}))
        same = " AND ".join(f"b.{c} IS NOT DISTINCT FROM a.{c}" for c in LINK_OUTCOME)
        row = con.execute(f"""
            SELECT count(*) FILTER (WHERE b.{KEY} IS NULL),
                   count(*) FILTER (WHERE b.{KEY} IS NOT NULL AND NOT ({same})),
                   count(*) FILTER (WHERE b.{KEY} IS NOT NULL AND {same}),
                   (SELECT count(*) FROM before WHERE {KEY} IN (SELECT {KEY} FROM gone))
            FROM after a LEFT JOIN before b USING ({KEY})""").fetchone() or (0, 0, 0, 0)
    return {"new": int(row[0]), "changed": int(row[1]), "same": int(row[2]), "removed": int(row[3])}


def _full_reason(paths: dict[str, Path], bases: dict[str, list[str]] | None, models: dict[str, LinkModel | None],
                 state_models: dict[str, str] | None, model_ids: dict[str, str]) -> str | None:
    if bases is None:
        return "no earlier reconciliation"
    if not all(zones.is_table(p) for p in paths.values()):
        return "no link state yet"
    if any(models.get(t) is None for t in LEFT_DATASETS.values()):
        return "a link type has no persisted model"
    if (state_models or {}) != model_ids:
        return f"the models differ from the ones the state was linked with ({state_models} -> {model_ids})"
    for name in PERSON_INPUTS:
        if not bases.get(name):
            return f"no base version of {name}"
        for base in bases[name]:
            if not zones.readable(base):
                return f"staged version {base} is gone"
    return None


def _full(paths: dict[str, Path], inputs: dict[str, str], models: dict[str, LinkModel | None], *, run_id: str,
          settings: Settings, bands: LinkBands, t0: float, reason: str) -> Update:
    registry = whole_registry(inputs)
    left = whole_left(inputs)
    n_registry = registry.num_rows
    t1 = time.monotonic()
    if settings.linkage_partitions == "province":
        # Linked from the registry's committed version, one partition's candidates at a time (the table is
        # let go first). A run that dies before its links are committed is relinked whole by the next run:
        # the reason this one relinks everything still holds then.
        registry_ref = _commit(paths[REGISTRY], registry, set(), run_id=run_id, full=True)
        del registry
        t1 = time.monotonic()
        links, used, link_counts = _link_partitioned(left, registry_ref, inputs, bands, settings, models)
        t2 = time.monotonic()
    else:
        links, used, link_counts = link_rows(left, registry, bands, settings, models)
        t2 = time.monotonic()
        registry_ref = _commit(paths[REGISTRY], registry, set(), run_id=run_id, full=True)
    refs = {REGISTRY: registry_ref,
            LEFT: _commit(paths[LEFT], left, set(), run_id=run_id, full=True),
            LINKS: _commit(paths[LINKS], links, set(), run_id=run_id, full=True)}
    trained = sorted(t for t in used if models.get(t) is None)
    counts = {"registry": n_registry, "left": left.num_rows, "relinked": left.num_rows, "links": link_counts,
              "trained": trained, "reason": reason}
    seconds = {"prepare": round(t1 - t0, 3), "link": round(t2 - t1, 3), "total": round(time.monotonic() - t0, 3)}
    return Update("full", refs, counts, seconds, {t: m.model_id for t, m in used.items()},
                  trained={t: used[t] for t in trained})
