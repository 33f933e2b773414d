"""Recovery: an ingestion killed mid-walk (SIGKILL) and then rerun loses nothing and duplicates nothing.

Checked against the sandbox ground truth at the end of the chain: the keys that reach staged (plus those
quarantined) are exactly the keys the registry serves, each once. Also: an incremental run after 1 % of the
records changed fetches only those (plus the inclusive boundary) and stages the same data as a full
re-extract.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from .conftest import airflow_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with airflow_world(tmp_path_factory.mktemp("recovery"), citizens=2000, seed=11,
                       extra_env={"LIENTHONG_PAGE_SIZE": "40"}) as world:
        yield {"runner": world.runner, "endpoints": world.endpoints, "data": world.data, "settings": world.settings,
               "url": world.url}


def _served(data: Path) -> list[str]:
    return sorted(pq.read_table(data / "population" / "citizens.parquet", columns=["soDinhDanh"]).column(0).to_pylist())


def _staged_and_quarantined(settings) -> list[str]:
    from lienthong import zones

    keys = zones.read_table(settings.staged_dir / "citizen").column("citizen_id").to_pylist()
    keys += [k for k in zones.read_table(settings.quarantine_dir / "citizen").column("record_key").to_pylist() if k]
    return sorted(keys)


def test_killed_extract_then_rerun_loses_and_duplicates_nothing(env):
    from lienthong.runs import Ledger

    runner, ep, settings = env["runner"], env["endpoints"], env["settings"]
    # Slow the walk down (one 429 with Retry-After: 1 every other page) so it can be killed in the middle.
    requests.post(ep.population_url + "/_sandbox/faults", json={"rate_limit_every": 2, "retry_after": 1}, timeout=10).raise_for_status()
    cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", "ingest_population"]
    proc = subprocess.Popen(cmd, env=runner.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    raw = settings.raw_dir / "population_registry" / "citizens"
    deadline = time.monotonic() + 180
    try:
        # Kill once the walk is well under way: several pages served, the landing not yet committed.
        while time.monotonic() < deadline:
            served = requests.get(ep.population_url + "/_sandbox/stats", timeout=10).json()["data_requests"]
            if served >= 6 and list(raw.glob("ingest_date=*/run=*.tmp-*")):
                break
            assert proc.poll() is None, "the extract finished before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the walk did not get under way in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert Ledger(env["url"]).watermark("population_registry") is None, "a killed run must not move the watermark"
    committed = [p for p in raw.rglob("part-*.parquet") if ".tmp-" not in p.parent.name]
    assert committed == [], "nothing of the killed run may be committed"

    requests.post(ep.population_url + "/_sandbox/reset", timeout=10).raise_for_status()
    assert runner.dags_test("ingest_population", "rerun-ingest") == "success"
    assert runner.dags_test("integrate", "rerun-integrate") == "success"
    assert _staged_and_quarantined(settings) == _served(env["data"])
    assert not list(raw.glob("ingest_date=*/run=*.tmp-*")), "the killed run's partial landing was cleaned up"


def test_incremental_run_fetches_only_changes_and_stages_like_a_full_reextract(env, tmp_path):
    from connectors.base.ingest import run_ingestion
    from connectors.population.client import ENTITY, INCREMENTAL, SOURCE, PopulationRegistryClient
    from lienthong.contracts import contract
    from lienthong.runs import Ledger
    from lienthong.staging import StagePlan, stage_json_source

    runner, ep, settings = env["runner"], env["endpoints"], env["settings"]
    served = _served(env["data"])
    if not list(settings.raw_dir.glob("population_registry/citizens/ingest_date=*/run=*/part-*.parquet")):
        assert runner.dags_test("ingest_population", "incr-first") == "success"
    changed = served[:: 100][: max(1, len(served) // 100)]
    requests.post(ep.population_url + "/_sandbox/touch", json={"ids": changed}, timeout=10).raise_for_status()
    assert runner.dags_test("ingest_population", "incr-second") == "success"
    latest = max(settings.raw_dir.glob("population_registry/citizens/ingest_date=*/run=*"), key=lambda p: p.stat().st_mtime)
    fetched = pq.read_table(latest).column("_key").to_pylist()
    assert set(changed) <= set(fetched)
    assert len(fetched) <= len(changed) + 2, f"fetched {len(fetched)} for {len(changed)} changes"

    c = contract("citizen")
    plan = StagePlan.from_contract(c)
    incremental = stage_json_source(c, plan.raw_files(settings.raw_dir), run_id="incr", staged_dir=tmp_path / "s1",
                                    quarantine_dir=tmp_path / "q1")
    client = PopulationRegistryClient(ep.population_url, ep.client_id, ep.client_secret)
    full = run_ingestion(source=SOURCE, entity=ENTITY, run_id="full", raw_dir=tmp_path / "raw", incremental=INCREMENTAL,
                         pages=lambda since: client.iter_citizen_pages("1970-01-01T00:00:00Z", 500),
                         scope=f"full-{tmp_path.name}", store=Ledger(env["url"]))
    assert full.rows == len(served)
    refull = stage_json_source(c, plan.raw_files(tmp_path / "raw"), run_id="full", staged_dir=tmp_path / "s2",
                               quarantine_dir=tmp_path / "q2")
    assert incremental.content_hash == refull.content_hash
    assert (incremental.rows_staged, incremental.rows_quarantined) == (refull.rows_staged, refull.rows_quarantined)
