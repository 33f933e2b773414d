"""Person linkage one partition (province) at a time, with the links of linking everything at once.

Owns three things of the national-scale person linkage (`LIENTHONG_LINKAGE_PARTITIONS=province`):

- the partition of a left person record (`partition_of`): the 2025 province it belongs to, or `UNKNOWN`;
- the registry records a partition can link to (`candidates`): the rows of the registry's Delta version that
  share at least one candidate key (`people.CANDIDATE_KEYS`: the exact passes' IDs and the model's blocking
  keys, the same SQL expressions and the same equality, so a null key shares nothing) with one of the
  partition's records, selected in DuckDB (the registry is scanned there, never read whole into Python);
- linking partition by partition (`link_partitioned`): each partition's left records against its candidates
  only (in parts of a bounded number of candidates, `candidate_parts`), with the link of the caller
  (`linkstate.link_rows`), the counts summed.

Why the links are the same: with a given model (parameters and frozen name frequencies) the link of a left
record is a function of that record and of the registry records sharing one of its candidate keys
(`lienthong.reconcile.linkstate` relies on the same fact); a partition's candidates hold all of those for
every one of its records, and the other registry rows could not have been paired with them. A link type
without a model is trained once, on all its left records against the whole registry, exactly as linking
everything at once trains it (`people.train`), then scores every partition: a model per partition would
give other links.

Memory: one partition at a time holds its left records, its candidates and the Splink session scoring them;
only the key columns of the left records go into the candidate query, and the registry is scanned from its
Parquet files within the DuckDB session's limit. `link_partitioned` holds every left record it links; a
province task gives its records as a file (`LeftFile`) and holds one part's at a time (`link_partition`). A
partition's candidates are bounded by its records only as far as the keys are selective: a key with no place
in it (a name with a birth year or a street, the ID's last six digits) reaches registry rows anywhere in the
country, about (registry size / distinct values) of them per record, though only from the records the exact
passes leave (`benchmarks/bench_partitions.py` reports each key's reach, `benchmarks/bench_blocking.py` what
each finds). So the candidates of a province grow with the country, and a partition whose candidates (or
records) exceed `settings.link_candidate_rows` is linked in parts (`candidate_parts`): buckets of its records
by their folded name, each with the registry rows its own records reach, one at a time. A part's memory
follows the limit, not the size of the country; the time still grows with it (more namesakes to score).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lienthong import adminunits, zones
from lienthong.duck import session
from lienthong.reconcile.people import (
    BLOCKING_KEYS,
    CANDIDATE_KEYS,
    EXACT_KEYS,
    PERSON_COLUMNS,
    PERSON_SCHEMA,
    LinkBands,
    LinkModel,
    exact_pairs_sql,
    train,
)
from lienthong.settings import Settings

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the partition of the records with no province
KEY = "_key"  # the key of the link state's tables (`linkstate.KEY`): registry rows carry it, links are sorted by it
HEAD_OFFICE_SCHEMA = pa.schema([("enterprise_code", pa.string()), ("province", pa.string())])

# The linking of one set of left records against a registry table, as `linkstate.link_rows` does it:
# (left rows, registry rows, bands, settings, models by link type) -> (links, models used, counts by link type).
Link = Callable[[pa.Table, pa.Table, LinkBands, Settings, dict[str, LinkModel | None]],
                tuple[pa.Table, dict[str, LinkModel], dict[str, Any]]]


# --- which partition a left record belongs to ---------------------------------------------------------------


def partition_of(left: pa.Table, head_offices: pa.Table | None = None) -> pa.Array:
    """The partition of each left person record (rows with `dataset` and `unique_id`, as the link state's
    left rows): a 2025 province code, or `UNKNOWN`.

    - land_holder: the province of the land registry the row came from, its staged `province_code`, which
      is the first part of its unique id `<province_code>:<holder_id>` (`sources.holder_key`);
    - legal_representative: the province of its enterprise's head office (`head_offices`, from the staged
      enterprise table), by the enterprise code of its unique id `<enterprise_code>#<position>`. The staged
      representative rows carry no place of their own, so without `head_offices`, or for an enterprise with
      no known head office, the record goes to `UNKNOWN`.

    Which partition a record falls in never changes its link (see the module docstring), only which
    candidates are read together."""
    dataset = left["dataset"].combine_chunks()
    uid = left["unique_id"].combine_chunks()
    holder = pc.list_element(pc.split_pattern(uid, ":", max_splits=1), 0)
    is_holder = pc.and_(pc.equal(dataset, "land_holder"), pc.match_substring(uid, ":"))
    out = pc.if_else(is_holder, holder, pa.scalar(None, pa.string()))
    if head_offices is not None and head_offices.num_rows:
        code = pc.list_element(pc.split_pattern(uid, "#", max_splits=1), 0)
        at = pc.index_in(code, value_set=head_offices["enterprise_code"].combine_chunks())
        office = pc.take(head_offices["province"].combine_chunks(), at)
        out = pc.if_else(pc.equal(dataset, "legal_representative"), office, out)
    blank = pc.equal(pc.utf8_length(pc.fill_null(out, "")), 0)
    return pc.if_else(blank, pa.scalar(UNKNOWN), out)


@cache
def _province_of_commune() -> tuple[pa.Array, pa.Array]:
    """(2025 commune codes, their provinces)."""
    communes = adminunits.new_communes()
    codes = sorted(communes)
    return pa.array(codes, pa.string()), pa.array([communes[c].province_code for c in codes], pa.string())


def head_offices(enterprise_ref: str) -> pa.Table:
    """(enterprise_code, province) of every enterprise of the staged version `enterprise_ref` whose head office
    has a province (HEAD_OFFICE_SCHEMA): the 2025 province of its head office commune
    (`head_office_commune_code_2025`), else its `head_office_province_code` as sent (a record from before
    the 2025 reform may carry an old code: it only makes a partition of its own). Three columns are read."""
    t = zones.read_table(enterprise_ref, columns=["enterprise_code", "head_office_commune_code_2025",
                                                  "head_office_province_code"])
    codes, provinces = _province_of_commune()
    commune = t["head_office_commune_code_2025"].combine_chunks().cast(pa.string())
    of_commune = pc.take(provinces, pc.index_in(commune, value_set=codes))
    province = pc.coalesce(of_commune, t["head_office_province_code"].combine_chunks().cast(pa.string()))
    out = pa.table({"enterprise_code": t["enterprise_code"].combine_chunks().cast(pa.string()), "province": province},
                   schema=HEAD_OFFICE_SCHEMA)
    return out.filter(pc.is_valid(out["province"]))


# --- the registry records a partition can link to -----------------------------------------------------------


_COLUMN = re.compile(r"\b(" + "|".join(PERSON_COLUMNS) + r")\b")


def qualified(expression: str, alias: str) -> str:
    """A candidate key's expression over the person shape with each column qualified by `alias`
    (`substr(id_number, 1, 6)` -> `substr(l.id_number, 1, 6)`)."""
    return _COLUMN.sub(lambda m: f"{alias}.{m.group(1)}", expression)


def key_condition(key: tuple[str, ...], left: str = "l", right: str = "r") -> str:
    """SQL: rows `left` and `right` share candidate key `key` (every expression equal; a null is equal to
    nothing, as in the model's blocking and the exact passes' joins)."""
    return " AND ".join(f"{qualified(e, left)} = {qualified(e, right)}" for e in key)


# the columns the exact passes confirm a pair with (`people.exact_pairs_sql`)
_EXACT_CONFIRMS: tuple[tuple[str, ...], ...] = (("name_fold", "name_sorted", "birth_year"),)


def _key_columns(keys: tuple[tuple[str, ...], ...]) -> list[str]:
    """The person columns `keys` read, in the person shape's order."""
    used = {c for key in keys for e in key for c in _COLUMN.findall(e)}
    return [c for c in PERSON_COLUMNS if c in used]


