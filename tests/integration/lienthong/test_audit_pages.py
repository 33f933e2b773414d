"""The auditors' pages against a real warehouse (the session's embedded PostgreSQL): the list of reports with
their headline figures and files, the findings browser's filters and paging, and masking of personal values.
Authentication is Airflow's (tests/unit/lienthong/test_audit_webapp.py); here a logged-in user is assumed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from lienthong.audit.store import record_report, report_folder, report_id_for
from lienthong.audit.webapp import MAX_OFFSET, create_app, require_user
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.findings import Finding, query_findings, sync_findings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
RUN_1 = "manual__2026-11-20T08:00:00+00:00"
RUN_2 = "manual__2026-11-21T08:00:00+00:00"
# A personal ID and name planted in a finding's subject and evidence: they must never reach a page.
PLANTED_ID = "031203000123"
PLANTED_NAME = "Nguyễn Văn Planted"

NAME = Finding("same_id_different_name", {"citizen_id": PLANTED_ID},
               {"population": PLANTED_NAME, "business": "Nguyen Van Plantedd", "full_name": PLANTED_NAME,
                "birth_date": "1990-04-05"}, agency="business_registry")
DECEASED = Finding("deceased_legal_representative", {"enterprise_code": "0101234567", "position": "0"},
                   {"citizen_id": "031203000001", "date_of_death": "2025-02-01"})
SHARES = Finding("shares_do_not_sum_to_100", {"certificate_id": "CS-31-000123"}, {"shares": 90})
DUPLICATES = [Finding("duplicate_records", {"citizen_id": f"0312030009{i:02d}"}, {"count": 2}) for i in range(7)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return ensure_database(warehouse_url(), "audit_web_" + tmp_path.name.replace("-", "_")[-20:].lower())


@pytest.fixture
def warehouse(url: str, tmp_path: Path) -> SimpleNamespace:
    """Two runs: the second resolves SHARES. One report of the second run, its folder on disk."""
    with connect(url) as conn:
        sync_findings(conn, RUN_1, [NAME, DECEASED, SHARES, *DUPLICATES], now=T0)
        sync_findings(conn, RUN_2, [NAME, DECEASED, *DUPLICATES], now=T0 + timedelta(days=1))
    reports = tmp_path / "reports"
    report_id = report_id_for(RUN_2)
    folder = report_folder(reports, report_id)
    (folder / "csv").mkdir(parents=True)
    (folder / "report.html").write_text(
        "<!doctype html><section id='trends'><svg><rect/></svg></section>"
        "<table class='figures'><tr><td>1</td></tr></table>", encoding="utf-8")
    (folder / "figures.json").write_text(json.dumps({"run_id": RUN_2}), encoding="utf-8")
    for name in ("quality", "trends"):
        (folder / "csv" / f"{name}.csv").write_text("a\n1\n", encoding="utf-8")
    headline = {"gate_passed": True, "quality_pass_rate": 0.9876, "open_findings": 9, "new_findings": 0,
                "resolved_findings": 1, "published": ["citizen_profile v3"]}
    with connect(url) as conn:
        record_report(conn, report_id=report_id, run_id=RUN_2, publish_run_id="asset_triggered__p",
                      audit_run_id="asset_triggered__a", folder=folder, headline=headline)
    app = create_app(reports_dir=reports, database_url=url)
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    return SimpleNamespace(client=TestClient(app), url=url, report_id=report_id, reports=reports)


def test_the_list_shows_each_report_with_its_headline_figures_and_files(warehouse):
    page = warehouse.client.get("/")
    assert page.status_code == 200
    html = page.text
    rid = warehouse.report_id
    assert f'data-report-id="{rid}"' in html and RUN_2 in html
    assert "98.76 %" in html and "passed" in html and "citizen_profile v3" in html
    links = set(re.findall(r'href="([^"]+)"', html))
    assert {f"files/audit/{rid}/report.html", f"files/audit/{rid}/figures.json",
            f"files/audit/{rid}/csv/quality.csv", f"files/audit/{rid}/csv/trends.csv", "./findings"} <= links
    assert all(not h.startswith(("/", "http")) for h in links), links  # relative: works under any mount
    for href in links - {"./", "./findings"}:
        assert warehouse.client.get("/" + href).status_code == 200, href
    assert "<style>" in html and "<script" not in html and "<link" not in html  # nothing loaded from elsewhere


def test_the_reports_api_lists_the_same_reports(warehouse):
    (report,) = warehouse.client.get("/api/reports").json()["reports"]
    assert report["run_id"] == RUN_2 and report["headline"]["open_findings"] == 9
    assert report["links"]["report"] == f"files/audit/{warehouse.report_id}/report.html"


def test_an_empty_warehouse_shows_no_report_and_creates_no_table(url, tmp_path):
    app = create_app(reports_dir=tmp_path, database_url=url)
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    page = TestClient(app).get("/")
    assert page.status_code == 200 and 'id="no-reports"' in page.text
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('lienthong_ops.audit_report')")
        assert cur.fetchone()[0] is None


@pytest.mark.parametrize(("query", "expected"), [
    ({}, 10),
    ({"type": "duplicate_records"}, 7),
    ({"agency": "business_registry"}, 2),
    ({"status": "resolved"}, 1),
    ({"status": "open", "severity": "critical"}, 1),
    ({"type": "shares_do_not_sum_to_100", "status": "open"}, 0),
])
def test_findings_filters_select_what_they_name(warehouse, query, expected):
    body = warehouse.client.get("/api/findings", params=query).json()
    assert body["total"] == expected == len(body["findings"])
    for finding in body["findings"]:
        assert all(finding[k] == v for k, v in query.items())
    page = warehouse.client.get("/findings", params=query).text
    assert f'data-total="{expected}"' in page
    rows = re.findall(r'<tr data-type="([^"]+)" data-agency="([^"]+)" data-status="([^"]+)" data-severity="([^"]+)"',
                      page)
    assert len(rows) == expected
    for key, value in query.items():
        index = ("type", "agency", "status", "severity").index(key)
        assert {r[index] for r in rows} <= {value}
    # the form shows the filters in force
    for key, value in query.items():
        assert re.search(rf'<select name="{key}">.*?<option value="{value}" selected', page, re.S), key


def test_findings_are_paged_open_before_resolved_and_most_severe_first(warehouse):
    first = warehouse.client.get("/api/findings", params={"limit": 4}).json()
    rest = warehouse.client.get("/api/findings", params={"limit": 4, "offset": 4}).json()
    last = warehouse.client.get("/api/findings", params={"limit": 4, "offset": 8}).json()
    ids = [f["finding_id"] for page in (first, rest, last) for f in page["findings"]]
    assert len(ids) == len(set(ids)) == 10
    ordered = [f for page in (first, rest, last) for f in page["findings"]]
    assert ordered[0]["severity"] == "critical" and ordered[-1]["status"] == "resolved"
    html = warehouse.client.get("/findings", params={"limit": 25, "offset": 0, "type": "duplicate_records"}).text
    assert 'id="next"' not in html and 'id="prev"' not in html
    html = warehouse.client.get("/findings", params={"limit": 4, "offset": 4}).text
    assert 'href="findings?limit=4"' in html and 'href="findings?limit=4&amp;offset=8"' in html


def test_personal_values_in_findings_are_masked_on_the_page_and_in_the_api(warehouse):
    responses = [warehouse.client.get("/findings"), warehouse.client.get("/api/findings"),
                 warehouse.client.get("/findings", params={"agency": "business_registry"})]
    for resp in responses:
        assert resp.status_code == 200
        text = resp.text
        assert PLANTED_ID not in text and "Planted" not in text and "1990-04" not in text, resp.url
        assert "031203000001" not in text and "0312030009" not in text
    (name,) = [f for f in responses[1].json()["findings"] if f["type"] == "same_id_different_name"]
    assert name["subject"] == {"citizen_id": "*********123"}
    assert name["evidence"]["full_name"] == "N. V. P." and name["evidence"]["birth_date"] == "1990"
    assert name["evidence"]["population"] != PLANTED_NAME
    assert "*********123" in responses[0].text
    # public keys stay readable
    (deceased,) = [f for f in responses[1].json()["findings"] if f["type"] == "deceased_legal_representative"]
    assert deceased["subject"] == {"enterprise_code": "0101234567", "position": "0"}


@pytest.mark.parametrize("query", [{"type": "no_such_type"}, {"agency": "ministry_of_magic"}, {"status": "x"},
                                   {"severity": "apocalyptic"}, {"limit": "0"}, {"limit": "abc"},
                                   {"offset": "-1"}, {"agency": "x' OR '1'='1"}])
def test_unknown_filter_values_are_refused_with_422(warehouse, query):
    assert warehouse.client.get("/api/findings", params=query).status_code == 422
    page = warehouse.client.get("/findings", params=query, headers={"accept": "text/html"})
    assert page.status_code == 422 and 'id="error"' in page.text


def test_the_largest_offset_is_an_empty_page_and_one_more_is_422_not_a_server_error(warehouse):
    # PostgreSQL's OFFSET is a bigint: 2**63 used to reach the warehouse and come back as a 500
    last = warehouse.client.get("/api/findings", params={"offset": str(MAX_OFFSET)})
    assert last.status_code == 200 and last.json()["total"] == 10 and last.json()["findings"] == []
    page = warehouse.client.get("/findings", params={"offset": str(MAX_OFFSET)}, headers={"accept": "text/html"})
    assert page.status_code == 200 and 'id="no-findings"' in page.text and 'id="next"' not in page.text
    for value in (str(MAX_OFFSET + 1), "9" * 40):
        assert warehouse.client.get("/api/findings", params={"offset": value}).status_code == 422
        html = warehouse.client.get("/findings", params={"offset": value}, headers={"accept": "text/html"})
        assert html.status_code == 422 and 'id="error"' in html.text


def test_query_findings_counts_all_matches_and_returns_one_page(url, warehouse):
    with connect(url) as conn:
        total, rows = query_findings(conn, type="duplicate_records", limit=3, offset=3)
    assert total == 7 and len(rows) == 3 and {r["type"] for r in rows} == {"duplicate_records"}
    with connect(url) as conn, pytest.raises(ValueError, match="unknown agency 'nobody'"):
        query_findings(conn, agency="nobody")


def test_a_report_without_headline_figures_or_files_shows_dashes_not_a_failed_gate(warehouse):
    with connect(warehouse.url) as conn:
        record_report(conn, report_id="older_run", run_id="older run", publish_run_id=None, audit_run_id=None,
                      folder=warehouse.reports / "audit" / "older_run", headline={})
    page = warehouse.client.get("/").text
    row = page[page.index('data-report-id="older_run"'):]
    row = row[:row.index("</tr>")]
    assert "failed" not in row and "passed" not in row and "files missing" in row and "href" not in row
