"""End to end: the OpenLineage provider's real listener, with the file transport and lienthong's extractor,
writes the events of DAGs run through `airflow dags test` to `<data_dir>/lineage/openlineage.jsonl`.

`ingest_population`, `ingest_land` (one mapped task per province) then `integrate` against a small sandbox
province: the business registry has not landed, so integrate skips its datasets and the reconciliation (a
quick run that still has ingest, mapped, stage and validate tasks). The facets are checked against the
warehouse bookkeeping.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest

from lienthong.contracts import contract

from .conftest import airflow_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CITIZENS = 300
INGEST = "ingest_population.extract_and_land"
STAGE = "integrate.citizen.stage_citizen"
VALIDATE = "integrate.citizen.validate_citizen"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with airflow_world(tmp_path_factory.mktemp("ol"), citizens=CITIZENS) as world:
        states = {dag_id: world.runner.dags_test(dag_id) for dag_id in ("ingest_population", "ingest_land", "integrate")}
        path = world.settings.data_dir / "lineage" / "openlineage.jsonl"
        events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
        with psycopg2.connect(world.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT rows_landed FROM lienthong_ops.ingest_run WHERE source = 'population_registry'")
            (landed,) = cur.fetchone()
            cur.execute("SELECT scope, rows_landed FROM lienthong_ops.ingest_run WHERE source = 'land_registry'")
            land = dict(cur.fetchall())
            cur.execute("SELECT rows_staged FROM lienthong_ops.stage_run WHERE dataset = 'citizen'")
            (staged,) = cur.fetchone()
            cur.execute("SELECT rule, column_name, success FROM lienthong_ops.quality_result WHERE dataset = 'citizen'")
            results = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        yield {"states": states, "events": events, "text": path.read_text(encoding="utf-8") if path.exists() else "",
               "landed": landed, "land": land, "staged": staged, "results": results, "data": world.data, "logs": world.root / "logs"}


def _logs(run) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(Path(run["logs"]).glob("*.log")))


def complete(run, job: str) -> dict:
    (event,) = [e for e in run["events"] if e["job"]["name"] == job and e["eventType"] == "COMPLETE"]
    return event


def test_both_dags_succeed_and_every_task_that_ran_has_start_and_complete(run):
    assert set(run["states"].values()) == {"success"}, _logs(run)
    assert run["events"], "no OpenLineage event written"
    for job in (INGEST, STAGE, VALIDATE):
        types = [e["eventType"] for e in run["events"] if e["job"]["name"] == job]
        assert types.count("START") == 1 and types.count("COMPLETE") == 1, (job, types)
    assert {e["job"]["namespace"] for e in run["events"]} == {"lienthong"}


def test_the_ingest_task_reads_the_agency_and_writes_raw_with_schema_and_row_count(run):
    event = complete(run, INGEST)
    assert [(i["namespace"], i["name"]) for i in event["inputs"]] == [("agency://population_registry", "citizens")]
    (raw,) = event["outputs"]
    assert (raw["namespace"], raw["name"]) == ("lienthong", "raw/population_registry/citizens")
    assert {"payload", "_run_id"} <= {f["name"] for f in raw["facets"]["schema"]["fields"]}
    stats = raw["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == run["landed"] == CITIZENS and stats["size"] > 0


def test_each_mapped_land_task_writes_its_province_tables_with_row_counts(run):
    events = [e for e in run["events"] if e["job"]["name"] == "ingest_land.extract_and_land" and e["eventType"] == "COMPLETE"]
    assert len(events) == len({scope.split("/")[0] for scope in run["land"]}) == 2
    written = {o["name"]: o["outputFacets"]["outputStatistics"]["rowCount"] for e in events for o in e["outputs"]}
    assert written == {f"raw/land_registry/{scope}": rows for scope, rows in run["land"].items()}
    assert len({e["run"]["runId"] for e in events}) == 2


def test_the_stage_task_writes_staged_with_the_contract_schema(run):
    event = complete(run, STAGE)
    assert [i["name"] for i in event["inputs"]] == ["raw/population_registry/citizens"]
    staged = next(o for o in event["outputs"] if o["name"] == "staged/citizen")
    assert [f["name"] for f in staged["facets"]["schema"]["fields"]] == contract("citizen").field_names
    assert staged["outputFacets"]["outputStatistics"]["rowCount"] >= run["staged"]
    assert any(o["name"] == "quarantine/citizen" for o in event["outputs"])


def test_the_validate_task_carries_one_assertion_per_rule_as_stored(run):
    event = complete(run, VALIDATE)
    (checked,) = event["inputs"]
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["name"]: (a.get("column"), a["success"]) for a in assertions} == run["results"]
    (written,) = event["outputs"]
    assert written["name"] == "staged/citizen" and written["facets"]["schema"]["fields"]
    assert written["outputFacets"]["outputStatistics"]["rowCount"] == run["staged"]
    start = next(e for e in run["events"] if e["job"]["name"] == VALIDATE and e["eventType"] == "START")
    assert [o["name"] for o in start["outputs"]] == ["staged/citizen"]  # the declared outlet, known at start


def test_no_personal_value_is_in_the_events(run):
    ids = pq.read_table(run["data"] / "population" / "citizens.parquet", columns=["soDinhDanh"]).column(0).to_pylist()
    assert ids and not [i for i in ids if i and i in run["text"]]
