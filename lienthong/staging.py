"""Raw -> staged for sources landed as JSON payloads: contract-typed rows, or quarantine with a reason.

The staged and quarantine zones are Delta Lake tables (`lienthong.zones`), one per dataset, kept current by
merging the change: each run reads only the raw landings no earlier run staged (the caller finds them in the
ledger) and commits what they change. The plan comes from the contract: each field's `sourceField` (a
dotted path into the payload), its logical type and `parse` rule, and its critical quality rules. It runs
as DuckDB queries over the new raw Parquet (vectorised, no Python loop per row):

1. keep one version per record identity (source key, with the province for a per-province source): the
   first in `VERSION_ORDER` (newest source update time, then the smaller record hash, then the first
   landing). The order depends on the records only, never on when or in which batches they landed, so
   merging changes one after another gives what one pass over every landing gives (`lienthong rebuild`);
2. extract and type every field (text to Unicode NFC, trimmed; dates and times parsed; UTC);
3. collect, per row, the reasons it cannot be used (a required field missing, an unparseable value, a
   critical pattern or value-set rule broken), each naming the record key and the field;
4. compare each identity's version with the one the tables hold: where the new one comes first in the
   order, its rows replace the identity's rows (staged when usable, quarantined with the full original
   payload and its reasons otherwise; a child dataset's rows beyond the new list are deleted) in one MERGE
   commit per table; an older or identical version changes nothing;
5. check conservation on the change: rows_in == rows_staged + rows_quarantined + rows_unchanged.

A run with no new landing reads and writes nothing. Every staged row carries `_staged_version`, the table
version that wrote it, so validation can take exactly the rows changed since the version it last checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong import zones
from lienthong.contracts import Contract, Field
from lienthong.duck import session
from lienthong.paths import safe_run_id
from lienthong.settings import load_settings

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

PLATFORM_COLUMNS = [
    pa.field("_source_run_id", pa.string()),
    pa.field("_record_hash", pa.string()),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
    pa.field("_repairs", pa.list_(pa.string())),  # what standardization changed in this record (field:code)
    pa.field("_findings", pa.list_(pa.string())),  # what it noticed but kept (field:code)
    pa.field("_identity", pa.string()),  # the source record: key (province|key per province), '#hash' without one
    pa.field("_merge_key", pa.string()),  # the row: the identity, '#<position>' added for a child row
    pa.field("_source_updated_at", pa.timestamp("us", tz="UTC")),  # the source's update time of this version
    pa.field("_staged_version", pa.int64()),  # the staged table version that wrote the row
    # the row-level warning rules the row fails, set by validation of the change that wrote it (so the state's
    # failures per rule are an aggregate, not a revalidation of every row)
    pa.field("_failed_rules", pa.list_(pa.string())),
]
PLATFORM_NAMES = [f.name for f in PLATFORM_COLUMNS]
# Which version of a record wins (SQL ORDER BY: the first row wins). Records only, never landing batches.
VERSION_ORDER = "_source_updated_at DESC NULLS LAST, _record_hash, _ingested_at"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("record_key", pa.string()),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("rules", pa.list_(pa.string())),
        pa.field("payload", pa.string()),
        pa.field("_source_run_id", pa.string()),
        pa.field("_record_hash", pa.string()),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field("_identity", pa.string()),
        pa.field("_merge_key", pa.string()),
        pa.field("_source_updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class StagePlan:
    """Where a staged dataset's records come from, read off its contract's customProperties:
    `sourceSystem` and `sourceEntity` (the raw folder), `sourceKey` / `sourceUpdatedAt` (+ `...Parse`) for
    the latest-version rule, `partitionedBy: province` (raw entity `<province>/<entity>`, key part of the
    record identity), and `unnest` (a child dataset: one row per element of that list in the parent)."""

    contract: Contract
    source: str
    entity: str
    key_field: str
    updated_field: str
    updated_parse: str | None
    per_province: bool
    unnest: str | None

    @classmethod
    def from_contract(cls, contract: Contract) -> StagePlan:
        c = contract.custom
        missing = [k for k in ("sourceSystem", "sourceEntity", "sourceKey", "sourceUpdatedAt") if not c.get(k)]
        if missing:
            raise ValueError(f"contract {contract.name} cannot be staged from raw: customProperties lack {missing}")
        return cls(contract, c["sourceSystem"], c["sourceEntity"], c["sourceKey"], c["sourceUpdatedAt"],
                   c.get("sourceUpdatedAtParse"), c.get("partitionedBy") == "province", c.get("unnest"))

    def province_of(self, raw_file: str | Path, raw_dir: Path) -> str | None:
        """The province a raw part file of a per-province source was landed for (None for another source)."""
        if not self.per_province:
            return None
        return Path(raw_file).relative_to(Path(raw_dir) / self.source).parts[0]

    def raw_files(self, raw_dir: Path) -> list[Path]:
        """Committed raw parts (temporary folders of running or interrupted runs excluded)."""
        base = Path(raw_dir) / self.source
        entity = f"*/{self.entity}" if self.per_province else self.entity
        return sorted(p for p in base.glob(f"{entity}/ingest_date=*/run=*/part-*.parquet") if ".tmp-" not in p.parent.name)


class ConservationError(RuntimeError):
    """Records were lost or invented between raw and staged + quarantine."""


@dataclass
class StageResult:
    dataset: str
    run_id: str
    raw_rows: int
    duplicates_removed: int
    rows_in: int
    rows_staged: int
    rows_quarantined: int
    rows_unchanged: int
    staged_path: str
    quarantine_path: str
    content_hash: str
    raw_runs: list[str]
    quarantine_by_rule: dict[str, int]
    seconds: float
    repairs: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    mode: str = "change"  # change | rebuild | unchanged (new landings, nothing new in them) | none (no new landing)
    deleted: int = 0  # rows the change removed (a child list that got shorter)
    parts: int = 0  # parts staged apart and committed together (`commit_parts`; 0: staged here)

    @property
    def conservation_ok(self) -> bool:
        return self.rows_in == self.rows_staged + self.rows_quarantined + self.rows_unchanged

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conservation_ok"] = self.conservation_ok
        return d


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_path(source_field: str) -> str:
    return "$." + ".".join(f'"{p}"' for p in source_field.split("."))


_OFFSET = r"(Z|z|[+-][0-9]{2}:?[0-9]{2})$"
_PARTIAL_ISO = r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$"


def _typed_expr(f: Field, src: str) -> str:
    """SQL turning the source text `src` into the field's type (NULL when it cannot be parsed)."""
    t, parse = f.logical_type, f.parse
    if t == "string":
        return f"NULLIF(TRIM(nfc_normalize({src})), '')"
    if t == "integer":
        return f"TRY_CAST({src} AS BIGINT)"
    if t == "number":
        return f"TRY_CAST({src} AS DOUBLE)"
    if t == "boolean":
        return f"TRY_CAST({src} AS BOOLEAN)"
    if t == "date":
        if parse == "partial_iso_date":
            y = f"TRY_CAST(regexp_extract({src}, {_lit(_PARTIAL_ISO)}, 1) AS INTEGER)"
            m = f"TRY_CAST(regexp_extract({src}, {_lit(_PARTIAL_ISO)}, 2) AS INTEGER)"
            d = f"TRY_CAST(regexp_extract({src}, {_lit(_PARTIAL_ISO)}, 3) AS INTEGER)"
            # 00 month/day means "unknown": keep the first day of the known period, precision says which.
            return (
                f"CASE WHEN regexp_full_match({src}, {_lit(_PARTIAL_ISO[1:-1])}) AND ({m} = 0 OR {d} = 0) "
                f"THEN TRY_CAST(printf('%04d-%02d-%02d', {y}, CASE WHEN {m} = 0 THEN 1 ELSE {m} END, "
                f"CASE WHEN {d} = 0 THEN 1 ELSE {d} END) AS DATE) ELSE TRY_CAST({src} AS DATE) END"
            )
        if parse == "dmy_date":
            return f"TRY_CAST(try_strptime({src}, '%d/%m/%Y') AS DATE)"
        return f"TRY_CAST({src} AS DATE)"
    if t == "timestamp":
        if parse == "dmy_local_datetime":
            return f"timezone('Asia/Ho_Chi_Minh', try_strptime({src}, '%d/%m/%Y %H:%M:%S'))"
        return f"CASE WHEN regexp_matches({src}, {_lit(_OFFSET)}) THEN TRY_CAST({src} AS TIMESTAMPTZ) END"
    if t in ("array", "object"):
        return f"json_extract({src}, '$')"
    raise ValueError(f"no standardization for logicalType {t}")


