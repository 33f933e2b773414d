"""Findings live in the warehouse (the embedded PostgreSQL of lienthong.db) with a lifecycle across runs:
opened, seen again, resolved when a run no longer finds them, reopened when they come back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.findings import (
    Finding,
    findings_summary,
    open_findings,
    run_changes,
    sync_findings,
)
from lienthong.runs import ReconcileRun, record_reconcile_run
from lienthong.runs.schema import OPS_SCHEMA

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A database of its own on the session's warehouse server: findings are global state."""
    return ensure_database(warehouse_url(), "findings_test_" + tmp_path.name.replace("-", "_")[-20:].lower())


def name_mismatch(i: int, population: str = "Nguyễn Văn An") -> Finding:
    return Finding("same_id_different_name", {"citizen_id": f"0312030{i:05d}"},
                   {"population": population, "business": "Nguyen Van An"}, agency="business_registry")


DECEASED = Finding("deceased_legal_representative", {"enterprise_code": "0101234567", "position": "0"},
                   {"citizen_id": "031203000001", "date_of_death": "2025-02-01"})
SHARES = Finding("shares_do_not_sum_to_100", {"certificate_no": "CS-31-000123"}, {"sum": 90})
DUPLICATE = Finding("duplicate_records", {"citizen_id": "031203000009"}, {"count": 2})
THREE = [name_mismatch(1), DECEASED, SHARES]


def sync(url: str, run_id: str, findings, hours: int = 0, **kw) -> dict[str, int]:
    with connect(url) as conn:
        return sync_findings(conn, run_id, findings, now=T0 + timedelta(hours=hours), **kw)


