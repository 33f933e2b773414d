"""Retraining the person-link models on a real province (sandbox, real connectors, staged, reconciled): a
retraining on unchanged data changes nothing; a retraining without activation saves candidates and changes nothing the daily run does; its comparison holds
counts per method and band and no personal value; a retraining with activation retires the old models and
makes the next reconciliation relink everything with the new ones; activating an unknown model fails naming
it. The tests run in order on one province."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

CITIZENS = 2000
SEED = 23
LINK_TYPES = ("representative_citizen", "holder_citizen")


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    from province import reconciled_province

    with reconciled_province(tmp_path_factory.mktemp("retrain"), citizens=CITIZENS, seed=SEED) as prov:
        yield {"settings": prov["settings"], "truth": prov["truth"], "first": prov["first"], "state": {}}


def _ledger(settings) -> dict[tuple[str, str], str]:
    """(link type, model id) -> status of every persisted model."""
    from lienthong import runs
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url(settings)) as conn:
        return {(r.link_type, r.model_id): r.status for r in runs.link_models(conn)}


def _active(settings) -> dict[str, str]:
    return {t: m for (t, m), status in _ledger(settings).items() if status == "active"}


def _rename_a_citizen_and_reconcile(settings, run_id: str, step: int) -> dict[str, Any]:
    """A new landing of one citizen with a changed given name, staged, validated and reconciled."""
    from connectors.base.landing import RawLanding
    from lienthong import pipeline

    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for f in sorted((settings.raw_dir / "population_registry" / "citizens").rglob("*.parquet")):
        t = pq.read_table(f, columns=["_key", "_ingested_at", "payload"])
        for key, at, payload in zip(t["_key"].to_pylist(), t["_ingested_at"].to_pylist(), t["payload"].to_pylist(),
                                    strict=True):
            if key not in newest or str(at) >= newest[key][0]:
                newest[key] = (str(at), json.loads(payload))
    item = dict(next(newest[k][1] for k in sorted(newest)[10 * step:] if not newest[k][1]["hoVaTen"].endswith("Khánh")))
    item["hoVaTen"] = " ".join(item["hoVaTen"].split()[:-1] + ["Khánh"])
    item["capNhatLuc"] = f"2026-12-0{step}T08:00:00+07:00"
    landing = RawLanding(settings.raw_dir, "population_registry", "citizens", run_id)
    landing.write_page([item], key_field="soDinhDanh", updated_field="capNhatLuc")
    landing.commit()
    pipeline.validate("citizen", run_id, pipeline.stage("citizen", run_id))
    return pipeline.reconcile(run_id)


def test_retraining_on_the_data_the_active_models_were_trained_on_changes_nothing(province):
    from lienthong.reconcile.retrain import retrain

    s = province["settings"]
    assert province["first"]["link_state"]["mode"] == "full"
    ledger = _ledger(s)
    assert set(_active(s)) == set(LINK_TYPES)
    report = retrain(s, run_id="retrain-0", activate=True)
    assert all(report["link_types"][t]["status"].startswith("unchanged") for t in LINK_TYPES), report["link_types"]
    assert report["next"] == "no model changed: the active models stay"
    assert _ledger(s) == ledger


def test_retrain_without_activating_saves_candidates_and_the_next_reconciliation_keeps_the_active_models(
        province, capsys):
    from lienthong.cli import main
    from lienthong.reconcile.retrain import report_path

    s = province["settings"]
    active = _active(s)
    # a change since the active models were trained: the retrained ones differ (name frequencies at least)
    assert _rename_a_citizen_and_reconcile(s, "r2", 1)["link_state"]["mode"] == "change"
    assert main(["retrain-models", "--run", "retrain-1", "--truth", str(province["truth"])]) == 0
    out = capsys.readouterr().out
    assert "saved as candidates" in out and "lienthong link-models --activate" in out, out
    assert "precision / recall / F1" in out and "accepted" in out, out
    report = json.loads(report_path(s.reports_dir, "retrain-1").read_text(encoding="utf-8"))
    province["state"]["report"] = report
    ledger = _ledger(s)
    for t in LINK_TYPES:
        entry = report["link_types"][t]
        assert entry["model_before"] == active[t]
        assert entry["status"] == "candidate" and entry["model_after"] != active[t], entry
        assert ledger[(t, entry["model_after"])] == "candidate"
    assert _active(s) == active
    # the next daily run: incremental, with the models that were active before the retraining
    result = _rename_a_citizen_and_reconcile(s, "r3", 2)
    assert result["link_state"]["mode"] == "change", result["link_state"]
    assert result["link_state"]["models"] == active
    assert _active(s) == active


def test_the_comparison_has_counts_per_method_and_band_and_no_citizen_id(province):
    from lienthong import zones
    from lienthong.reconcile.retrain import report_path

    s = province["settings"]
    report = province["state"]["report"]
    assert report["before"] == "the link state reconciliation r2 left"
    assert set(report["trained_on"]) == {"citizen", "legal_representative", "land_holder"}
    for t in LINK_TYPES:
        e = report["link_types"][t]
        assert {f"{m}_{b}" for m in ("exact_id", "legacy_id", "probabilistic")
                for b in ("accept", "review", "reject")} == set(e["links"])
        assert e["links"]["exact_id_accept"]["before"] > 100
        assert sum(c["before"] for c in e["links"].values()) == e["records"]["before"] > 0
        assert set(e["accepted"]) == {"before", "after", "gained", "lost", "moved"}
        assert set(e["review"]) == {"before", "after", "entered", "left"}
        assert e["parameters"]["levels"] >= 15 and e["parameters"]["prior"]["after"] > 0
        for side in ("before", "after"):
            assert e["accuracy"][side]["precision"] >= 0.98, e["accuracy"]
    # retrained on almost the data the active models were trained on: the links barely move
    rep = report["link_types"]["representative_citizen"]["accepted"]
    assert rep["gained"] + rep["lost"] + rep["moved"] <= 0.02 * rep["before"], rep
    text = report_path(s.reports_dir, "retrain-1").read_text(encoding="utf-8")
    staged = zones.read_table(report["trained_on"]["citizen"], columns=["citizen_id", "legacy_id"])
    values = {v for c in ("citizen_id", "legacy_id") for v in staged[c].to_pylist() if v}
    assert len(values) > CITIZENS
    assert not [v for v in values if v in text]


def test_retrain_with_activate_retires_the_old_models_and_the_next_reconciliation_relinks_everything(province):
    from lienthong.reconcile.retrain import retrain

    s = province["settings"]
    old = _active(s)
    candidates = {t: province["state"]["report"]["link_types"][t]["model_after"] for t in LINK_TYPES}
    report = retrain(s, run_id="retrain-2", activate=True)
    assert report["reconcile_run_id"] == "r3"
    assert "relinks every person record" in report["next"]
    new = {t: report["link_types"][t]["model_after"] for t in LINK_TYPES}
    assert all(report["link_types"][t]["status"] == "active" for t in LINK_TYPES)
    ledger = _ledger(s)
    assert _active(s) == new
    assert all(ledger[(t, old[t])] == "retired" for t in LINK_TYPES)
    assert all(ledger[(t, candidates[t])] == "candidate" for t in LINK_TYPES)
    result = _rename_a_citizen_and_reconcile(s, "r4", 3)
    assert result["link_state"]["mode"] == "full", result["link_state"]
    assert result["link_state"]["models"] == new
    assert "models differ" in result["link_state"]["counts"]["reason"]
    assert result["link_state"]["counts"]["trained"] == []
    province["state"]["candidates"] = candidates


def test_activating_an_unknown_model_fails_naming_it(province, capsys):
    from lienthong.cli import main
    from lienthong.reconcile.retrain import UnknownModel, activate

    s = province["settings"]
    before = _ledger(s)
    with pytest.raises(UnknownModel, match="'0000deadbeef0000' of link type 'holder_citizen'"):
        activate(s, "holder_citizen", "0000deadbeef0000")
    assert main(["link-models", "--activate", "holder_citizen", "0000deadbeef0000"]) == 1
    assert "0000deadbeef0000" in capsys.readouterr().err
    assert _ledger(s) == before


def test_a_candidate_activated_later_is_active_and_listed_so(province, capsys):
    from lienthong.cli import main

    s = province["settings"]
    candidate = province["state"]["candidates"]["holder_citizen"]
    previous = _active(s)["holder_citizen"]
    assert main(["link-models", "--activate", "holder_citizen", candidate]) == 0
    assert f"holder_citizen {candidate} is active" in capsys.readouterr().out
    assert _active(s)["holder_citizen"] == candidate
    assert _ledger(s)[("holder_citizen", previous)] == "retired"
    assert main(["link-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["link", "type", "model"]
    row = next(line for line in lines if candidate in line).split()
    assert row[:4] == ["holder_citizen", candidate, "active", "retrain-1"]
    assert len(lines) == 1 + len(_ledger(s)) == 1 + 6