def _precision_expr(src: str) -> str:
    return (
        f"CASE WHEN {src} IS NULL THEN NULL "
        f"WHEN regexp_full_match({src}, '[0-9]{{4}}-00-00') THEN 'year' "
        f"WHEN regexp_full_match({src}, '[0-9]{{4}}-[0-9]{{2}}-00') THEN 'month' ELSE 'day' END"
    )


def _array_expr(f: Field, src_json: str) -> str:
    """A JSON list of objects -> Arrow list<struct> with the contract's child names and types."""
    members = {c.source_field or c.name: c for c in f.children}
    json_schema = "[{" + ",".join(f'"{k}":"VARCHAR"' for k in members) + "}]"
    parts = ", ".join(f"'{c.name}': {_typed_expr(c, 'x.' + _quote(k))}" for k, c in members.items())
    return f"list_transform(from_json({src_json}, {_lit(json_schema)}), x -> {{{parts}}})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _reasons_for(f: Field, src: str, label: str) -> list[str]:
    """SQL expressions giving, per row, why field `f` makes the record unusable (or NULL)."""
    out = []
    if f.logical_type not in ("string", "array", "object"):
        out.append(
            f"CASE WHEN {src} IS NOT NULL AND NULLIF(TRIM({src}), '') IS NOT NULL AND ({_typed_expr(f, src)}) IS NULL "
            f"THEN 'unparseable|{f.name}|' || {_lit(label)} || ' = ' || {src} END"
        )
    if f.required:
        out.append(f"CASE WHEN NULLIF(TRIM({src}), '') IS NULL THEN 'required|{f.name}|' || {_lit(label)} || ' is missing' END")
    for rule in f.quality:
        if rule.severity != "critical" or rule.metric != "invalidValues":
            continue
        typed = f"({_typed_expr(f, src)})"
        if "pattern" in rule.arguments:
            cond = f"{typed} IS NOT NULL AND NOT regexp_matches({typed}, {_lit(rule.arguments['pattern'])})"
            what = f"does not match {rule.arguments['pattern']}"
        elif "validValues" in rule.arguments:
            vals = ", ".join(_lit(str(v)) for v in rule.arguments["validValues"])
            cond = f"{typed} IS NOT NULL AND CAST({typed} AS VARCHAR) NOT IN ({vals})"
            what = "is not one of " + "/".join(str(v) for v in rule.arguments["validValues"])
        else:
            lo, hi = rule.arguments.get("minValue"), rule.arguments.get("maxValue")
            parts = ([f"{typed} < {lo}"] if lo is not None else []) + ([f"{typed} > {hi}"] if hi is not None else [])
            cond = f"{typed} IS NOT NULL AND ({' OR '.join(parts)})"
            what = f"is outside [{lo}, {hi}]"
        quoted = "'''' || CAST(" + typed + " AS VARCHAR) || ''''"
        out.append(f"CASE WHEN {cond} THEN 'invalid|{rule.name}|' || {_lit(label)} || ' ' || {quoted} || ' ' || {_lit(what)} END")
    return out


