"""The ID-less holder pass (`idless`) as persistent state, brought up to date by re-judging only what changed.

Owns one Delta table under `<integrated>/_state/idless_holder` (through `lienthong.zones`), replaced whole by
one commit per run (it is small: one row per ID-less holder, per citizen in a duplicate cluster and per model
link of an ID-less holder), holding everything the pass's result was computed from besides the registry:

- kind `holder`: every ID-less holder's left row (`idless.INPUT_SCHEMA`: its person shape, province and
  parcels' communes) with its result: its `idless.link_idless` link (`link_*`, null when it has no candidate)
  and, when that link is a review, its candidate list;
- kind `duplicate`: the citizen duplicate clusters the result was computed with (`record_key`,
  `survivor_key`, as `dedupe.citizen_duplicates` gives them);
- kind `model`: the model's links of the ID-less holders the gate read (`model_left_id`, `model_right_id`,
  `model_score`).

The commit names the staged citizen version the state reflects (`lienthong.idless.citizen`) and a
fingerprint of the rules (`lienthong.idless.rules`: the source of the modules that make the person shape, the
places and the rule, the review band, `address`).

Why carrying a row over equals the whole computation. A holder's result (`idless.link_idless`) is a function
of its own left row, of the citizens sharing its key (folded name + birth year in its province; folded name
in one of its parcels' communes or at its address's commune), of the duplicate clusters of those citizens
and of the model's link rows for that holder (and the cluster of the model's citizen), nothing else: every
SQL step joins on those keys and aggregates per holder. A run (`update`) re-judges:

1. holders whose left row is not held whole in the state, and held holders that are no longer ID-less
   (the left rows are computed for every ID-less holder each run, from the certificates and parcels of those
   holders only, `current_inputs`: this catches a renamed or moved holder, a certificate or parcel that
   changed, a holder that lost or gained a document number, without comparing staged versions);
2. holders whose model link rows differ from the state's (a relink, another model);
3. holders sharing a key (`idless.dirty_keys` / `holders_to_relink`) with a citizen whose staged row changed
   (its old AND its new values: a move or a rename touches both places), or whose duplicate cluster changed
   (a row of the clusters not held whole on the other side), and holders whose model's citizen is one of
   those;

against the current registry restricted to the citizens sharing a name with them (both rules join on the
folded name first); every other holder's row is carried over. The output is sorted by `left_id`, as the
whole computation's.

What "changed" is measured against, for the citizens (the one input not held in the state: 2M rows): as
`linkstate`, the staged versions of the last successful reconciliation AND of every reconciliation started
after it that did not finish (`bases`): a row differs when it differs from ANY of them (`linkstate._changes`,
on `_merge_key` and `_record_hash`). The state must also name, as the citizen version it reflects, one of
those bases; a run killed after committing the state left the state naming its own inputs, which the ledger
lists among the next run's bases (runs started and not finished), so the next run's change covers whatever
the killed run had seen; a run killed before the commit left the older state, whose version is a base too.
The holders' side, the clusters and the model links are compared with what the state holds, which is what
its rows were computed from, so no base is needed for them (nor does a change of model need a mode of its
own: every differing model link is a re-judged holder). The commit is one Delta commit through `zones`: the
state is never half-written.

Whole computation (mode `full`) when there is no state, the state names no citizen version or one outside
`bases`, a base is unreadable (vacuumed), or the rules' fingerprint changed. With `bases` None (a relink, the
first run, a caller outside the ledger: `reconcile_tables`, the rebuild check) the pass is computed whole and
the state is left as it is (`write=False`): it still names what it reflects, so it cannot be misread.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import idless, stagedchange
from lienthong.reconcile.linkstate import STATE_DIR
from lienthong.reconcile.people import LINK_SCHEMA, LinkBands
from lienthong.settings import Settings
from lienthong.standardize.common import distinct
from lienthong.standardize.text import fold_key

log = logging.getLogger(__name__)

STATE = "idless_holder"
HOLDER, DUPLICATE, MODEL = "holder", "duplicate", "model"
CITIZEN_PROPERTY, RULES_PROPERTY = "lienthong.idless.citizen", "lienthong.idless.rules"

LINK_FIELDS = [pa.field(f"link_{f.name}", f.type) for f in LINK_SCHEMA]
STATE_SCHEMA = pa.schema([
    pa.field("kind", pa.string()),
    *idless.INPUT_SCHEMA,
    *LINK_FIELDS,
    pa.field("candidates", pa.list_(pa.string())),
    pa.field("record_key", pa.string()),
    pa.field("survivor_key", pa.string()),
    pa.field("model_left_id", pa.string()),
    pa.field("model_right_id", pa.string()),
    pa.field("model_score", pa.float64()),
])
INPUT_COLUMNS = idless.INPUT_SCHEMA.names
MODEL_COLUMNS = ["left_id", "right_id", "score"]


def table_path(integrated_dir: Path) -> Path:
    return Path(integrated_dir) / STATE_DIR / STATE


@dataclass
class Result:
    """The pass's result (as `idless.link_idless` returns it), the left rows (every ID-less holder) and what
    the update did."""

    links: pa.Table
    review: pa.Table
    left: pa.Table
    mode: str  # full | change | whole (computed whole, state untouched)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ref: str | None = None


# --- the rules' fingerprint -----------------------------------------------------------------------------


def rules_fingerprint(bands: LinkBands, address: bool = True) -> str:
    """sha256 (16 hex) of the source of every module the pass's result depends on (the person shape and its
    folding, the places and the administrative units, the rule, this module) with the review band and
    `address`: any change there makes the next run compute the pass whole."""
    import lienthong.adminunits
    import lienthong.reconcile.people
    import lienthong.reconcile.sources
    import lienthong.standardize.common
    import lienthong.standardize.text

    h = hashlib.sha256()
    for module in (lienthong.adminunits, lienthong.reconcile.people, lienthong.reconcile.sources,
                   lienthong.standardize.common, lienthong.standardize.text, idless):
        h.update(Path(str(module.__file__)).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(f"review={float(bands.review)!r};address={address}".encode())
    return h.hexdigest()[:16]


# --- the inputs -----------------------------------------------------------------------------------------


def current_inputs(person_holders: pa.Table, certificates: pa.Table, parcels: pa.Table, *,
                   settings: Settings | None = None) -> pa.Table:
    """`idless.idless_inputs` of the ID-less holders among `person_holders` (same rows, same order), read from
    the certificates of those holders and the parcels of those certificates only."""
    holders = idless.idless_holders(person_holders)
    with session(settings, purpose="idless-state") as con:
        con.register("k", holders.select(["province_code", "holder_id"]))
        con.register("c_in", certificates.select(["province_code", "holder_id", "parcel_id", "deleted"]))
        con.register("p_in", parcels.select(["province_code", "parcel_id", "commune_code_original",
                                             "commune_code_2025", "deleted"]))
        certs = con.execute("SELECT * FROM c_in SEMI JOIN k USING (province_code, holder_id)").fetch_arrow_table()
        con.register("c", certs)
        own = con.execute("SELECT * FROM p_in SEMI JOIN c USING (province_code, parcel_id)").fetch_arrow_table()
    return idless.idless_inputs(holders, certs, own, settings=settings)


# The citizens as the pass takes them: a table, or a function that reads them a batch at a time (what the
# reconciliation gives: its session's citizen table, so the whole table is never held in Python).
Citizens: TypeAlias = pa.Table | Callable[[], pa.RecordBatchReader]

CITIZEN_BATCH_ROWS = 200_000


def _citizen_reader(citizens: Citizens) -> pa.RecordBatchReader:
    if isinstance(citizens, pa.Table):
        return citizens.to_reader(max_chunksize=CITIZEN_BATCH_ROWS)
    return citizens()


def citizen_rows(citizens: Citizens, keep: Callable[[pa.Table], pa.Array | pa.ChunkedArray]) -> pa.Table:
    """The rows of `citizens` that `keep` (a mask over a batch, as a table) holds, in their order, one batch
    at a time: only the kept rows are held."""
    reader = _citizen_reader(citizens)
    parts = []
    for batch in reader:
        part = pa.Table.from_batches([batch])
        parts.append(part.filter(keep(part)))
    return pa.concat_tables([reader.schema.empty_table(), *parts])


def _citizen_schema(citizens: Citizens) -> pa.Schema:
    if isinstance(citizens, pa.Table):
        return citizens.schema
    reader = citizens()
    schema = reader.schema
    reader.close()
    return schema


def namesakes(citizens: Citizens, names: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The citizens whose folded full name is one of `names` (their rows as given, in their order): the name is
    folded once per distinct name of a batch, never per row."""
    wanted = pa.array(sorted({n for n in pa.chunked_array([names]).to_pylist() if n is not None}), pa.string())

    def keep(part: pa.Table) -> pa.Array:
        dictionary, indices = distinct(part["full_name"])
        hit = pc.indices_nonzero(pc.fill_null(pc.is_in(fold_key(dictionary), value_set=wanted), False))
        return pc.fill_null(pc.is_in(indices, value_set=hit.cast(indices.type)), False)

    return citizen_rows(citizens, keep)


