"""Audit reports over three real pipeline runs of one province (sandbox servers, real connectors, staging,
Great Expectations, reconciliation, publication, report), with a planted quality drop and a planted new
finding in the second run, fixed in the third.

The plants arrive the way an agency's change would: a later raw landing of the population registry in
which 4 % of the citizens carry a birth date their personal ID contradicts (the warning rule
`personal_id_matches_birth` allows 1 %) and one citizen who legally represents an active enterprise is
recorded as deceased; the third landing restores those records. Reports are then checked for what they
show (the drop in the trend, the finding as new, then as resolved) and scanned for unmasked personal data.
"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lienthong import zones

pytestmark = pytest.mark.integration

CITIZENS = 1500
SEED = 23
STAGED = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")
PUBLISHED = ("citizen_profile", "enterprise_profile", "parcel_register", "reconciliation_findings", "quality_summary")
DRIFT = 0.04


def _citizen_records(raw_dir: Path) -> list[dict]:
    files = sorted((raw_dir / "population_registry" / "citizens").glob("ingest_date=*/run=*/part-*.parquet"))
    return [json.loads(p) for f in files for p in pq.read_table(f, columns=["payload"])["payload"].to_pylist()]


def _land(raw_dir: Path, run_id: str, records: list[dict]) -> None:
    from connectors.base.landing import RawLanding

    landing = RawLanding(raw_dir, "population_registry", "citizens", run_id)
    landing.write_page(records, key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()


def _pipeline_run(run_id: str) -> dict:
    """What the integrate, publish and audit_report DAGs do for one run, in order."""
    from lienthong import pipeline
    from lienthong.audit.render import build_report

    for name in STAGED:
        summary = pipeline.stage(name, run_id)
        pipeline.validate(name, run_id, summary)
    pipeline.reconcile(run_id)
    for name in PUBLISHED:
        pipeline.publish(name, f"publish-{run_id}")
    return build_report(run_id, publish_run_id=f"publish-{run_id}", audit_run_id=f"audit-{run_id}")


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    from province import ingested_province

    from lienthong import pipeline
    from lienthong.settings import load_settings

    root = tmp_path_factory.mktemp("audit")
    env = {"LIENTHONG_GROUND_TRUTH_DIR": str(root / "sb" / "truth"), "LIENTHONG_PSEUDONYM_KEY": "test-only-pseudonym-key"}
    with ingested_province(root, citizens=CITIZENS, seed=SEED, run_id="ingest-1", extra_env=env) as prov:
        settings = load_settings()
        reports = {"run-1": _pipeline_run("run-1")}

        # the representative to be recorded as deceased: an exact link to an active enterprise
        rec_out = pipeline.latest_reconciliation(pipeline.warehouse_url(settings))["outputs"]
        links = zones.read_table(rec_out["enterprise_representative_link"]["path"]).to_pylist()
        ents = {e["enterprise_code"]: e["status"] for e in zones.read_table(rec_out["enterprise_master"]["path"]).to_pylist()}
        originals = {r["soDinhDanh"]: r for r in _citizen_records(settings.raw_dir) if r.get("soDinhDanh")}
        alive = {k for k, r in originals.items() if r.get("trangThai") == "CON_SONG" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.get("ngaySinh") or "")}
        rep_id = next(lk["citizen_id"] for lk in sorted(links, key=lambda x: (x["enterprise_code"], x["position"]))
                      if lk["band"] == "accept" and lk["method"] == "exact_id" and lk["citizen_id"] in alive
                      and ents.get(lk["master_enterprise_code"]) == "DANG_HOAT_DONG")
        drifted = sorted(k for k in alive if k != rep_id)[: int(DRIFT * len(originals)) + 1]

        planted = []
        for key in drifted:  # birth year moved 7 years: digits 5-6 of the ID no longer match it
            r = dict(originals[key])
            y, md = r["ngaySinh"][:4], r["ngaySinh"][4:]
            r["ngaySinh"] = f"{int(y) - 7:04d}{md}"
            r["capNhatLuc"] = "2027-01-01T08:00:00+07:00"
            planted.append(r)
        dead = dict(originals[rep_id], trangThai="DA_MAT", ngayMat="2026-10-01", capNhatLuc="2027-01-01T08:00:00+07:00")
        planted.append(dead)
        _land(settings.raw_dir, "correction-2", planted)
        reports["run-2"] = _pipeline_run("run-2")

        restored = [dict(originals[k], capNhatLuc="2027-01-02T08:00:00+07:00") for k in [*drifted, rep_id]]
        _land(settings.raw_dir, "correction-3", restored)
        reports["run-3"] = _pipeline_run("run-3")
        figures = {k: json.loads((Path(v["folder"]) / "figures.json").read_text()) for k, v in reports.items()}
        yield {"reports": reports, "figures": figures, "rep_id": rep_id, "drifted": drifted,
               "sandbox": prov["sandbox"], "originals": originals, "settings": settings}


class _Dom(HTMLParser):
    """Ids of elements, number of <svg> per section and rows per table id: enough to check what a reader sees."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.section: str | None = None
        self.table: str | None = None
        self.svgs: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self.section = a.get("id")
        elif tag == "svg" and self.section:
            self.svgs[self.section] = self.svgs.get(self.section, 0) + 1
        elif tag == "table":
            self.table = a.get("id")
        elif tag == "tr" and self.table:
            self.rows[self.table] = self.rows.get(self.table, 0) + 1
        elif tag == "script":
            self.scripts += 1
        for attr in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(attr) or ""):
                self.external.append(a[attr])


