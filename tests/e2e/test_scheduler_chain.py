"""End to end with the real scheduler: the local stack (devstack.localstack) runs the asset-driven chain.

The test only unpauses the DAGs and triggers the three ingestion DAGs through Airflow's REST API (v2);
`integrate` and `publish` must then be started by the scheduler from the Asset events alone. Afterwards the
published outputs are checked against the staged data. The stack lives in a temporary dir and is stopped
even when something fails; failure messages carry the runs, their task states and the process log tails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from lienthong import zones

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

CITIZENS = 600
INGEST_DAGS = ("ingest_population", "ingest_business", "ingest_land")
ASSET_DAGS = ("integrate", "publish", "audit_report", "consumer_tax_department")
ALL_DAGS = INGEST_DAGS + ASSET_DAGS
PARSE_TIMEOUT = 180
CHAIN_TIMEOUT = 480
FINAL = {"success", "failed"}


class Api:
    """The few REST API v2 calls the test makes, with the status checked and the answer in the error."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.session = stack.session()

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        resp = self.session.request(method, f"{self.stack.api_url}/api/v2{path}", timeout=30, **kwargs)
        if resp.status_code == 401:  # token expired during a long wait: log in again once
            self.session = self.stack.session()
            resp = self.session.request(method, f"{self.stack.api_url}/api/v2{path}", timeout=30, **kwargs)
        if resp.status_code not in ok:
            raise AssertionError(f"{method} /api/v2{path} answered {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})[
            "dag_runs"
        ]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti["state"]
            for ti in tis["task_instances"]
        }

    def queued_events(self, dag_id: str) -> int:
        return self.call("GET", f"/dags/{dag_id}/assets/queuedEvents")["total_entries"]


def _diagnostics(api: Api | None, stack, note: str) -> str:
    """What went wrong: every run with its task states, then the tails of the process and failed-task logs."""
    lines = [note]
    if api is not None:
        for dag_id in ALL_DAGS:
            try:
                for run in api.runs(dag_id):
                    states = api.task_states(dag_id, run["dag_run_id"])
                    lines.append(f"{dag_id} {run['dag_run_id']} {run['run_type']} {run['state']}: {states}")
            except Exception as exc:  # diagnostics must not hide the original failure
                lines.append(f"{dag_id}: could not list runs: {exc}")
    lines.append(stack.log_tails(2500))
    task_logs = sorted(
        stack.paths.airflow_home.joinpath("logs").rglob("*.log"), key=lambda p: p.stat().st_mtime
    )
    for path in [p for p in task_logs if "ERROR" in p.read_text(errors="replace")][-3:]:
        lines.append(f"--- task log {path}\n{path.read_text(errors='replace')[-2500:]}")
    return "\n".join(lines)


def _wait_until_parsed(api: Api) -> None:
    """The dag-processor must have parsed and serialised every DAG before it can be unpaused or triggered."""
    deadline = time.monotonic() + PARSE_TIMEOUT
    missing: list[str] = list(ALL_DAGS)
    while time.monotonic() < deadline:
        missing = [
            d
            for d in missing
            if api.session.get(f"{api.stack.api_url}/api/v2/dags/{d}", timeout=30).status_code != 200
        ]
        if not missing:
            return
        time.sleep(2)
    errors = api.call("GET", "/importErrors")
    raise AssertionError(f"DAGs not parsed within {PARSE_TIMEOUT}s: {missing}; import errors: {errors}")


