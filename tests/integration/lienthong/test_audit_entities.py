"""The audit report's entity registry section: per reconciliation run, the linking mode, the records relinked, the
links moved, the entity events and active entities per kind, the models and the ID-less holder counts.

Integration: a small province (sandbox, real connectors) is staged, validated and reconciled twice; between
the runs the population registry delivers a change the way it would (a later raw landing): two citizens
renamed, one born, and one citizen's record corrected into a duplicate of another citizen (so two entities
become one). The report of the second run must show what the ledger and the registry tables hold, draw its
plots, and name no citizen of the staged data.

Unit: runs reconciled before the registry and the link state existed (no `entities` / `link_state` metrics)
render as "not recorded".
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

CITIZENS = 400
SEED = 31
STAGED = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")


# --- integration -------------------------------------------------------------------------------------------------


def _citizen_records(raw_dir: Path) -> dict[str, dict[str, Any]]:
    files = sorted((raw_dir / "population_registry" / "citizens").glob("ingest_date=*/run=*/part-*.parquet"))
    out = {}
    for f in files:
        for p in pq.read_table(f, columns=["payload"])["payload"].to_pylist():
            r = json.loads(p)
            if r.get("soDinhDanh"):
                out[r["soDinhDanh"]] = r
    return out


def _land(raw_dir: Path, run_id: str, records: list[dict[str, Any]]) -> None:
    from connectors.base.landing import RawLanding

    landing = RawLanding(raw_dir, "population_registry", "citizens", run_id)
    landing.write_page(records, key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()


def _integrate(run_id: str) -> None:
    from lienthong import pipeline

    for name in STAGED:
        pipeline.validate(name, run_id, pipeline.stage(name, run_id))
    pipeline.reconcile(run_id)


def _change(originals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Two renames, a birth, and citizen B's record corrected to A's name, birth, sex, address and household
    (B keeps its own ID, whose birth-year digits A's share): B becomes A's duplicate."""
    stamp = "2027-01-01T08:00:00+07:00"
    alive = sorted(k for k, r in originals.items() if r.get("trangThai") == "CON_SONG"
                   and re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.get("ngaySinh") or ""))
    a, b = next((x, y) for i, x in enumerate(alive) for y in alive[i + 1:] if x[:6] == y[:6])
    same_as_a = {k: originals[a][k] for k in ("hoVaTen", "ngaySinh", "gioiTinh", "noiThuongTru", "soHoKhau")}
    changed = [dict(originals[b], **same_as_a, capNhatLuc=stamp)]
    others = [k for k in alive if k not in (a, b)]
    for k in others[:2]:
        r = originals[k]
        changed.append(dict(r, hoVaTen=" ".join(r["hoVaTen"].split()[:-1] + ["Khánh"]), capNhatLuc=stamp))
    born = originals[others[2]]
    new_id = next(f"{born['soDinhDanh'][:6]}{n:06d}" for n in range(999_999, 0, -1)
                  if f"{born['soDinhDanh'][:6]}{n:06d}" not in originals)
    changed.append(dict(born, soDinhDanh=new_id, hoVaTen=born["hoVaTen"] + " Minh", soCmndCu=None, capNhatLuc=stamp))
    return changed


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from province import ingested_province

    from lienthong.audit.render import build_report
    from lienthong.settings import load_settings

    with ingested_province(tmp_path_factory.mktemp("auditent"), citizens=CITIZENS, seed=SEED, run_id="ingest-1") as prov:
        settings = load_settings()
        _integrate("run-1")
        originals = _citizen_records(settings.raw_dir)
        _land(settings.raw_dir, "change-2", _change(originals))
        _integrate("run-2")
        report = build_report("run-2", settings=settings)
        folder = Path(report["folder"])
        yield {"report": report, "folder": folder, "settings": settings, "originals": originals,
               "figures": json.loads((folder / "figures.json").read_text(encoding="utf-8")),
               "html": (folder / "report.html").read_text(encoding="utf-8"), "root": prov["root"]}