def build_stage_sql(plan: StagePlan) -> tuple[tuple[str, str], list[Field]]:
    """Two SELECTs: one extracting every field's source text from the deduplicated `latest` relation (with
    a row id), one typing and checking the standardized `src` relation. Returns ((extract, type), fields)."""
    contract = plan.contract
    by_name = {f.name: f for f in contract.fields}
    unnest = plan.unnest
    src_cols, typed_cols, reasons, staged = [], [], [], []
    root_paths: list[str] = []
    for f in contract.fields:
        derived = f.custom.get("derivedFrom")
        src = f"src_{f.name}"
        if f.source_field:
            if unnest and f.source_field.startswith(unnest + "."):
                inner = _quote(f.source_field[len(unnest) + 1:])
                path = f"'$.{_quote(unnest)}[' || _pos || '].{inner}'"
            else:
                path = None
            if f.logical_type == "array":
                src_cols.append(f"json_extract(payload, {path or _lit(_json_path(f.source_field))}) AS {src}")
                typed_cols.append(f"{_array_expr(f, src)} AS {f.name}")
            elif path is None:
                # Root-level fields are read with ONE multi-path extraction per record (the JSON is parsed
                # once, not once per field: the profile's largest item at a million rows).
                root_paths.append(_json_path(f.source_field))
                src_cols.append(f"_v[{len(root_paths)}] AS {src}")
                typed_cols.append(f"{_typed_expr(f, src)} AS {f.name}")
            else:
                src_cols.append(f"json_extract_string(payload, {path}) AS {src}")
                typed_cols.append(f"{_typed_expr(f, src)} AS {f.name}")
        elif derived in by_name and f.custom.get("standardize") and (origin_field := by_name[derived].source_field):
            # A standardized copy of another field (e.g. the 2025 commune code of an original code).
            src_cols.append(f"json_extract_string(payload, {_lit(_json_path(origin_field))}) AS {src}")
            typed_cols.append(f"{_typed_expr(f, src)} AS {f.name}")
        elif derived in by_name and f.name == f"{derived}_catalogue_version":
            src_cols.append(f"CAST(NULL AS VARCHAR) AS {src}")  # filled in by the land_use standardizer
            typed_cols.append(f"{_typed_expr(f, src)} AS {f.name}")
        elif derived == "connection" and plan.per_province:
            src_cols.append(f"split_part(_entity, '/', 1) AS {src}")
            typed_cols.append(f"{src} AS {f.name}")
        elif plan.unnest and derived == plan.unnest:
            src_cols.append(f"CAST(_pos AS VARCHAR) AS {src}")
            typed_cols.append(f"_pos AS {f.name}")
        elif f.name.endswith("_precision") and f.name[: -len("_precision")] in by_name:
            base = by_name[f.name[: -len("_precision")]]
            typed_cols.append(f"{_precision_expr('src_' + base.name)} AS {f.name}")
            staged.append(f)
            continue
        else:
            continue
        staged.append(f)
        reasons += _reasons_for(f, src, f"{f.name} ({f.source_field or derived})")
    key_src = f"json_extract_string(payload, {_lit(_json_path(plan.key_field))})"
    record_key = key_src
    if plan.per_province:
        record_key = f"split_part(_entity, '/', 1) || ':' || {key_src}"
    if plan.unnest:
        record_key = f"{key_src} || '#' || CAST(_pos AS VARCHAR)"
    merge_key = "_identity || '#' || CAST(_pos AS VARCHAR)" if plan.unnest else "_identity"
    extract_sql = f"""
      SELECT row_number() OVER () AS _rid, payload, _run_id, _record_hash, _ingested_at, {record_key} AS _source_key,
             _identity, {merge_key} AS _merge_key, _source_updated_at,
             {"_pos, " if plan.unnest else ""}{", ".join(src_cols)}
      FROM (SELECT *, json_extract_string(payload, [{", ".join(_lit(p) for p in root_paths) or "'$.__none__'"}]) AS _v
            FROM latest) AS latest
    """
    typed_sql = f"""
    SELECT {", ".join(typed_cols)},
           _run_id AS _source_run_id, _record_hash, _ingested_at, _source_key, payload,
           _identity, _merge_key, _source_updated_at,
           list_concat(list_filter([{", ".join(reasons) or "NULL"}], x -> x IS NOT NULL), _std_reasons) AS _reasons,
           _repairs, _findings
    FROM src
    """
    sql = (extract_sql, typed_sql)
    return sql, staged


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The value of a one-row aggregate query (count, coalesce(sum))."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"staging: an aggregate query returned no row: {sql}")
    return row[0]


def stage_json_source(
    contract: Contract,
    raw_files: list[Path],
    *,
    run_id: str,
    staged_dir: Path,
    quarantine_dir: Path,
    full: bool = False,
    raw_dir: Path | None = None,
    key_source_field: str | None = None,
    updated_source_field: str | None = None,
) -> StageResult:
    """Merge the records of `raw_files` (the landings not staged yet) into the dataset's staged and quarantine
    tables; see the module docstring. With `full`, the tables are replaced by what `raw_files` (then every
    landing) hold: the rebuild. Key and cursor fields come from the contract (the keyword arguments override
    them). With no file, nothing is written and the result says so.

    Records quarantined only because a uniqueness rule found their value twice (in validation) are staged
    again with every change, from their landing in `raw_dir`: the duplicate may be gone, and validation moves
    them back if it is not. Without `raw_dir` they stay where they are."""
    plan = StagePlan.from_contract(contract)
    if key_source_field or updated_source_field:
        plan = replace(plan, key_field=key_source_field or plan.key_field, updated_field=updated_source_field or plan.updated_field)
    t0 = time.monotonic()
    staged_table, quarantine_table = table_paths(contract.name, staged_dir, quarantine_dir)
    schema, staged_fields = staged_schema(contract)
    if not raw_files and not full:
        return _nothing_to_stage(contract, run_id, staged_table, quarantine_table, schema, t0)
    files = [str(p) for p in raw_files]
    partition = _partition_by(plan, contract)
    # A full stage of a large source runs in parts, each a disjoint share of the record identities (a hash
    # bucket), so memory follows the part, not the source; the first part replaces the tables, the others
    # append. Until the last part's staged commit, the table's newest commit says "rebuild-partial", and a
    # run finding that (a rebuild killed half-way) rebuilds again.
    parts = _parts(files, load_settings().stage_chunk_rows) if full else 1
    committed = _Committed()
    split_dir = run_work_dir(staged_dir, contract.name, run_id) / "split"
    shares = split_landings(plan, files, parts, split_dir) if parts > 1 else [None]
    for part in range(parts):
        held_version = zones.version(staged_table)
        next_version = 0 if held_version is None else held_version + 1  # the version this part's commit makes
        # A bounded session (memory limit, spill folder, threads) so staging a national table stays within a worker.
        with session(load_settings(), purpose="staging") as con:
            out = _stage_part(con, plan, files, run_id=run_id, full=full, raw_dir=raw_dir, staged_table=staged_table,
                              quarantine_table=quarantine_table, staged_fields=staged_fields,
                              next_version=next_version, bucket=(part, parts) if parts > 1 else None,
                              read=shares[part])
        _commit_part(committed, plan, out, run_id=run_id, full=full, part=part, parts=parts,
                     tables=(staged_table, quarantine_table), schema=schema, partition=partition)
    if parts > 1:
        shutil.rmtree(split_dir, ignore_errors=True)
    return _stage_result(contract, run_id, committed, full=full, staged_table=staged_table,
                         quarantine_table=quarantine_table, t0=t0)


def commit_parts(contract: Contract, outs: Iterable[dict[str, Any]], count: int, *, run_id: str, staged_dir: Path,
                 quarantine_dir: Path, full: bool) -> StageResult:
    """Commit `count` parts staged apart (`_stage_part`'s outputs: a province's, or a hash share's of the
    identities, each compared with the same table versions): a change in one MERGE per table, the parts' rows
    together in the order staging whole writes them; a rebuild one part after another, each taken from `outs`
    when its turn comes (as `stage_json_source`'s buckets)."""
    t0 = time.monotonic()
    plan = StagePlan.from_contract(contract)
    tables = table_paths(contract.name, staged_dir, quarantine_dir)
    schema, _ = staged_schema(contract)
    partition = _partition_by(plan, contract)
    committed = _Committed()
    if full:
        for i, out in enumerate(outs):
            _commit_part(committed, plan, out, run_id=run_id, full=True, part=i, parts=count, tables=tables,
                         schema=schema, partition=partition)
            del out  # freed before the next part is read
    else:
        _commit_part(committed, plan, _together(list(outs), contract, schema), run_id=run_id, full=False, part=0, parts=1,
                     tables=tables, schema=schema, partition=partition)
    result = _stage_result(contract, run_id, committed, full=full, staged_table=tables[0],
                           quarantine_table=tables[1], t0=t0)
    result.parts = count
    return result


