"""The population connector against a real server that injects every fault the spec allows.

Each test switches one fault on in the sandbox, walks the registry with the real client and checks that
every record arrives (duplicates allowed, nothing missing) and that the fault really happened.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from connectors.base.errors import AuthError, TransientSourceError
from connectors.base.ingest import run_ingestion
from connectors.base.state import WatermarkStore
from connectors.population.client import ENTITY, INCREMENTAL, SOURCE, PopulationRegistryClient
from sandbox.runner import SandboxEndpoints

pytestmark = pytest.mark.integration
EPOCH = "1970-01-01T00:00:00Z"


def set_faults(url: str, **switches) -> None:
    requests.post(url + "/_sandbox/faults", json=switches, timeout=10).raise_for_status()


def stats(url: str) -> dict:
    return requests.get(url + "/_sandbox/stats", timeout=10).json()


def served_ids(data: Path) -> list[str]:
    return pq.read_table(data / "population" / "citizens.parquet", columns=["soDinhDanh"]).column(0).to_pylist()


def client_for(ep: SandboxEndpoints, **kw) -> PopulationRegistryClient:
    return PopulationRegistryClient(ep.population_url, ep.client_id, ep.client_secret, initial_wait=0.01, max_wait=2, **kw)


def walk(client: PopulationRegistryClient, page_size: int = 50) -> list[dict]:
    return [item for page in client.iter_citizen_pages(EPOCH, page_size) for item in page]


def test_clean_walk_returns_every_citizen_exactly_once(sandbox, sandbox_data):
    items = walk(client_for(sandbox))
    assert sorted(i["soDinhDanh"] for i in items) == sorted(served_ids(sandbox_data))


@pytest.mark.parametrize(
    "switches, fault",
    [
        ({"rate_limit_every": 3, "retry_after": 1}, "rate_limit"),
        ({"server_error_every": 2}, "server_error"),
        ({"drop_connection_every": 3}, "drop_connection"),
        ({"truncate_body_every": 3}, "truncate_body"),
        ({"empty_page_every": 2}, "empty_page"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_walk_survives_transient_faults_without_losing_records(sandbox, sandbox_data, switches, fault):
    set_faults(sandbox.population_url, **switches)
    items = walk(client_for(sandbox))
    assert set(i["soDinhDanh"] for i in items) == set(served_ids(sandbox_data))
    injected = stats(sandbox.population_url)["faults_injected"]
    assert sum(v for k, v in injected.items() if fault in k) > 0, injected


def test_retry_after_is_honoured(sandbox, sandbox_data):
    set_faults(sandbox.population_url, rate_limit_every=2, retry_after=1)
    client = client_for(sandbox)
    t0 = time.monotonic()
    pages = list(client.iter_citizen_pages(EPOCH, 50))
    elapsed = time.monotonic() - t0
    n_429 = sum(v for k, v in stats(sandbox.population_url)["faults_injected"].items() if "rate_limit" in k)
    assert pages and n_429 >= 1
    # Each 429 asked for one second; the client must have waited at least that long in total.
    assert elapsed >= n_429 * 1.0 * 0.9


def test_expired_token_mid_walk_is_refreshed_and_the_walk_completes(sandbox, sandbox_data):
    set_faults(sandbox.population_url, token_expire_after=2)
    client = client_for(sandbox)
    items = walk(client)
    assert set(i["soDinhDanh"] for i in items) == set(served_ids(sandbox_data))
    assert client.auth.tokens_fetched >= 2


def test_duplicates_across_pages_are_landed_and_nothing_is_missing(sandbox, sandbox_data):
    set_faults(sandbox.population_url, duplicate_across_pages=True)
    items = walk(client_for(sandbox))
    ids = [i["soDinhDanh"] for i in items]
    assert len(ids) > len(set(ids))
    assert set(ids) == set(served_ids(sandbox_data))


def test_records_changing_during_the_walk_are_not_lost(sandbox, sandbox_data):
    set_faults(sandbox.population_url, change_during_walk=True)
    items = walk(client_for(sandbox))
    assert set(i["soDinhDanh"] for i in items) == set(served_ids(sandbox_data))


def test_bad_client_secret_is_a_clear_auth_error(sandbox):
    client = PopulationRegistryClient(sandbox.population_url, sandbox.client_id, "wrong-secret", initial_wait=0.01)
    with pytest.raises(AuthError, match="token request refused.*status 401"):
        walk(client)


def test_a_fault_that_never_passes_fails_with_the_url_and_status(sandbox):
    set_faults(sandbox.population_url, server_error_every=1)
    client = PopulationRegistryClient(sandbox.population_url, sandbox.client_id, sandbox.client_secret,
                                      attempts=3, initial_wait=0.01, max_wait=0.05)
    with pytest.raises(TransientSourceError, match=r"status 50[234].*/api/v1/citizens"):
        walk(client)


def test_batch_get_finds_known_ids_and_reports_unknown_ones(sandbox, sandbox_data):
    known = served_ids(sandbox_data)[:150]
    found, missing = client_for(sandbox).batch_get(known + ["000000000000"])
    assert sorted(i["soDinhDanh"] for i in found) == sorted(known)
    assert missing == ["000000000000"]


def test_watermark_does_not_advance_when_landing_fails(sandbox, tmp_path):
    store = WatermarkStore()
    scope = f"test-{tmp_path.name}"
    client = client_for(sandbox)

    def failing_pages(since):
        yield from client.iter_citizen_pages(since, 50)
        raise RuntimeError("disk full while landing")

    with pytest.raises(RuntimeError, match="disk full"):
        run_ingestion(source=SOURCE, entity=ENTITY, run_id="r-fail", raw_dir=tmp_path, incremental=INCREMENTAL,
                      pages=failing_pages, scope=scope)
    assert store.get(SOURCE, scope) is None
    assert list(tmp_path.rglob("*.parquet")) == [], "an aborted landing leaves no parts behind"


def test_incremental_run_fetches_only_changed_records(sandbox, sandbox_data, tmp_path):
    scope = f"test-{tmp_path.name}"
    client = client_for(sandbox)
    first = run_ingestion(source=SOURCE, entity=ENTITY, run_id="r1", raw_dir=tmp_path, incremental=INCREMENTAL,
                          pages=lambda since: client.iter_citizen_pages(since, 100), scope=scope)
    assert first.rows == len(served_ids(sandbox_data))
    changed = served_ids(sandbox_data)[:5]
    requests.post(sandbox.population_url + "/_sandbox/touch", json={"ids": changed}, timeout=10).raise_for_status()
    second = run_ingestion(source=SOURCE, entity=ENTITY, run_id="r2", raw_dir=tmp_path, incremental=INCREMENTAL,
                           pages=lambda since: client.iter_citizen_pages(since, 100), scope=scope)
    landed = pq.read_table(second.landing_path).column("_key").to_pylist()
    assert set(changed) <= set(landed)
    assert len(landed) <= len(changed) + 5, "only changed records (and the inclusive boundary) are fetched again"
    assert second.watermark_to > first.watermark_to
