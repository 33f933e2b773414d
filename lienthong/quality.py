"""Validation with Great Expectations, suites generated from the contracts, and the quality gate.

Every contract quality rule becomes one expectation (nullValues -> not null, duplicateValues -> unique,
invalidValues -> regex / value set / range, custom checks -> a derived column expected to be True), with
`mostly` from the rule's tolerance. A rule's failing rows are those GX finds in staged data plus those
standardization already quarantined for it; the gate fails when a critical rule's failing share exceeds its
tolerance. Results go to the warehouse (`quality_run`, `quality_result`) and to a JSON file per run.

Great Expectations is imported inside the functions (it costs seconds) and its loggers kept at WARNING.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from connectors.base.landing import safe_run_id
from lienthong.contracts import Contract, QualityRule
from lienthong.db import connect
from lienthong.ops import OPS_SCHEMA, ensure_ops_schema

log = logging.getLogger(__name__)

CUSTOM_CHECKS = {"personal_id_matches_birth"}


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
    dataset: str
    run_id: str
    suite: str
    gx_success: bool
    gate_passed: bool
    outcomes: list[RuleOutcome] = field(default_factory=list)
    seconds: float = 0.0
    result_path: str = ""

    @property
    def failed_critical(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.severity == "critical" and not o.success]

    @property
    def failed_warning(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.severity == "warning" and not o.success]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed_critical"] = [o.rule for o in self.failed_critical]
        d["failed_warning"] = [o.rule for o in self.failed_warning]
        return d


def _mostly(rule: QualityRule, rows: int) -> float:
    if rule.max_fraction is not None:
        return max(0.0, 1.0 - rule.max_fraction)
    if rows == 0:
        return 1.0
    return max(0.0, 1.0 - (rule.max_rows or 0) / rows)


def _check_column(rule: QualityRule) -> str:
    return f"_chk_{rule.implementation}"


def expectations_for(contract: Contract, rows: int, columns: set[str]) -> list[tuple[QualityRule, Any]]:
    """(rule, GX expectation) for every contract rule whose column is present."""
    import great_expectations as gx

    E = gx.expectations
    out: list[tuple[QualityRule, Any]] = []
    for rule in contract.rules:
        col = rule.column
        if col is not None and col not in columns:
            continue
        mostly = _mostly(rule, rows)
        meta = {"rule": rule.name, "severity": rule.severity}
        if rule.metric == "nullValues":
            exp = E.ExpectColumnValuesToNotBeNull(column=col, mostly=mostly, meta=meta)
        elif rule.metric == "duplicateValues":
            pk = contract.primary_key
            if col in pk and len(pk) > 1:
                exp = E.ExpectCompoundColumnsToBeUnique(column_list=pk, mostly=mostly, meta=meta)
            else:
                exp = E.ExpectColumnValuesToBeUnique(column=col, mostly=mostly, meta=meta)
        elif rule.metric == "invalidValues" and "pattern" in rule.arguments:
            exp = E.ExpectColumnValuesToMatchRegex(column=col, regex=rule.arguments["pattern"], mostly=mostly, meta=meta)
        elif rule.metric == "invalidValues" and "validValues" in rule.arguments:
            exp = E.ExpectColumnValuesToBeInSet(column=col, value_set=list(rule.arguments["validValues"]), mostly=mostly, meta=meta)
        elif rule.metric == "invalidValues":
            exp = E.ExpectColumnValuesToBeBetween(
                column=col, min_value=rule.arguments.get("minValue"), max_value=rule.arguments.get("maxValue"), mostly=mostly, meta=meta
            )
        elif rule.implementation in CUSTOM_CHECKS:
            exp = E.ExpectColumnValuesToBeInSet(column=_check_column(rule), value_set=[True], mostly=mostly, meta=meta)
        else:
            log.warning("contract %s: rule %s has no expectation yet; skipped", contract.name, rule.name)
            continue
        out.append((rule, exp))
    return out


def add_custom_check_columns(contract: Contract, df: pd.DataFrame) -> pd.DataFrame:
    """Derived boolean columns for the contract's custom rules (None where a row cannot be checked)."""
    from lienthong.ids import personal_id_matches_birth_series

    for rule in contract.dataset_rules:
        if rule.implementation == "personal_id_matches_birth" and {"citizen_id", "birth_date", "sex"} <= set(df.columns):
            df[_check_column(rule)] = personal_id_matches_birth_series(df["citizen_id"], df["birth_date"], df["sex"])
    return df