def _together(outs: list[dict[str, Any]], contract: Contract, schema: pa.Schema) -> dict[str, Any]:
    """Parts' outputs as one: rows concatenated in the order `_stage_part` sorts them, counts summed."""
    with_op = pa.field(zones.OP, pa.string())
    staged = pa.concat_tables([o["staged_rows"].select(schema.names + [zones.OP]).cast(pa.schema(list(schema) + [with_op]))
                               for o in outs])
    quarantine = pa.concat_tables([o["quarantine_rows"].select(QUARANTINE_SCHEMA.names + [zones.OP])
                                   .cast(pa.schema(list(QUARANTINE_SCHEMA) + [with_op])) for o in outs])
    order = ", ".join(_quote(k) for k in contract.primary_key)
    with session(load_settings(), purpose="staging") as con:  # ordered as `_stage_part` orders, by DuckDB
        con.register("s", staged)
        con.register("q", quarantine)
        rows = {"staged_rows": con.execute(f"SELECT * FROM s ORDER BY {order}").fetch_arrow_table().cast(staged.schema),
                "quarantine_rows": con.execute("SELECT * FROM q ORDER BY _merge_key").fetch_arrow_table()
                .cast(quarantine.schema)}
    summed = _Committed()
    for o in outs:
        _add_counts(summed, o)
    return {**rows, "by_rule": summed.by_rule, "repairs": summed.repairs, "findings": summed.found,
            "raw_runs": sorted(summed.raw_runs),
            **{k: sum(o[k] for o in outs) for k in ("raw_rows", "rows_in", "rows_staged", "rows_quarantined")}}


def held_back_provinces(plan: StagePlan, quarantine_ref: str, raw_dir: Path) -> set[str]:
    """The provinces of the records quarantine version `quarantine_ref` holds back for a duplicated value
    (rechecked with any change: `_uniqueness_held`)."""
    with session(load_settings(), purpose="staging") as con:
        zones.register(con, "cur_quarantine", quarantine_ref)
        files, _ = _uniqueness_held(con, plan, [], raw_dir)
    return {str(plan.province_of(f, raw_dir)) for f in files}


@dataclass
class _Committed:
    """What a staging run's commits did so far: the counts summed over its parts and the last commits."""

    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("raw_rows", "rows_in", "rows_staged", "rows_quarantined", "deleted"), 0))
    by_rule: dict[str, int] = field(default_factory=dict)
    repairs: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    raw_runs: set[str] = field(default_factory=set)
    staged: zones.Commit = field(default_factory=lambda: zones.Commit(None))
    quarantine: zones.Commit = field(default_factory=lambda: zones.Commit(None))


def _commit_part(committed: _Committed, plan: StagePlan, out: dict[str, Any], *, run_id: str, full: bool, part: int,
                 parts: int, tables: tuple[Path, Path], schema: pa.Schema, partition: list[str] | None) -> None:
    """Commit one part's rows (`_stage_part`'s output) to the quarantine table, then the staged table, and add
    its counts to `committed`."""
    contract = plan.contract
    staged_table, quarantine_table = tables
    staged_rows = out.pop("staged_rows").cast(pa.schema(list(schema) + [pa.field(zones.OP, pa.string())]))
    quarantine_rows = out.pop("quarantine_rows").cast(pa.schema(list(QUARANTINE_SCHEMA) + [pa.field(zones.OP, pa.string())]))
    last = part == parts - 1
    meta = {"lienthong.contract_version": contract.version,
            "lienthong.mode": ("rebuild" if last else "rebuild-partial") if full else "change"}
    # Quarantine first: a kill between the two commits leaves a record in both tables at most (the rerun's
    # merge settles it), never in neither.
    if full:
        write = zones.create if part == 0 else zones.append
        q = write(quarantine_table, quarantine_rows.drop_columns([zones.OP]), run_id=run_id, metadata=meta)
        s = write(staged_table, staged_rows.drop_columns([zones.OP]), run_id=run_id, partition_by=partition, metadata=meta)
    else:
        _ensure_table(quarantine_table, QUARANTINE_SCHEMA, run_id, None)
        _ensure_table(staged_table, schema, run_id, partition)
        q = zones.merge(quarantine_table, quarantine_rows, key="_merge_key", run_id=run_id, metadata=meta)
        s = zones.merge(staged_table, staged_rows, key="_merge_key", run_id=run_id, partition_by=partition, metadata=meta)
    committed.staged, committed.quarantine = s, q
    for k in ("raw_rows", "rows_in", "rows_staged", "rows_quarantined"):
        committed.totals[k] += out[k]
    committed.totals["deleted"] += s.deleted + q.deleted
    _add_counts(committed, out)
    if parts > 1:
        log.info("staged %s part %d of %d: %d rows in, %d staged, %d quarantined", contract.name, part + 1, parts,
                 out["rows_in"], out["rows_staged"], out["rows_quarantined"])


def _add_counts(committed: _Committed, out: dict[str, Any]) -> None:
    for target, counts in ((committed.by_rule, out["by_rule"]), (committed.repairs, out["repairs"]),
                           (committed.found, out["findings"])):
        for k, v in counts.items():
            target[k] = target.get(k, 0) + v
    committed.raw_runs |= set(out["raw_runs"])


def _stage_result(contract: Contract, run_id: str, committed: _Committed, *, full: bool, staged_table: Path,
                  quarantine_table: Path, t0: float) -> StageResult:
    """The run's result from its commits, its conservation checked."""
    totals = committed.totals
    rows_in, rows_staged, rows_quarantined = totals["rows_in"], totals["rows_staged"], totals["rows_quarantined"]
    s, q = committed.staged, committed.quarantine
    result = StageResult(
        dataset=contract.name,
        run_id=run_id,
        raw_rows=totals["raw_rows"],
        duplicates_removed=totals["raw_rows"] - rows_in,
        rows_in=rows_in,
        rows_staged=rows_staged,
        rows_quarantined=rows_quarantined,
        rows_unchanged=rows_in - rows_staged - rows_quarantined,
        staged_path=zones.ref(staged_table, _required(s.version)),
        quarantine_path=zones.ref(quarantine_table, _required(q.version)),
        content_hash=content_hash(contract, zones.ref(staged_table, _required(s.version))),
        raw_runs=sorted(committed.raw_runs),
        quarantine_by_rule=dict(sorted(committed.by_rule.items())),
        seconds=time.monotonic() - t0,
        repairs=dict(sorted(committed.repairs.items())),
        findings=dict(sorted(committed.found.items())),
        # a change none of whose records was new (the inclusive watermark's boundary, a re-landing) wrote nothing
        mode="rebuild" if full else ("change" if rows_staged or rows_quarantined or totals["deleted"] else "unchanged"),
        deleted=totals["deleted"],
    )
    log.info(
        "staged %s (%s): raw %d, in %d, staged %d, quarantined %d, unchanged %d -> %s (%.1fs)",
        contract.name, result.mode, result.raw_rows, rows_in, rows_staged, rows_quarantined, result.rows_unchanged,
        result.staged_path, result.seconds,
    )
    if not result.conservation_ok:
        raise ConservationError(
            f"{contract.name} run {run_id}: rows_in {rows_in} != staged {result.rows_staged} + quarantined "
            f"{result.rows_quarantined} + unchanged {result.rows_unchanged}"
        )
    return result


