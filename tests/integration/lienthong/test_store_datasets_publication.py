"""The two store-backed published datasets (`reconciliation_findings`, `quality_summary`) describe the state of
the findings and quality stores, not which run last looked at them: a run that finds the same findings and
the same quality outcomes publishes no new version; a finding resolved or reopened, or a rule whose outcome
changed, does.

Real path against a real warehouse (a database of its own on the session's embedded PostgreSQL): findings
move through `sync_findings` (what the reconciliation calls), quality runs are recorded in the run ledger
(what validation calls), and each dataset is published by `pipeline.publish` (what the publish DAG calls).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lienthong import pipeline, runs
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.findings import Finding, sync_findings
from lienthong.settings import Settings, load_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
STORE_DATASETS = ("reconciliation_findings", "quality_summary")

DECEASED = Finding("deceased_legal_representative", {"enterprise_code": "0101234567", "position": "0"},
                   {"citizen_id": "031203000001", "death_date": "2025-02-01", "enterprise_status": "DANG_HOAT_DONG"})
SHARES = Finding("shares_do_not_sum_to_100", {"province_code": "31", "parcel_id": "1001"},
                 {"shares": [50.0, 40.0], "total": 90.0, "certificates": ["11", "12"]})


def rule(name: str, success: bool, unexpected: int = 0) -> runs.RuleResult:
    return runs.RuleResult(name, "expect_column_values_to_not_be_null", name.split(":")[0], "critical", success,
                           element_count=1000, unexpected_count=unexpected, unexpected_percent=unexpected / 10,
                           tolerance="<= 0 rows", details={"run_specific": "ignored"})


def quality(run_id: str, dataset: str, *results: runs.RuleResult) -> runs.QualityRun:
    failed = sum(1 for r in results if not r.success)
    return runs.QualityRun(run_id, dataset, f"{dataset}_suite", not failed, not failed, len(results), failed, 0,
                           results=results)


GOOD = (rule("citizen_id:nullValues", True), rule("full_name:nullValues", True))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a private data dir and a database of its own: the stores and publications are global state."""
    url = ensure_database(warehouse_url(), "storepub_" + tmp_path.name.replace("-", "_")[-20:].lower())
    return dataclasses.replace(load_settings(), data_dir=tmp_path / "data", database_url=url)


def chain_run(settings: Settings, run_id: str, hours: int, findings: list[Finding],
              quality_runs: list[runs.QualityRun]) -> dict[str, dict]:
    """What one run of the chain does to the stores (validation, then the reconciliation's findings sync), then
    the publication of the two store-backed datasets."""
    url = settings.database_url
    with connect(url) as conn:
        for q in quality_runs:
            runs.record_quality_run(conn, q)
    with connect(url) as conn:
        sync_findings(conn, run_id, findings, now=T0 + timedelta(hours=hours))
    return {name: pipeline.publish(name, "publish_" + run_id, settings) for name in STORE_DATASETS}


def versions(settings: Settings, dataset: str) -> list[int]:
    with connect(settings.database_url) as conn:
        return [p.version for p in runs.publications(conn, dataset)]


def published_rows(result: dict) -> list[dict]:
    return pq.read_table(Path(result["parquet_path"]) / "part-00000.parquet").to_pylist()


