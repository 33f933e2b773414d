"""Discrepancy cases walked through the real lookup service (uvicorn in a subprocess, real HTTP, the registry
agencies' own keys) and the real pipeline (sandbox servers, connectors, staging, reconciliation) across runs:

- a finding acknowledged, then claimed corrected; its record is fixed at the source (the business registry
  records the enterprise as dissolved); the next run, on source data read after the claim, verifies it;
- a finding claimed corrected whose record is not fixed: the next run reopens it, saying why;
- a claim made after the source was read but before the run: that run resolves the finding yet leaves the
  claim alone; the next run, on data read again after the claim, verifies it;
- the service's refusals: another agency's finding (403), a state that does not allow the action (409), a
  dispute without a reason (400), an unknown finding (404), a consuming agency's or no key (403/401);
- the audit report shows the ageing per agency.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
from singlewindow_service import running_service

pytestmark = pytest.mark.integration

CITIZENS = 1500
SEED = 23
BUSINESS = "business_registry"


def _run_pipeline(run_id: str, *, ingest: bool, sandbox_data: Path | None = None, state: Path | None = None) -> dict:
    """One run as the DAGs do it: ingest every source from a (restarted) sandbox when asked, stage and validate
    what landed, reconcile."""
    from lienthong import pipeline
    from lienthong.reconcile.sources import INPUT_DATASETS
    from sandbox.runner import run_sandbox

    if ingest:
        assert sandbox_data is not None and state is not None
        with run_sandbox(sandbox_data, state) as ep:
            os.environ.update(ep.airflow_conn_env())
            pipeline.ingest_population(run_id)
            pipeline.ingest_business(run_id)
            for province in ep.land_dsns:
                pipeline.ingest_land(run_id, province)
    for name in INPUT_DATASETS:
        summary = pipeline.stage(name, run_id)
        if summary.get("mode") not in ("none", "unchanged"):
            pipeline.validate(name, run_id, summary)
    return pipeline.reconcile(run_id)


def _dissolve(sandbox_data: Path, enterprise_code: str, stamp: str) -> None:
    """The business registry records the enterprise as dissolved (a newer update time, so the next
    incremental extract reads it)."""
    path = sandbox_data / "business" / "enterprises.parquet"
    table = pq.read_table(path)
    hit = pc.equal(table["MaSoDN"], enterprise_code)
    assert pc.sum(hit.cast(pa.int64())).as_py() == 1, enterprise_code
    for column, value in (("TinhTrang", "GIAI_THE"), ("NgayCapNhat", stamp)):
        i = table.schema.get_field_index(column)
        table = table.set_column(i, column, pc.if_else(hit, pa.scalar(value, table.schema.field(column).type),
                                                       table[column]))
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def province(tmp_path_factory) -> Iterator[dict]:
    from province import ingested_province

    from lienthong.db import warehouse_url

    root = tmp_path_factory.mktemp("cases")
    with ingested_province(root, citizens=CITIZENS, seed=SEED, noise={"deceased_representative": 0.08}) as prov:
        first = _run_pipeline("r1", ingest=False)
        url = warehouse_url()
        keys = {name: secrets.token_urlsafe(24) for name in ("population_registry", BUSINESS, "land_registry")}
        env = {**os.environ, "LIENTHONG_DATABASE_URL": url, "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps(keys),
               "PYTHONUNBUFFERED": "1"}
        with running_service(env, root / "service.log", keys) as server:
            yield {**prov, "first": first, "url": url, "server": server, "keys": keys, "root": root}


def call(province, method: str, path: str, agency: str | None = BUSINESS, body=None, key: str | None = None):
    server = province["server"]
    headers = {"X-API-Key": key if key is not None else province["keys"][agency]} if (agency or key) else {}
    return requests.request(method, server.base + path, headers=headers, json=body, timeout=30)


def listed(province, agency: str = BUSINESS, **query) -> list[dict]:
    out, offset = [], 0
    while True:
        page = call(province, "GET", "/v1/findings?" + "&".join(f"{k}={v}" for k, v in
                                                                   {**query, "limit": 500, "offset": offset}.items()),
                    agency)
        assert page.status_code == 200, page.text
        out += page.json()["findings"]
        offset += 500
        if offset >= page.json()["total"]:
            return out


def case(province, finding_id: str) -> dict:
    got = call(province, "GET", f"/v1/findings/{quote(finding_id, safe='')}")
    assert got.status_code == 200, got.text
    return got.json()


def post(province, finding_id: str, action: str, body=None, agency: str = BUSINESS):
    return call(province, "POST", f"/v1/findings/{quote(finding_id, safe='')}/{action}", agency, body)


def test_cases_walk_through_the_service_and_the_runs(province):
    from lienthong.db import connect
    from lienthong.runs import reconcile_run

    deceased = listed(province, type="deceased_legal_representative", status="open")
    enterprises = sorted({f["subject"]["enterprise_code"] for f in deceased})
    assert len(enterprises) >= 2, deceased
    # one finding per enterprise (an enterprise with two deceased representatives is fixed as a whole)
    fixed = next(f for f in deceased if f["subject"]["enterprise_code"] == enterprises[0])
    late = next(f for f in deceased if f["subject"]["enterprise_code"] == enterprises[1])
    wrong = next(f for f in listed(province, status="open")
                 if f["type"] != "deceased_legal_representative")
    assert {f["case_state"] for f in (fixed, late, wrong)} == {"new"}
    assert "*" in json.dumps(fixed["evidence"])  # the citizen ID is masked

    # the refusals
    other = call(province, "POST", f"/v1/findings/{quote(fixed['finding_id'], safe='')}/acknowledge",
                 "land_registry")
    assert other.status_code == 403 and "business_registry" in other.json()["detail"]
    assert call(province, "GET", f"/v1/findings/{quote(fixed['finding_id'], safe='')}", "land_registry"
                ).status_code == 403
    assert post(province, fixed["finding_id"], "dispute", {"reason": " "}).status_code == 400
    assert post(province, fixed["finding_id"], "dispute", {}).status_code == 400
    assert post(province, "duplicate_records:0000000000000000", "acknowledge").status_code == 404
    assert call(province, "GET", "/v1/findings", None).status_code == 401
    assert call(province, "GET", "/v1/findings?case_state=closed").status_code == 400
    assert all(f["agency"] == "land_registry" for f in listed(province, "land_registry"))

    # new -> acknowledged -> corrected (with a note), over HTTP, each with its request id
    ack = post(province, fixed["finding_id"], "acknowledge")
    assert ack.status_code == 200 and ack.json()["transition"]["to_state"] == "acknowledged"
    assert ack.json()["transition"]["request_id"] == ack.headers["X-Request-ID"]
    again = post(province, fixed["finding_id"], "acknowledge")
    assert again.status_code == 409 and "'acknowledged'" in again.json()["detail"]
    assert post(province, fixed["finding_id"], "corrected", {"note": "registry updated"}).status_code == 200
    assert post(province, wrong["finding_id"], "corrected").status_code == 200
    assert case(province, fixed["finding_id"])["last_note"] == "registry updated"
    assert {f["finding_id"] for f in listed(province, case_state="corrected")} == {fixed["finding_id"],
                                                                                   wrong["finding_id"]}

    # the source fixes the first record; run r2 reads every source after the claims
    sandbox, root = province["sandbox"], province["root"]
    _dissolve(sandbox, fixed["subject"]["enterprise_code"], "01/12/2026 08:00:00")
    r2 = _run_pipeline("r2", ingest=True, sandbox_data=sandbox, state=root / "sbx-r2")
    assert r2["cases"]["claims_verified"] == 1 and r2["cases"]["claims_reopened"] == 1, r2["cases"]
    done = case(province, fixed["finding_id"])
    assert (done["status"], done["case_state"]) == ("resolved", "verified_resolved")
    assert [(e["actor"], e["action"], e["to_state"]) for e in done["history"]] == [
        ("agency", "acknowledge", "acknowledged"), ("agency", "corrected", "corrected"),
        ("run", "verify", "verified_resolved")]
    assert done["history"][-1]["run_id"] == "r2"
    still = case(province, wrong["finding_id"])
    assert (still["status"], still["case_state"]) == ("open", "reopened")
    assert "r2 still finds it" in still["history"][-1]["reason"]
    with connect(province["url"]) as conn:
        recorded = reconcile_run(conn, "r2")
    assert recorded.counts["cases"]["claims_verified"] == 1 and recorded.metrics["cases"]["inputs_read_at"]

    # a claim made after the source was read, before the run: the run resolves the finding, judges nothing
    _dissolve(sandbox, late["subject"]["enterprise_code"], "02/12/2026 08:00:00")
    from lienthong import pipeline
    from sandbox.runner import run_sandbox

    with run_sandbox(sandbox, root / "sbx-r3") as ep:
        os.environ.update(ep.airflow_conn_env())
        pipeline.ingest_population("r3")
        pipeline.ingest_business("r3")
        for p in ep.land_dsns:
            pipeline.ingest_land("r3", p)
    assert post(province, late["finding_id"], "corrected").status_code == 200
    r3 = _run_pipeline("r3", ingest=False)
    assert r3["cases"]["claims_verified"] == 0 and r3["cases"]["claims_pending"] == 1, r3["cases"]
    pending = case(province, late["finding_id"])
    assert (pending["status"], pending["case_state"]) == ("resolved", "corrected")
    # the next run reads every source again (nothing changed: no staged version moves) and verifies it
    r4 = _run_pipeline("r4", ingest=True, sandbox_data=sandbox, state=root / "sbx-r4")
    assert r4.get("unchanged") and r4["cases"]["claims_verified"] == 1, r4
    assert case(province, late["finding_id"])["case_state"] == "verified_resolved"

    # the agency works the reopened case on: a dispute with its reason
    disputed = post(province, wrong["finding_id"], "dispute", {"reason": "the registry is right: see file 12"})
    assert disputed.status_code == 200 and disputed.json()["finding"]["case_state"] == "disputed"


def test_openapi_documents_the_case_routes(province):
    doc = requests.get(province["server"].base + "/openapi.json", timeout=30).json()
    for path in ("/v1/findings", "/v1/findings/{finding_id}", "/v1/findings/{finding_id}/acknowledge",
                 "/v1/findings/{finding_id}/dispute", "/v1/findings/{finding_id}/corrected"):
        assert path in doc["paths"], path
    dispute = doc["paths"]["/v1/findings/{finding_id}/dispute"]["post"]
    assert {"400", "401", "403", "404", "409", "503"} <= set(dispute["responses"])


def test_the_report_shows_the_ageing_per_agency(province):
    from lienthong.audit.render import build_report

    out = build_report("r1")
    html = Path(out["html"]).read_text(encoding="utf-8")
    assert 'id="cases-by-agency"' in html and 'aria-label="Open findings by age and responsible agency"' in html
    figures = json.loads((Path(out["folder"]) / "figures.json").read_text(encoding="utf-8"))
    business = next(r for r in figures["cases"] if r["agency"] == BUSINESS)
    assert business["open"] > 0 and business["max_open_days"] is not None and "overdue" in business
    assert (Path(out["folder"]) / "csv" / "case_ageing.csv").is_file()