def _dom(report: dict) -> _Dom:
    dom = _Dom()
    dom.feed(Path(report["html"]).read_text(encoding="utf-8"))
    return dom


def _point(figures: dict, run_id: str) -> dict:
    return next(t for t in figures["trends"] if t["run_id"] == run_id)


def test_report_is_self_contained_with_plots_tables_and_exports(three_runs):
    report = three_runs["reports"]["run-1"]
    dom = _dom(report)
    assert dom.svgs.get("trends", 0) == 4, dom.svgs
    assert not dom.external and dom.scripts == 0, (dom.external, dom.scripts)
    assert dom.rows["quality-datasets"] == 1 + len(STAGED)
    assert {"quality", "conservation", "quarantine", "findings", "links", "publications", "trends"} <= dom.ids
    folder = Path(report["folder"])
    figures = three_runs["figures"]["run-1"]
    with (folder / "csv" / "conservation.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["dataset"] for r in rows} == set(STAGED)
    for r in rows:  # in = staged + quarantined, as exported
        assert int(r["rows_in"]) == int(r["rows_staged"]) + int(r["rows_quarantined"])
    assert [r["dataset"] for r in figures["conservation"]] == sorted(STAGED)
    assert len(figures["publications"]) == len(PUBLISHED)
    # the sandbox's truth is configured: link accuracy is in the report
    accuracy = {a["link"]: a for a in figures["accuracy"]}
    assert accuracy["representative_citizen"]["f1"] > 0.95, accuracy
    # a Data Docs page of this run exists for every staged dataset and the report links to it
    reports_dir = three_runs["settings"].reports_dir
    for d in figures["quality_datasets"]:
        assert d["data_docs"] and (reports_dir / d["data_docs"]).exists(), d


def test_report_lists_every_grant_with_its_purposes_and_legal_bases(three_runs):
    from lienthong.access import load_agencies

    report = three_runs["reports"]["run-1"]
    figures = three_runs["figures"]["run-1"]
    agencies = load_agencies()
    expected = {(a, d) for a, ag in agencies.items() for d in ag.grants}
    assert {(g["agency"], g["dataset"]) for g in figures["grants"]} == expected and figures["grants_error"] is None
    for g in figures["grants"]:
        purposes = agencies[g["agency"]].purposes_of(g["dataset"])
        assert g["purposes"] == ", ".join(p.code for p in purposes)
        assert all(b.citation in g["legal_bases"] for p in purposes for b in p.bases)
    assert _dom(report).rows["grants"] == 1 + len(expected)  # header + one row per grant
    with (Path(report["folder"]) / "csv" / "grants.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == len(expected)
    assert isinstance(figures["reads"], list)  # lookups of the last 30 days (none in this pipeline run)


def test_second_report_shows_the_quality_drop_and_the_new_finding(three_runs):
    f1, f2 = three_runs["figures"]["run-1"], three_runs["figures"]["run-2"]
    p1, p2 = _point(f2, "run-1"), _point(f2, "run-2")
    assert p1["quality_pass_rate"] == f1["headline"]["quality_pass_rate"]
    assert p2["quality_pass_rate"] < p1["quality_pass_rate"], (p1, p2)
    failed = [q for q in f2["quality"] if not q["success"]]
    assert [q["rule"] for q in failed] == ["personal_id_matches_birth"], failed
    assert failed[0]["unexpected_count"] >= len(three_runs["drifted"])
    new = [f for f in f2["findings_new"] if f["type"] == "deceased_legal_representative"]
    assert len(new) >= 1, f2["findings_changes"]
    assert f2["headline"]["new_findings"] >= 1
    assert _point(f2, "run-2")["open_by_type"].get("deceased_legal_representative", 0) > \
        _point(f2, "run-1")["open_by_type"].get("deceased_legal_representative", 0)
    dom = _dom(three_runs["reports"]["run-2"])
    assert dom.rows.get("findings-new", 0) >= 2  # header + the finding
    html = Path(three_runs["reports"]["run-2"]["html"]).read_text(encoding="utf-8")
    assert new[0]["finding_id"] in html


def test_third_report_shows_the_finding_resolved_and_quality_back(three_runs):
    f2, f3 = three_runs["figures"]["run-2"], three_runs["figures"]["run-3"]
    planted = {f["finding_id"] for f in f2["findings_new"] if f["type"] == "deceased_legal_representative"}
    resolved = {f["finding_id"] for f in f3["findings_resolved"]}
    assert planted and planted <= resolved, (planted, resolved)
    assert _point(f3, "run-3")["quality_pass_rate"] == _point(f3, "run-1")["quality_pass_rate"]
    assert all(q["success"] for q in f3["quality"] if q["rule"] == "personal_id_matches_birth")
    assert [t["run_id"] for t in f3["trends"]] == ["run-1", "run-2", "run-3"]
    html = Path(three_runs["reports"]["run-3"]["html"]).read_text(encoding="utf-8")
    assert next(iter(planted)) in html


def test_reports_contain_no_unmasked_personal_id_or_name(three_runs):
    originals = three_runs["originals"]
    ids = set(originals) | {r["soCmndCu"] for r in originals.values() if r.get("soCmndCu")}
    names = {r["hoVaTen"] for r in originals.values() if r.get("hoVaTen") and " " in r["hoVaTen"]}
    assert len(ids) > CITIZENS and len(names) > 100
    id_pattern = re.compile(r"(?<!\d)\d{9}(?:\d{3})?(?!\d)")
    scanned = 0
    for report in three_runs["reports"].values():
        folder = Path(report["folder"])
        for path in [folder / "report.html", folder / "figures.json", *sorted((folder / "csv").glob("*.csv"))]:
            text = path.read_text(encoding="utf-8")
            scanned += 1
            leaked = {m for m in id_pattern.findall(text) if m in ids}
            assert not leaked, f"{path.name}: personal IDs in clear: {sorted(leaked)[:5]}"
            named = [n for n in names if n in text]
            assert not named, f"{path.name}: names in clear: {named[:5]}"
    from lienthong.audit.render import CSV_TABLES

    assert scanned == 3 * (2 + len(CSV_TABLES))  # the page, figures.json and one CSV per table
    # the examples are there, masked (not dropped)
    examples = three_runs["figures"]["run-1"]["quarantine_examples"]
    assert examples and all(e["record_key"].startswith("***") for e in examples if e["dataset"] == "citizen")


def test_reports_are_listed_and_a_rerun_replaces_its_report(three_runs):
    from lienthong.audit.render import build_report
    from lienthong.audit.store import list_reports
    from lienthong.db import connect, warehouse_url

    settings = three_runs["settings"]
    again = build_report("run-3", publish_run_id="publish-run-3", settings=settings)
    assert again["folder"] == three_runs["reports"]["run-3"]["folder"]
    with connect(warehouse_url(settings)) as conn:
        listed = list_reports(conn)
    assert [r["run_id"] for r in listed] == ["run-3", "run-2", "run-1"]
    assert listed[0]["headline"]["resolved_findings"] >= 1
    leftovers = [p.name for p in (settings.reports_dir / "audit").iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_report_command_rewrites_a_run_and_names_an_unknown_one(three_runs):
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "lienthong.cli", "report", "--run", "run-2", "--publish-run", "publish-run-2"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert three_runs["reports"]["run-2"]["html"] in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "lienthong.cli", "report", "--run", "no-such-run"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "no-such-run" in bad.stderr, bad.stderr[-2000:]