def _quarantined_for(rule: QualityRule, quarantine_by_rule: dict[str, int]) -> int:
    if rule.metric == "invalidValues":
        return quarantine_by_rule.get(f"invalid:{rule.name}", 0)
    if rule.metric == "nullValues" and rule.column:
        return quarantine_by_rule.get(f"required:{rule.column}", 0) + quarantine_by_rule.get(f"unparseable:{rule.column}", 0)
    return 0


def validate(
    contract: Contract,
    staged_path: str | Path,
    *,
    run_id: str,
    rows_in: int | None = None,
    quarantine_by_rule: dict[str, int] | None = None,
    reports_dir: Path | None = None,
    warehouse_url: str | None = None,
) -> QualityResult:
    """Run the contract's suite on a staged dataset, apply the gate, store the results."""
    import great_expectations as gx

    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.monotonic()
    df = pq.read_table(staged_path).to_pandas(types_mapper=None)
    df = add_custom_check_columns(contract, df)
    rows = len(df)
    rows_in = rows if rows_in is None else rows_in
    quarantine_by_rule = quarantine_by_rule or {}
    suite_name = f"{contract.name}@{contract.version}"
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Our own log lines report progress; GX's per-metric bars would flood task logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(name=f"staged_{contract.name}")
    asset = source.add_dataframe_asset(name=contract.name)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
    pairs = expectations_for(contract, rows, set(df.columns))
    suite = gx.ExpectationSuite(name=suite_name, expectations=[exp for _, exp in pairs])
    res = batch.validate(suite, result_format="SUMMARY")
    outcomes: list[RuleOutcome] = []
    by_rule = {r.expectation_config.meta.get("rule"): r for r in res.results}
    for rule, exp in pairs:
        r = by_rule.get(rule.name)
        unexpected = int((r.result or {}).get("unexpected_count") or 0) if r else 0
        if r is not None and r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {exp.expectation_type} for rule {rule.name} raised: {r.exception_info.get('exception_message')}")
        quarantined = _quarantined_for(rule, quarantine_by_rule)
        ok = rule.allows(unexpected + quarantined, rows_in)
        outcomes.append(
            RuleOutcome(rule.name, exp.expectation_type, rule.column, rule.severity, rows_in, unexpected, quarantined, rule.tolerance_text, ok)
        )
    result = QualityResult(
        dataset=contract.name,
        run_id=run_id,
        suite=suite_name,
        gx_success=bool(res.success),
        gate_passed=all(o.success for o in outcomes if o.severity == "critical"),
        outcomes=outcomes,
        seconds=time.monotonic() - t0,
    )
    if reports_dir is not None:
        out = Path(reports_dir) / "quality" / safe_run_id(run_id)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{contract.name}.json"
        path.write_text(json.dumps({"gate": result.as_dict(), "great_expectations": res.to_json_dict()}, indent=2, default=str))
        result.result_path = str(path)
    _store(result, warehouse_url)
    log.info(
        "quality %s: %d rules, gate %s, critical failures %s, warnings %s (%.1fs)",
        contract.name, len(outcomes), "passed" if result.gate_passed else "FAILED",
        [o.rule for o in result.failed_critical], [o.rule for o in result.failed_warning], result.seconds,
    )
    return result


def _store(result: QualityResult, url: str | None) -> None:
    with connect(url) as conn:
        ensure_ops_schema(conn)
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {OPS_SCHEMA}.quality_result WHERE run_id = %s AND dataset = %s", (result.run_id, result.dataset))
            cur.execute(f"DELETE FROM {OPS_SCHEMA}.quality_run WHERE run_id = %s AND dataset = %s", (result.run_id, result.dataset))
            cur.execute(
                f"""INSERT INTO {OPS_SCHEMA}.quality_run (run_id, dataset, suite, success, gate_passed, evaluated,
                    failed_critical, failed_warning) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)""",
                (result.run_id, result.dataset, result.suite, result.gx_success, result.gate_passed, len(result.outcomes),
                 len(result.failed_critical), len(result.failed_warning)),
            )
            for o in result.outcomes:
                cur.execute(
                    f"""INSERT INTO {OPS_SCHEMA}.quality_result (run_id, dataset, rule, expectation, column_name, severity,
                        success, element_count, unexpected_count, unexpected_percent, tolerance, details)
                        VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)""",
                    (result.run_id, result.dataset, o.rule, o.expectation, o.column, o.severity, o.success, o.element_count,
                     o.unexpected_count, 100.0 * o.unexpected_count / o.element_count if o.element_count else 0.0, o.tolerance,
                     json.dumps({"unexpected_staged": o.unexpected_staged, "unexpected_quarantined": o.unexpected_quarantined})),
                )
