"""Discrepancy cases in the warehouse (lienthong.cases over the embedded PostgreSQL): agencies act on their own
findings, runs judge the claims of correction on source data read after them, both sync modes alike, two
actions at once lose nothing, an older warehouse gets the case columns."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lienthong import cases
from lienthong.cases import act_on_finding, case_history, run_case_counts
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.findings import (
    Finding,
    ensure_findings_schema,
    query_findings,
    sync_finding_changes,
    sync_findings,
)
from lienthong.runs.schema import OPS_SCHEMA

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NAME = Finding("same_id_different_name", {"citizen_id": "031203000001"},
               {"population": "Nguyễn Văn An", "business": "Nguyen Van Anh"}, agency="business_registry")
DECEASED = Finding("deceased_legal_representative", {"enterprise_code": "0101234567", "position": "0"},
                   {"citizen_id": "031203000002"})
SHARES = Finding("shares_do_not_sum_to_100", {"certificate_no": "CS-31-000123"}, {"sum": 90})


@pytest.fixture
def url(tmp_path: Path) -> str:
    return ensure_database(warehouse_url(), "cases_test_" + tmp_path.name.replace("-", "_")[-20:].lower())


def act(url: str, finding: Finding, agency: str, action: str, **kw) -> cases.Transition:
    with connect(url) as conn:
        return act_on_finding(conn, finding.finding_id, agency, action, **kw)


def state(url: str, finding: Finding) -> str:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT case_state FROM {OPS_SCHEMA}.finding WHERE finding_id = %s", (finding.finding_id,))
        return cur.fetchone()[0]


def claim_time(url: str, finding: Finding) -> datetime:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT case_changed_at FROM {OPS_SCHEMA}.finding WHERE finding_id = %s", (finding.finding_id,))
        return cur.fetchone()[0]


def run(url: str, run_id: str, found, read_at: datetime | None, hours: int = 1) -> dict[str, int]:
    with connect(url) as conn:
        sync_findings(conn, run_id, found, now=T0 + timedelta(hours=hours), inputs_read_at=read_at)
        return run_case_counts(conn, run_id)


def test_a_case_walks_to_verified_and_a_wrong_claim_is_reopened(url):
    run(url, "r1", [NAME, DECEASED, SHARES], None)
    assert {state(url, f) for f in (NAME, DECEASED, SHARES)} == {"new"}
    t = act(url, NAME, "business_registry", "acknowledge", request_id="req-1")
    assert (t.from_state, t.to_state, t.request_id) == ("new", "acknowledged", "req-1")
    act(url, NAME, "business_registry", "corrected", note="name fixed from the population registry")
    act(url, DECEASED, "business_registry", "corrected")
    claimed = max(claim_time(url, NAME), claim_time(url, DECEASED))

    # a run on source data read before the claims judges neither, though it no longer finds NAME
    counts = run(url, "r2", [DECEASED, SHARES], claimed - timedelta(seconds=1), hours=2)
    assert (state(url, NAME), state(url, DECEASED)) == ("corrected", "corrected")
    assert counts["claims_verified"] == counts["claims_reopened"] == 0 and counts["claims_pending"] == 2

    # a run on data read after them: NAME (gone) verified, DECEASED (still found) reopened, with the run named
    counts = run(url, "r3", [DECEASED, SHARES], claimed + timedelta(seconds=1), hours=3)
    assert (state(url, NAME), state(url, DECEASED)) == ("verified_resolved", "reopened")
    assert counts == {"claims_verified": 1, "claims_reopened": 1, "resolved_by_data": 0, "reopened_by_data": 0,
                      "claims_pending": 0}
    with connect(url) as conn:
        history = case_history(conn, NAME.finding_id)
        reopened = case_history(conn, DECEASED.finding_id)[-1]
    assert [(e["action"], e["to_state"]) for e in history] == [
        ("acknowledge", "acknowledged"), ("corrected", "corrected"), ("verify", "verified_resolved")]
    assert history[1]["note"] == "name fixed from the population registry"
    assert history[-1]["run_id"] == "r3" and history[-1]["actor"] == "run"
    assert reopened["run_id"] == "r3" and "r3 still finds it" in reopened["reason"]

    # a rerun of r3 changes nothing more
    assert run(url, "r3", [DECEASED, SHARES], claimed + timedelta(seconds=1), hours=3)["claims_verified"] == 1
    with connect(url) as conn:
        assert len(case_history(conn, NAME.finding_id)) == 3
    # the agency may work the reopened case again; a closed one is refused
    act(url, DECEASED, "business_registry", "dispute", reason="the citizen is alive: registry error")
    with pytest.raises(cases.TransitionRefused, match="'verified_resolved'"):
        act(url, NAME, "business_registry", "acknowledge")
    # NAME found again: its closed case is reopened by the data
    counts = run(url, "r4", [NAME, DECEASED, SHARES], None, hours=4)
    assert state(url, NAME) == "reopened" and counts["reopened_by_data"] == 1
    # SHARES resolved while nobody claimed anything
    counts = run(url, "r5", [NAME, DECEASED], None, hours=5)
    assert state(url, SHARES) == "resolved_by_data" and counts["resolved_by_data"] == 1


def test_refusals_name_why(url):
    run(url, "r1", [NAME, SHARES], None)
    with pytest.raises(cases.UnknownFinding):
        act(url, Finding("duplicate_records", {"citizen_id": "1"}), "population_registry", "acknowledge")
    with pytest.raises(cases.NotYourFinding, match="business_registry"):
        act(url, NAME, "land_registry", "acknowledge")
    with pytest.raises(cases.InvalidAction, match="reason"):
        act(url, NAME, "business_registry", "dispute", reason="   ")
    with pytest.raises(cases.InvalidAction, match="unknown action"):
        act(url, NAME, "business_registry", "close")
    act(url, NAME, "business_registry", "acknowledge")
    with pytest.raises(cases.TransitionRefused, match="'acknowledged'.*'acknowledged'"):
        act(url, NAME, "business_registry", "acknowledge")
    assert [e.status for e in (cases.InvalidAction("x"), cases.NotYourFinding("x"), cases.UnknownFinding("x"),
                               cases.TransitionRefused("x"))] == [400, 403, 404, 409]


def test_two_requests_at_once_lose_no_transition(url):
    run(url, "r1", [NAME], None)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def go(action: str, **kw) -> None:
        with connect(url) as conn:
            barrier.wait()
            try:
                act_on_finding(conn, NAME.finding_id, "business_registry", action, **kw)
                outcomes.append(action)
            except cases.TransitionRefused:
                outcomes.append("refused")

    threads = [threading.Thread(target=go, args=("corrected",)),
               threading.Thread(target=go, args=("dispute",), kwargs={"reason": "not ours"})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with connect(url) as conn:
        history = case_history(conn, NAME.finding_id)
    # both applied one after the other (dispute then corrected, or corrected then refused dispute): the
    # history chains, and the state is its last transition
    assert all(a["to_state"] == b["from_state"] for a, b in zip(history, history[1:], strict=False))
    assert state(url, NAME) == history[-1]["to_state"]
    assert len(history) == sum(1 for o in outcomes if o != "refused")


def test_a_difference_sync_judges_an_unchanged_open_finding(url):
    with connect(url) as conn:
        sync_findings(conn, "r1", [NAME, SHARES], now=T0, basis="b1")
    act(url, SHARES, "land_registry", "corrected")
    claimed = claim_time(url, SHARES)
    with connect(url) as conn:
        ensure_findings_schema(conn)
        conn.commit()
        # nothing changed: SHARES is not in the difference, yet the claim is judged over the stored state
        sync_finding_changes(conn, "r2", [], [], found=2, since="b1", basis="b2", now=T0 + timedelta(hours=1),
                             inputs_read_at=claimed + timedelta(seconds=1))
    assert state(url, SHARES) == "reopened"


def test_an_older_warehouse_gets_the_case_columns(url):
    with connect(url) as conn:
        sync_findings(conn, "r1", [NAME, SHARES], now=T0)
        sync_findings(conn, "r2", [NAME], now=T0 + timedelta(hours=1))
        with conn.cursor() as cur:  # as before cases existed
            cur.execute(f"""ALTER TABLE {OPS_SCHEMA}.finding DROP COLUMN case_state, DROP COLUMN case_changed_at;
                            DROP TABLE {OPS_SCHEMA}.finding_case_event""")
        conn.commit()
        total, rows = query_findings(conn)  # a viewer on the old warehouse: no case yet
        assert total == 2 and {r["case_state"] for r in rows} == {None}
        ensure_findings_schema(conn)
        conn.commit()
    assert (state(url, NAME), state(url, SHARES)) == ("new", "resolved_by_data")
    with connect(url) as conn:
        total, rows = query_findings(conn, case_state="new")
        assert [r["finding_id"] for r in rows] == [NAME.finding_id] and rows[0]["last_action"] is None


def test_ageing_per_agency_with_deadlines(url):
    with connect(url) as conn:
        sync_findings(conn, "r1", [NAME, DECEASED, SHARES], now=T0)
    act(url, NAME, "business_registry", "dispute", reason="same person, old spelling")
    with connect(url) as conn:
        ageing = cases.case_ageing(conn, T0 + timedelta(days=10), {"deceased_legal_representative": 20})
    business = next(a for a in ageing["agencies"] if a["agency"] == "business_registry")
    land = next(a for a in ageing["agencies"] if a["agency"] == "land_registry")
    # NAME: medium, 30 days; DECEASED: critical, but its type's override (20) wins: neither overdue at 10 days
    assert business["open"] == 2 and business["overdue"] == 0 and business["disputed_with_reason"] == 1
    assert business["by_state"]["disputed"] == 1 and business["by_state"]["new"] == 1
    assert business["median_open_days"] == business["max_open_days"] == 10.0
    # SHARES: high, 14 days by default
    with connect(url) as conn:
        later = cases.case_ageing(conn, T0 + timedelta(days=15))
    assert next(a for a in later["agencies"] if a["agency"] == "land_registry")["overdue"] == 1
    assert land["buckets"][1] == {"bucket": "7-30 d", "open": 1, "overdue": 0}