def rows(url: str) -> dict[str, dict]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"""SELECT finding_id, status, first_seen_run, last_seen_run, last_seen_at, resolved_run,
                               resolved_at, times_reopened, evidence, severity, agency, subject
                        FROM {OPS_SCHEMA}.finding""")
        names = [d.name for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def events(url: str) -> list[tuple]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT finding_id, run_id, event, at FROM {OPS_SCHEMA}.finding_event ORDER BY 1, 2, 3")
        return cur.fetchall()


def counts(found, new=0, reopened=0, still_open=0, resolved=0, open_total=0) -> dict[str, int]:
    return {"found": found, "new": new, "reopened": reopened, "still_open": still_open, "resolved": resolved,
            "open_total": open_total}


def test_lifecycle_over_four_runs(url):
    assert sync(url, "r1", THREE, 1) == counts(3, new=3, open_total=3)
    state1 = rows(url)
    assert {r["status"] for r in state1.values()} == {"open"}
    assert {(e[1], e[2]) for e in events(url)} == {("r1", "opened")}
    assert state1[DECEASED.finding_id]["agency"] == "business_registry"
    assert state1[DECEASED.finding_id]["severity"] == "critical"
    assert state1[DECEASED.finding_id]["subject"] == {"enterprise_code": "0101234567", "position": "0"}

    # run 2: the same three, one with new evidence: nothing new, no event, evidence and last_seen follow
    changed = name_mismatch(1, population="Nguyễn Văn Anh")
    assert sync(url, "r2", [changed, DECEASED, SHARES], 2) == counts(3, still_open=3, open_total=3)
    assert len(events(url)) == 3
    state2 = rows(url)
    assert {r["last_seen_run"] for r in state2.values()} == {"r2"}
    assert {r["first_seen_run"] for r in state2.values()} == {"r1"}
    assert state2[changed.finding_id]["evidence"]["population"] == "Nguyễn Văn Anh"
    assert state2[SHARES.finding_id]["last_seen_at"] == T0 + timedelta(hours=2)

    # run 3: SHARES is gone, so exactly it is resolved
    assert sync(url, "r3", [changed, DECEASED], 3) == counts(2, still_open=2, resolved=1, open_total=2)
    state3 = rows(url)
    assert [fid for fid, r in state3.items() if r["status"] == "resolved"] == [SHARES.finding_id]
    assert state3[SHARES.finding_id]["resolved_run"] == "r3"
    assert state3[SHARES.finding_id]["resolved_at"] == T0 + timedelta(hours=3)
    with connect(url) as conn:
        assert run_changes(conn, "r3") == {"opened": [], "reopened": [], "resolved": [SHARES.finding_id]}
        assert {f["finding_id"] for f in open_findings(conn)} == {changed.finding_id, DECEASED.finding_id}

    # run 4: SHARES is back: reopened, counted once
    assert sync(url, "r4", [changed, DECEASED, SHARES], 4) == counts(3, reopened=1, still_open=2, open_total=3)
    back = rows(url)[SHARES.finding_id]
    assert (back["status"], back["times_reopened"], back["resolved_run"], back["resolved_at"]) == ("open", 1, None, None)
    assert (back["first_seen_run"], back["last_seen_run"]) == ("r1", "r4")
    with connect(url) as conn:
        assert run_changes(conn, "r4") == {"opened": [], "reopened": [SHARES.finding_id], "resolved": []}
        assert run_changes(conn, "r1")["opened"] == sorted(f.finding_id for f in THREE)
    assert [(e[1], e[2]) for e in events(url) if e[0] == SHARES.finding_id] == [
        ("r1", "opened"), ("r3", "resolved"), ("r4", "reopened")]


def test_types_outside_scope_are_left_alone(url):
    sync(url, "r1", [*THREE, DUPLICATE], 1)
    # a run that only looked for duplicates and found none resolves the duplicate, nothing else
    result = sync(url, "r2", [], 2, scope={"duplicate_records"})
    assert result == counts(0, resolved=1, open_total=3)
    state = rows(url)
    assert state[DUPLICATE.finding_id]["status"] == "resolved"
    assert all(state[f.finding_id]["status"] == "open" and state[f.finding_id]["last_seen_run"] == "r1" for f in THREE)
    with pytest.raises(ValueError, match="outside scope"):
        sync(url, "r3", [DECEASED], 3, scope={"duplicate_records"})
    with pytest.raises(ValueError, match="no_such_type"):
        sync(url, "r3", [], 3, scope={"no_such_type"})
    assert rows(url) == state  # nothing happened


def test_rerun_of_the_same_run_id_changes_nothing(url):
    sync(url, "r1", THREE, 1)
    first = sync(url, "r2", [name_mismatch(1), DECEASED, DUPLICATE], 2)
    assert first == counts(3, new=1, still_open=2, resolved=1, open_total=3)
    state, history = rows(url), events(url)
    # the retry happens later and gets the findings in another order, with a duplicate
    again = sync(url, "r2", [DUPLICATE, DECEASED, name_mismatch(1), DUPLICATE], 5)
    assert again == first
    assert rows(url) == state and events(url) == history
    with connect(url) as conn:
        assert run_changes(conn, "r2") == {"opened": [DUPLICATE.finding_id], "reopened": [],
                                           "resolved": [SHARES.finding_id]}


def test_duplicate_ids_in_the_input_keep_the_last(url):
    a, b = name_mismatch(7, population="Lê Thị Hoa"), name_mismatch(7, population="Lê Thị Hòa")
    assert sync(url, "r1", [a, b], 1) == counts(1, new=1, open_total=1)
    assert rows(url)[a.finding_id]["evidence"]["population"] == "Lê Thị Hòa"


def test_findings_stream_from_a_one_pass_iterator_and_the_last_of_an_id_wins_across_batches(url, monkeypatch):
    """A reconciliation hands a country's findings as they are read from its file: a generator taken once,
    COPYed in batches. The same id in different batches: the last given wins, counted once."""
    import lienthong.findings as findings_module

    monkeypatch.setattr(findings_module, "_COPY_BATCH", 3)
    taken: list[int] = []

    def stream(tag: str):
        for i in range(10):
            taken.append(i)
            yield name_mismatch(i % 7, population=f"{tag}{i}")  # ids 0-2 come twice, 7 batches apart

    assert sync(url, "r1", stream("a"), 1) == counts(7, new=7, open_total=7)
    assert len(taken) == 10
    state = rows(url)
    assert {name_mismatch(i).finding_id: state[name_mismatch(i).finding_id]["evidence"]["population"]
            for i in range(7)} == {name_mismatch(i).finding_id: f"a{i + 7 if i < 3 else i}" for i in range(7)}
    # a finding outside the scope late in the stream fails the whole sync: nothing of it is kept
    late = (f for f in [*(name_mismatch(20 + i) for i in range(5)), DECEASED])
    with pytest.raises(ValueError, match="outside scope"):
        sync(url, "r2", late, 2, scope={"same_id_different_name"})
    assert rows(url) == state


def test_special_characters_in_evidence_round_trip_exactly(url):
    evidence = {
        "population": "Nguyễn Thị Ánh\tTuyết",
        "business": 'NGUYỄN THỊ "ÁNH" TUYẾT\nP.Đằng Giang,\r\nQ.Ngô Quyền',
        "path": "C:\\dữ liệu\\ho_so.csv \\N \\t \\u0000 \\.",
        "quotes": "'; DROP TABLE x; -- \"\"",
        "empty": "", "none": None, "nested": {"a,b": ["\\", "\t", "\n", "ừ"]}, "n": 1.5, "flag": True,
        "emoji": "👨‍👩‍👧",
    }
    subject = {"citizen_id": "031203000042", "record": "Sổ\t\"12\"\\a\nb"}
    f = Finding("same_id_different_name", subject, evidence)
    sync(url, "r1", [f], 1)
    stored = rows(url)[f.finding_id]
    assert stored["evidence"] == evidence and stored["subject"] == subject
    with connect(url) as conn:
        [listed] = open_findings(conn, type="same_id_different_name")
    assert listed["evidence"] == evidence and listed["finding_id"] == f.finding_id


@pytest.mark.slow
def test_fifty_thousand_findings(url):
    kinds = ["same_id_different_name", "duplicate_records", "commune_code_outdated", "match_needs_review"]

    def batch(ids, tag):
        return [Finding(kinds[i % 4], {"citizen_id": f"{i:012d}"}, {"value": f"Phường Đằng\t{tag}\\{i}\n\"x\""})
                for i in ids]

    assert sync(url, "big1", batch(range(50_000), "a"), 1) == counts(50_000, new=50_000, open_total=50_000)
    # run 2: 10,000 gone, 5,000 new, all evidence changed
    result = sync(url, "big2", batch(range(10_000, 55_000), "b"), 2)
    assert result == counts(45_000, new=5_000, still_open=40_000, resolved=10_000, open_total=45_000)
    # run 3: the 10,000 are back
    result = sync(url, "big3", batch(range(55_000), "c"), 3)
    assert result == counts(55_000, reopened=10_000, still_open=45_000, open_total=55_000)
    with connect(url) as conn:
        changes = run_changes(conn, "big2")
        assert (len(changes["opened"]), len(changes["resolved"])) == (5_000, 10_000)
        summary = findings_summary(conn)
        assert sum(s["count"] for s in summary) == 55_000
        assert {s["status"] for s in summary} == {"open"}
        with conn.cursor() as cur:
            cur.execute(f"""SELECT count(*), sum(times_reopened), count(*) FILTER (WHERE strpos(evidence->>'value', %s) > 0)
                            FROM {OPS_SCHEMA}.finding""", ("\tc\\",))
            assert cur.fetchone() == (55_000, 10_000, 55_000)
            cur.execute(f"SELECT event, count(*) FROM {OPS_SCHEMA}.finding_event GROUP BY event")
            assert dict(cur.fetchall()) == {"opened": 55_000, "resolved": 10_000, "reopened": 10_000}
    sample = Finding(kinds[12_345 % 4], {"citizen_id": f"{12_345:012d}"}, {})
    assert rows(url)[sample.finding_id]["evidence"] == {"value": "Phường Đằng\tc\\12345\n\"x\""}


def test_queries_filter_and_summarise(url):
    with connect(url) as conn:  # before any sync: empty, no error
        assert open_findings(conn) == [] and findings_summary(conn) == []
        assert run_changes(conn, "r0") == {"opened": [], "reopened": [], "resolved": []}
    sync(url, "r1", [*THREE, DUPLICATE, name_mismatch(2)], 1)
    sync(url, "r2", [*THREE, name_mismatch(2)], 2)
    with connect(url) as conn:
        assert [f["finding_id"] for f in open_findings(conn)][0] == DECEASED.finding_id  # critical first
        assert {f["finding_id"] for f in open_findings(conn, agency="business_registry")} == {
            DECEASED.finding_id, name_mismatch(1).finding_id, name_mismatch(2).finding_id}
        assert [f["finding_id"] for f in open_findings(conn, type="shares_do_not_sum_to_100")] == [SHARES.finding_id]
        assert open_findings(conn, type="duplicate_records") == []
        with pytest.raises(ValueError):
            open_findings(conn, type="nope")
        summary = findings_summary(conn)
    assert summary == [
        {"type": "deceased_legal_representative", "severity": "critical", "agency": "business_registry",
         "status": "open", "count": 1},
        {"type": "shares_do_not_sum_to_100", "severity": "high", "agency": "land_registry", "status": "open",
         "count": 1},
        {"type": "duplicate_records", "severity": "medium", "agency": "population_registry", "status": "resolved",
         "count": 1},
        {"type": "same_id_different_name", "severity": "medium", "agency": "business_registry", "status": "open",
         "count": 2},
    ]


def test_a_failed_sync_leaves_nothing_behind(url, monkeypatch):
    import lienthong.findings as findings

    sync(url, "r1", THREE, 1)
    state, history = rows(url), events(url)
    real_apply = findings._apply

    def apply_then_fail(*args, **kwargs):
        real_apply(*args, **kwargs)  # every change made, then the transaction fails before its commit
        raise RuntimeError("connection lost")

    monkeypatch.setattr(findings, "_apply", apply_then_fail)
    with connect(url) as conn:
        conn.autocommit = True
        with pytest.raises(RuntimeError):
            sync_findings(conn, "r2", [DECEASED, DUPLICATE], now=T0 + timedelta(hours=2))
        assert conn.autocommit  # restored
        with pytest.raises(ValueError, match="timezone"):
            sync_findings(conn, "r2", [DECEASED], now=datetime(2026, 1, 1))  # naive: refused
    assert rows(url) == state and events(url) == history
    monkeypatch.undo()
    assert sync(url, "r2", [DECEASED, DUPLICATE], 2) == counts(2, new=1, still_open=1, resolved=2, open_total=2)


def test_sync_commits_work_pending_on_the_connection(url):
    with connect(url) as conn:
        with conn.cursor() as cur:  # the caller is inside a transaction of its own
            cur.execute("CREATE TABLE caller_note (note text)")
            cur.execute("INSERT INTO caller_note VALUES ('Ghi chú')")
        assert sync_findings(conn, "r1", THREE, now=T0) == counts(3, new=3, open_total=3)
        conn.rollback()  # nothing left to roll back: sync_findings committed
        with conn.cursor() as cur:
            cur.execute("SELECT note FROM caller_note")
            assert cur.fetchall() == [("Ghi chú",)]
    assert len(rows(url)) == 3


def test_reconcile_run_is_replaced_on_rerun(url):
    with connect(url) as conn:
        record_reconcile_run(conn, ReconcileRun("r1", started_at=T0, finished_at=None, status="running"))
        record_reconcile_run(conn, ReconcileRun("r1", started_at=T0, finished_at=T0 + timedelta(minutes=3),
                                                status="success", counts={"found": 3, "new": 3},
                                                metrics={"match_rate": 0.97},
                                                outputs={"report": "reports/r1/Báo cáo.html"}))
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT run_id, finished_at, status, counts, metrics, outputs FROM {OPS_SCHEMA}.reconcile_run")
        assert cur.fetchall() == [("r1", T0 + timedelta(minutes=3), "success", {"found": 3, "new": 3},
                                   {"match_rate": 0.97}, {"report": "reports/r1/Báo cáo.html"})]


def test_syncing_only_the_difference_gives_what_the_whole_set_gives(tmp_path):
    """Random runs of findings (new ones, evidence changing, findings disappearing and coming back), synced
    once as whole sets and once as differences from the previous set: every finding ends in the same state
    with the same events and counts; only `last_seen_*` of a finding found again unchanged differ."""
    import random

    from lienthong.findings import ensure_findings_schema, sync_finding_changes

    whole = ensure_database(warehouse_url(), "findings_whole_" + tmp_path.name.replace("-", "_")[-16:].lower())
    delta = ensure_database(warehouse_url(), "findings_delta_" + tmp_path.name.replace("-", "_")[-16:].lower())
    rng = random.Random(11)
    pool = [name_mismatch(i, population=f"Tên {i}") for i in range(40)]
    previous: dict[str, Finding] = {}
    for step in range(8):
        current = {}
        for f in pool:
            if rng.random() < 0.6:
                if rng.random() < 0.2:  # the same finding with other evidence
                    f = Finding(f.type, f.subject, {**f.evidence, "step": step}, agency=f.agency)
                current[f.finding_id] = f
        run, now = f"r{step}", T0 + timedelta(hours=step)
        want = sync(whole, run, list(current.values()), step)
        changed = [f for i, f in current.items() if i not in previous or previous[i] != f]
        gone = [i for i in previous if i not in current]
        with connect(delta) as conn:
            conn.autocommit = False
            if step == 0:
                ensure_findings_schema(conn)
                conn.commit()
                got = sync_findings(conn, run, list(current.values()), now=now, commit=False, basis="set-0")
            else:
                got = sync_finding_changes(conn, run, changed, gone, found=len(current), now=now,
                                           since=f"set-{step - 1}", basis=f"set-{step}")
            conn.commit()
        assert got == want, step
        strip = ("last_seen_run", "last_seen_at")
        assert ({k: {c: v for c, v in r.items() if c not in strip} for k, r in rows(delta).items()}
                == {k: {c: v for c, v in r.items() if c not in strip} for k, r in rows(whole).items()}), step
        assert events(delta) == events(whole), step
        if step and changed != list(current.values()):
            assert len(changed) + len(gone) < len(current) + len(previous)
        previous = current
    # an open finding the difference did not name keeps the last run that wrote it
    assert {r["last_seen_run"] for r in rows(delta).values() if r["status"] == "open"} - {"r7"}


def test_a_difference_applies_only_on_top_of_the_set_it_was_computed_from(url):
    from lienthong.findings import (
        SyncBasisMismatch,
        ensure_findings_schema,
        sync_finding_changes,
        synced_basis,
    )

    with connect(url) as conn:
        conn.autocommit = False
        ensure_findings_schema(conn)
        conn.commit()
        assert synced_basis(conn) is None
        sync_findings(conn, "r1", THREE, now=T0, commit=False, basis="file-1")
        conn.commit()
        assert synced_basis(conn) == "file-1"
        # computed from another set: refused before anything is written
        with pytest.raises(SyncBasisMismatch, match="file-0"):
            sync_finding_changes(conn, "r2", [DUPLICATE], [], found=4, since="file-0", basis="file-2")
        conn.rollback()
        assert sync_finding_changes(conn, "r2", [DUPLICATE], [SHARES.finding_id], found=3, since="file-1",
                                    basis="file-2") == counts(3, new=1, still_open=2, resolved=1, open_total=3)
        conn.commit()
        assert synced_basis(conn) == "file-2"
    # a sync of some types only, or one that names no basis, leaves none a difference could build on
    sync(url, "r3", [DUPLICATE], 3, scope=["duplicate_records"], basis="ignored")
    with connect(url) as conn:
        assert synced_basis(conn) is None
        with pytest.raises(SyncBasisMismatch):
            sync_finding_changes(conn, "r4", [], [], found=3, since="file-2", basis="file-4")
    assert {r["status"] for r in rows(url).values()} == {"open", "resolved"}