def _parts(files: list[str], chunk_rows: int) -> int:
    """How many parts a full stage of `files` takes: their rows (from the Parquet footers) per `chunk_rows`."""
    return shares_for(sum(pq.read_metadata(f).num_rows for f in files), chunk_rows)


def shares_for(rows: int, chunk_rows: int) -> int:
    """How many parts of at most `chunk_rows` rows `rows` rows take (at least one)."""
    return max(1, -(-rows // max(chunk_rows, 1)))


def _stage_part(con: duckdb.DuckDBPyConnection, plan: StagePlan, files: list[str], *, run_id: str, full: bool,
                raw_dir: Path | None, staged_table: Path, quarantine_table: Path, staged_fields: list[Field],
                next_version: int, bucket: tuple[int, int] | None, at: tuple[int, int] | None = None,
                province: str | None = None, read: list[str] | None = None) -> dict[str, Any]:
    """Stage one part (all of a change, one hash bucket of a full stage, or one province's change of a
    per-province source) in session `con`: the rows to write to each table (with `_op`) and the counts.
    `at`: the (staged, quarantine) table versions to compare with (default: the newest); `province`: the
    records held back for a duplicated value are those of that province only; `read`: the bucket's own rows
    of `files` (`split_landings`), read instead of them."""
    contract = plan.contract
    current = {} if full else _register_current(con, staged_table, quarantine_table, at)
    held_back = (_uniqueness_held(con, plan, files, raw_dir, province) if current and raw_dir is not None
                 else ([], []))
    raw_rows, rows_in, applied = _typed_delta(con, plan, files if read is None else read, recheck=held_back,
                                              bucket=bucket, presplit=read is not None)
    # The winning version of each identity the change touches (see `VERSION_ORDER`): the change's when it
    # sorts before what the tables hold, else the tables' (an older or identical version changes nothing).
    # Versions are compared per source record (`latest_parent`: a parent whose child list is now empty counts).
    # What the tables hold does not count, so the change's version is applied again, for an identity
    # - with a row quarantined for a duplicated value: all its rows are staged again and revalidated;
    # - whose rows in the two tables are of different versions: a run stopped between its two commits.
    if current:
        con.execute(f"""CREATE TEMP TABLE held AS
            WITH cur AS (
              SELECT _identity, _source_updated_at, _record_hash, _ingested_at FROM cur_staged
              WHERE _identity IN (SELECT _identity FROM latest_parent)
              UNION ALL
              SELECT _identity, _source_updated_at, _record_hash, _ingested_at FROM cur_quarantine
              WHERE _identity IN (SELECT _identity FROM latest_parent)),
            recheck AS (SELECT _identity FROM cur_quarantine
                        WHERE _identity IN (SELECT _identity FROM latest_parent) AND {_has_uniqueness(contract)}),
            torn AS (SELECT _identity FROM cur GROUP BY _identity
                     HAVING count(DISTINCT (_source_updated_at, _record_hash, _ingested_at)) > 1)
            SELECT DISTINCT * FROM cur
            WHERE _identity NOT IN (SELECT _identity FROM recheck) AND _identity NOT IN (SELECT _identity FROM torn)""")
    else:
        con.execute("CREATE TEMP TABLE held (_identity VARCHAR, _source_updated_at TIMESTAMPTZ, _record_hash VARCHAR, _ingested_at TIMESTAMPTZ)")
    con.execute(f"""CREATE TEMP TABLE winners AS
        SELECT _identity FROM (
          SELECT _identity, src, row_number() OVER (PARTITION BY _identity ORDER BY {VERSION_ORDER}, src) AS rn
          FROM (SELECT DISTINCT _identity, _source_updated_at, _record_hash, _ingested_at, 1 AS src FROM latest_parent
                UNION ALL SELECT *, 0 AS src FROM held))
        WHERE rn = 1 AND src = 1""")
    con.execute("CREATE TEMP VIEW changed AS SELECT * FROM typed WHERE _identity IN (SELECT _identity FROM winners)")
    cols = ", ".join([_quote(f.name) for f in staged_fields] + [_quote(c) for c in PLATFORM_NAMES])
    staged_rows = con.execute(
        f"""SELECT {cols.replace('"_staged_version"', f'CAST({next_version} AS BIGINT) AS _staged_version')
                        .replace('"_failed_rules"', 'CAST(NULL AS VARCHAR[]) AS _failed_rules')},
                   'upsert' AS _op FROM changed WHERE len(_reasons) = 0"""
        + ("" if not current else f"""
            UNION ALL BY NAME
            SELECT _merge_key, {_partition_select(plan, contract)} 'delete' AS _op FROM cur_staged
            WHERE _identity IN (SELECT _identity FROM winners)
              AND _merge_key NOT IN (SELECT _merge_key FROM changed WHERE len(_reasons) = 0)""")
        + " ORDER BY " + ", ".join(_quote(k) for k in contract.primary_key)
    ).fetch_arrow_table()
    quarantine_rows = con.execute(
        f"""SELECT {_lit(contract.name)} AS dataset, {_lit(run_id)} AS run_id, _source_key AS record_key,
                   list_transform(_reasons, r -> 'record ' || coalesce(_source_key, '<no key>') || ': ' || split_part(r, '|', 1) || ': ' || split_part(r, '|', 3)) AS reasons,
                   list_transform(_reasons, r -> split_part(r, '|', 1) || ':' || split_part(r, '|', 2)) AS rules,
                   payload, _source_run_id, _record_hash, _ingested_at, _identity, _merge_key, _source_updated_at,
                   'upsert' AS _op
            FROM changed WHERE len(_reasons) > 0"""
        + ("" if not current else """
            UNION ALL BY NAME
            SELECT _merge_key, 'delete' AS _op FROM cur_quarantine
            WHERE _identity IN (SELECT _identity FROM winners)
              AND _merge_key NOT IN (SELECT _merge_key FROM changed WHERE len(_reasons) > 0)""")
        + " ORDER BY _merge_key"
    ).fetch_arrow_table()
    return {
        "raw_rows": raw_rows, "rows_in": rows_in,
        "rows_staged": _scalar(con, "SELECT count(*) FROM changed WHERE len(_reasons) = 0"),
        "rows_quarantined": _scalar(con, "SELECT count(*) FROM changed WHERE len(_reasons) > 0"),
        "staged_rows": staged_rows, "quarantine_rows": quarantine_rows,
        "by_rule": dict(con.execute(
            "SELECT r, count(*) FROM (SELECT unnest(list_distinct(list_transform(_reasons, r -> split_part(r, '|', 1) || ':' || split_part(r, '|', 2)))) AS r FROM changed) GROUP BY r ORDER BY r"
        ).fetchall()),
        "raw_runs": [r[0] for r in con.execute("SELECT DISTINCT _run_id FROM raw ORDER BY 1").fetchall()],
        "repairs": dict(applied.repair_counts), "findings": dict(applied.finding_counts),
    }


def _required(version: int | None) -> int:
    if version is None:
        raise RuntimeError("staging: a table has no committed version after its commit")
    return version


def _nothing_to_stage(contract: Contract, run_id: str, staged_table: Path, quarantine_table: Path,
                      schema: pa.Schema, t0: float) -> StageResult:
    """No landing since the last staging run: nothing is read or written, and the result points at the
    versions the tables are at."""
    _ensure_table(quarantine_table, QUARANTINE_SCHEMA, run_id, None)
    plan = StagePlan.from_contract(contract)
    _ensure_table(staged_table, schema, run_id, _partition_by(plan, contract))
    staged = zones.ref(staged_table, _required(zones.version(staged_table)))
    log.info("%s: no new raw landing since the last staging run; staged stays at %s", contract.name, staged)
    return StageResult(
        dataset=contract.name, run_id=run_id, raw_rows=0, duplicates_removed=0, rows_in=0, rows_staged=0,
        rows_quarantined=0, rows_unchanged=0, staged_path=staged,
        quarantine_path=zones.ref(quarantine_table, _required(zones.version(quarantine_table))),
        content_hash=content_hash(contract, staged), raw_runs=[], quarantine_by_rule={},
        seconds=time.monotonic() - t0, mode="none",
    )


def _ensure_table(path: Path, schema: pa.Schema, run_id: str, partition: list[str] | None) -> None:
    if not zones.is_table(path):
        zones.create(path, schema.empty_table(), run_id=run_id, partition_by=partition,
                     metadata={"lienthong.mode": "create"})


def _partition_by(plan: StagePlan, contract: Contract) -> list[str] | None:
    """The staged table's partition column: the province of a `partitionedBy: province` source."""
    if not plan.per_province:
        return None
    return [f.name for f in contract.fields if f.custom.get("derivedFrom") == "connection"][:1] or None


def _partition_select(plan: StagePlan, contract: Contract) -> str:
    cols = _partition_by(plan, contract) or []
    return "".join(f"{_quote(c)}, " for c in cols)


def _register_current(con: duckdb.DuckDBPyConnection, staged_table: Path, quarantine_table: Path,
                      at: tuple[int, int] | None = None) -> dict[str, str]:
    """Make the tables' newest versions (or versions `at`: staged, quarantine) readable as `cur_staged` /
    `cur_quarantine` ({} when there are none)."""
    if not (zones.is_table(staged_table) and zones.is_table(quarantine_table)):
        return {}
    out = {}
    for i, (name, path) in enumerate((("cur_staged", staged_table), ("cur_quarantine", quarantine_table))):
        ref = str(path) if at is None else zones.ref(path, at[i])
        zones.register(con, name, ref)
        out[name] = ref
    return out


def table_paths(dataset: str, staged_dir: Path, quarantine_dir: Path) -> tuple[Path, Path]:
    """Where a dataset's staged and quarantine tables live."""
    return Path(staged_dir) / dataset, Path(quarantine_dir) / dataset


def staged_schema(contract: Contract) -> tuple[pa.Schema, list[Field]]:
    """The staged table's schema (contract fields, then the platform's columns; every column nullable: the
    contract's required fields are enforced by staging itself) and the contract fields it holds."""
    _, fields = build_stage_sql(StagePlan.from_contract(contract))
    schema = pa.schema(
        [pa.field(f.name, f.arrow_type()) for f in fields] + PLATFORM_COLUMNS,
        metadata={b"contract_id": contract.id.encode(), b"contract_version": contract.version.encode()},
    )
    return schema, fields


def content_hash(contract: Contract, staged: str) -> str:
    """An order-independent fingerprint of a staged version: the contract version, the row count and the XOR
    of every row's (merge key, record hash) hash (DuckDB's 64-bit hash, computed where the data is)."""
    with session(load_settings(), purpose="staging") as con:
        zones.register(con, "t", staged)
        n, x = con.execute("SELECT count(*), coalesce(bit_xor(hash(_merge_key, _record_hash)), 0) FROM t").fetchone() or (0, 0)
    return hashlib.sha256(f"{contract.version}\n{n}\n{x}".encode()).hexdigest()


def _uniqueness_rules(contract: Contract) -> list[str]:
    return [f"expectation:{r.name}" for r in contract.rules if r.metric == "duplicateValues"]


def _has_uniqueness(contract: Contract) -> str:
    """SQL: validation quarantined the row (also) because a uniqueness rule found its value duplicated."""
    rules = _uniqueness_rules(contract)
    if not rules:
        return "false"
    return f"list_has_any([{', '.join(_lit(r) for r in rules)}], rules)"


def _uniqueness_held(con: duckdb.DuckDBPyConnection, plan: StagePlan, files: list[str],
                     raw_dir: Path, province: str | None = None) -> tuple[list[str], list[str]]:
    """(landing files, record hashes) of the records quarantined (also) by a uniqueness rule, to be staged
    again with the change (the landings the change reads anyway are not listed twice); with `province`, of
    that province's landings only."""
    found = con.execute(f"SELECT DISTINCT _source_run_id, _record_hash FROM cur_quarantine "
                        f"WHERE {_has_uniqueness(plan.contract)}").fetchall()
    if not found:
        return [], []
    run_folders = {safe_run_id(r) for r, _ in found if r}
    listed = set(files)
    held = [str(f) for f in plan.raw_files(raw_dir) if _landing_run(f) in run_folders and str(f) not in listed
            and (province is None or plan.province_of(f, raw_dir) == province)]
    return held, sorted({h for _, h in found})


def run_work_dir(staged_dir: Path, dataset: str, run_id: str) -> Path:
    """A run's work folder for staging `dataset` (its parts, the landings split by share), under the staged zone."""
    return Path(staged_dir) / "_work" / dataset / hashlib.sha256(run_id.encode()).hexdigest()[:16]


def _identity_sql(plan: StagePlan) -> str:
    """SQL over a raw landing row: its record identity (`_identity`): the source key (with the province for a
    per-province source), or the record hash for a record without one."""
    key = f"json_extract_string(payload, {_lit(_json_path(plan.key_field))})"
    ident = f"_entity || '|' || {key}" if plan.per_province else key
    return f"coalesce({ident}, '#' || _record_hash)"


def _share_sql(plan: StagePlan, shares: int) -> str:
    """SQL over a raw landing row: its share (0 .. shares-1) of the record identities. Every version of a
    record falls in the same share."""
    return f"hash({_identity_sql(plan)}) % {shares}"


SPLIT_GROUP_ROWS = 20_000  # rows per share buffered before a row group is written (memory: shares x this)


def split_landings(plan: StagePlan, files: list[str], shares: int, out_dir: Path) -> list[list[str]]:
    """The landings `files` written again in one pass as `shares` folders of Parquet files, one per share of
    the record identities (`_share_sql`), so that each share reads its own rows instead of every landing
    (which costs a read and a JSON key extraction of every row per share). The rows keep every column DuckDB
    reads from the landings; the folders are named by number alone, so no reader takes them for Hive
    partitions. Returns each share's files (none for an empty share)."""
    import pyarrow.dataset as ds

    shutil.rmtree(out_dir, ignore_errors=True)  # an earlier attempt's
    t0 = time.monotonic()
    with session(load_settings(), purpose="staging") as con:
        reader = con.execute(f"SELECT *, CAST({_share_sql(plan, shares)} AS INTEGER) AS _share "
                             f"FROM read_parquet({json.dumps(files)}, union_by_name = true)").to_arrow_reader(100_000)
        ds.write_dataset(reader, out_dir, format="parquet", basename_template="part-{i}.parquet",
                         partitioning=ds.partitioning(pa.schema([("_share", pa.int32())])),
                         min_rows_per_group=SPLIT_GROUP_ROWS, max_rows_per_group=4 * SPLIT_GROUP_ROWS)
    out = [sorted(str(p) for p in (out_dir / str(i)).glob("*.parquet")) for i in range(shares)]
    log.info("%s: %d landing file(s) split in %d shares of the record identities in %.1f s", plan.contract.name,
             len(files), shares, time.monotonic() - t0)
    return out


def _typed_delta(con: duckdb.DuckDBPyConnection, plan: StagePlan, files: list[str],
                 recheck: tuple[list[str], list[str]] = ([], []), bucket: tuple[int, int] | None = None,
                 presplit: bool = False) -> tuple[int, int, Any]:
    """Read `files` (plus the records `recheck` names: landing files, record hashes) and build the temp table
    `typed`: the latest version of each identity in them, extracted, standardized, typed, with its reasons.
    With `bucket` (share, shares), only the identities of that share; `presplit`: `files` already hold only
    that share's rows (`split_landings`), the records to recheck are still filtered.
    Returns (raw rows, rows in, the standardization's counts)."""
    contract = plan.contract
    in_bucket = "true"
    if bucket is not None:  # one share of the identities: every version of a record falls in the same part
        in_bucket = f"{_share_sql(plan, bucket[1])} = {bucket[0]}"
    if files:
        con.execute(f"CREATE TEMP TABLE raw AS SELECT * FROM read_parquet({json.dumps(files)}, union_by_name = true) "
                    f"WHERE {'true' if presplit else in_bucket}")
    else:
        con.execute("CREATE TEMP TABLE raw (payload VARCHAR, _entity VARCHAR, _run_id VARCHAR, _record_hash VARCHAR, _ingested_at TIMESTAMPTZ)")
    recheck_files, recheck_hashes = recheck
    if recheck_files and recheck_hashes:  # held-back records of this part's share only
        con.register("recheck_hashes", pa.table({"h": pa.array(recheck_hashes, pa.string())}))
        con.execute(f"""INSERT INTO raw BY NAME
                        SELECT payload, _entity, _run_id, _record_hash, _ingested_at
                        FROM read_parquet({json.dumps(recheck_files)}, union_by_name = true)
                        WHERE _record_hash IN (SELECT h FROM recheck_hashes) AND {in_bucket}""")
    raw_rows = _scalar(con, "SELECT count(*) FROM raw")
    upd_src = f"json_extract_string(payload, {_lit(_json_path(plan.updated_field))})"
    if plan.updated_parse == "dmy_local_datetime":
        upd = f"timezone('Asia/Ho_Chi_Minh', try_strptime({upd_src}, '%d/%m/%Y %H:%M:%S'))"
    else:
        upd = f"TRY_CAST({upd_src} AS TIMESTAMPTZ)"
    # Latest version per key; records without a key cannot be merged, so each distinct one is kept.
    con.execute(
        f"""CREATE TEMP TABLE latest_parent AS
            SELECT * EXCLUDE (rn) FROM (
              SELECT *, row_number() OVER (PARTITION BY _identity ORDER BY {VERSION_ORDER}) AS rn
              FROM (SELECT *, {_identity_sql(plan)} AS _identity, {upd} AS _source_updated_at
                    FROM raw)) WHERE rn = 1"""
    )
    if plan.unnest:
        # A child dataset: one row per element of the parent's list, numbered from 0 in the source's order.
        n = f"CAST(coalesce(json_array_length(payload, {_lit(_json_path(plan.unnest))}), 0) AS BIGINT)"
        con.execute(f"CREATE TEMP TABLE latest AS SELECT *, unnest(range({n})) AS _pos FROM latest_parent")
        raw_rows = _scalar(con, f"SELECT coalesce(sum({n}), 0) FROM raw")
    else:
        con.execute("CREATE TEMP VIEW latest AS SELECT * FROM latest_parent")
    rows_in = _scalar(con, "SELECT count(*) FROM latest")
    (extract_sql, typed_sql), _ = build_stage_sql(plan)
    con.execute(f"CREATE TEMP TABLE extracted AS {extract_sql}")
    applied = _standardize(con, contract)
    con.register("standardized", applied.table)
    replaced = [c for c in applied.table.column_names if c.startswith("src_")]
    keep = f"e.* EXCLUDE ({', '.join(replaced)})" if replaced else "e.*"
    con.execute(f"CREATE TEMP VIEW src AS SELECT {keep}, s.* EXCLUDE (_rid) FROM extracted e JOIN standardized s USING (_rid)")
    con.execute(f"CREATE TEMP TABLE typed AS {typed_sql}")
    return raw_rows, rows_in, applied


def _standardize(con, contract: Contract):
    """Run the contract's standardizers on the extracted source columns (the payload stays in DuckDB)."""
    from lienthong.standardize.apply import apply_standardization

    src_cols = [c for c in con.execute("SELECT * FROM extracted LIMIT 0").fetch_arrow_table().column_names if c.startswith("src_")]
    wanted = ["_rid"] + [c for c in src_cols if _needs(contract, c[4:])]
    table = con.execute(f"SELECT {', '.join(wanted)} FROM extracted").fetch_arrow_table()
    applied = apply_standardization(contract, table)
    t = applied.table.append_column("_std_reasons", applied.reasons)
    t = t.append_column("_repairs", applied.repairs).append_column("_findings", applied.findings)
    applied.table = t
    return applied


def _needs(contract: Contract, name: str) -> bool:
    """Whether a field's source text goes through Python standardization (itself or as a helper input)."""
    helpers = {f.custom.get(k) for f in contract.fields for k in ("birthFrom", "sexFrom", "districtFrom", "provinceFrom")}
    helpers |= {f.custom["onlyWhere"].split("=", 1)[0] for f in contract.fields if f.custom.get("onlyWhere")}
    f = next((x for x in contract.fields if x.name == name), None)
    return f is not None and (bool(f.custom.get("standardize")) or name in helpers or name.endswith("_catalogue_version"))


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file under a temporary name and rename it into place (readers never see half)."""
    with atomic_writer(path, table.schema) as write:
        write(table)
    return path


@contextmanager
def atomic_writer(path: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """`write_atomic` for rows that come a table at a time: the `with` block gets a function writing a table
    (cast to `schema`) as it comes, so the rows are never all held at once; the file is renamed into place
    when the block ends. On an error the temporary file is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            yield lambda table: writer.write_table(table.select(schema.names).cast(schema))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Moved:
    """What `quarantine_failed_rows` did: rows moved, per rule, and the versions it left the tables at."""

    rows: int
    by_rule: dict[str, int]
    staged_path: str
    quarantine_path: str


def quarantine_failed_rows(
    contract: Contract,
    run_id: str,
    staged_ref: str,
    raw_dir: Path,
    failed: dict[str, list[str]],
    expectations: dict[str, str],
    *,
    quarantine_dir: Path,
) -> Moved:
    """Move the staged rows that failed a critical expectation (by `_merge_key`) to quarantine, with the
    expectation as the reason and the full original record (looked up by record hash in the landings of the
    runs that brought them). Quarantine is committed before the staged rows are deleted, so a kill between
    the two leaves the rows in both tables (validation of the same change moves them again), never in
    neither. A row failing several rules moves once."""
    keys = sorted({k for ks in failed.values() for k in ks})
    staged_path, _ = zones.split_ref(staged_ref)
    quarantine_table = Path(quarantine_dir) / contract.name
    if not keys:
        return Moved(0, {}, staged_ref, zones.ref(quarantine_table, _required(zones.version(quarantine_table))))
    rules_of = rules_by_key(failed)
    plan = StagePlan.from_contract(contract)
    pk = list(contract.primary_key)
    with session(load_settings(), purpose="quarantine") as con:
        zones.register(con, "staged", staged_ref)
        con.register("moved_keys", pa.table({"k": pa.array(keys, pa.string())}))
        moved = con.execute(
            "SELECT * FROM staged WHERE _merge_key IN (SELECT k FROM moved_keys) ORDER BY _merge_key").fetch_arrow_table()
        runs_of_rows = {r for r in moved.column("_source_run_id").to_pylist() if r}
        files = [str(f) for f in plan.raw_files(raw_dir) if _landing_run(f) in {safe_run_id(r) for r in runs_of_rows}]
        payloads: dict[str, str] = {}
        if files:
            con.register("moved_hashes", pa.table({"h": moved.column("_record_hash")}))
            payloads = dict(con.execute(
                f"SELECT DISTINCT _record_hash, payload FROM read_parquet({json.dumps(files)}, union_by_name = true) "
                "WHERE _record_hash IN (SELECT h FROM moved_hashes)").fetchall())
    rows = []
    for r in moved.to_pylist():
        key = ", ".join(str(r[k]) for k in pk) if pk else r["_merge_key"]
        rules = sorted(rules_of[r["_merge_key"]])
        rows.append({
            "dataset": contract.name, "run_id": run_id, "record_key": key,
            "reasons": [f"record {key}: expectation {expectations.get(x, x)} failed (rule {x})" for x in rules],
            "rules": [f"expectation:{x}" for x in rules],
            "payload": payloads.get(r["_record_hash"], ""),
            **{c: r[c] for c in ("_source_run_id", "_record_hash", "_ingested_at", "_identity", "_merge_key",
                                 "_source_updated_at")},
            zones.OP: "upsert",
        })
    q_schema = pa.schema(list(QUARANTINE_SCHEMA) + [pa.field(zones.OP, pa.string())])
    q = zones.merge(quarantine_table, pa.Table.from_pylist(rows, schema=q_schema), key="_merge_key", run_id=run_id,
                    metadata={"lienthong.mode": "expectation"})
    deletes = moved.select(["_merge_key"] + (_partition_by(plan, contract) or []))
    deletes = deletes.append_column(zones.OP, pa.array(["delete"] * deletes.num_rows, pa.string()))
    full = zones.schema(staged_path)
    deletes = pa.table({n: deletes[n] if n in deletes.column_names else pa.nulls(deletes.num_rows, full.field(n).type)
                        for n in [*full.names, zones.OP]})
    s = zones.merge(staged_path, deletes, key="_merge_key", run_id=run_id,
                    partition_by=_partition_by(plan, contract), metadata={"lienthong.mode": "expectation"})
    counts: dict[str, int] = {}
    for k in keys:
        for x in rules_of[k]:
            counts[f"expectation:{x}"] = counts.get(f"expectation:{x}", 0) + 1
    log.info("%s run %s: moved %d rows that failed critical expectations to quarantine: %s",
             contract.name, run_id, len(keys), counts)
    return Moved(moved.num_rows, counts, zones.ref(staged_path, _required(s.version)),
                 zones.ref(quarantine_table, _required(q.version)))


def rules_by_key(failed: dict[str, list[str]]) -> dict[str, list[str]]:
    """{rule: merge keys failing it} turned around: {merge key: the rules it fails, sorted}."""
    out: dict[str, list[str]] = {}
    for rule, keys in failed.items():
        for k in keys:
            out.setdefault(k, []).append(rule)
    return {k: sorted(v) for k, v in out.items()}


def _landing_run(path: Path) -> str:
    """The run folder name (`run=<id>`) of a raw part file, without the prefix."""
    return path.parent.name.removeprefix("run=")


def landing_of(path: Path, raw_dir: Path) -> str:
    """A raw part file's landing: its folder relative to the raw zone (what the ledger records as staged)."""
    return str(Path(path).parent.relative_to(raw_dir))


def state_check(contract: Contract, staged_dir: Path, quarantine_dir: Path) -> dict[str, Any]:
    """The full-state check of a dataset's tables: each row's merge key unique within its table and in one
    table only. Returns the counts and `ok`."""
    staged_table, quarantine_table = table_paths(contract.name, staged_dir, quarantine_dir)
    with session(load_settings(), purpose="staging") as con:
        zones.register(con, "s", staged_table)
        zones.register(con, "q", quarantine_table)
        row = con.execute("""SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM q),
                                    (SELECT count(*) - count(DISTINCT _merge_key) FROM s),
                                    (SELECT count(*) - count(DISTINCT _merge_key) FROM q),
                                    (SELECT count(*) FROM s WHERE _merge_key IN (SELECT _merge_key FROM q))""").fetchone()
    staged, quarantined, dup_s, dup_q, both = row or (0, 0, 0, 0, 0)
    return {"dataset": contract.name, "staged": staged, "quarantined": quarantined, "duplicate_staged": dup_s,
            "duplicate_quarantined": dup_q, "in_both": both, "ok": dup_s == dup_q == both == 0}


def quarantine_by_rule(quarantine_ref: str) -> dict[str, int]:
    """Rows per rule in a quarantine table version (a row quarantined for two rules counts for both)."""
    with session(load_settings(), purpose="quarantine") as con:
        zones.register(con, "q", quarantine_ref)
        return dict(con.execute(
            "SELECT r, count(*) FROM (SELECT unnest(list_distinct(rules)) AS r FROM q) GROUP BY r ORDER BY r").fetchall())
