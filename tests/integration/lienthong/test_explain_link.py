"""The link models a reconcile run saves, and `lienthong explain-link` run through the real command on a
reconciled province: a model-made link is explained by its waterfall (every comparison named with its weight,
the weights adding up to the total), an ID link by its rule, and personal values stay masked."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong import zones

pytestmark = pytest.mark.integration

CITIZENS = 2000
SEED = 11


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    from province import ingested_province

    from lienthong import pipeline
    from lienthong.reconcile.sources import INPUT_DATASETS

    with ingested_province(tmp_path_factory.mktemp("explain"), citizens=CITIZENS, seed=SEED) as prov:
        stages = {name: pipeline.stage(name, "r1") for name in INPUT_DATASETS}
        summary = pipeline.reconcile("r1")
        yield {"root": prov["root"], "stages": stages, "summary": summary, "env": dict(os.environ)}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lienthong.cli", "explain-link", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _link_rows(reconciled, dataset: str) -> list[dict]:
    return zones.read_table(reconciled["summary"]["outputs"][dataset]["path"]).to_pylist()


def test_each_reconcile_run_names_its_persisted_link_models_and_they_load_into_splink(reconciled):
    from splink import DuckDBAPI, Linker

    from lienthong.reconcile.people import PERSON_SCHEMA

    summary = reconciled["summary"]
    paths = summary["model_paths"]
    assert set(paths) == {"representative_citizen", "holder_citizen"}
    output = Path(zones.split_ref(summary["outputs"]["enterprise_representative_link"]["path"])[0])
    integrated = output.parent
    for name, path in paths.items():
        path = Path(path)
        # the persisted model the run used (trained by this first run), named by its content hash
        assert path.parent.parent == integrated / "link_models" and path.name == "model.json"
        assert path.parent.name.startswith(f"model={name}-") and (path.parent / "tf_name.parquet").is_file()
        # as private as the integrated outputs of the same run
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(next(output.glob("*.parquet")).stat().st_mode)
        saved = json.loads(path.read_text())
        linker = Linker(DuckDBAPI().register(PERSON_SCHEMA.empty_table()), settings=str(path))
        assert linker.misc.save_model_to_json() == saved
        assert 0 < saved["probability_two_random_records_match"] < 1
    # ...and referenced from the run ledger's record of the reconciliation
    from lienthong import runs
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url()) as conn:
        assert runs.reconcile_run(conn, "r1").model_paths == paths
    manifest = json.loads((integrated / "link_models" / "run=r1" / "manifest.json").read_text())
    assert manifest["run_id"] == "r1"
    assert manifest["inputs"]["citizen"] == reconciled["stages"]["citizen"]["staged_path"]


def _waterfall(out: str) -> tuple[dict[str, float], float, float]:
    """{comparison: match weight} from the printed table, the total and the probability."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("comparison "))
    weights = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        weights[line.split()[0]] = float(line.split()[-1])
    total = float(re.search(r"^total match weight: (\S+)$", out, re.M).group(1))
    probability = float(re.search(r"^match probability: (\S+)$", out, re.M).group(1))
    return weights, total, probability


def test_explain_link_shows_the_match_weights_of_a_link_the_model_made(reconciled, tmp_path):
    rows = _link_rows(reconciled, "enterprise_representative_link")
    link = next(r for r in rows if r["method"] == "probabilistic" and r["band"] == "accept")
    key = f"{link['enterprise_code']}#{link['position']}"
    svg = tmp_path / "waterfall.svg"
    done = _cli(reconciled["env"], "enterprise_representative_link", key, "--svg", str(svg))
    assert done.returncode == 0, done.stderr
    out = done.stdout

    model = json.loads(Path(reconciled["summary"]["model_paths"]["representative_citizen"]).read_text())
    weights, total, probability = _waterfall(out)
    assert {c["output_column_name"] for c in model["comparisons"]} | {"prior"} <= set(weights)
    assert sum(weights.values()) == pytest.approx(total, abs=1e-4 * len(weights))
    assert probability == pytest.approx(2 ** total / (1 + 2 ** total), abs=1e-6)
    assert probability == pytest.approx(link["score"], abs=1e-6)
    assert "note:" not in out  # the saved model reproduces the recorded score
    assert "(reconcile run r1): method probabilistic, band accept" in out

    # masked: the citizen's ID and the representative's name never appear in clear
    reps = zones.read_table(reconciled["stages"]["legal_representative"]["staged_path"])
    from lienthong.standardize.text import fold_key

    rep = reps.filter(pc.and_(pc.equal(reps["enterprise_code"], link["enterprise_code"]),
                              pc.equal(reps["position"], link["position"]))).to_pylist()[0]
    assert link["citizen_id"] not in out
    assert f"linked to: {'*' * (len(link['citizen_id']) - 3)}{link['citizen_id'][-3:]}" in out
    folded = fold_key(pa.array([rep["full_name"]])).to_pylist()[0]
    assert folded not in out and rep["full_name"] not in out
    assert " ".join(w[0] + "." for w in folded.split()) in out  # the name as its initials
    if rep["document_number"]:
        assert rep["document_number"] not in out

    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")


def test_explain_link_names_the_rule_of_an_id_link(reconciled):
    rows = _link_rows(reconciled, "enterprise_representative_link")
    link = next(r for r in rows if r["method"] == "exact_id")
    done = _cli(reconciled["env"], "enterprise_representative_link", f"{link['enterprise_code']}#{link['position']}")
    assert done.returncode == 0, done.stderr
    assert "method exact_id, band accept" in done.stdout
    assert "rule: exact pass 1: the 12-digit personal ID" in done.stdout
    assert link["citizen_id"] not in done.stdout


def test_explain_link_explains_a_land_holder_link_the_model_made(reconciled):
    rows = _link_rows(reconciled, "parcel_holder_link")
    link = next(r for r in rows if r["method"] == "probabilistic" and r["band"] == "accept")
    done = _cli(reconciled["env"], "parcel_holder_link", f"{link['province_code']}:{link['holder_id']}", "--run", "r1")
    assert done.returncode == 0, done.stderr
    weights, total, probability = _waterfall(done.stdout)
    assert sum(weights.values()) == pytest.approx(total, abs=1e-4 * len(weights))
    assert probability == pytest.approx(link["score"], abs=1e-6)


def test_explain_link_of_an_unknown_record_or_dataset_fails_with_a_clear_message(reconciled):
    done = _cli(reconciled["env"], "enterprise_representative_link", "0000000000#9")
    assert done.returncode == 1
    assert "no link for record key '0000000000#9'" in done.stderr
    assert "<enterprise_code>#<position>" in done.stderr
    done = _cli(reconciled["env"], "person_master", "x")
    assert done.returncode == 2
    assert "enterprise_representative_link, parcel_holder_link" in done.stderr
    done = _cli(reconciled["env"], "enterprise_representative_link", "x", "--run", "no-such-run")
    assert done.returncode == 1
    assert "'no-such-run' saved no link models" in done.stderr
