"""Raw -> staged for sources landed as JSON payloads: contract-typed rows, or quarantine with a reason.

The plan comes from the contract: each field's `sourceField` (a dotted path into the payload), its logical
type and `parse` rule, and its critical quality rules. It runs as one DuckDB query over the raw Parquet
(vectorised, no Python loop per row):

1. collapse exact repeats (same record hash) and keep the latest version of each source key;
2. extract and type every field (text to Unicode NFC, trimmed; dates and times parsed; UTC);
3. collect, per row, the reasons it cannot be used (a required field missing, an unparseable value, a
   critical pattern or value-set rule broken), each naming the record key and the field;
4. write staged rows and quarantined rows (with the full original payload), and check conservation:
   rows_in == rows_staged + rows_quarantined.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.contracts import Contract, Field
from lienthong.duck import session
from lienthong.paths import run_folder
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
]
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
    staged_path: str
    quarantine_path: str
    content_hash: str
    raw_runs: list[str]
    quarantine_by_rule: dict[str, int]
    seconds: float
    repairs: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)

    @property
    def conservation_ok(self) -> bool:
        return self.rows_in == self.rows_staged + self.rows_quarantined

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
    extract_sql = f"""
      SELECT row_number() OVER () AS _rid, payload, _run_id, _record_hash, _ingested_at, {record_key} AS _source_key,
             {"_pos, " if plan.unnest else ""}{", ".join(src_cols)}
      FROM (SELECT *, json_extract_string(payload, [{", ".join(_lit(p) for p in root_paths) or "'$.__none__'"}]) AS _v
            FROM latest) AS latest
    """
    typed_sql = f"""
    SELECT {", ".join(typed_cols)},
           _run_id AS _source_run_id, _record_hash, _ingested_at, _source_key, payload,
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
    key_source_field: str | None = None,
    updated_source_field: str | None = None,
) -> StageResult:
    """Stage every raw landing of a source as the latest version per key; see the module docstring.
    Key and cursor fields come from the contract (the keyword arguments override them)."""
    plan = StagePlan.from_contract(contract)
    if key_source_field or updated_source_field:
        plan = replace(plan, key_field=key_source_field or plan.key_field, updated_field=updated_source_field or plan.updated_field)
    t0 = time.monotonic()
    files = [str(p) for p in raw_files]
    if not files:
        raise FileNotFoundError(f"no raw landing found for {contract.name}")
    # A bounded session (memory limit, spill folder, threads) so staging a national table stays within a worker.
    with session(load_settings(), purpose="staging") as con:
        con.execute(f"CREATE TEMP TABLE raw AS SELECT * FROM read_parquet({json.dumps(files)}, union_by_name = true)")
        raw_rows = _scalar(con, "SELECT count(*) FROM raw")
        key_src = f"json_extract_string(payload, {_lit(_json_path(plan.key_field))})"
        upd_src = f"json_extract_string(payload, {_lit(_json_path(plan.updated_field))})"
        if plan.updated_parse == "dmy_local_datetime":
            upd = f"try_strptime({upd_src}, '%d/%m/%Y %H:%M:%S')"
        else:
            upd = f"TRY_CAST({upd_src} AS TIMESTAMPTZ)"
        identity = f"_entity || '|' || {key_src}" if plan.per_province else key_src
        # Latest version per key; records without a key cannot be merged, so each distinct one is kept.
        con.execute(
            f"""CREATE TEMP TABLE latest_parent AS
                SELECT * EXCLUDE (rn) FROM (
                  SELECT *, row_number() OVER (
                    PARTITION BY coalesce({identity}, _record_hash)
                    ORDER BY {upd} DESC NULLS LAST, _ingested_at DESC, _record_hash) AS rn
                  FROM raw) WHERE rn = 1"""
        )
        if plan.unnest:
            # A child dataset: one row per element of the parent's list, numbered from 0 in the source's order.
            n = f"CAST(coalesce(json_array_length(payload, {_lit(_json_path(plan.unnest))}), 0) AS BIGINT)"
            con.execute(f"CREATE TEMP TABLE latest AS SELECT *, unnest(range({n})) AS _pos FROM latest_parent")
            raw_rows = _scalar(con, f"SELECT coalesce(sum({n}), 0) FROM raw")
        else:
            con.execute("CREATE TEMP VIEW latest AS SELECT * FROM latest_parent")
        rows_in = _scalar(con, "SELECT count(*) FROM latest")
        (extract_sql, typed_sql), staged_fields = build_stage_sql(plan)
        con.execute(f"CREATE TEMP TABLE extracted AS {extract_sql}")
        applied = _standardize(con, contract)
        con.register("standardized", applied.table)
        replaced = [c for c in applied.table.column_names if c.startswith("src_")]
        keep = f"e.* EXCLUDE ({', '.join(replaced)})" if replaced else "e.*"
        con.execute(f"CREATE TEMP VIEW src AS SELECT {keep}, s.* EXCLUDE (_rid) FROM extracted e JOIN standardized s USING (_rid)")
        con.execute(f"CREATE TEMP TABLE typed AS {typed_sql}")

        schema = pa.schema(
            [pa.field(f.name, f.arrow_type(), nullable=not f.required) for f in staged_fields] + PLATFORM_COLUMNS,
            metadata={b"contract_id": contract.id.encode(), b"contract_version": contract.version.encode()},
        )
        cols = ", ".join([f.name for f in staged_fields] + ["_source_run_id", "_record_hash", "_ingested_at", "_repairs", "_findings"])
        key_order = ", ".join(contract.primary_key)
        staged = con.execute(f"SELECT {cols} FROM typed WHERE len(_reasons) = 0 ORDER BY {key_order}").fetch_arrow_table()
        staged = staged.cast(schema)
        quarantined = con.execute(
            f"""SELECT {_lit(contract.name)} AS dataset, {_lit(run_id)} AS run_id, _source_key AS record_key,
                       list_transform(_reasons, r -> 'record ' || coalesce(_source_key, '<no key>') || ': ' || split_part(r, '|', 1) || ': ' || split_part(r, '|', 3)) AS reasons,
                       list_transform(_reasons, r -> split_part(r, '|', 1) || ':' || split_part(r, '|', 2)) AS rules,
                       payload, _source_run_id, _record_hash, _ingested_at
                FROM typed WHERE len(_reasons) > 0 ORDER BY _record_hash"""
        ).fetch_arrow_table().cast(QUARANTINE_SCHEMA)
        by_rule = dict(
            con.execute(
                "SELECT r, count(*) FROM (SELECT unnest(list_distinct(list_transform(_reasons, r -> split_part(r, '|', 1) || ':' || split_part(r, '|', 2)))) AS r FROM typed) GROUP BY r ORDER BY r"
            ).fetchall()
        )
        raw_runs = [r[0] for r in con.execute("SELECT DISTINCT _run_id FROM raw ORDER BY 1").fetchall()]
        content_hash = hashlib.sha256(
            (contract.version + "\n" + "\n".join(staged.column("_record_hash").to_pylist())).encode()
        ).hexdigest()

    staged_path = write_atomic(staged, run_folder(staged_dir, contract.name, run_id) / f"{contract.name}.parquet")
    q_path = write_atomic(quarantined, run_folder(quarantine_dir, contract.name, run_id) / "quarantine.parquet")
    result = StageResult(
        dataset=contract.name,
        run_id=run_id,
        raw_rows=raw_rows,
        duplicates_removed=raw_rows - rows_in,
        rows_in=rows_in,
        rows_staged=staged.num_rows,
        rows_quarantined=quarantined.num_rows,
        staged_path=str(staged_path),
        quarantine_path=str(q_path),
        content_hash=content_hash,
        raw_runs=raw_runs,
        quarantine_by_rule=by_rule,
        seconds=time.monotonic() - t0,
        repairs=dict(sorted(applied.repair_counts.items())),
        findings=dict(sorted(applied.finding_counts.items())),
    )
    log.info(
        "staged %s: raw %d, in %d, staged %d, quarantined %d (%.1fs)",
        contract.name, raw_rows, rows_in, result.rows_staged, result.rows_quarantined, result.seconds,
    )
    if not result.conservation_ok:
        raise ConservationError(
            f"{contract.name} run {run_id}: rows_in {rows_in} != staged {result.rows_staged} + quarantined {result.rows_quarantined}"
        )
    return result


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def remove_stage_output(path: str | Path) -> None:
    shutil.rmtree(Path(path).parent, ignore_errors=True)