def _chain_settled(api: Api, triggered: dict[str, str]) -> tuple[bool, str | None, dict[str, list[dict]]]:
    """(done, failure, runs): done once the triggered ingestion runs succeeded, the scheduler has run
    integrate and publish successfully from Asset events, and nothing is running or waiting any more."""
    runs = {dag_id: api.runs(dag_id) for dag_id in ALL_DAGS}
    for dag_id, run_id in triggered.items():
        (run,) = [r for r in runs[dag_id] if r["dag_run_id"] == run_id]
        if run["state"] == "failed":
            return False, f"{dag_id} run {run_id} failed", runs
    for dag_id in ASSET_DAGS:
        if any(r["state"] == "failed" for r in runs[dag_id]):
            return False, f"an {dag_id} run failed", runs
        foreign = [r for r in runs[dag_id] if r["run_type"] != "asset_triggered"]
        if foreign:
            return False, f"{dag_id} has runs not started by an Asset event: {foreign}", runs
    ingested = all(
        r["state"] == "success"
        for d, run_id in triggered.items()
        for r in runs[d]
        if r["dag_run_id"] == run_id
    )
    succeeded = all(any(r["state"] == "success" for r in runs[d]) for d in ASSET_DAGS)
    idle = all(r["state"] in FINAL for d in ALL_DAGS for r in runs[d])
    # An Asset event not yet turned into a run would start another integrate/publish after we looked.
    waiting = sum(api.queued_events(d) for d in ASSET_DAGS) if ingested and succeeded and idle else 1
    return ingested and succeeded and idle and waiting == 0, None, runs


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Start the stack, run the chain through the scheduler, collect what the checks need, stop the stack."""
    import psycopg2

    from devstack.localstack import down, up

    base = tmp_path_factory.mktemp("stack")
    result: dict[str, Any] = {"error": None, "seconds": {}}
    t0 = time.monotonic()
    stack = None
    api = None
    try:
        stack = up(base, citizens=CITIZENS, port=0, timeout=240)
        result["seconds"]["up"] = round(time.monotonic() - t0, 1)
        result["stack"] = stack
        api = Api(stack)
        _wait_until_parsed(api)
        for dag_id in ALL_DAGS:
            dag = api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
            assert dag["is_paused"] is False, dag
        triggered = {
            dag_id: api.call("POST", f"/dags/{dag_id}/dagRuns", ok=(200,), json={"logical_date": None})[
                "dag_run_id"
            ]
            for dag_id in INGEST_DAGS
        }
        result["triggered"] = triggered
        t1 = time.monotonic()
        deadline = t1 + CHAIN_TIMEOUT
        done, failure, runs = False, None, {}
        while time.monotonic() < deadline:
            done, failure, runs = _chain_settled(api, triggered)
            if done or failure:
                break
            time.sleep(3)
        result["seconds"]["chain"] = round(time.monotonic() - t1, 1)
        result["runs"] = runs
        if not done:
            raise AssertionError(failure or f"the chain did not settle within {CHAIN_TIMEOUT}s")
        result["integrate_tasks"] = [api.task_states("integrate", r["dag_run_id"]) for r in runs["integrate"]
                                     if r["state"] == "success"]
        with psycopg2.connect(stack.warehouse_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT staged_path FROM lienthong_ops.stage_run WHERE dataset = 'citizen' ORDER BY created_at DESC LIMIT 1"
            )
            result["staged_path"] = cur.fetchone()[0]
            cur.execute("SELECT * FROM published.citizen_profile ORDER BY citizen_id")
            columns = [c.name for c in cur.description]
            result["view_rows"] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
            cur.execute(
                "SELECT dataset, version, run_id, parquet_path FROM lienthong_ops.publication"
                " WHERE dataset = 'citizen_profile' ORDER BY version"
            )
            result["publications"] = cur.fetchall()
            cur.execute("SELECT report_id, run_id, publish_run_id, folder, headline FROM lienthong_ops.audit_report")
            result["audit_reports"] = cur.fetchall()
            cur.execute("SELECT * FROM agency_tax_department.enterprise_profile")
            columns = [c.name for c in cur.description]
            result["tax_view_rows"] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
            cur.execute("SELECT current_version FROM agency_tax_department.enterprise_profile_feed_window")
            result["tax_view_version"] = cur.fetchone()[0]
        result["published_dir"] = stack.paths.data_dir / "published" / "citizen_profile"
        result["tax_copy"] = stack.paths.data_dir / "consumers" / "tax_department.duckdb"
        result["diagnostics"] = _diagnostics(api, stack, "chain settled")
    except Exception as exc:
        result["error"] = _diagnostics(api, stack, f"{type(exc).__name__}: {exc}") if stack else repr(exc)
    finally:
        t2 = time.monotonic()
        result["stopped"] = down(base)
        result["seconds"]["down"] = round(time.monotonic() - t2, 1)
        result["seconds"]["total"] = round(time.monotonic() - t0, 1)
    yield result


def test_scheduler_runs_integrate_then_publish_from_asset_events_after_triggered_ingestion(chain):
    assert chain["error"] is None, chain["error"]
    runs = chain["runs"]
    for dag_id, run_id in chain["triggered"].items():
        (run,) = [r for r in runs[dag_id] if r["dag_run_id"] == run_id]
        assert run["state"] == "success" and run["run_type"] == "manual", chain["diagnostics"]
    integrate_ok = [
        r for r in runs["integrate"] if r["state"] == "success" and r["run_type"] == "asset_triggered"
    ]
    publish_ok = [
        r for r in runs["publish"] if r["state"] == "success" and r["run_type"] == "asset_triggered"
    ]
    assert integrate_ok and publish_ok, chain["diagnostics"]
    # the land datasets were staged province by province: a plan, a mapped task per province, the commit
    staged_by_province = [
        states for states in chain["integrate_tasks"]
        if all(states.get(f"{d}.stage_{d}") == "success" for d in ("parcel", "land_holder", "certificate"))
        and all(any(t.startswith(f"{d}.stage_part_{d}[") and st == "success" for t, st in states.items())
                for d in ("parcel", "land_holder", "certificate"))]
    assert staged_by_province, (chain["integrate_tasks"], chain["diagnostics"])
    # ... and validated province by province: a mapped validate_part per province, then the combining task
    validated_by_province = [
        states for states in chain["integrate_tasks"]
        if all(states.get(f"{d}.validate_{d}") == "success"
               and any(t.startswith(f"{d}.validate_part_{d}[") and st == "success" for t, st in states.items())
               for d in ("parcel", "land_holder", "certificate"))]
    assert validated_by_province, (chain["integrate_tasks"], chain["diagnostics"])
    # ... and the people linked province by province, the first reconciliation too (its plan trains the
    # models): the plan, a mapped link_province per province, then reconcile
    linked_by_province = [
        states for states in chain["integrate_tasks"]
        if states.get("plan_person_links") == "success" and states.get("reconcile") == "success"
        and any(t.startswith("link_province[") and st == "success" for t, st in states.items())]
    assert linked_by_province, (chain["integrate_tasks"], chain["diagnostics"])
    # publish follows an integrate run: it cannot have started before the first integrate run started.
    assert min(r["start_date"] for r in publish_ok) >= min(r["start_date"] for r in integrate_ok), chain[
        "diagnostics"
    ]


def test_published_view_returns_exactly_the_staged_citizen_rows(chain):
    from lienthong.contracts import contract

    assert chain["error"] is None, chain["error"]
    fields = contract("citizen_profile").fields
    # the flat columns come from the staged citizen; the nested ones from reconciliation
    source = {f.name: f.custom["derivedFrom"].split(".", 1)[1] for f in fields
              if f.custom["derivedFrom"].startswith("citizen.")}
    staged = zones.read_table(chain["staged_path"], columns=sorted(set(source.values()))).to_pylist()
    expected = sorted(
        ({name: row[col] for name, col in source.items()} for row in staged), key=lambda r: r["citizen_id"]
    )
    view = [{name: row[name] for name in source} for row in chain["view_rows"]]
    assert len(view) == len(expected) > 0, chain["diagnostics"]
    mismatched = [(v, e) for v, e in zip(view, expected, strict=True) if v != e]
    assert not mismatched, f"{len(mismatched)} rows differ, first: {mismatched[:2]}"


def test_published_parquet_version_folder_has_a_manifest(chain):
    assert chain["error"] is None, chain["error"]
    folder: Path = chain["published_dir"]
    current = (folder / "CURRENT").read_text().strip()
    manifest = json.loads((folder / current / "_manifest.json").read_text())
    assert manifest["dataset"] == "citizen_profile"
    assert manifest["row_count"] == len(chain["view_rows"])
    assert [p[1] for p in chain["publications"]] == [int(current.lstrip("v"))], chain["publications"]
    assert pq.read_table(folder / current / manifest["files"][0]["path"]).num_rows == manifest["row_count"]


def test_audit_report_follows_publish_and_reports_the_integrate_run(chain):
    assert chain["error"] is None, chain["error"]
    runs = chain["runs"]
    audit_ok = [r for r in runs["audit_report"] if r["state"] == "success" and r["run_type"] == "asset_triggered"]
    publish_ok = [r for r in runs["publish"] if r["state"] == "success"]
    assert audit_ok, chain["diagnostics"]
    # started by publish's last task (its Asset event), so after publish started (publish's run may end after)
    assert min(r["start_date"] for r in audit_ok) >= min(r["start_date"] for r in publish_ok)
    integrate_ids = {r["dag_run_id"] for r in runs["integrate"] if r["state"] == "success"}
    publish_ids = {r["dag_run_id"] for r in publish_ok}
    reports = chain["audit_reports"]
    assert reports and {r[1] for r in reports} <= integrate_ids, (reports, integrate_ids)
    assert {r[2] for r in reports} <= publish_ids, (reports, publish_ids)
    for _, _, _, folder, headline in reports:
        assert (Path(folder) / "report.html").stat().st_size > 10_000
        assert headline["conservation_ok"] is True and headline["gate_passed"] is True, headline


def test_stack_stops_everything_it_started(chain):
    stopped = set(chain["stopped"])
    assert {"scheduler", "triggerer", "dag-processor", "api-server", "sandbox", "PostgreSQL"} <= stopped, (
        chain["stopped"]
    )
    runs = {d: [(r["run_type"], r["state"]) for r in rs] for d, rs in (chain.get("runs") or {}).items()}
    print(f"timings (s): {chain['seconds']}; runs: {runs}")


def test_the_example_consumer_keeps_its_copy_from_the_published_asset(chain):
    """The tax department's DAG ran from the Asset events of the round (not by hand), logged in as its own
    role, and its copy is its view of the version published."""
    import duckdb

    assert chain["error"] is None, chain["error"]
    runs = [r for r in chain["runs"]["consumer_tax_department"] if r["state"] == "success"]
    assert runs and all(r["run_type"] == "asset_triggered" for r in runs)
    db = duckdb.connect(str(chain["tax_copy"]), read_only=True)
    try:
        (version,) = db.execute("SELECT version FROM _feed_state WHERE dataset = 'enterprise_profile'").fetchone()
        cur = db.execute("SELECT * FROM enterprise_profile")
        names = [d[0] for d in cur.description]
        copy = sorted(json.dumps(dict(zip(names, r, strict=True)), sort_keys=True, default=str) for r in cur.fetchall())
    finally:
        db.close()
    assert version == chain["tax_view_version"]
    view = sorted(json.dumps({k: json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, list | dict)
                              else v for k, v in row.items()}, sort_keys=True, default=str)
                  for row in chain["tax_view_rows"])
    assert copy and copy == view