def candidates(left: pa.Table, registry_ref: str, settings: Settings | None = None,
               keys: tuple[tuple[str, ...], ...] = CANDIDATE_KEYS) -> pa.Table:
    """The rows of the registry version `registry_ref` (the link state's `person_registry`: `_key` and the
    person shape) that a pair of `link_people` can reach from a record of `left` (person shape), in `_key`
    order: the rows sharing an ID of the exact passes (`people.EXACT_KEYS`) with any record, and the rows
    sharing a blocking key with a record the exact passes do not link (the model scores only those, so a
    record linked by its ID reaches nothing else). `keys` narrows which keys are looked at.

    In DuckDB: the exact passes' confirmed pairs (`people.exact_pairs_sql`, over the ID, name and birth
    columns only) mark the linked records; then per key a semi join of the registry (its `_key` and that
    key's columns only) with the key columns of the records it applies to (`key_condition`); the union of
    the keys found, then the rows of those keys. What is held is the left records' key columns and the
    candidates, never the registry (measured leaner than one scan testing every key at once)."""
    with session(settings, purpose="link-candidates") as con:
        _mark_exact(con, left, registry_ref, keys)
        con.execute(f"CREATE TEMP TABLE candidate_keys AS {_found_keys(keys)}")
        return _fetch(con, "candidate_keys")


