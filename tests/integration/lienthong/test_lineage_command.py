"""`lienthong lineage`: the chain behind a published version, run as a command against real published data.

The session's sandbox (tests/integration/conftest.py) is landed twice by the real connectors (so each source
has two ingest runs and a watermark that moved), staged, validated, reconciled and published into a private
data dir and warehouse; the command's answer is then checked against the bookkeeping rows in lienthong_ops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def published(tmp_path_factory, sandbox_session):
    from lienthong import pipeline
    from lienthong.assets import STAGED_DATASETS
    from lienthong.db import stop_embedded

    root = tmp_path_factory.mktemp("lineage")
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    try:
        for url in (sandbox_session.population_url, sandbox_session.business_url):
            requests.post(url + "/_sandbox/reset", timeout=10).raise_for_status()
        os.environ.update(sandbox_session.airflow_conn_env())
        for run in ("r1", "r2"):
            pipeline.ingest_population(run)
            pipeline.ingest_business(run)
            for province in sandbox_session.land_dsns:
                pipeline.ingest_land(run, province)
        for name in STAGED_DATASETS:
            pipeline.validate(name, "i1", pipeline.stage(name, "i1"))
        pipeline.reconcile("i1")
        results = {name: pipeline.publish(name, "p1") for name in ("citizen_profile", "quality_summary")}
        yield {"root": root, "env": {**os.environ}, "results": results}
    finally:
        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)


def lineage(published, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lienthong.cli", "lineage", *args], env=published["env"],
                          capture_output=True, text=True, timeout=120)


def ops_rows(sql: str, params: tuple = ()) -> list[dict]:
    from lienthong.db import connect, warehouse_url

    with connect(warehouse_url()) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_the_chain_names_the_runs_and_watermarks_recorded_in_lienthong_ops(published):
    from lienthong.contracts import contract

    out = lineage(published, "citizen_profile", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    result = published["results"]["citizen_profile"]
    assert (info["version"], info["rows"], info["content_hash"]) == (result["version"], result["rows"], result["content_hash"])
    assert info["current"] and info["quality"]["gate_passed"]

    (rec,) = ops_rows("SELECT run_id, status, counts FROM lienthong_ops.reconcile_run WHERE run_id = 'i1'")
    assert info["reconcile"]["run_id"] == "i1" and info["reconcile"]["status"] == rec["status"] == "success"
    assert {n: o["rows"] for n, o in info["reconcile"]["outputs"].items()} == {
        n: v for n, v in rec["counts"].items() if n not in ("findings", "cases")}

    assert set(info["sources"]) == {"citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate"}
    for name, src in info["sources"].items():
        (stage,) = ops_rows("SELECT * FROM lienthong_ops.stage_run WHERE run_id = 'i1' AND dataset = %s", (name,))
        (quality,) = ops_rows("SELECT * FROM lienthong_ops.quality_run WHERE run_id = 'i1' AND dataset = %s", (name,))
        assert src["integrate_run_id"] == "i1"
        assert (src["rows_in"], src["rows_staged"], src["rows_quarantined"]) == (
            stage["rows_in"], stage["rows_staged"], stage["rows_quarantined"])
        assert src["quality"]["gate_passed"] == quality["gate_passed"]
        # exactly the successful ingest runs of the raw entity this dataset is built from, watermarks included
        c = contract(name)
        source, entity = c.custom["sourceSystem"], c.custom["sourceEntity"]
        expected = {
            (r["run_id"], r["scope"], r["watermark_from"], r["watermark_to"], r["rows_landed"])
            for r in ops_rows("SELECT * FROM lienthong_ops.ingest_run WHERE source = %s AND status = 'success'", (source,))
            if not r["scope"] or r["scope"].rsplit("/", 1)[-1] == entity
        }
        got = {(r["run_id"], r["scope"], r["watermark_from"], r["watermark_to"], r["rows_landed"]) for r in src["ingest_runs"]}
        assert got == expected, name
        assert {r["run_id"] for r in src["ingest_runs"]} == {"r1", "r2"}


def test_the_chain_fits_one_screen_and_shows_no_personal_data(published):
    out = lineage(published, "citizen_profile")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert lines[0].startswith(f"citizen_profile v{published['results']['citizen_profile']['version']:06d} (current)")
    assert "reconcile run i1" in text
    for name in ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate"):
        assert f"  {name} " in text
    (population,) = ops_rows("""SELECT watermark_to FROM lienthong_ops.ingest_run
                                WHERE source = 'population_registry' AND run_id = 'r2'""")
    assert f"→ {population['watermark_to']}" in text
    assert "2 runs r1 … r2" in text
    ids = pq.read_table(published["results"]["citizen_profile"]["parquet_path"], columns=["citizen_id"]).column(0).to_pylist()
    assert ids and not [i for i in ids if i and i in text]


def test_a_dataset_built_from_the_stores_has_no_staged_sources(published):
    out = lineage(published, "quality_summary")
    assert out.returncode == 0, out.stderr
    assert "no staged sources" in out.stdout


def test_an_unknown_version_or_dataset_is_a_clear_error(published):
    version = published["results"]["citizen_profile"]["version"]
    out = lineage(published, "citizen_profile", "--version", str(version + 98))
    assert out.returncode != 0
    assert f"citizen_profile has no version {version + 98}" in out.stderr
    assert not out.stdout
    out = lineage(published, "no_such_dataset")
    assert out.returncode != 0
    assert "no published dataset 'no_such_dataset'" in out.stderr and "citizen_profile" in out.stderr


def test_the_release_is_signed_and_names_its_models_and_masking_policy(published, tmp_path):
    """What `pipeline.publish` (the publish DAG's call) releases: a manifest naming the link models the
    reconciliation used and each agency's view of the dataset, signed; `lienthong verify` checks it offline."""
    from lienthong.access import load_agencies
    from lienthong.reconcile.explain import run_manifest
    from lienthong.settings import load_settings

    folder = Path(published["results"]["citizen_profile"]["parquet_path"])
    manifest = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    used = run_manifest(load_settings().integrated_dir, "i1")["models"]
    assert manifest["model_versions"] == {n: {"model_id": m["model_id"], "sha256": m["sha256"]} for n, m in used.items()}
    assert manifest["model_versions"]  # the person links were scored by persisted models
    policy = manifest["masking_policy"]["agencies"]
    granted = {a.name for a in load_agencies().values() if "citizen_profile" in a.grants}
    assert set(policy) == granted and granted
    assert all("hidden" not in grant["columns"].values() for grant in policy.values())
    out = subprocess.run([sys.executable, "-m", "lienthong.cli", "verify", str(folder)], env=published["env"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("OK  citizen_profile v1: signed by ed25519:"), out
    # the store dataset (no reconciliation behind it) names no models, and is signed too
    store = Path(published["results"]["quality_summary"]["parquet_path"])
    assert json.loads((store / "_manifest.json").read_text(encoding="utf-8"))["model_versions"] == {}
    copy = Path(shutil.copytree(store, tmp_path / store.name))  # tampered as received, the release left alone
    (copy / "part-00000.parquet").write_bytes((copy / "part-00000.parquet").read_bytes() + b"\0")
    out = subprocess.run([sys.executable, "-m", "lienthong.cli", "verify", str(copy), "--keyring",
                          str(store.parent.parent / "_keys")], env=published["env"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "file part-00000.parquet: SHA-256 differs" in out.stdout, out
