"""OpenLineage facets and the extractor: schema from a contract, assertions from a validate verdict, output
statistics from files, what the pipeline functions report inside a task, and an extractor that never raises.

No Airflow run here (tests/e2e/test_openlineage_events.py runs the real listener through `airflow dags test`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openlineage.client.serde import Serde

from lienthong import openlineage as ol
from lienthong.contracts import contract
from lienthong.quality import QualityResult, RuleOutcome, verdict

KEY = ("integrate", "citizen.validate_citizen", "manual__2026-11-22", -1)


@pytest.fixture(autouse=True)
def empty_collector(monkeypatch):
    monkeypatch.setattr(ol, "_COLLECTED", {})


def as_json(obj) -> dict:
    return json.loads(Serde.to_json(obj))


def citizen_verdict(failing_rule: str) -> dict:
    c = contract("citizen")
    outcomes = [
        RuleOutcome(rule=r.name, expectation=f"expect_{r.metric or r.implementation}", column=r.column, severity=r.severity,
                    element_count=100, unexpected_staged=3 if r.name == failing_rule else 0, unexpected_quarantined=0,
                    tolerance=r.tolerance_text, success=r.name != failing_rule)
        for r in c.rules
    ]
    result = QualityResult(dataset="citizen", run_id="i1", suite="citizen@1", gx_success=False, gate_passed=False,
                           outcomes=outcomes, failed_rows={failing_rule: [1, 5, 7]}, staged_path="/x/citizen.parquet")
    return verdict(result, c)


def test_schema_facet_lists_the_contract_fields_with_types_and_classification():
    c = contract("citizen")
    facet = as_json(ol.schema_facet(c))
    assert [f["name"] for f in facet["fields"]] == c.field_names
    by_name = {f["name"]: f for f in facet["fields"]}
    cid = c.field("citizen_id")
    assert by_name["citizen_id"]["type"] == (cid.physical_type or cid.logical_type)
    assert by_name["citizen_id"]["description"].startswith(f"[{cid.classification}]")
    assert [f["ordinal_position"] for f in facet["fields"]] == list(range(1, len(c.fields) + 1))
    assert facet["_schemaURL"].endswith("SchemaDatasetFacet")


def test_schema_facet_nests_the_members_of_a_list_of_structs():
    c = contract("citizen_profile")
    enterprises = next(f for f in as_json(ol.schema_facet(c))["fields"] if f["name"] == "enterprises")
    assert enterprises["type"] == "array<object>"
    assert [f["name"] for f in enterprises["fields"]] == [m.name for m in c.field("enterprises").children]


def test_assertions_facet_has_one_assertion_per_expectation_with_success_and_column():
    c = contract("citizen")
    failing = next(r for r in c.rules if r.column)
    facet = as_json(ol.assertions_facet(citizen_verdict(failing.name)))
    assertions = facet["assertions"]
    assert len(assertions) == len(c.rules)
    by_name = {a["name"]: a for a in assertions}
    assert by_name[failing.name]["success"] is False
    assert by_name[failing.name]["column"] == failing.column
    assert by_name[failing.name]["actual"] == "3 of 100 rows"
    assert all(a["success"] for n, a in by_name.items() if n != failing.name)
    assert {a["severity"] for a in assertions} <= {"error", "warn"}
    assert facet["_schemaURL"].endswith("DataQualityAssertionsDatasetFacet")


def test_output_statistics_count_rows_bytes_and_files(tmp_path):
    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    stats = as_json(ol.output_statistics(3, tmp_path))
    assert (stats["rowCount"], stats["size"], stats["fileCount"]) == (3, path.stat().st_size, 1)
    assert as_json(ol.output_statistics(5, tmp_path / "missing"))["rowCount"] == 5


def test_openlineage_env_configures_a_file_transport_under_the_data_dir(tmp_path):
    from openlineage.client.transport.file import FileConfig

    env = ol.openlineage_env(tmp_path)
    config = FileConfig.from_dict(json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"]))
    assert Path(config.log_file_path) == tmp_path / "lineage" / "openlineage.jsonl"
    assert config.append
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "lienthong"
    assert env["AIRFLOW__OPENLINEAGE__EXTRACTORS"] == ol.EXTRACTOR


def test_the_extractor_is_registered_for_taskflow_tasks_and_creates_the_events_folder(tmp_path, monkeypatch):
    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.sdk import dag, task

    for key, value in ol.openlineage_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(ol.__dict__, "LienthongExtractor", raising=False)

    @dag(dag_id="lineage_probe", schedule=None)
    def probe():
        @task
        def one() -> int:
            return 1

        one()

    (op,) = probe().tasks
    assert type(ExtractorManager()._get_extractor(op)).__name__ == "LienthongExtractor"
    assert (tmp_path / "lineage").is_dir()


def test_the_pipeline_reports_only_inside_a_task_and_drops_per_row_detail(monkeypatch):
    @ol.reports_lineage
    def validate(dataset: str, run_id: str, stage_summary: dict) -> dict:
        return {"dataset": dataset, "rules": {}, "failed_rows": {"r": [1, 2]}, "failed_keys": {"r": [{"k": 1}]}}

    validate("citizen", "i1", {})
    assert ol._COLLECTED == {}
    monkeypatch.setattr(ol, "_current_task", lambda: KEY)
    assert validate("citizen", "i1", stage_summary={"rows_staged": 2})["failed_rows"] == {"r": [1, 2]}
    (report,) = ol.collected(KEY)
    assert report["kind"] == "validate"
    assert report["arguments"] == {"dataset": "citizen", "run_id": "i1", "stage_summary": {"rows_staged": 2}}
    assert "failed_rows" not in report["result"] and "failed_keys" not in report["result"]


def ti(key=KEY):
    return SimpleNamespace(dag_id=key[0], task_id=key[1], run_id=key[2], map_index=key[3])


def test_a_validate_task_reads_the_staged_dataset_with_its_assertions_and_writes_it_back(tmp_path):
    staged = tmp_path / "citizen.parquet"
    pq.write_table(pa.table({"citizen_id": ["x"] * 4}), staged)
    failing = next(r for r in contract("citizen").rules if r.column)
    result = {**citizen_verdict(failing.name), "staged_path": str(staged)}
    ol.record(KEY, "validate", {"dataset": "citizen", "run_id": "i1", "stage_summary": {"rows_staged": 5}}, result)

    lineage = ol.LienthongExtractor(SimpleNamespace(task_id=KEY[1], outlets=[])).extract_on_complete(ti())
    (checked,) = [as_json(d) for d in lineage.inputs]
    (written,) = [as_json(d) for d in lineage.outputs]
    assert (checked["namespace"], checked["name"]) == ("lienthong", "staged/citizen")
    assert len(checked["inputFacets"]["dataQualityAssertions"]["assertions"]) == len(contract("citizen").rules)
    assert checked["inputFacets"]["dataQualityMetrics"]["rowCount"] == 100
    assert written["name"] == "staged/citizen"
    assert [f["name"] for f in written["facets"]["schema"]["fields"]] == contract("citizen").field_names
    assert written["outputFacets"]["outputStatistics"]["rowCount"] == 4  # the file after quarantining, not the 5 staged


def test_at_start_the_extractor_names_the_declared_outlets():
    from airflow.sdk import Asset

    op = SimpleNamespace(task_id="validate_citizen", outlets=[Asset(name="staged_citizen", uri="lienthong://staged/citizen"),
                                                              Asset(name="other", uri="s3://bucket/key")])
    lineage = ol.LienthongExtractor(op).extract()
    (out,) = [as_json(d) for d in lineage.outputs]
    assert out["name"] == "staged/citizen" and out["facets"]["schema"]["fields"]


@pytest.mark.parametrize("task_instance", [object(), None, ti(("d", "t", "r", "not a number"))])
def test_the_extractor_returns_no_datasets_instead_of_raising_on_a_bad_task_instance(task_instance):
    lineage = ol.LienthongExtractor(SimpleNamespace(task_id="t", outlets=None)).extract_on_complete(task_instance)
    assert lineage.inputs == [] and lineage.outputs == []


def test_the_extractor_returns_no_datasets_instead_of_raising_on_a_bad_report():
    ol.record(KEY, "publish", {"dataset": "citizen_profile"}, {"status": "published"})  # no version, no path
    ol.record(KEY, "stage", {}, {"rows_staged": "many"})  # no dataset
    lineage = ol.LienthongExtractor(SimpleNamespace(task_id=KEY[1], outlets=[])).extract_on_complete(ti())
    assert lineage.inputs == [] and lineage.outputs == []
    op = SimpleNamespace(task_id="x", outlets=[SimpleNamespace(uri="lienthong://staged/no_such_contract")])
    assert [d.name for d in ol.LienthongExtractor(op).extract().outputs] == ["staged/no_such_contract"]