def test_a_run_without_change_publishes_no_new_version_and_a_real_change_does(settings):
    first = chain_run(settings, "r1", 0, [DECEASED, SHARES],
                      [quality("r1", "citizen", *GOOD), quality("r1", "enterprise", rule("tax_code:nullValues", True))])
    assert {name: (r["status"], r["version"]) for name, r in first.items()} == {
        "reconciliation_findings": ("published", 1), "quality_summary": ("published", 1)}

    # (a) the same findings and the same quality outcomes, a day later, by another run: nothing new
    second = chain_run(settings, "r2", 24, [DECEASED, SHARES],
                       [quality("r2", "citizen", *GOOD), quality("r2", "enterprise", rule("tax_code:nullValues", True))])
    assert {name: (r["status"], r["version"]) for name, r in second.items()} == {
        "reconciliation_findings": ("unchanged", 1), "quality_summary": ("unchanged", 1)}
    assert second["reconciliation_findings"]["content_hash"] == first["reconciliation_findings"]["content_hash"]
    assert second["quality_summary"]["content_hash"] == first["quality_summary"]["content_hash"]
    # ... and a dataset a run did not validate again keeps its current outcome (here: enterprise)
    third = chain_run(settings, "r3", 48, [DECEASED, SHARES], [quality("r3", "citizen", *GOOD)])
    assert {r["status"] for r in third.values()} == {"unchanged"}
    for name in STORE_DATASETS:
        assert versions(settings, name) == [1], name

    # The quality dataset: the current outcome per dataset and rule, since when it holds; no run bookkeeping.
    rows = published_rows(third["quality_summary"])
    assert [(r["dataset"], r["rule"], r["success"]) for r in rows] == [
        ("citizen", "citizen_id:nullValues", True), ("citizen", "full_name:nullValues", True),
        ("enterprise", "tax_code:nullValues", True)]
    assert not {"run_id", "evaluated_at"} & set(rows[0])
    with connect(settings.database_url) as conn:
        created = {(q.run_id, q.dataset): q.created_at for q in runs.quality_runs(conn)}
    assert {r["outcome_since"] for r in rows} == {created[("r1", "citizen")], created[("r1", "enterprise")]}

    # (b) a finding resolved: a new version of the findings; the quality outcomes did not change
    fourth = chain_run(settings, "r4", 72, [DECEASED], [quality("r4", "citizen", *GOOD)])
    assert (fourth["reconciliation_findings"]["status"], fourth["reconciliation_findings"]["version"]) == ("published", 2)
    assert (fourth["quality_summary"]["status"], fourth["quality_summary"]["version"]) == ("unchanged", 1)
    findings = {r["finding_id"]: r for r in published_rows(fourth["reconciliation_findings"])}
    assert findings[SHARES.finding_id]["status"] == "resolved"
    assert findings[SHARES.finding_id]["status_since"] == findings[SHARES.finding_id]["resolved_at"] == \
        T0 + timedelta(hours=72)
    assert findings[DECEASED.finding_id]["status"] == "open"
    assert findings[DECEASED.finding_id]["status_since"] == findings[DECEASED.finding_id]["first_seen_at"] == T0
    assert "last_seen_at" not in findings[DECEASED.finding_id]

    # (b) a quality rule's outcome changed: a new version of the quality summary; the findings did not change
    failing = (GOOD[0], rule("full_name:nullValues", False, unexpected=3))
    fifth = chain_run(settings, "r5", 96, [DECEASED], [quality("r5", "citizen", *failing)])
    assert (fifth["quality_summary"]["status"], fifth["quality_summary"]["version"]) == ("published", 2)
    assert (fifth["reconciliation_findings"]["status"], fifth["reconciliation_findings"]["version"]) == ("unchanged", 2)
    with connect(settings.database_url) as conn:
        r5 = runs.quality_run(conn, "r5", "citizen")
    assert r5 is not None
    now = {(r["dataset"], r["rule"]): r for r in published_rows(fifth["quality_summary"])}
    assert (now[("citizen", "full_name:nullValues")]["success"], now[("citizen", "full_name:nullValues")]["outcome_since"],
            now[("citizen", "full_name:nullValues")]["unexpected_count"]) == (False, r5.created_at, 3)
    assert now[("citizen", "citizen_id:nullValues")]["outcome_since"] == created[("r1", "citizen")]

    # ... and it failing again the same way is no change; a finding that comes back is one (reopened)
    sixth = chain_run(settings, "r6", 120, [DECEASED, SHARES], [quality("r6", "citizen", *failing)])
    assert (sixth["quality_summary"]["status"], sixth["quality_summary"]["version"]) == ("unchanged", 2)
    assert (sixth["reconciliation_findings"]["status"], sixth["reconciliation_findings"]["version"]) == ("published", 3)
    reopened = {r["finding_id"]: r for r in published_rows(sixth["reconciliation_findings"])}[SHARES.finding_id]
    assert (reopened["status"], reopened["status_since"], reopened["resolved_at"], reopened["times_reopened"]) == \
        ("open", T0 + timedelta(hours=120), None, 1)
    assert versions(settings, "reconciliation_findings") == [1, 2, 3]
    assert versions(settings, "quality_summary") == [1, 2]
