"""The business registry connector against two servers that follow spec §2: the project's sandbox and a
minimal independent one (`minimal_business_server.py`, no sandbox code). Every test runs on both.

Each fault test switches one fault on, walks the registry with the real client and checks that every record
arrives (repeats allowed only as distinct versions, nothing missing) and that the fault really happened.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests

from connectors.base.errors import AuthError, TransientSourceError
from connectors.business.client import LOCAL_TZ, SOURCE, BusinessRegistryClient, parse_update_time
from connectors.business.ingest import ingest
from lienthong.db import warehouse_url
from lienthong.runs import Ledger
from lienthong.settings import Settings

from .minimal_business_server import MinimalBusinessServer, sample_records

pytestmark = pytest.mark.integration
EPOCH = "1970-01-01T00:00:00Z"
PAGE = 5
LOCAL_FORMAT = "%d/%m/%Y %H:%M:%S"


@dataclass
class Registry:
    """One business registry under test, whichever server it is."""

    name: str
    url: str
    api_key: str
    set_faults: Callable[..., None]
    stats: Callable[[], dict[str, Any]]
    touch: Callable[[list[str]], None]
    source: list[tuple[str, str]]  # (MaSoDN, NgayCapNhat) of every record when the test starts

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.source}

    def injected(self, fault: str) -> int:
        return sum(v for k, v in self.stats()["faults_injected"].items() if fault in k)

    def conn_env(self) -> dict[str, str]:
        host, port = self.url.removeprefix("http://").split(":")
        conn = {"conn_type": "http", "host": host, "port": int(port), "schema": "http", "password": self.api_key}
        return {"AIRFLOW_CONN_BUSINESS_REGISTRY": json.dumps(conn)}


@pytest.fixture(scope="session")
def minimal_server() -> Iterator[MinimalBusinessServer]:
    with MinimalBusinessServer(sample_records(), api_key="minimal-test-key") as server:
        yield server


def _sandbox_registry(request: pytest.FixtureRequest) -> Registry:
    ep = request.getfixturevalue("sandbox")  # reset: faults off, counters zero, changes undone
    data: Path = request.getfixturevalue("sandbox_data")
    url = ep.business_url
    table = pq.read_table(data / "business" / "enterprises.parquet", columns=["MaSoDN", "NgayCapNhat"])

    def set_faults(**switches: Any) -> None:
        requests.post(url + "/_sandbox/faults", json=switches, timeout=10).raise_for_status()

    def touch(codes: list[str]) -> None:
        requests.post(url + "/_sandbox/touch", json={"ids": codes}, timeout=10).raise_for_status()

    return Registry(
        "sandbox", url, ep.api_key, set_faults, lambda: requests.get(url + "/_sandbox/stats", timeout=10).json(), touch,
        list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)),
    )


def _minimal_registry(server: MinimalBusinessServer) -> Registry:
    server.reset()

    def stats() -> dict[str, Any]:
        out = server.stats()
        out["requests"] = {"doanh-nghiep": out["requests"]}
        return out

    return Registry(
        "minimal", server.url, server.api_key, server.set_faults, stats, lambda codes: server.touch(codes),
        [(r["MaSoDN"], r["NgayCapNhat"]) for r in server.records],
    )


@pytest.fixture(params=["sandbox", "minimal"])
def registry(request: pytest.FixtureRequest) -> Registry:
    if request.param == "sandbox":
        return _sandbox_registry(request)
    return _minimal_registry(request.getfixturevalue("minimal_server"))


def client_for(reg: Registry, **kw: Any) -> BusinessRegistryClient:
    kw = {"initial_wait": 0.01, "max_wait": 2.0, "timeout": 10.0, **kw}
    return BusinessRegistryClient(reg.url, reg.api_key, **kw)


def walk(client: BusinessRegistryClient, since: str = EPOCH, page_size: int = PAGE) -> list[dict]:
    return [item for page in client.iter_enterprise_pages(since, page_size) for item in page]


def versions(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["MaSoDN"], i["NgayCapNhat"]) for i in items]


def settings_for(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=warehouse_url(), land_provinces=(), page_size=PAGE)


# --- walks ---------------------------------------------------------------------------------------------


def test_clean_walk_returns_every_record_exactly_once_in_the_spec_shape(registry):
    client = client_for(registry)
    items = walk(client)
    assert sorted(versions(items)) == sorted(registry.source)
    some = items[0]
    assert isinstance(some["NguoiDaiDien"], list) and set(some["TruSo"]) >= {"DiaChi", "MaXa", "MaTinh"}
    assert some["VonDieuLe@donVi"] == "VND"
    assert client.last_walk.step_backs == 0
    # Each next page was sent ahead while the previous one was parsed, and none of it was wasted: the
    # server saw exactly the walk's requests, one per page.
    walk_stats = client.last_walk
    assert walk_stats.requests == walk_stats.pages_accepted and walk_stats.wasted_requests == 0
    assert registry.stats()["requests"]["doanh-nghiep"] == walk_stats.requests
    assert walk_stats.pages_accepted > 2


@pytest.mark.parametrize(
    "switches, fault",
    [
        ({"server_error_every": 2}, "server_error"),  # 502, 503, 504 in turn
        ({"drop_connection_every": 3}, "drop_connection"),
        ({"truncate_body_every": 3}, "truncate_body"),
    ],
    ids=["5xx", "dropped-connection", "truncated-xml"],
)
def test_walk_survives_transient_faults_without_losing_records(registry, switches, fault):
    registry.set_faults(**switches)
    items = walk(client_for(registry))
    assert sorted(versions(items)) == sorted(registry.source)
    assert registry.injected(fault) >= 2, registry.stats()


def test_rate_limit_waits_as_long_as_retry_after_asks(registry):
    registry.set_faults(rate_limit_every=4, retry_after=1)
    t0 = time.monotonic()
    items = walk(client_for(registry))
    elapsed = time.monotonic() - t0
    n_429 = registry.injected("rate_limit")
    assert n_429 >= 1 and registry.codes == {i["MaSoDN"] for i in items}
    # Each 429 asked for one second; backoff alone (initial 0.01 s) would have taken a few milliseconds.
    assert elapsed >= n_429 * 1.0 * 0.95


def test_a_burst_of_502_503_504_is_ridden_out(registry):
    registry.set_faults(server_error_every=1)
    done = threading.Event()

    def calm_down_after_three() -> None:
        while not done.is_set():
            if registry.injected("server_error") >= 3:
                registry.set_faults(server_error_every=0)
                return
            time.sleep(0.01)

    helper = threading.Thread(target=calm_down_after_three, daemon=True)
    helper.start()
    try:
        items = walk(client_for(registry, attempts=12, initial_wait=0.05, max_wait=0.5))
    finally:
        done.set()
        helper.join(5)
    assert registry.codes == {i["MaSoDN"] for i in items}
    assert registry.injected("server_error") >= 3


def test_records_changing_during_the_walk_are_not_lost(registry):
    registry.set_faults(change_during_walk=True)
    client = client_for(registry)
    items = walk(client)
    assert registry.codes - {i["MaSoDN"] for i in items} == set(), "a record was skipped"
    assert registry.injected("change_during_walk") >= 1
    assert client.last_walk.step_backs >= 1, "the shift was noticed and the page read again"
    assert len(versions(items)) == len(set(versions(items)))


def test_repeated_items_across_pages_are_landed_once_per_version(registry):
    # the minimal server repeats the record before each page's offset; the sandbox's business server has no
    # such switch, so there the repeats come from the walk's own overlap and the records moved mid-walk
    if registry.name == "minimal":
        registry.set_faults(duplicate_across_pages=True)
    else:
        registry.set_faults(change_during_walk=True)
    client = client_for(registry)
    items = walk(client)
    landed = versions(items)
    assert len(landed) == len(set(landed)), "a version was landed twice"
    assert registry.codes <= {code for code, _ in landed}
    assert registry.stats()["items_served"] > len(landed) and client.last_walk.repeats_skipped > 0


# --- errors --------------------------------------------------------------------------------------------


def test_a_bad_api_key_is_a_clear_auth_error_and_is_not_retried(registry):
    client = BusinessRegistryClient(registry.url, "wrong-key", initial_wait=0.01)
    with pytest.raises(AuthError, match=r"refused the API key.*business_registry.*status 403"):
        walk(client)
    assert registry.stats()["requests"]["doanh-nghiep"] == 1


def test_a_body_truncated_every_time_fails_naming_the_url_and_offset(registry):
    registry.set_faults(truncate_body_every=1)
    client = client_for(registry, attempts=3, max_wait=0.05)
    with pytest.raises(TransientSourceError, match=r"offset 0 is not complete XML \(truncated\?\).*url \S*/dkkd/v2/doanh-nghiep\?tuNgay=01%2F01%2F1970&offset=0&limit=5"):
        walk(client)
    assert registry.injected("truncate_body") == 3


def test_a_5xx_that_never_passes_fails_with_the_url_offset_and_status(registry):
    registry.set_faults(server_error_every=1)
    client = client_for(registry, attempts=3, max_wait=0.05)
    with pytest.raises(TransientSourceError, match=r"offset 0 still failing after 3 attempts.*status 50[234].*offset=0"):
        walk(client)


# --- ingestion runs: landing and watermark -----------------------------------------------------------


def test_watermark_does_not_advance_when_the_run_fails(registry, tmp_path):
    scope = f"test-{registry.name}-{tmp_path.name}"
    store = Ledger()
    first = ingest("r1", settings_for(tmp_path), store=Ledger(), scope=scope, client=client_for(registry))
    assert first["rows"] == len(registry.source)
    assert store.watermark(SOURCE, scope) == first["watermark_to"]

    registry.touch([registry.source[0][0]])  # something new to fetch, so a successful run would move the mark
    registry.set_faults(server_error_every=1)
    with pytest.raises(TransientSourceError):
        ingest("r2", settings_for(tmp_path), store=Ledger(), scope=scope, client=client_for(registry, attempts=2, max_wait=0.05))
    assert store.watermark(SOURCE, scope) == first["watermark_to"]
    assert not [p for p in tmp_path.rglob("run=r2*")], "the failed run left no landing behind"


def test_the_watermark_is_rfc3339_utc_of_the_newest_local_update_time(registry, tmp_path):
    result = ingest("r1", settings_for(tmp_path), store=Ledger(), scope=f"test-{registry.name}-{tmp_path.name}", client=client_for(registry))
    newest = max(parse_update_time(t) for _, t in registry.source)
    assert result["watermark_to"] == newest.strftime("%Y-%m-%dT%H:%M:%SZ")
    landed = pq.read_table(result["landing_path"])
    payload = json.loads(landed.column("payload")[0].as_py())
    assert payload["MaSoDN"] == landed.column("_key")[0].as_py()


def test_incremental_run_fetches_only_touched_records_and_the_watermark_day(registry, tmp_path):
    scope = f"test-{registry.name}-{tmp_path.name}"
    first = ingest("r1", settings_for(tmp_path), store=Ledger(), scope=scope, client=client_for(registry))
    assert first["rows"] == len(registry.source)

    touched = [code for code, _ in sorted(registry.source, key=lambda v: datetime.strptime(v[1], LOCAL_FORMAT))[:3]]
    registry.touch(touched)
    second = ingest("r2", settings_for(tmp_path), store=Ledger(), scope=scope, client=client_for(registry))

    mark_day = parse_update_time(first["watermark_to"]).astimezone(LOCAL_TZ).date()
    same_day = {code for code, t in registry.source if datetime.strptime(t, LOCAL_FORMAT).date() >= mark_day}
    landed = set(pq.read_table(second["landing_path"]).column("_key").to_pylist())
    assert landed == set(touched) | same_day, "only the touched records and the watermark's day come again"
    assert second["walk"]["tu_ngay"] == mark_day.strftime("%d/%m/%Y")
    assert second["watermark_to"] > first["watermark_to"]


def test_ingest_takes_the_server_and_api_key_from_the_business_registry_connection(registry, tmp_path, monkeypatch):
    for name, value in registry.conn_env().items():
        monkeypatch.setenv(name, value)
    result = ingest("r1", settings_for(tmp_path), store=Ledger(), scope=f"test-{registry.name}-{tmp_path.name}")
    assert result["rows"] == len(registry.source) and result["requests"] >= 1