def _found_keys(keys: tuple[tuple[str, ...], ...], part: bool = False) -> str:
    """SQL: the `_key` of every registry row a record of `left_keys` reaches on `keys` (`candidates`); with
    `part`, (`_part`, `_key`) for each part (`_part` of the records) whose records reach the row."""
    if part:
        return " UNION ".join(
            f"SELECT l._part, r.{KEY} FROM registry r JOIN {'left_keys' if key in EXACT_KEYS else 'rest_keys'} l "
            f"ON {key_condition(key)}" for key in keys)
    return " UNION ".join(
        f"SELECT r.{KEY} FROM registry r SEMI JOIN {'left_keys' if key in EXACT_KEYS else 'rest_keys'} l "
        f"ON {key_condition(key)}" for key in keys)


_CANDIDATE_SCHEMA = pa.schema([pa.field(KEY, pa.string()), *PERSON_SCHEMA])


def _fetch(con: Any, found: str) -> pa.Table:
    """The registry rows whose `_key` is in the session's table `found`, in `_key` order."""
    rows = con.execute(f"SELECT r.* FROM registry r SEMI JOIN {found} k ON k.{KEY} = r.{KEY} "
                       f"ORDER BY r.{KEY}").fetch_arrow_table()
    return rows.select(_CANDIDATE_SCHEMA.names).cast(_CANDIDATE_SCHEMA)


@dataclass
class CandidatePart:
    """Some of a partition's left records and the registry rows they can reach (`candidate_parts`)."""

    index: int  # 0-based
    of: int  # how many parts the partition was split into
    left: pa.Table  # the records, as given (every column), in their order
    candidates: pa.Table  # `candidates` of those records
    reached: int  # the registry rows the whole partition reaches (`candidates` of all its records)


@dataclass(frozen=True)
class LeftFile:
    """A partition's left records in a Parquet file: every row of `path`, or those whose column `column` is
    `value` (a plan's `left.parquet` holds every partition, `linkwork.PARTITION` naming each row's). Given to
    `candidate_parts`, they are read by DuckDB, and one part's records at a time reach Python."""

    path: Path
    column: str | None = None
    value: str | None = None

    def schema(self) -> pa.Schema:
        """The records' columns (the file's, without `column`)."""
        schema = pq.read_schema(self.path)
        return schema.remove(schema.get_field_index(self.column)) if self.column is not None else schema

    def view_sql(self) -> str:
        """SQL: the records, with `_row`, their place in the file (their order)."""
        drop = f', "{self.column}"' if self.column is not None else ""
        where = f'WHERE "{self.column}" = {zones.sql_text(str(self.value))}' if self.column is not None else ""
        return (f"SELECT * EXCLUDE (file_row_number{drop}), file_row_number AS {_ROW} "
                f"FROM read_parquet({zones.sql_text(self.path)}, file_row_number = true) {where}")


PART = "_part"
_ROW = "_row"  # a record's place among the partition's records (their order)


