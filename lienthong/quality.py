"""Validation with Great Expectations, suites generated from the contracts, the quality gate, Data Docs.

Every contract quality rule becomes one expectation (nullValues -> not null, duplicateValues -> unique, or
compound unique for a schema-level rule over `properties`, invalidValues -> regex / value set / range,
futureValues -> between with the run's date (or year) as maximum, custom checks -> the platform's own
expectations in `lienthong.expectations`), with `mostly` from the rule's tolerance; a rule with `onlyWhere:
column=VALUE` becomes a GX row condition. A rule's failing rows are those GX finds
in staged data plus those standardization already quarantined for it; the gate fails when a critical rule's
failing share exceeds its tolerance.

This module owns:
- the suite built from a contract (`expectations_for`);
- the run (`validate`): one GX validation in COMPLETE result format, so every failing row of a critical
  rule is known by its 0-based position in the batch (`QualityResult.failed_rows`), its `_merge_key` and
  its primary key (`failed_keys`), for the caller to move to quarantine;
- a validation in parts: the row-level rules on one part's changed rows (`check_part`, one GX batch per
  SQL condition), combined by `validate(parts=...)` with the uniqueness rules run on the whole version;
- what is kept: `quality_run` / `quality_result` in the warehouse, a JSON file per run and dataset, and GX
  Data Docs (a static site under `<reports_dir>/data_docs/`). What leaves memory is masked: no row value
  of a column the contract classifies personal or sensitive, and no row's primary key when that key is
  personal, is written to a file or the XCom verdict (GX renders sample failing values by default).

Great Expectations is imported inside the functions (it costs seconds), its progress bars are off and its
loggers kept at WARNING.
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lienthong import runs
from lienthong.contracts import Contract, QualityRule
from lienthong.db import connect
from lienthong.paths import safe_run_id

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

CUSTOM_CHECKS = {"personal_id_matches_birth"}
# The agencies' dates are Vietnamese calendar dates: "not in the future" means after today in Vietnam
# (UTC+7), or a certificate issued this morning would fail a run between 00:00 and 07:00 local time.
LOCAL_TZ = dt.timezone(dt.timedelta(hours=7), "Asia/Ho_Chi_Minh")
DOCS_SITE = "lienthong"
# Result keys that carry row values or row identities; never written out for personal columns.
_ROW_VALUE_KEYS = (
    "unexpected_list", "partial_unexpected_list", "partial_unexpected_counts", "unexpected_index_list",
    "partial_unexpected_index_list", "unexpected_index_query", "unexpected_rows", "observed_value", "details",
)
# Full lists are for the caller (failed_rows); on disk the partial sample of a non-personal column is enough.
_FULL_LIST_KEYS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows")
_GX_LOGGERS = ("great_expectations", "great_expectations.core", "great_expectations.data_context",
               "great_expectations.render", "great_expectations.expectations")


@dataclass
class RuleOutcome:
    rule: str
    expectation: str
    column: str | None
    severity: str
    element_count: int
    unexpected_staged: int
    unexpected_quarantined: int
    tolerance: str
    success: bool

    @property
    def unexpected_count(self) -> int:
        return self.unexpected_staged + self.unexpected_quarantined


@dataclass
class QualityResult:
    """A dataset's validation: per-rule outcomes, the gate, and the rows of critical rules that failed.

    `failed_rows` maps a critical rule to the 0-based positions (in the batch GX validated; in parts, the
    parts' batches one after the other, then the uniqueness batch) of the rows its expectation found failing,
    whether or not the rule stayed within tolerance; `failed_merge_keys` and `failed_keys` give the same rows'
    `_merge_key` and primary keys ({key column: value}), in the same order. Rules without failing staged rows
    are absent.
    """

    dataset: str
    run_id: str
    suite: str
    gx_success: bool
    gate_passed: bool
    outcomes: list[RuleOutcome] = field(default_factory=list)
    failed_rows: dict[str, list[int]] = field(default_factory=dict)
    failed_keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed_merge_keys: dict[str, list[str]] = field(default_factory=dict)
    # row-level warning rules -> the changed rows (by `_merge_key`) that fail them: what validation records
    # in the rows' `_failed_rules`
    flagged: dict[str, list[str]] = field(default_factory=dict)
    staged_path: str = ""
    rows_changed: int = 0
    parts: int = 0  # the parts (`check_part`) whose row-level checks it combined; 0: validated whole
    seconds: float = 0.0
    gx_seconds: float = 0.0
    result_path: str = ""
    data_docs_path: str = ""

    @property
    def failed_critical(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.severity == "critical" and not o.success]

    @property
    def failed_warning(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.severity == "warning" and not o.success]

    def as_dict(self, *, include_keys: bool = True) -> dict[str, Any]:
        """Plain types only (JSON-able). `include_keys=False` leaves out `failed_keys` (for anything stored)."""
        d = asdict(self)
        d["failed_critical"] = [o.rule for o in self.failed_critical]
        d["failed_warning"] = [o.rule for o in self.failed_warning]
        if not include_keys:
            d.pop("failed_keys")
        return d


def _mostly(rule: QualityRule, rows: int) -> float:
    if rule.max_fraction is not None:
        return max(0.0, 1.0 - rule.max_fraction)
    if rows == 0:
        return 1.0
    return max(0.0, 1.0 - (rule.max_rows or 0) / rows)


def expectations_for(
    contract: Contract, rows: int, columns: set[str], today: dt.date | None = None, *, changed_only: str | None = None
) -> list[tuple[QualityRule, Any]]:
    """(rule, GX expectation) for every contract rule whose columns are present. `today` is the date a
    futureValues rule measures against (default: today in Vietnam). With `changed_only` (a boolean column of
    the batch), row-level expectations look at the rows where it is true only (uniqueness looks at all)."""
    import great_expectations as gx

    from lienthong.expectations import PERSONAL_ID_COLUMNS, ExpectPersonalIdToMatchBirth

    E = gx.expectations
    today = today or dt.datetime.now(LOCAL_TZ).date()
    out: list[tuple[QualityRule, Any]] = []
    for rule in contract.rules:
        col = rule.column
        if not set(rule.columns) <= columns:
            continue
        mostly = _mostly(rule, rows)
        meta = {"rule": rule.name, "severity": rule.severity}
        kw: dict[str, Any] = {"mostly": mostly, "meta": meta}
        conditions = [f"{where[0]}=={where[1]!r}"] if (where := rule.only_where) else []
        if changed_only and _dataset_level(contract, rule) is None:
            conditions.append(f"{changed_only}==True")
        if conditions:
            kw.update(row_condition=" & ".join(f"({c})" for c in conditions), condition_parser="pandas")
        exp: Expectation
        if rule.metric == "nullValues":
            exp = E.ExpectColumnValuesToNotBeNull(column=_column(contract, rule), **kw)
        elif rule.metric == "duplicateValues" and col is None:
            exp = E.ExpectCompoundColumnsToBeUnique(column_list=list(rule.arguments["properties"]), **kw)
        elif rule.metric == "duplicateValues":
            pk = contract.primary_key
            if col in pk and len(pk) > 1:
                exp = E.ExpectCompoundColumnsToBeUnique(column_list=pk, **kw)
            else:
                exp = E.ExpectColumnValuesToBeUnique(column=_column(contract, rule), **kw)
        elif rule.metric == "invalidValues" and "pattern" in rule.arguments:
            exp = E.ExpectColumnValuesToMatchRegex(column=_column(contract, rule), regex=rule.arguments["pattern"], **kw)
        elif rule.metric == "invalidValues" and "validValues" in rule.arguments:
            exp = E.ExpectColumnValuesToBeInSet(column=_column(contract, rule),
                                                value_set=list(rule.arguments["validValues"]), **kw)
        elif rule.metric == "invalidValues":
            exp = E.ExpectColumnValuesToBeBetween(
                column=_column(contract, rule), min_value=rule.arguments.get("minValue"),
                max_value=rule.arguments.get("maxValue"), **kw
            )
        elif rule.metric == "futureValues":
            # A date column is compared with today; an integer column holds a year (land holders' nam_sinh).
            latest: dt.date | int = today if contract.field(_column(contract, rule)).logical_type == "date" else today.year
            exp = E.ExpectColumnValuesToBeBetween(column=_column(contract, rule), max_value=latest, **kw)
        elif rule.implementation == "personal_id_matches_birth":
            if not set(PERSONAL_ID_COLUMNS) <= columns:
                log.warning("contract %s: rule %s needs columns %s; skipped", contract.name, rule.name, PERSONAL_ID_COLUMNS)
                continue
            exp = ExpectPersonalIdToMatchBirth(
                column_list=list(PERSONAL_ID_COLUMNS), mostly=mostly, meta=meta, description=rule.description or None,
                **{k: v for k, v in kw.items() if k in ("row_condition", "condition_parser")},
            )
        else:
            log.warning("contract %s: rule %s has no expectation yet; skipped", contract.name, rule.name)
            continue
        out.append((rule, exp))
    return out


def _column(contract: Contract, rule: QualityRule) -> str:
    """The column of a column rule (GX refuses such an expectation without one)."""
    if rule.column is None:
        raise ValueError(f"contract {contract.name}: rule {rule.name} ({rule.metric}) names no column")
    return rule.column


def _quarantined_for(rule: QualityRule, quarantine_by_rule: dict[str, int]) -> int:
    moved = quarantine_by_rule.get(f"expectation:{rule.name}", 0)  # failed this expectation in an earlier run
    return moved + _quarantined_by_staging(rule, quarantine_by_rule)


def _quarantined_by_staging(rule: QualityRule, quarantine_by_rule: dict[str, int]) -> int:
    if rule.metric == "invalidValues":
        return quarantine_by_rule.get(f"invalid:{rule.name}", 0)
    if rule.metric == "nullValues" and rule.column:
        return quarantine_by_rule.get(f"required:{rule.column}", 0) + quarantine_by_rule.get(f"unparseable:{rule.column}", 0)
    return 0


def _expectation_columns(config: Any) -> set[str]:
    kw = config.kwargs
    cols = {kw["column"]} if kw.get("column") else set()
    return cols | set(kw.get("column_list") or [])


def masked_results(res: Any, contract: Contract) -> Any:
    """A copy of a GX suite result fit to leave memory: no full row lists at all, and no sample values
    for expectations on a personal or sensitive column (their counts and percentages stay)."""
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    personal = {f.name for f in contract.fields if f.is_personal}
    results = []
    for r in res.results:
        drop = _ROW_VALUE_KEYS if _expectation_columns(r.expectation_config) & personal else _FULL_LIST_KEYS
        kept = {k: v for k, v in (r.result or {}).items() if k not in drop}
        results.append(
            ExpectationValidationResult(
                success=r.success, expectation_config=r.expectation_config, result=kept, meta=r.meta,
                exception_info=r.exception_info,
            )
        )
    return ExpectationSuiteValidationResult(
        success=res.success, results=results, suite_name=res.suite_name, suite_parameters=res.suite_parameters,
        statistics=res.statistics, meta=res.meta, batch_id=res.batch_id,
    )


def _context(reports_dir: Path | None) -> Any:
    """An ephemeral GX context; with a reports dir, its suites and (masked) validation results are kept on
    disk under `<reports_dir>/gx/` so the Data Docs index lists every run and dataset, not only the last."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

    def backend(sub: str) -> dict[str, Any]:
        if reports_dir is None:
            return {"class_name": "InMemoryStoreBackend"}
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(reports_dir) / "gx" / sub)}

    stores = {
        "expectations_store": {"class_name": "ExpectationsStore", "store_backend": backend("expectations")},
        "validation_results_store": {"class_name": "ValidationResultsStore", "store_backend": backend("validations")},
        "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": {"class_name": "InMemoryStoreBackend"}},
        "validation_definition_store": {
            "class_name": "ValidationDefinitionStore", "store_backend": {"class_name": "InMemoryStoreBackend"},
        },
    }
    sites = {}
    if reports_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(reports_dir) / "data_docs")},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
        }
    config = DataContextConfig(
        stores=stores,
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites=sites,
        # An offline government platform: no usage statistics leave the host.
        analytics_enabled=False,
        # Our own log lines report progress; GX's per-metric bars would flood task logs.
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@contextmanager
def _docs_lock(reports_dir: Path) -> Iterator[None]:
    # The integrate DAG validates datasets in parallel tasks; they share one site and its index.
    path = Path(reports_dir) / "gx" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_docs(context: Any, suite: Any, masked: Any, run_id: str, reports_dir: Path) -> str:
    """Store the masked result and the suite, rebuild this run's pages and the index; the index path."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from lienthong.audit.datadocs import escaped_for_docs, offline_site

    suite_id = ExpectationSuiteIdentifier(name=suite.name)
    gx_run = RunIdentifier(run_name=safe_run_id(run_id))
    # As ValidationDefinition.run does: the pages show the run's name and time from the result's meta.
    masked.meta["run_id"] = gx_run
    masked.meta["validation_time"] = gx_run.run_time
    result_id = ValidationResultIdentifier(
        expectation_suite_identifier=suite_id, run_id=gx_run, batch_identifier=masked.batch_id or suite.name
    )
    with _docs_lock(reports_dir):
        context.suites.add_or_update(suite)
        # The stored copy is only rendered: values from the data escaped, so no page shows one as markup.
        context.validation_results_store.store_validation_results(escaped_for_docs(masked), result_id, suite_id)
        started = time.time()
        # Only this run's pages are rendered; the index is rebuilt from every stored result.
        urls = context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=[suite_id, result_id])
        # GX's pages load their scripts and styles from CDNs: they get the site's own pinned copies instead.
        offline_site(Path(reports_dir) / "data_docs", since=started)
    return urls[DOCS_SITE].removeprefix("file://")


@dataclass
class Found:
    """What GX found failing for one rule in a batch: the count, the failing rows' 0-based positions in the
    batch, their `_merge_key` and (critical rules) primary-key values, in position order. JSON-able."""

    unexpected: int = 0
    positions: list[int] = field(default_factory=list)
    merge_keys: list[str] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)

    def then(self, other: Found, offset: int) -> Found:
        """This and `other` found in a batch that follows this one's at `offset` rows."""
        return Found(self.unexpected + other.unexpected, self.positions + [offset + p for p in other.positions],
                     self.merge_keys + other.merge_keys, self.keys + other.keys)


@dataclass
class PartChecks:
    """A part of a validation in parts (`check_part`): the row-level rules on the changed rows of one
    province or hash share, each `Found` with positions in the part's batch (`rows_changed` rows). JSON-able,
    kept in the run's work folder for the combining task."""

    part: str
    rows_changed: int
    gx_success: bool
    found: dict[str, Found] = field(default_factory=dict)
    result_paths: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartChecks:
        return cls(**{**d, "found": {k: Found(**v) for k, v in d["found"].items()}})


def _one_after_another(batches: list[tuple[dict[str, Found], int]]) -> dict[str, Found]:
    """What batches found ({rule: Found}, rows in the batch), as found in one batch made of them in order."""
    merged: dict[str, Found] = {}
    offset = 0
    for found, rows in batches:
        for rule, f in found.items():
            merged[rule] = merged.get(rule, Found()).then(f, offset)
        offset += rows
    return merged


def _needed_columns(contract: Contract, staged_path: str | Path) -> list[str]:
    """The staged columns the suite reads: the staged table also holds wide per-record lists (_repairs, ...)
    whose conversion to pandas objects dominated time and memory at a million rows."""
    from lienthong import zones

    needed = {c for r in contract.rules for c in r.columns} | set(contract.primary_key) | {"citizen_id", "birth_date", "sex"}
    available = set(zones.schema(staged_path).names)
    return [c for c in contract.field_names if c in needed & available]


def _run_suite(context: Any, contract: Contract, df: Any, pairs: list[tuple[QualityRule, Any]], *,
               asset: str) -> tuple[Any, Any, dict[str, Found]]:
    """One GX validation of batch `df` against the expectations of `pairs`: (suite, result, {rule: Found}
    for every rule with failing rows)."""
    import great_expectations as gx

    source = context.data_sources.add_pandas(name=f"staged_{asset}")
    batch = source.add_dataframe_asset(name=asset).add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": df})
    # copies: an expectation joins the suite it is added to, and a part runs the same ones on several batches
    suite = gx.ExpectationSuite(name=f"{contract.name}@{contract.version}", expectations=[copy.copy(exp) for _, exp in pairs])
    # COMPLETE gives every failing row's index; the index query (a pandas expression) is not needed.
    res = batch.validate(suite, result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False})
    by_rule = {r.expectation_config.meta.get("rule"): r for r in res.results}
    pk = list(contract.primary_key)
    found: dict[str, Found] = {}
    for rule, exp in pairs:
        r = by_rule.get(rule.name)
        if r is not None and r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {exp.expectation_type} for rule {rule.name} raised: {r.exception_info.get('exception_message')}")
        details = (r.result or {}) if r else {}
        unexpected = int(details.get("unexpected_count") or 0)
        if unexpected:
            positions = sorted({int(i) for i in details.get("unexpected_index_list") or []})
            found[rule.name] = Found(unexpected, positions, [str(k) for k in df["_merge_key"].iloc[positions]],
                                     _keys_at(df, pk, positions) if rule.severity == "critical" else [])
    return suite, res, found