class _Cells(HTMLParser):
    """Text of each cell of each `<tr data-run=... [data-kind=...]>` of a table id; SVG titles per section."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.section: str | None = None
        self.row: tuple[str, ...] | None = None
        self.cell: list[str] | None = None
        self.rows: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
        self.svgs: dict[str | None, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
        elif tag == "svg":
            self.svgs.setdefault(self.section, []).append(a.get("aria-label") or "")
        elif tag == "table":
            self.table = a.get("id")
        elif tag == "tr" and "data-run" in a:
            self.row = (a["data-run"], *([a["data-kind"]] if "data-kind" in a else []))
            self.rows[(self.table, self.row)] = []
        elif tag == "td" and self.row is not None:
            self.cell = []

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None and self.row is not None:
            self.rows[(self.table, self.row)].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr":
            self.row = None


def _parse(html: str) -> _Cells:
    cells = _Cells()
    cells.feed(html)
    return cells


def _n(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.integration
def test_the_section_shows_what_the_ledger_records_for_each_run(two_runs):
    from lienthong import runs
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url(two_runs["settings"])) as conn:
        ledger = {r: runs.reconcile_run(conn, r).metrics for r in ("run-1", "run-2")}
    rows = {r["run_id"]: r for r in two_runs["figures"]["entity_runs"]}
    assert list(rows) == ["run-1", "run-2"]
    assert ledger["run-1"]["link_state"]["mode"] == "full" and ledger["run-2"]["link_state"]["mode"] == "change"
    cells = _parse(two_runs["html"])
    for run_id, m in ledger.items():
        row, ls, ents = rows[run_id], m["link_state"], m["entities"]
        counts = ls["counts"]
        assert (row["mode"], row["relinked"], row["models"]) == (ls["mode"], counts["relinked"], ls["models"])
        assert row["models"] and set(row["models"]) == {"representative_citizen", "holder_citizen"}
        assert row["idless"] == m["links"]["holder_citizen_idless"]
        assert row["members_changed"] == ents["members_changed"]
        for kind in ("person", "enterprise", "parcel"):
            for event in ("created", "continued", "split", "merged", "retired"):
                assert row["events"][f"{kind}_{event}"] == ents["events"].get(kind, {}).get(event, 0), (run_id, kind)
        linking = cells.rows[("entity-linking", (run_id,))]
        assert linking[1].startswith(ls["mode"]) and _n(linking[2]) == counts["relinked"], linking
        models = next(c for c in linking if "holder_citizen:" in c)
        assert all(f"{t}: {m_id}" in models for t, m_id in ls["models"].items()), models
        idless = m["links"]["holder_citizen_idless"]
        assert [_n(c) for c in linking[-4:]] == [idless[k] for k in ("idless_holders", "unique_name_accept",
                                                                       "unique_name_review", "idless_no_candidate")]
    # the change run: what it relinked and which links it moved, in the table as in the ledger
    changed = ledger["run-2"]["link_state"]["counts"]
    linking = cells.rows[("entity-linking", ("run-2",))]
    assert _n(linking[3]) == changed["relinked_by_registry_change"]
    assert [_n(c) for c in linking[4:7]] == [changed["links_changed"][k] for k in ("new", "changed", "removed")]
    assert 0 < changed["relinked"] < ledger["run-1"]["link_state"]["counts"]["relinked"]
    assert "every link recomputed" in cells.rows[("entity-linking", ("run-1",))][4]
    # the planted change made entity events beyond creations: the duplicate merged two persons into one
    assert ledger["run-2"]["entities"]["events"]["person"].get("merged", 0) >= 1, ledger["run-2"]["entities"]
    assert ledger["run-2"]["entities"]["events"]["person"].get("created", 0) >= 1
    summary = re.search(r'<p id="entities-summary">(.*?)</p>', two_runs["html"], re.S)
    assert summary and "linking <b>change</b>" in summary.group(1)


@pytest.mark.integration
def test_the_section_counts_equal_the_registry_tables_at_each_runs_version(two_runs):
    from lienthong import entities, runs, zones
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url(two_runs["settings"])) as conn:
        refs = {r: runs.reconcile_run(conn, r).metrics["entities"]["refs"] for r in ("run-1", "run-2")}
    rows = {r["run_id"]: r for r in two_runs["figures"]["entity_runs"]}
    cells = _parse(two_runs["html"])
    events = zones.read_table(refs["run-2"][entities.EVENT_TABLE]).to_pylist()
    for run_id, ref in refs.items():
        _, table = entities.load(entities.registry_dir(two_runs["settings"]), {entities.ENTITY_TABLE: ref["entity"]})
        active = {k: sum(1 for e in table.to_pylist() if e["kind"] == k and e["status"] == "active")
                  for k in ("person", "enterprise", "parcel")}
        assert rows[run_id]["active"] == active and active["person"] > 0
        logged = [e for e in events if e["run_id"] == run_id]
        for kind in ("person", "enterprise", "parcel"):
            tr = cells.rows[("entity-events", (run_id, kind))]
            numbers = [_n(c) for c in tr if re.fullmatch(r"[\d,]+", c)]
            by_event = [sum(1 for e in logged if e["kind"] == kind and e["event"] == ev)
                        for ev in ("created", "continued", "split", "merged", "retired")]
            assert numbers[:6] == [*by_event, active[kind]], (run_id, kind, tr)
    # a merged entity of run-2 names the entity it went into, which the page tells consumers to follow
    merged = [e for e in table.to_pylist() if e["status"] == "merged"]
    assert merged and all(e["merged_into"] for e in merged)
    assert entities.resolve(entities.registry_dir(two_runs["settings"]), merged[0]["entity_id"]) == merged[0]["merged_into"]
    assert "merged_into" in two_runs["html"] and "keeps its ID" in two_runs["html"]


@pytest.mark.integration
def test_the_plots_are_drawn_and_the_csv_has_the_rows(two_runs):
    cells = _parse(two_runs["html"])
    assert cells.svgs.get("entities") == ["Entity events per run", "Person links changed per run"], cells.svgs
    assert 'href="#entities"' in two_runs["html"]
    csv_text = (two_runs["folder"] / "csv" / "entity_runs.csv").read_text(encoding="utf-8")
    lines = csv_text.splitlines()
    assert len(lines) == 3 and "events.person_merged" in lines[0] and "active.person" in lines[0], lines[0]


@pytest.mark.integration
def test_no_citizen_id_or_name_of_the_staged_data_is_in_the_report(two_runs):
    from lienthong import runs, zones
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url(two_runs["settings"])) as conn:
        stages = {s.dataset: s for s in runs.stage_runs(conn, "run-2")}
    staged = zones.read_table(stages["citizen"].staged_path, columns=["citizen_id", "legacy_id", "full_name"])
    ids = {v for c in ("citizen_id", "legacy_id") for v in staged[c].to_pylist() if v} | set(two_runs["originals"])
    names = {n for n in staged["full_name"].to_pylist() if n and " " in n}
    assert len(ids) > CITIZENS and names
    texts = {"report.html": two_runs["html"], "entity_runs.csv": (two_runs["folder"] / "csv" / "entity_runs.csv").read_text(),
             "figures.json": json.dumps(two_runs["figures"]["entity_runs"], ensure_ascii=False)}
    for name, text in texts.items():
        found = {m for m in re.findall(r"(?<!\d)\d{9}(?:\d{3})?(?!\d)", text) if m in ids}
        assert not found, f"{name}: citizen IDs in clear: {sorted(found)[:3]}"
        section = text[text.index('<section id="entities"'):text.index('<section id="publications"')] \
            if name == "report.html" else text
        assert not [n for n in names if n in section], name


# --- unit ---------------------------------------------------------------------------------------------------------

NEW_METRICS = {
    "links": {"holder_citizen_idless": {"idless_holders": 40, "unique_name_accept": 30, "unique_name_review": 4,
                                        "idless_no_candidate": 6}},
    "link_state": {"mode": "change", "models": {"holder_citizen": "aaaa1111bbbb2222",
                                                "representative_citizen": "cccc3333dddd4444"},
                   "counts": {"relinked": 12, "relinked_by_registry_change": 5,
                              "links_changed": {"new": 2, "changed": 3, "same": 7, "removed": 1}}},
    "entities": {"refs": {}, "events": {"person": {"created": 3, "merged": 1}, "parcel": {"retired": 2}},
                 "members_changed": 9, "seconds": 0.1},
}
OLD_METRICS = {"links": {"representative_citizen": {"left": 10, "exact_id_accept": 9}}, "seconds": {"total": 3.0}}


def _figures(entity_rows: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    trends = [{"run_id": r["run_id"], "started_at": r["started_at"], "duration_seconds": 1.0, "quality_pass_rate": 1.0,
               "record_pass_rate": 1.0, "open_findings": 0, "open_by_type": {}, "rows_raw": 1, "rows_staged": 1,
               "rows_quarantined": 0, "rows_integrated": 1, "rows_published": 1} for r in entity_rows]
    return {"run_id": run_id, "publish_run_id": None, "generated_at": "2027-01-01T00:00:00+00:00",
            "headline": {"gate_passed": True, "quality_pass_rate": 1.0, "record_pass_rate": 1.0, "conservation_ok": True,
                         "open_findings": 0, "new_findings": 0, "resolved_findings": 0, "published": []},
            "run": {"duration_seconds": 1.0}, "quality_datasets": [], "quality": [], "conservation": [],
            "quarantine": [], "quarantine_examples": [], "findings": [], "findings_new": [], "findings_resolved": [],
            "findings_changes": {"opened": 0, "reopened": 0, "resolved": 0}, "links": [], "accuracy": [],
            "publications": [], "trends": trends, "entity_runs": entity_rows}


def test_runs_reconciled_before_the_registry_render_as_not_recorded():
    from lienthong.audit.entity_runs import entity_run
    from lienthong.audit.render import render_html

    old = entity_run("old", "2026-12-01T08:00:00+00:00", "success", OLD_METRICS)
    assert not old["entities_recorded"] and not old["link_state_recorded"]
    assert old["events"] is None and old["relinked"] is None and old["idless"] is None and old["models"] == {}
    empty = entity_run("none", "2026-12-02T08:00:00+00:00", "success", None)
    skipped = entity_run("skipped", "2026-12-03T08:00:00+00:00", None, None)
    new = entity_run("new", "2026-12-04T08:00:00+00:00", "success", NEW_METRICS)
    new["models_changed"] = old["models_changed"] = empty["models_changed"] = skipped["models_changed"] = []
    assert new["events"]["person_merged"] == 1 and new["event_totals"]["created"] == 3 and new["links"]["removed"] == 1

    html = render_html(_figures([old, empty, skipped, new], "new"))
    cells = _parse(html)
    for run_id in ("old", "none"):
        assert cells.rows[("entity-linking", (run_id,))][1:] == [
            "not recorded (reconciled before the link state was kept)", "not recorded"]
        assert cells.rows[("entity-events", (run_id,))][1:] == ["not recorded (reconciled before the entity registry existed)"]
    assert cells.rows[("entity-events", ("skipped",))][1:] == ["not reconciled"]
    person = cells.rows[("entity-events", ("new", "person"))]
    assert person[:7] == ["new", "person", "3", "0", "0", "1", "0"] and person[-1] == "9", person
    assert cells.rows[("entity-linking", ("new",))][1:7] == ["change", "12", "5", "2", "3", "1"]
    assert cells.svgs["entities"] == ["Entity events per run", "Person links changed per run"]
    plots = html[html.index('<section id="entities"'):html.index('<section id="publications"')]
    assert plots.count("not recorded") >= 4 and "not reconciled" in plots


def test_a_model_other_than_the_run_befores_is_marked(monkeypatch):
    from types import SimpleNamespace

    from lienthong.audit import entity_runs

    second = json.loads(json.dumps(NEW_METRICS))
    second["link_state"]["models"]["holder_citizen"] = "eeee5555ffff6666"
    records = {"a": NEW_METRICS, "b": OLD_METRICS, "c": second}
    monkeypatch.setattr(entity_runs.runs, "reconcile_run",
                        lambda conn, run_id: SimpleNamespace(status="success", metrics=records[run_id]))
    # no run names a registry version here, so no DuckDB session is opened (settings unused)
    rows = entity_runs.entity_runs(None, [{"run_id": r, "started_at": None} for r in records], settings=None)
    assert [r["models_changed"] for r in rows] == [[], [], ["holder_citizen"]]
    html_models = rows[2]["models"]
    assert html_models["holder_citizen"] == "eeee5555ffff6666"