def quarantine_failed_rows(
    dataset: str,
    run_id: str,
    staged_path: str | Path,
    quarantine_path: str | Path,
    raw_files: list[Path],
    failed_rows: dict[str, list[int]],
    expectations: dict[str, str],
) -> dict[str, int]:
    """Move the staged rows that failed a critical expectation (positions in the staged file) to quarantine,
    with the expectation as the reason and the full original record (looked up in raw by record hash).
    Rewrites both files atomically; returns {rule: rows moved}. A row failing several rules moves once."""
    positions = sorted({p for rows in failed_rows.values() for p in rows})
    if not positions:
        return {}
    staged = pq.read_table(staged_path)
    moved = staged.take(pa.array(positions, pa.int64()))
    keep = pa.compute.invert(pa.compute.is_in(pa.array(range(staged.num_rows), pa.int64()), value_set=pa.array(positions, pa.int64())))
    rules_of: dict[int, list[str]] = {}
    for rule, failed in failed_rows.items():
        for p in failed:
            rules_of.setdefault(p, []).append(rule)
    with session(load_settings(), purpose="quarantine") as con:
        con.register("moved_hashes", pa.table({"h": moved.column("_record_hash")}))
        payloads = dict(con.execute(
            f"SELECT DISTINCT _record_hash, payload FROM read_parquet({json.dumps([str(f) for f in raw_files])}, union_by_name = true) "
            "WHERE _record_hash IN (SELECT h FROM moved_hashes)"
        ).fetchall())
    pk = [n for n in staged.column_names if not n.startswith("_")][:1]
    keys = moved.column(pk[0]).to_pylist() if pk else [None] * moved.num_rows
    rows = []
    for i, pos in enumerate(positions):
        rules = sorted(rules_of[pos])
        rows.append({
            "dataset": dataset, "run_id": run_id, "record_key": None if keys[i] is None else str(keys[i]),
            "reasons": [f"record {keys[i]}: expectation {expectations.get(r, r)} failed (rule {r})" for r in rules],
            "rules": [f"expectation:{r}" for r in rules],
            "payload": payloads.get(moved.column("_record_hash")[i].as_py(), ""),
            "_source_run_id": moved.column("_source_run_id")[i].as_py(),
            "_record_hash": moved.column("_record_hash")[i].as_py(),
            "_ingested_at": moved.column("_ingested_at")[i].as_py(),
        })
    quarantine = pa.concat_tables([pq.read_table(quarantine_path).cast(QUARANTINE_SCHEMA),
                                   pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)])
    write_atomic(staged.filter(keep), Path(staged_path))
    write_atomic(quarantine, Path(quarantine_path))
    counts: dict[str, int] = {}
    for pos in positions:
        for r in rules_of[pos]:
            counts[f"expectation:{r}"] = counts.get(f"expectation:{r}", 0) + 1
    log.info("%s run %s: moved %d rows that failed critical expectations to quarantine: %s", dataset, run_id, len(positions), counts)
    return counts