def candidate_parts(left: pa.Table | LeftFile, registry_ref: str, settings: Settings, *,
                    max_rows: int | None = None) -> Iterator[CandidatePart]:
    """`left` (the link state's left rows of one partition, as a table or a `LeftFile`) with its candidates
    (`candidates`), in parts of at most about `max_rows` candidate rows (default
    `settings.link_candidate_rows`) when the whole partition's candidates, or its records, are more: then its
    records are split in ceil(max(candidates, records) / max_rows) buckets of a hash of their folded name
    (namesakes, who reach the same registry rows, stay together; a record with no name by its unique id),
    and each bucket comes with the registry rows its own records reach. Links made part by part are those
    made at once (the link of a record depends only on it and its candidates; module docstring); the parts'
    candidates may overlap, so they add up to more than the partition's.

    Memory: one DuckDB session finds the candidates as `candidates` does and counts them; when there is more
    than one part, it also writes each part's registry rows, and each part's records, to Parquet folders of
    their own in one pass each (spilled under the DuckDB spill folder, removed when the iteration ends). The
    session is closed before the first part is given, and a part is read only when its turn comes: the
    caller holds one part's candidates and records at a time. Records given as a `LeftFile` are never read
    whole into Python unless they fit in one part."""
    from lienthong.duck import spill_root

    limit = max_rows if max_rows is not None else settings.link_candidate_rows
    schema = left.schema if isinstance(left, pa.Table) else left.schema()
    folder: Path | None = None
    try:
        with session(settings, purpose="link-candidates") as con:
            if isinstance(left, pa.Table):
                con.register("left_src", left.append_column(_ROW, pa.array(range(left.num_rows), pa.int64())))
            else:
                con.execute(f"CREATE TEMP VIEW left_src AS {left.view_sql()}")
            _mark_exact(con, "left_src", registry_ref, CANDIDATE_KEYS, extra=(_ROW, "name_fold"))
            row = con.execute("SELECT count(*) FROM left_keys").fetchone()
            records = int(row[0]) if row else 0
            con.execute(f"CREATE TEMP TABLE candidate_keys AS {_found_keys(CANDIDATE_KEYS)}")
            row = con.execute("SELECT count(*) FROM candidate_keys").fetchone()
            reached = int(row[0]) if row else 0
            n = max(1, -(-max(reached, records) // max(limit, 1)))
            if n == 1:
                whole = _fetch(con, "candidate_keys")
                if not isinstance(left, pa.Table):  # under the limit: few enough records to hold at once
                    left = con.execute(f"SELECT * EXCLUDE ({_ROW}) FROM left_src ORDER BY {_ROW}"
                                       ).fetch_arrow_table().cast(schema)
            else:
                _split(con, n)
                root = spill_root(settings)
                root.mkdir(parents=True, exist_ok=True)
                # named as the sessions' spill folders are (`duck.session`): purpose, then process
                folder = Path(tempfile.mkdtemp(prefix=f"link-parts-{os.getpid()}-", dir=root))
                con.execute(f"COPY (SELECT k.{PART}, r.* FROM registry r JOIN part_keys k ON k.{KEY} = r.{KEY}) "
                            f"TO {zones.sql_text(folder / 'rows')} (FORMAT parquet, PARTITION_BY ({PART}))")
                con.execute(f"COPY (SELECT k.{PART}, l.* FROM left_src l JOIN keyed k USING ({_ROW})) "
                            f"TO {zones.sql_text(folder / 'left')} (FORMAT parquet, PARTITION_BY ({PART}))")
        if n == 1:
            assert isinstance(left, pa.Table)
            yield CandidatePart(0, 1, left, whole, reached)
            return
        assert folder is not None
        for i in range(n):
            # DuckDB's files of a part hold no `_part` column
            records_at = folder / "left" / f"{PART}={i}"
            if not records_at.exists():
                continue
            mine = pq.read_table(records_at).sort_by(_ROW).drop_columns([_ROW]).select(schema.names).cast(schema)
            where = folder / "rows" / f"{PART}={i}"
            rows = pq.read_table(where) if where.exists() else _CANDIDATE_SCHEMA.empty_table()
            rows = rows.sort_by(KEY).select(_CANDIDATE_SCHEMA.names).cast(_CANDIDATE_SCHEMA)
            yield CandidatePart(i, n, mine, rows, reached)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _split(con: Any, n: int) -> None:
    """In the session of `candidate_parts`: each left record's part of `n` (`keyed`: `left_keys` with
    `_part`; `left_keys` and `rest_keys` now carry it), and `part_keys` (`_part`, `_key`) of the registry rows
    each part reaches."""
    part = f"(hash(coalesce(name_fold, unique_id)) % {n})::INTEGER AS {PART}"
    con.execute(f"CREATE TEMP TABLE keyed AS SELECT *, {part} FROM left_keys")
    con.execute("CREATE OR REPLACE TEMP VIEW left_keys AS SELECT * FROM keyed")
    con.execute("CREATE OR REPLACE TEMP TABLE rest_keys AS SELECT * FROM keyed "
                "WHERE unique_id NOT IN (SELECT left_id FROM exact_left)")
    con.execute(f"CREATE TEMP TABLE part_keys AS {_found_keys(CANDIDATE_KEYS, part=True)}")


def exact_linked(left: pa.Table, registry_ref: str, settings: Settings | None = None) -> int:
    """How many records of `left` (person shape) the exact passes link against the registry version
    `registry_ref` (the records whose blocking keys `candidates` does not follow)."""
    with session(settings, purpose="link-candidates") as con:
        _mark_exact(con, left, registry_ref, ())
        row = con.execute("SELECT count(*) FROM exact_left").fetchone()
    return int(row[0]) if row else 0


def _mark_exact(con: Any, left: pa.Table | str, registry_ref: str, keys: tuple[tuple[str, ...], ...],
                extra: tuple[str, ...] = ()) -> None:
    """In the session `con`: view `registry` of `registry_ref`; `left_keys`, the unique id and the columns of
    `keys` and of the exact passes of every record of `left` (a table, or a relation of the session: copied
    into the session then) and its columns `extra`; `exact_left`, the records the exact passes link;
    `rest_keys`, the `left_keys` of the others."""
    zones.register(con, "registry", registry_ref)
    columns = ["unique_id", *_key_columns((*keys, *EXACT_KEYS, *_EXACT_CONFIRMS))]
    selected = ", ".join(f'"{c}"' for c in [*columns, *(c for c in extra if c not in columns)])
    if isinstance(left, pa.Table):  # read in place
        con.register("left_in", left)
        con.execute(f"CREATE TEMP VIEW left_held AS SELECT {selected} FROM left_in")
    else:  # a relation (a file's rows) is read once, not once per key
        con.execute(f"CREATE TEMP TABLE left_held AS SELECT {selected} FROM {left}")
    con.execute("CREATE TEMP VIEW left_keys AS SELECT * FROM left_held")
    con.execute(f"CREATE TEMP TABLE exact_left AS SELECT DISTINCT left_id FROM ({exact_pairs_sql('left_keys', 'registry')})")
    con.execute("CREATE TEMP TABLE rest_keys AS SELECT * FROM left_keys WHERE unique_id NOT IN (SELECT left_id FROM exact_left)")


def registry_rows(registry_ref: str, settings: Settings | None = None) -> int:
    """How many rows the registry version `registry_ref` holds (from the Parquet files' metadata)."""
    with session(settings, purpose="link-candidates") as con:
        zones.register(con, "registry", registry_ref)
        row = con.execute("SELECT count(*) FROM registry").fetchone()
    return int(row[0]) if row else 0


def _blocking_sql(key: tuple[str, ...]) -> str:
    from splink import block_on

    return str(block_on(*key).get_blocking_rule("duckdb").blocking_rule_sql)


def check_model_keys(model: LinkModel) -> None:
    """Raise ValueError when `model` blocks on a rule that is not one of `people.BLOCKING_KEYS` (a model
    persisted before the keys changed): its pairs could fall outside a partition's candidates."""
    ours = {_blocking_sql(key) for key in BLOCKING_KEYS}
    rules = [r.get("blocking_rule") if isinstance(r, dict) else r
             for r in model.splink.get("blocking_rules_to_generate_predictions", [])]
    other = [r for r in rules if r not in ours]
    if other:
        raise ValueError(f"link model {model.model_id} blocks on {other}, which are not candidate keys "
                         "(people.BLOCKING_KEYS): retrain it (`lienthong retrain-models --activate`), or link with "
                         "LIENTHONG_LINKAGE_PARTITIONS=none")


# --- training once on the whole data ------------------------------------------------------------------------


def train_whole(left: pa.Table, registry_ref: str, settings: Settings) -> LinkModel | None:
    """The model `people.link_people` trains when it links `left` (person shape) against the whole registry
    with no model: the same session tables (`l`, `r` in `_key` order, the exact passes' `exact_links`) and
    the same `people.train`. None when the exact passes link every record (link_people then trains none)."""
    from splink import DuckDBAPI

    # the exact passes exactly as link_people runs them: train() reads their count for the prior
    from lienthong.reconcile.people import _exact_links

    cols = ", ".join(PERSON_COLUMNS)
    with session(settings, purpose="link-people") as con:
        con.register("left_in", left.select(PERSON_COLUMNS))
        zones.register(con, "registry", registry_ref)
        con.execute("CREATE TABLE l AS SELECT * FROM left_in")
        con.execute(f"CREATE TABLE r AS SELECT {cols} FROM registry ORDER BY {KEY}")
        _exact_links(con)
        row = con.execute("SELECT count(*) FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_links)").fetchone()
        if not row or not row[0]:
            return None
        return train(con, DuckDBAPI(connection=con))


def train_missing(left: pa.Table, registry_ref: str, settings: Settings, models: dict[str, LinkModel | None],
                  link_types: Mapping[str, str]) -> dict[str, LinkModel | None]:
    """`models` with a model for each link type that has none and has left records, trained on the whole data."""
    out = dict(models)
    for dataset, link_type in link_types.items():
        if out.get(link_type) is not None:
            continue
        rows = left.filter(pc.equal(left["dataset"], dataset))
        if rows.num_rows:
            t0 = time.monotonic()
            out[link_type] = train_whole(rows, registry_ref, settings)
            log.info("link partitions: %s model trained once on all %d records in %.1f s", link_type,
                     rows.num_rows, time.monotonic() - t0)
    return out


# --- linking partition by partition -------------------------------------------------------------------------


@dataclass
class Partition:
    """One partition's linking: its left records, its candidate registry rows, what it took."""

    name: str
    left: int
    candidates: int
    seconds: float
    links: pa.Table
    used: dict[str, LinkModel] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    parts: list[int] = field(default_factory=list)  # the candidates of each part it was linked in (`candidate_parts`)


def _each(left: pa.Table, head_offices: pa.Table | None) -> Iterator[tuple[str, pa.Table]]:
    """(name, left rows) of each partition (`partition_of`), in name order, each filtered when its turn comes
    (one partition's copy at a time)."""
    parts = partition_of(left, head_offices)
    for name in sorted(pc.unique(parts).to_pylist()):
        yield name, left.filter(pc.equal(parts, name))


def partitions(left: pa.Table, head_offices: pa.Table | None = None) -> dict[str, pa.Table]:
    """The left rows of each partition (`partition_of`), partitions in name order, rows in their order."""
    return dict(_each(left, head_offices))


def link_partitions(left: pa.Table, registry_ref: str, bands: LinkBands, settings: Settings,
                    models: dict[str, LinkModel | None], *, link: Link, link_types: Mapping[str, str],
                    head_offices: pa.Table | None = None, registry_total: int | None = None) -> Iterator[Partition]:
    """Link each partition of `left` (the link state's left rows) against its candidates in
    `registry_ref`, one at a time, with `link` and `models` completed by `train_missing`; yields each partition's
    result as it is done (`link_partitioned` merges them)."""
    full = train_missing(left, registry_ref, settings, models, link_types)
    total = registry_total if registry_total is not None else registry_rows(registry_ref, settings)
    for name, rows in _each(left, head_offices):
        links: list[pa.Table] = []
        done = link_partition(name, rows, registry_ref, bands, settings, full, link=link, total=total,
                              sink=links.append)
        done.links = pa.concat_tables(links)
        yield done


def link_partition(name: str, left: pa.Table | LeftFile, registry_ref: str, bands: LinkBands, settings: Settings,
                   models: dict[str, LinkModel | None], *, link: Link, total: int,
                   sink: Callable[[pa.Table], None]) -> Partition:
    """Link partition `name`'s records `left` against their candidates in `registry_ref` with `link` and
    `models` (one for each link type with records, or None where its training links nothing:
    `train_missing`), in parts (`candidate_parts`); each part's links go to `sink` as they are made (the
    result's `links` stays empty), so records given as a `LeftFile` are never held whole. `total`: the
    registry's rows (the counts' `right`)."""
    for model in models.values():
        if model is not None:
            check_model_keys(model)
    t0 = time.monotonic()
    used: dict[str, LinkModel] = {}
    counts, sizes, reached, records = [], [], 0, 0
    for part in candidate_parts(left, registry_ref, settings):
        got, part_used, part_counts = link(part.left, part.candidates, bands, settings, models)
        sink(got)
        used.update(part_used)
        counts.append(part_counts)
        sizes.append(part.candidates.num_rows)
        reached, records = part.reached, records + part.left.num_rows
        if part.of > 1:
            log.info("link partition %s, part %d of %d: %d left records against %d candidate citizens "
                     "(%.0f s so far)", name, part.index + 1, part.of, part.left.num_rows,
                     part.candidates.num_rows, time.monotonic() - t0)
    seconds = time.monotonic() - t0
    log.info("link partition %s: %d left records against %d candidate citizens of %d (%.1f %%) in %d part(s) "
             "(largest %d) in %.1f s (%.0f records/s)", name, records, reached, total,
             100.0 * reached / max(total, 1), len(sizes), max(sizes, default=0), seconds,
             records / max(seconds, 1e-9))
    return Partition(name, records, reached, seconds, pa.table({}), used, merge_counts(counts, total), parts=sizes)


def merge_counts(parts: list[dict[str, Any]], registry_total: int) -> dict[str, Any]:
    """The counts of each link type summed over the partitions (`people.link_counts`' shape); `right` is the
    whole registry, as linking everything at once reports it."""
    out: dict[str, dict[str, Any]] = {}
    for counts in parts:
        for link_type, c in counts.items():
            into = out.setdefault(link_type, {})
            for k, v in c.items():
                into[k] = registry_total if k == "right" else into.get(k, 0) + v
    return dict(out)


def link_partitioned(left: pa.Table, registry_ref: str, bands: LinkBands, settings: Settings,
                     models: dict[str, LinkModel | None], *, link: Link, link_types: Mapping[str, str],
                     head_offices: pa.Table | None = None) -> tuple[pa.Table, dict[str, LinkModel], dict[str, Any]]:
    """What `link(left, <the whole registry>, bands, settings, models)` returns (links sorted by `_key`, the
    models used, counts by link type), linked partition by partition against each partition's candidates
    in the registry version `registry_ref` (see the module docstring for why the links are the same).

    `link_types` maps each left dataset to the link type scoring it; a link type with no model in `models`
    is trained once on all its records against the whole registry first, then used for every partition."""
    t0 = time.monotonic()
    total = registry_rows(registry_ref, settings)
    if left.num_rows == 0:
        return link(left, candidates(left.select(PERSON_COLUMNS), registry_ref, settings), bands, settings, models)
    links, used, counts, largest = [], {}, [], 0
    n = 0
    for part in link_partitions(left, registry_ref, bands, settings, models, link=link, link_types=link_types,
                                head_offices=head_offices, registry_total=total):
        links.append(part.links)
        used.update(part.used)
        counts.append(part.counts)
        largest = max(largest, part.candidates)
        n += 1
    out = pa.concat_tables(links).sort_by(KEY)
    log.info("linked %d left records in %d partitions in %.1f s (largest candidate set %d of %d citizens)",
             left.num_rows, n, time.monotonic() - t0, largest, total)
    return out, used, merge_counts(counts, total)