def _gx_quiet() -> None:
    for name in _GX_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _write_report(reports_dir: Path, run_id: str, name: str, gate: dict[str, Any] | None, masked: Any,
                  **more: Any) -> str:
    out = Path(reports_dir) / "quality" / safe_run_id(run_id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    body = ({"gate": gate} if gate is not None else {}) | more | {"great_expectations": masked.to_json_dict()}
    path.write_text(json.dumps(body, indent=2, default=str))
    return str(path)


def validate(
    contract: Contract,
    staged_path: str | Path,
    *,
    run_id: str,
    since_version: int = -1,
    rows_in: int | None = None,
    quarantine_by_rule: dict[str, int] | None = None,
    reports_dir: Path | None = None,
    warehouse_url: str | None = None,
    store: bool = True,
    parts: list[PartChecks] | None = None,
) -> QualityResult:
    """Run the contract's suite on a staged table version, apply the gate, store the results (and Data Docs
    when `reports_dir` is given). See the module docstring for what `failed_rows` / `failed_keys` hold.

    Validate the change, gate the whole: row-level expectations run on the rows written after staged version
    `since_version` (the last one validated; -1: every row), dataset-level ones (uniqueness) on the whole
    version. The batch GX gets is the changed rows plus every row of the version that shares a uniqueness
    rule's value with another row (a DuckDB aggregate finds them), with `_changed` telling them apart
    (row-level expectations carry the row condition `_changed`): a value is duplicated in that batch exactly
    when it is in the version, so GX's own expectations give the whole-table verdict. The gate measures
    each rule against the dataset's state: `rows_in` rows (staged + quarantined), the failures GX found plus
    `quarantine_by_rule` (the quarantine table's rows per rule).

    With `parts` (`check_part`'s results, which together cover the change), the row-level rules' failures
    are theirs and GX here runs the dataset-level rules alone on the rows sharing a value; the result is the
    one validating whole gives (failing rows' positions: in the parts' batches one after the other, then
    this batch)."""
    _gx_quiet()
    t0 = time.monotonic()
    columns = _needed_columns(contract, staged_path)
    df, rows_changed, rows_total, held = _change_batch(contract, str(staged_path), columns, since_version,
                                                       changed=parts is None)
    rows_in = rows_total if rows_in is None else rows_in
    quarantine_by_rule = quarantine_by_rule or {}

    t_gx = time.monotonic()
    context = _context(reports_dir)
    pairs = expectations_for(contract, max(rows_in, 1), set(columns), changed_only="_changed")
    here = pairs if parts is None else [(r, e) for r, e in pairs if _dataset_level(contract, r) is not None]
    suite, res, found = _run_suite(context, contract, df, here, asset=contract.name)
    gx_success = bool(res.success)
    if parts is not None:  # the parts' batches first, in order, then this one
        found = _one_after_another([(p.found, p.rows_changed) for p in parts] + [(found, len(df))])
        rows_changed = sum(p.rows_changed for p in parts)
        gx_success = gx_success and all(p.gx_success for p in parts)
    gx_seconds = time.monotonic() - t_gx

    outcomes: list[RuleOutcome] = []
    failed: dict[str, Found] = {}
    flagged: dict[str, list[str]] = {}
    for rule, exp in pairs:
        f = found.get(rule.name, Found())
        unexpected = f.unexpected
        if rule.severity == "critical" and unexpected:
            failed[rule.name] = f
        if _dataset_level(contract, rule) is None:
            if rule.severity != "critical" and unexpected:
                flagged[rule.name] = f.merge_keys
            # the rows validated earlier that still fail it (their `_failed_rules`), besides the change's
            unexpected += held.get(rule.name, 0)
        quarantined = _quarantined_for(rule, quarantine_by_rule)
        ok = rule.allows(unexpected + quarantined, rows_in)
        outcomes.append(
            RuleOutcome(rule.name, exp.expectation_type, rule.column, rule.severity, rows_in, unexpected, quarantined, rule.tolerance_text, ok)
        )
    result = QualityResult(
        dataset=contract.name,
        run_id=run_id,
        suite=suite.name,
        gx_success=gx_success,
        gate_passed=all(o.success for o in outcomes if o.severity == "critical"),
        outcomes=outcomes,
        failed_rows={name: f.positions for name, f in failed.items()},
        failed_keys={name: f.keys for name, f in failed.items()},
        failed_merge_keys={name: f.merge_keys for name, f in failed.items()},
        flagged=flagged,
        staged_path=str(staged_path),
        rows_changed=rows_changed,
        parts=0 if parts is None else len(parts),
    )
    if reports_dir is not None:
        t_docs = time.monotonic()
        masked = masked_results(res, contract)
        result.data_docs_path = _build_docs(context, suite, masked, run_id, Path(reports_dir))
        gx_seconds += time.monotonic() - t_docs
        gate = result.as_dict(include_keys=_keys_are_public(contract))
        gate.pop("failed_merge_keys", None)
        gate.pop("flagged", None)
        more = {} if parts is None else {"parts": {p.part: p.result_paths for p in parts}}
        result.result_path = _write_report(Path(reports_dir), run_id, contract.name, gate, masked, **more)
    result.gx_seconds = gx_seconds
    result.seconds = time.monotonic() - t0
    if store:
        _store(result, warehouse_url)
    log.info(
        "quality %s: %d rules on %d changed of %d rows%s, gate %s, critical failures %s, warnings %s, failing staged rows %s (%.1fs, GX %.1fs)",
        contract.name, len(outcomes), rows_changed, rows_total, "" if parts is None else f" in {len(parts)} part(s)",
        "passed" if result.gate_passed else "FAILED",
        [o.rule for o in result.failed_critical], [o.rule for o in result.failed_warning],
        {k: len(v) for k, v in result.failed_rows.items()}, result.seconds, result.gx_seconds,
    )
    return result


def check_part(
    contract: Contract,
    staged_path: str | Path,
    *,
    run_id: str,
    part: str,
    where: list[str],
    since_version: int,
    rows_in: int,
    reports_dir: Path | None = None,
) -> PartChecks:
    """The row-level rules of the suite on the rows of staged version `staged_path` written after
    `since_version` that match `where` (SQL conditions, one batch each: a province, or hash buckets of it);
    for `validate(parts=...)` to combine. `rows_in` is the dataset's state (the rules' tolerance, as in
    `validate`). Each batch's masked result goes to Data Docs and a JSON file named after the part."""
    _gx_quiet()
    t0 = time.monotonic()
    columns = _needed_columns(contract, staged_path)
    context = _context(reports_dir)
    pairs = [(r, e) for r, e in expectations_for(contract, max(rows_in, 1), set(columns), changed_only="_changed")
             if _dataset_level(contract, r) is None]
    out = PartChecks(part=part, rows_changed=0, gx_success=True)
    for i, condition in enumerate(where):
        name = f"{contract.name}.{part}" + (f".{i}" if len(where) > 1 else "")
        df, changed, _, _ = _change_batch(contract, str(staged_path), columns, since_version, part=condition,
                                          duplicated=False)
        suite, res, found = _run_suite(context, contract, df, pairs, asset=name)
        out.found = _one_after_another([(out.found, out.rows_changed), (found, changed)])
        out.rows_changed += changed
        out.gx_success = out.gx_success and bool(res.success)
        if reports_dir is not None:
            masked = masked_results(res, contract)
            _build_docs(context, suite, masked, run_id, Path(reports_dir))
            out.result_paths.append(_write_report(Path(reports_dir), run_id, name, None, masked, part=part,
                                                  condition=condition, rows_changed=changed))
        del df
    out.seconds = round(time.monotonic() - t0, 3)
    log.info("quality %s, part %s: %d rules on %d changed rows in %d batch(es), failing %s (%.1fs)", contract.name,
             part, len(pairs), out.rows_changed, len(where), {k: f.unexpected for k, f in out.found.items()}, out.seconds)
    return out


def _dataset_level(contract: Contract, rule: QualityRule) -> list[str] | None:
    """The columns a dataset-level rule (uniqueness) compares across rows, None for a row-level rule."""
    if rule.metric != "duplicateValues":
        return None
    if rule.column is None:
        return list(rule.arguments["properties"])
    pk = list(contract.primary_key)
    return pk if rule.column in pk and len(pk) > 1 else [rule.column]


def _change_batch(contract: Contract, staged: str, columns: list[str], since_version: int, *, part: str = "true",
                  changed: bool = True, duplicated: bool = True) -> tuple[Any, int, int, dict[str, int]]:
    """(pandas batch, changed rows, rows in the version, {rule: unchanged rows failing it}): the batch is the
    rows written after `since_version` (those matching SQL condition `part`; none unless `changed`), plus
    (`duplicated`) every row sharing a uniqueness rule's (non-null) value with another row, `_changed`
    telling them apart; a fresh RangeIndex, so GX's failing row index is a position in the batch. The
    unchanged rows' failures are read from their `_failed_rules` (with `duplicated`: the whole's batch)."""
    from lienthong import zones
    from lienthong.duck import session
    from lienthong.settings import load_settings

    dup_conditions = []
    for rule in contract.rules if duplicated else []:
        cols = _dataset_level(contract, rule)
        if cols is None or not set(cols) <= set(columns):
            continue
        tup = ", ".join(f'"{c}"' for c in cols)
        dup_conditions.append(f"({tup}) IN (SELECT ({tup}) FROM t WHERE NOT ({' AND '.join(f'{chr(34)}{c}{chr(34)} IS NULL' for c in cols)}) "
                              f"GROUP BY ALL HAVING count(*) > 1)")
    select = ", ".join(f'"{c}"' for c in columns)
    with session(load_settings(), purpose="quality") as con:
        zones.register(con, "t", staged)
        present = {r[0] for r in con.execute("DESCRIBE t").fetchall()}
        held: dict[str, int] = {}
        if "_staged_version" in present:
            change, key, order = f"_staged_version > {int(since_version)}", "_merge_key", "ORDER BY _merge_key"
            if "_failed_rules" in present and duplicated:
                held = dict(con.execute(f"SELECT r, count(*) FROM (SELECT unnest(_failed_rules) AS r FROM t "
                                        f"WHERE NOT ({change})) GROUP BY r").fetchall())
        else:  # a plain staged Parquet file (earlier releases' per-run copies): every row, in file order
            change, key, order = "true", "CAST(row_number() OVER () - 1 AS VARCHAR)", ""
        change = f"({change}) AND ({part})" if changed else "false"
        total = int((con.execute("SELECT count(*) FROM t").fetchone() or (0,))[0])
        where = " OR ".join([change, *dup_conditions])
        table = con.execute(f"SELECT {select}, {key} AS _merge_key, {change} AS _changed FROM t WHERE {where} "
                            f"{order}").fetch_arrow_table()
    df = table.to_pandas()
    return df, int(df["_changed"].sum()) if len(df) else 0, total, held


def _keys_at(df: Any, key: list[str], positions: list[int]) -> list[dict[str, Any]]:
    rows = df.iloc[positions][key].astype(object)
    return rows.where(rows.notna(), None).to_dict("records")


def _keys_are_public(contract: Contract) -> bool:
    """Whether primary-key values may be written out (none of the key columns is personal or sensitive)."""
    return not any(contract.field(k).is_personal for k in contract.primary_key)


def verdict(result: QualityResult, contract: Contract) -> dict[str, Any]:
    """The JSON-able summary a task returns (its XCom): gate, per-rule outcomes, failing row positions;
    the failing rows' keys only when the contract's key is not personal data."""
    out = {
        "dataset": result.dataset,
        "run_id": result.run_id,
        "suite": result.suite,
        "gate_passed": result.gate_passed,
        "gx_success": result.gx_success,
        "failed_critical": [o.rule for o in result.failed_critical],
        "failed_warning": [o.rule for o in result.failed_warning],
        "rules": {
            o.rule: {"expectation": o.expectation, "column": o.column, "severity": o.severity, "success": o.success,
                     "unexpected_staged": o.unexpected_staged, "unexpected_quarantined": o.unexpected_quarantined,
                     "element_count": o.element_count, "tolerance": o.tolerance}
            for o in result.outcomes
        },
        "failed_rows": {k: list(v) for k, v in result.failed_rows.items()},
        "staged_path": result.staged_path,
        "result_path": result.result_path,
        "data_docs_path": result.data_docs_path,
        "rows_changed": result.rows_changed,
        "parts": result.parts,
        "seconds": round(result.seconds, 3),
    }
    if _keys_are_public(contract):
        out["failed_keys"] = json.loads(json.dumps(result.failed_keys, default=str))
    return out


def _store(result: QualityResult, url: str | None) -> None:
    with connect(url) as conn:
        runs.record_quality_run(conn, runs.QualityRun(
            result.run_id, result.dataset, result.suite, result.gx_success, result.gate_passed, len(result.outcomes),
            len(result.failed_critical), len(result.failed_warning),
            results=tuple(runs.RuleResult(
                o.rule, o.expectation, o.column, o.severity, o.success, element_count=o.element_count,
                unexpected_count=o.unexpected_count,
                unexpected_percent=100.0 * o.unexpected_count / o.element_count if o.element_count else 0.0,
                tolerance=o.tolerance,
                details={"unexpected_staged": o.unexpected_staged, "unexpected_quarantined": o.unexpected_quarantined,
                         "failed_rows": len(result.failed_rows.get(o.rule, [])),
                         "data_docs_path": result.data_docs_path or None},
            ) for o in result.outcomes),
        ))
