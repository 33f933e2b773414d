"""The population connector against real servers that inject every fault the spec allows.

Fault tests run twice: against the sandbox and against `minimal_population_server` (written here, to the
spec's text only). Each switches one fault on, walks the registry with the real client and checks that
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
from connectors.population.client import ENTITY, INCREMENTAL, SOURCE, PopulationRegistryClient
from lienthong.runs import Ledger
from sandbox.runner import SandboxEndpoints

from .minimal_population_server import MinimalPopulationRegistry, ServeInThread

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


class Target:
    """One server under test: how to reach it, switch faults, read what it injected, and what it serves."""

    def __init__(self, name, url, client_id, client_secret, ids, set_faults, injected):
        self.name, self.url, self.client_id, self.client_secret = name, url, client_id, client_secret
        self.ids, self.set_faults, self.injected = ids, set_faults, injected

    def client(self, **kw) -> PopulationRegistryClient:
        return PopulationRegistryClient(self.url, self.client_id, self.client_secret, initial_wait=0.01, max_wait=2, **kw)


@pytest.fixture(scope="module")
def minimal_registry(sandbox_data):
    rows = pq.read_table(sandbox_data / "population" / "citizens.parquet").drop(["_row"]).slice(0, 240).to_pylist()
    registry = MinimalPopulationRegistry(rows)
    with ServeInThread(registry.app()) as server:
        yield registry, server.url


@pytest.fixture(params=["sandbox", "minimal"])
def target(request, sandbox_data):
    if request.param == "sandbox":
        ep = request.getfixturevalue("sandbox")
        return Target("sandbox", ep.population_url, ep.client_id, ep.client_secret, served_ids(sandbox_data),
                      lambda **kw: set_faults(ep.population_url, **kw),
                      lambda: stats(ep.population_url)["faults_injected"])
    registry, url = request.getfixturevalue("minimal_registry")
    registry.reset()
    return Target("minimal", url, registry.client_id, registry.client_secret, [r["soDinhDanh"] for r in registry.records],
                  registry.reset, lambda: dict(registry.injected))


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
        ({"token_expire_after": 2}, "token_expire"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_walk_survives_each_fault_without_losing_records(target, switches, fault):
    target.set_faults(**switches)
    items = walk(target.client())
    assert set(i["soDinhDanh"] for i in items) == set(target.ids)
    assert sum(v for k, v in target.injected().items() if fault in k) > 0, target.injected()


def test_retry_after_is_honoured(target):
    target.set_faults(rate_limit_every=2, retry_after=1)
    t0 = time.monotonic()
    pages = list(target.client().iter_citizen_pages(EPOCH, 50))
    elapsed = time.monotonic() - t0
    n_429 = sum(v for k, v in target.injected().items() if "rate_limit" in k)
    assert pages and n_429 >= 1
    # Each 429 asked for one second; the client must have waited at least that long in total.
    assert elapsed >= n_429 * 1.0 * 0.9


def test_expired_token_mid_walk_is_refreshed(target):
    target.set_faults(token_expire_after=2)
    client = target.client()
    assert set(i["soDinhDanh"] for i in walk(client)) == set(target.ids)
    assert client.auth.tokens_fetched >= 2


def test_duplicates_across_pages_are_landed_and_nothing_is_missing(target):
    target.set_faults(duplicate_across_pages=True)
    ids = [i["soDinhDanh"] for i in walk(target.client())]
    assert len(ids) > len(set(ids))
    assert set(ids) == set(target.ids)


def test_records_changing_during_the_walk_are_not_lost(sandbox, sandbox_data):
    set_faults(sandbox.population_url, change_during_walk=True)
    items = walk(client_for(sandbox))
    assert set(i["soDinhDanh"] for i in items) == set(served_ids(sandbox_data))


def test_bad_client_secret_is_a_clear_auth_error(target):
    client = PopulationRegistryClient(target.url, target.client_id, "wrong-secret", initial_wait=0.01)
    with pytest.raises(AuthError, match="token request refused.*status 401"):
        walk(client)


def test_a_fault_that_never_passes_fails_with_the_url_and_status(target):
    target.set_faults(server_error_every=1)
    client = PopulationRegistryClient(target.url, target.client_id, target.client_secret,
                                      attempts=3, initial_wait=0.01, max_wait=0.05)
    with pytest.raises(TransientSourceError, match=r"status 50[234].*/api/v1/citizens"):
        walk(client)


def test_batch_get_finds_known_ids_and_reports_unknown_ones(sandbox, sandbox_data):
    known = served_ids(sandbox_data)[:150]
    found, missing = client_for(sandbox).batch_get(known + ["000000000000"])
    assert sorted(i["soDinhDanh"] for i in found) == sorted(known)
    assert missing == ["000000000000"]


def test_watermark_does_not_advance_when_landing_fails(sandbox, tmp_path):
    store = Ledger()
    scope = f"test-{tmp_path.name}"
    client = client_for(sandbox)

    def failing_pages(since):
        yield from client.iter_citizen_pages(since, 50)
        raise RuntimeError("disk full while landing")

    with pytest.raises(RuntimeError, match="disk full"):
        run_ingestion(store=store, source=SOURCE, entity=ENTITY, run_id="r-fail", raw_dir=tmp_path, incremental=INCREMENTAL,
                      pages=failing_pages, scope=scope)
    assert store.watermark(SOURCE, scope) is None
    assert list(tmp_path.rglob("*.parquet")) == [], "an aborted landing leaves no parts behind"


def test_incremental_run_fetches_only_changed_records(sandbox, sandbox_data, tmp_path):
    scope = f"test-{tmp_path.name}"
    client = client_for(sandbox)
    first = run_ingestion(store=Ledger(), source=SOURCE, entity=ENTITY, run_id="r1", raw_dir=tmp_path, incremental=INCREMENTAL,
                          pages=lambda since: client.iter_citizen_pages(since, 100), scope=scope)
    assert first.rows == len(served_ids(sandbox_data))
    changed = served_ids(sandbox_data)[:5]
    requests.post(sandbox.population_url + "/_sandbox/touch", json={"ids": changed}, timeout=10).raise_for_status()
    second = run_ingestion(store=Ledger(), source=SOURCE, entity=ENTITY, run_id="r2", raw_dir=tmp_path, incremental=INCREMENTAL,
                           pages=lambda since: client.iter_citizen_pages(since, 100), scope=scope)
    landed = pq.read_table(second.landing_path).column("_key").to_pylist()
    assert set(changed) <= set(landed)
    assert len(landed) <= len(changed) + 5, "only changed records (and the inclusive boundary) are fetched again"
    assert second.watermark_to > first.watermark_to


def test_unknown_new_field_is_landed_and_reported_as_drift(minimal_registry, tmp_path):
    from connectors.base.schema import SourceSchema
    from lienthong.contracts import contract

    registry, url = minimal_registry
    registry.reset()
    saved = [dict(r) for r in registry.records]
    try:
        for r in registry.records[:3]:
            r["soDienThoai"] = "0912345678"
        registry.records[5]["soDinhDanh"] = None
        client = PopulationRegistryClient(url, registry.client_id, registry.client_secret, initial_wait=0.01)
        result = run_ingestion(store=Ledger(), source=SOURCE, entity=ENTITY, run_id="drift", raw_dir=tmp_path, incremental=INCREMENTAL,
                               pages=lambda since: client.iter_citizen_pages(since, 100), scope=f"t-{tmp_path.name}",
                               schema=SourceSchema.from_contract(contract("citizen")))
    finally:
        registry.records[:] = saved
    assert result.new_fields == ["soDienThoai"]
    raw = pq.read_table(result.landing_path).to_pylist()
    assert sum('"soDienThoai":"0912345678"' in r["payload"] for r in raw) == 3, "the new field is landed unchanged"
    flagged = [r for r in raw if r["_issues"]]
    assert len(flagged) == 1 and result.flagged == 1
    assert "missing key field soDinhDanh" in flagged[0]["_issues"][0]


def test_required_field_vanishing_from_the_source_fails_the_run_and_keeps_the_watermark(minimal_registry, tmp_path):
    from connectors.base.errors import SchemaDriftError
    from connectors.base.schema import SourceSchema
    from lienthong.contracts import contract

    registry, url = minimal_registry
    registry.reset()
    saved = [dict(r) for r in registry.records]
    scope = f"t-{tmp_path.name}"
    try:
        for r in registry.records:
            r.pop("hoVaTen")
        client = PopulationRegistryClient(url, registry.client_id, registry.client_secret, initial_wait=0.01)
        with pytest.raises(SchemaDriftError, match="required field 'hoVaTen' is absent from all .* records of page 1"):
            run_ingestion(store=Ledger(), source=SOURCE, entity=ENTITY, run_id="gone", raw_dir=tmp_path, incremental=INCREMENTAL,
                          pages=lambda since: client.iter_citizen_pages(since, 100), scope=scope,
                          schema=SourceSchema.from_contract(contract("citizen")))
    finally:
        registry.records[:] = saved
    assert Ledger().watermark(SOURCE, scope) is None