def candidates(citizens: Citizens, left: pa.Table) -> pa.Table:
    """The citizens (rows as given, in their order) that can pair with a holder of `left` (`INPUT_SCHEMA`):
    of the same folded name and, for a holder with a birth year, of that birth year and province (the pairs
    `idless.link_idless` makes join on exactly these); every namesake of a holder without one."""
    names = namesakes(citizens, left["name_fold"])
    if names.num_rows == 0:
        return names
    year = pc.cast(pc.year(pc.cast(names["birth_date"], pa.date32())), pa.int32())
    province, _ = idless.commune_places(names["residence_commune_code"], names["residence_commune_code_2025"])
    fold = fold_key(names["full_name"])

    def key(*columns: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pc.binary_join_element_wise(*[pc.cast(c, pa.string()) for c in columns], "\x1f")

    with_year = pc.is_valid(left["birth_year"])
    dated = left.filter(with_year)
    undated = left.filter(pc.invert(with_year))
    keep = pc.or_(
        pc.fill_null(pc.is_in(fold, value_set=undated["name_fold"].combine_chunks()), False),
        pc.fill_null(pc.is_in(key(fold, year, province), value_set=key(
            dated["name_fold"], dated["birth_year"], dated["province_code"]).combine_chunks()), False))
    return names.filter(keep)


def citizen_changes(con: Any, bases: list[str], new: str, schema: pa.Schema) -> tuple[pa.Table, pa.Table]:
    """(rows of staged citizen version `new` that differ from at least one base version, rows of any base not
    in `new`), on `_merge_key` and `_record_hash` as `linkstate._changes`, with `schema`'s columns only: the
    keys are found first (`stagedchange.differing_keys`), then only the rows of changed keys are read."""
    if not bases:
        return schema.empty_table(), schema.empty_table()
    zones.register(con, "cz_new", new)
    for i, base in enumerate(bases):
        zones.register(con, f"cz_b{i}", base)
    stagedchange.differing_keys(con, new, bases, new_view="cz_new", base_views=[f"cz_b{i}" for i in range(len(bases))],
                                target="cz_keys")
    cols = ", ".join(f'"{c}"' for c in schema.names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE cz_rows AS SELECT {cols}, _merge_key, _record_hash FROM cz_new
                    WHERE _merge_key IN (SELECT _merge_key FROM cz_keys)""")
    # every base's row of a changed key that the new version does not hold (by key and hash)
    olds = " UNION ".join(f"""SELECT * FROM (SELECT {cols}, _merge_key, _record_hash FROM cz_b{i}
                                            WHERE _merge_key IN (SELECT _merge_key FROM cz_keys)) b
                              ANTI JOIN cz_rows n USING (_merge_key, _record_hash)""" for i in range(len(bases)))
    new_rows = con.execute(f"SELECT {cols} FROM cz_rows").fetch_arrow_table()
    old_rows = con.execute(f"SELECT {cols} FROM ({olds})").fetch_arrow_table()
    return new_rows.cast(schema), old_rows.cast(schema)


def _moved_ids(new: pa.Table, old: pa.Table, settings: Settings | None) -> set[str]:
    """Citizen ids with a registry shape (`idless.REGISTRY_SCHEMA`) on one side that the other side does not
    hold whole."""
    if new.num_rows == 0 or old.num_rows == 0:
        return set(new["unique_id"].to_pylist()) | set(old["unique_id"].to_pylist())
    with session(settings, purpose="idless-state") as con:
        con.register("n", new)
        con.register("o", old.cast(new.schema))
        cols = ", ".join(f'"{c}"' for c in new.column_names)
        found = con.execute(f"""SELECT unique_id FROM (SELECT {cols} FROM n EXCEPT SELECT {cols} FROM o)
                                UNION SELECT unique_id FROM (SELECT {cols} FROM o EXCEPT SELECT {cols} FROM n)
                             """).fetchall()
    return {r[0] for r in found}


# --- the state ------------------------------------------------------------------------------------------


def _state_rows(left: pa.Table, links: pa.Table, review: pa.Table, duplicates: pa.Table | None,
                model_links: pa.Table, settings: Settings | None) -> pa.Table:
    """The state's rows (`STATE_SCHEMA`) of a result."""
    with session(settings, purpose="idless-state") as con:
        con.register("l", left.select(INPUT_COLUMNS))
        con.register("k", links.select(LINK_SCHEMA.names))
        con.register("v", review.select(["left_id", "candidates"]))
        con.register("d", (duplicates if duplicates is not None else pa.table(
            {"record_key": pa.array([], pa.string()), "survivor_key": pa.array([], pa.string())}))
            .select(["record_key", "survivor_key"]))
        con.register("m", model_links.select(MODEL_COLUMNS))
        link_cols = ", ".join(f"k.{f.name} AS link_{f.name}" for f in LINK_SCHEMA)
        holders = con.execute(f"""
            SELECT '{HOLDER}' AS kind, l.*, {link_cols}, v.candidates
            FROM l LEFT JOIN k ON k.left_id = l.unique_id LEFT JOIN v ON v.left_id = l.unique_id
            ORDER BY l.unique_id""").fetch_arrow_table()
        dups = con.execute(f"SELECT '{DUPLICATE}' AS kind, record_key, survivor_key FROM d "
                           "ORDER BY record_key, survivor_key").fetch_arrow_table()
        models = con.execute(f"""SELECT '{MODEL}' AS kind, left_id AS model_left_id, right_id AS model_right_id,
                                        score AS model_score FROM m ORDER BY ALL""").fetch_arrow_table()
    parts = [_conform(t) for t in (holders, dups, models)]
    return pa.concat_tables(parts)


def _conform(table: pa.Table) -> pa.Table:
    arrays = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in STATE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=STATE_SCHEMA)


def _result_of(holders: pa.Table, settings: Settings | None) -> tuple[pa.Table, pa.Table]:
    """(links, review) held by state rows of kind `holder`, in `left_id` order."""
    with session(settings, purpose="idless-state") as con:
        con.register("h", holders)
        links = con.execute(f"""SELECT {", ".join(f"link_{f.name} AS {f.name}" for f in LINK_SCHEMA)} FROM h
                                WHERE link_left_id IS NOT NULL ORDER BY link_left_id""").fetch_arrow_table()
        review = con.execute("""SELECT link_left_id AS left_id, candidates FROM h
                                WHERE link_left_id IS NOT NULL AND link_band <> 'accept'
                                ORDER BY link_left_id""").fetch_arrow_table()
    return links.cast(LINK_SCHEMA), review.cast(idless.CANDIDATE_SCHEMA)


def _commit_property(path: Path, name: str) -> str | None:
    for commit in zones.open_table(path).history(50):
        if commit.get(name):
            return str(commit[name])
    return None


def _full_reason(path: Path, citizen_ref: str | None, bases: list[str], fingerprint: str) -> str | None:
    if citizen_ref is None:
        return "the citizens are not a staged version"
    if not zones.is_table(path):
        return "no ID-less holder state yet"
    held = _commit_property(path, CITIZEN_PROPERTY)
    if held is None:
        return "the state names no citizen version"
    if _commit_property(path, RULES_PROPERTY) != fingerprint:
        return "the rules changed since the state was computed"
    if held not in bases:
        return f"the state reflects {held}, not one of the bases"
    for base in bases:
        if not zones.readable(base):
            return f"staged version {base} is gone"
    return None


# --- the update -----------------------------------------------------------------------------------------


def _link(left: pa.Table, namesakes: pa.Table, bands: LinkBands, model_links: pa.Table,
          duplicates: pa.Table | None, settings: Settings | None) -> tuple[pa.Table, pa.Table]:
    """The pass over holders `left` against `namesakes`, the citizens that can pair with one of them
    (`candidates`). Every pair `idless.link_idless` makes joins on the folded name (and, for a holder with a
    birth year, on that year and province), so the other citizens change nothing; the registry's person shape
    and places are made for these citizens only, not for the whole country."""
    return idless.link_idless(left, idless.registry_with_places(namesakes), bands, model_links=model_links,
                              duplicates=duplicates, settings=settings)


def update(
    integrated_dir: Path,
    *,
    person_holders: pa.Table,
    certificates: pa.Table,
    parcels: pa.Table,
    citizens: Citizens,
    model_links: pa.Table,
    duplicates: pa.Table | None,
    citizen_ref: str | None,
    bases: list[str] | None,
    bands: LinkBands,
    settings: Settings,
    run_id: str,
) -> Result:
    """The ID-less holder pass over the current inputs, from the state where it can be (module docstring).

    `person_holders`, `certificates`, `parcels`, `citizens`, `model_links` (the model's holder links) and
    `duplicates` (`dedupe.citizen_duplicates`) are the current inputs, as `idless.link_idless` takes them;
    `citizens` may be a function that reads them a batch at a time (`Citizens`), read once or twice.
    `citizen_ref` is the staged citizen version `citizens` holds (None: not a staged version), `bases` the
    staged citizen versions the state may reflect; None: compute whole and leave the state as it is."""
    t0 = time.monotonic()
    path = table_path(integrated_dir)
    left = current_inputs(person_holders, certificates, parcels, settings=settings)
    ids = left["unique_id"].combine_chunks()
    model = model_links.filter(pc.fill_null(pc.is_in(model_links["left_id"], value_set=ids), False)) \
        .select(MODEL_COLUMNS)
    seconds = {"inputs": round(time.monotonic() - t0, 3)}
    fingerprint = rules_fingerprint(bands)
    reason = "no bases (not a ledger run)" if bases is None else _full_reason(path, citizen_ref, bases, fingerprint)
    if reason:
        t1 = time.monotonic()
        links, review = _link(left, candidates(citizens, left), bands, model, duplicates, settings)
        seconds["link"] = round(time.monotonic() - t1, 3)
        mode, counts = ("whole" if bases is None else "full"), {"reason": reason, "relinked": left.num_rows}
        if bases is None:
            log.info("idless: computed whole (%s)", reason)
            seconds["total"] = round(time.monotonic() - t0, 3)
            return Result(links, review, left, mode, counts, seconds)
        log.info("idless: computing every ID-less holder (%s)", reason)
    else:
        assert bases is not None and citizen_ref is not None
        links, review, counts = _change(path, left, citizens, model, duplicates, citizen_ref, bases, bands,
                                        settings, seconds)
        mode = "change"
    t2 = time.monotonic()
    rows = _state_rows(left, links, review, duplicates, model, settings)
    commit = zones.create(path, rows, run_id=run_id, metadata={
        "lienthong.mode": mode, CITIZEN_PROPERTY: str(citizen_ref), RULES_PROPERTY: fingerprint})
    version = commit.version if commit.version is not None else zones.version(path)
    seconds["state"] = round(time.monotonic() - t2, 3)
    seconds["total"] = round(time.monotonic() - t0, 3)
    return Result(links, review, left, mode, counts, seconds, zones.ref(path, version or 0))


def _change(path: Path, left: pa.Table, citizens: Citizens, model: pa.Table, duplicates: pa.Table | None,
            citizen_ref: str, bases: list[str], bands: LinkBands, settings: Settings,
            seconds: dict[str, float]) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    t0 = time.monotonic()
    state = zones.read_table(path).select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    dups = duplicates.select(["record_key", "survivor_key"]) if duplicates is not None else pa.table(
        {"record_key": pa.array([], pa.string()), "survivor_key": pa.array([], pa.string())})
    with session(settings, purpose="idless-state") as con:
        con.register("s", state)
        con.register("l", left.select(INPUT_COLUMNS))
        con.register("m", model)
        con.register("d", dups)
        cols = ", ".join(f'"{c}"' for c in INPUT_COLUMNS)
        # 1. holders whose left row is not held whole (new, changed) or held but gone
        by_record = {r[0] for r in con.execute(f"""
            SELECT unique_id FROM (SELECT {cols} FROM l EXCEPT SELECT {cols} FROM s WHERE kind = '{HOLDER}')
            UNION SELECT unique_id FROM (SELECT {cols} FROM s WHERE kind = '{HOLDER}' EXCEPT SELECT {cols} FROM l)
        """).fetchall()}
        # 2. holders whose model link rows differ
        by_model = {r[0] for r in con.execute(f"""
            SELECT left_id FROM (SELECT left_id, right_id, score FROM m
                                 EXCEPT SELECT model_left_id, model_right_id, model_score FROM s WHERE kind = '{MODEL}')
            UNION
            SELECT model_left_id FROM (SELECT model_left_id, model_right_id, model_score FROM s WHERE kind = '{MODEL}'
                                       EXCEPT SELECT left_id, right_id, score FROM m)""").fetchall()}
        # 3a. citizens whose duplicate cluster changed, and the holders whose model's citizen is one of them
        dup_changed = {r[0] for r in con.execute(f"""
            SELECT record_key FROM (SELECT record_key, survivor_key FROM d
                                    EXCEPT SELECT record_key, survivor_key FROM s WHERE kind = '{DUPLICATE}')
            UNION
            SELECT record_key FROM (SELECT record_key, survivor_key FROM s WHERE kind = '{DUPLICATE}'
                                    EXCEPT SELECT record_key, survivor_key FROM d)""").fetchall()}
        con.register("dc", pa.table({"id": pa.array(sorted(dup_changed), pa.string())}))
        by_model_dup = {r[0] for r in con.execute(f"""
            SELECT left_id FROM m WHERE right_id IN (SELECT id FROM dc)
            UNION SELECT model_left_id FROM s WHERE kind = '{MODEL}' AND model_right_id IN (SELECT id FROM dc)
        """).fetchall()}
        # 3b. the citizens whose staged row changed since any base: old and new rows
        changed, gone = citizen_changes(con, bases, citizen_ref, _citizen_schema(citizens))
    seconds["compare"] = round(time.monotonic() - t0, 3)
    t1 = time.monotonic()
    # A citizen whose row changed only in what the pass does not read (an update time, a status) moves no
    # key: only citizens with a registry shape that is new or gone touch holders, with every version of them
    # (the new one and each base's: the state may reflect any base).
    new_shapes, old_shapes = idless.registry_with_places(changed), idless.registry_with_places(gone)
    moved = _moved_ids(new_shapes, old_shapes, settings) | dup_changed
    touched = [t.filter(pc.is_in(t["unique_id"], value_set=pa.array(sorted(moved), pa.string())))
               for t in (new_shapes, old_shapes)]
    if dup_changed:
        ids = pa.array(sorted(dup_changed), pa.string())
        touched.append(idless.registry_with_places(citizen_rows(
            citizens, lambda part: pc.is_in(part["citizen_id"], value_set=ids))))
    by_registry: set[str] = set()
    records = pa.concat_tables(touched)
    if records.num_rows:
        by_registry = set(idless.holders_to_relink(left, idless.dirty_keys(records, settings=settings),
                                                   settings=settings).to_pylist())
    now = set(left["unique_id"].to_pylist())
    relink = (by_record | by_model | by_model_dup | by_registry) & now
    seconds["dirty"] = round(time.monotonic() - t1, 3)
    t2 = time.monotonic()
    keep = pa.array(sorted(relink), pa.string())
    dirty_left = left.filter(pc.is_in(left["unique_id"], value_set=keep))
    registry = candidates(citizens, dirty_left)
    new_links, new_review = _link(dirty_left, registry, bands,
                                  model.filter(pc.is_in(model["left_id"], value_set=keep)), duplicates, settings)
    seconds["link"] = round(time.monotonic() - t2, 3)
    held = state.filter(pc.equal(state["kind"], HOLDER))
    carried = held.filter(pc.invert(pc.is_in(held["unique_id"], value_set=keep)))
    carried = carried.filter(pc.is_in(carried["unique_id"], value_set=left["unique_id"].combine_chunks()))
    old_links, old_review = _result_of(carried, settings)
    with session(settings, purpose="idless-state") as con:
        con.register("a", pa.concat_tables([old_links, new_links.cast(LINK_SCHEMA)]))
        con.register("b", pa.concat_tables([old_review, new_review.cast(idless.CANDIDATE_SCHEMA)]))
        links = con.execute("SELECT * FROM a ORDER BY left_id").fetch_arrow_table().cast(LINK_SCHEMA)
        review = con.execute("SELECT * FROM b ORDER BY left_id").fetch_arrow_table().cast(idless.CANDIDATE_SCHEMA)
    counts = {"holders": left.num_rows, "relinked": len(relink), "by_record": len(by_record & now),
              "by_model": len(by_model & now), "by_duplicates": len(by_model_dup & now),
              "by_registry": len(by_registry), "citizens_changed": changed.num_rows, "citizens_gone": gone.num_rows,
              "duplicates_changed": len(dup_changed), "namesakes": registry.num_rows}
    log.info("idless (change): %d of %d ID-less holders re-judged (%d by their own rows, %d by the model, %d by "
             "a citizen's key, %d by a duplicate cluster)", len(relink), left.num_rows, counts["by_record"],
             counts["by_model"], counts["by_registry"], counts["by_duplicates"])
    return links, review, counts
