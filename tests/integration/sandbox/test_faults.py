"""Each sandbox fault switch does what docs/sandbox.md says, on the request it says."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from defusedxml import ElementTree as DefusedET

from sandbox.business_api import create_app as business_app
from sandbox.faults import FaultSwitches, parse_fault_args, switches_per_server
from sandbox.runner import ServerThread

if TYPE_CHECKING:
    from conftest import SandboxClient

pytestmark = pytest.mark.integration

SERVERS = ["population", "business"]


def _data_request(client: SandboxClient, server: str) -> requests.Response:
    if server == "population":
        return client.citizens(page_size=20)
    return client.enterprises(offset=0, limit=20)


@pytest.mark.parametrize("server", SERVERS)
def test_rate_limit_every_nth_request_gets_429_with_retry_after(client: SandboxClient, server: str) -> None:
    client.token()  # token calls are not data requests and never count
    client.set_faults(server, rate_limit_every=3, retry_after=7)
    statuses = [_data_request(client, server) for _ in range(6)]
    assert [r.status_code for r in statuses] == [200, 200, 429, 200, 200, 429]
    assert statuses[2].headers["Retry-After"] == "7"


@pytest.mark.parametrize("server", SERVERS)
def test_server_errors_cycle_through_502_503_504(client: SandboxClient, server: str) -> None:
    client.token()
    client.set_faults(server, server_error_every=2)
    statuses = [_data_request(client, server).status_code for _ in range(8)]
    assert statuses == [200, 502, 200, 503, 200, 504, 200, 502]


@pytest.mark.parametrize("server", SERVERS)
def test_dropped_connection_surfaces_as_a_requests_connection_error(
    client: SandboxClient, server: str
) -> None:
    client.token()
    client.set_faults(server, drop_connection_every=2)
    assert _data_request(client, server).status_code == 200
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        _data_request(client, server)
    assert _data_request(client, server).status_code == 200
    assert client.stats(server)["faults_injected"] == {"drop_connection": 1}


def test_truncated_population_body_is_cut_json(client: SandboxClient) -> None:
    client.token()
    client.set_faults("population", truncate_body_every=1)
    response = client.citizens(page_size=50)
    assert response.status_code == 200
    assert response.content.decode("utf-8")  # cut on a character boundary
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_truncated_business_body_is_cut_xml(client: SandboxClient) -> None:
    client.set_faults("business", truncate_body_every=1)
    response = client.enterprises(offset=0, limit=50)
    assert response.status_code == 200
    assert response.content.startswith(b"<?xml")
    with pytest.raises(DefusedET.ParseError):
        DefusedET.fromstring(response.content)


def test_token_expires_after_n_uses_and_a_new_token_continues_the_walk(client: SandboxClient) -> None:
    client.set_faults("population", token_expire_after=2)
    first = client.token()
    page1 = client.citizens(first, page_size=10)
    page2 = client.citizens(first, page_size=10, page_token=page1.json()["next_page_token"])
    refused = client.citizens(first, page_size=10, page_token=page2.json()["next_page_token"])
    assert [page1.status_code, page2.status_code, refused.status_code] == [200, 200, 401]
    assert refused.json()["error"] == "invalid_token"
    retried = client.citizens(client.token(), page_size=10, page_token=page2.json()["next_page_token"])
    assert retried.status_code == 200
    served = [i["soDinhDanh"] for p in (page1, page2, retried) for i in p.json()["items"]]
    assert served == [r["soDinhDanh"] for r in client.citizen_rows()[:30]]


def test_duplicate_across_pages_repeats_the_previous_last_item(client: SandboxClient) -> None:
    client.set_faults("population", duplicate_across_pages=True)
    pages = client.citizen_pages(page_size=10)
    for before, after in zip(pages, pages[1:], strict=False):
        assert after["items"][0] == before["items"][-1]
    served = Counter(i["soDinhDanh"] for p in pages for i in p["items"])
    expected = Counter(r["soDinhDanh"] for r in client.citizen_rows())
    assert not expected - served
    assert (served - expected).total() == len(pages) - 1


def test_empty_page_still_carries_a_next_token_and_the_walk_completes(client: SandboxClient) -> None:
    client.set_faults("population", empty_page_every=2)
    pages = client.citizen_pages(page_size=40)
    assert pages[1]["items"] == [] and pages[1]["next_page_token"] is not None
    items = [i["soDinhDanh"] for p in pages for i in p["items"]]
    assert sorted(items) == sorted(r["soDinhDanh"] for r in client.citizen_rows())


def test_change_during_walk_reserves_an_already_served_citizen_later(client: SandboxClient) -> None:
    client.set_faults("population", change_during_walk=True)
    rows = client.citizen_rows()
    pages = client.citizen_pages(page_size=10)
    served = [i["soDinhDanh"] for p in pages for i in p["items"]]
    expected = Counter(r["soDinhDanh"] for r in rows)
    assert not expected - Counter(served)  # nothing lost: keyset paging
    assert Counter(served) - expected == Counter([rows[0]["soDinhDanh"]])  # the first one, served again
    moved_unserved = rows[11]["soDinhDanh"]  # the second record after the first page
    assert served[-2:] == [rows[0]["soDinhDanh"], moved_unserved]


def test_change_during_walk_makes_a_naive_offset_walker_skip_a_record(client: SandboxClient) -> None:
    client.set_faults("business", change_during_walk=True)
    rows = client.enterprise_rows()
    served = Counter(node.findtext("MaSoDN") for node in client.enterprise_walk(limit=10))
    expected = Counter(r["MaSoDN"] for r in rows)
    assert expected - served == Counter([rows[10]["MaSoDN"]])  # first of page two shifted into page one
    assert served - expected == Counter([rows[0]["MaSoDN"]])  # moved to the end after being served


@pytest.mark.parametrize("server", SERVERS)
def test_faults_can_be_read_and_set_at_runtime(client: SandboxClient, server: str) -> None:
    url = client.url(server) + "/_sandbox/faults"
    assert requests.get(url, timeout=10).json() == FaultSwitches().as_dict()
    assert client.set_faults(server, rate_limit_every="4")["rate_limit_every"] == 4
    assert requests.get(url, timeout=10).json()["rate_limit_every"] == 4
    unknown = requests.post(url, json={"explode": 1}, timeout=10)
    assert unknown.status_code == 400
    assert "explode" in unknown.json()["message"]
    assert requests.post(url, json={"rate_limit_every": -1}, timeout=10).status_code == 400


def test_reset_restores_switches_counters_and_data(client: SandboxClient) -> None:
    rows = client.citizen_rows()
    client.touch("population", [rows[0]["soDinhDanh"]])
    client.set_faults("population", rate_limit_every=1)
    assert client.citizens().status_code == 429
    requests.post(client.url("population") + "/_sandbox/reset", timeout=10).raise_for_status()
    assert client.stats("population")["total_requests"] == 0
    assert (
        client.citizens(client.token(), page_size=1).json()["items"][0]["soDinhDanh"] == rows[0]["soDinhDanh"]
    )


def test_stats_count_requests_per_endpoint_and_items_served(client: SandboxClient) -> None:
    client.token()
    client.citizens(page_size=5)
    client.batch_get(["000000000000"])
    client.enterprises(limit=3)
    client.enterprises(api_key="bad")
    population, business = client.stats("population"), client.stats("business")
    assert population["requests"] == {"token": 1, "citizens": 1, "batchGet": 1}
    assert population["items_served"] == 5
    assert business["requests"] == {"doanh-nghiep": 2}
    assert business["items_served"] == 3
    assert business["data_requests"] == 1  # the refused request never reached the fault counters


def test_startup_faults_apply_from_the_first_request(sandbox_data: Path) -> None:
    server = ServerThread(
        business_app(sandbox_data, api_keys={"k"}, faults=FaultSwitches(rate_limit_every=1)),
        "business-faulty",
    ).start()
    try:
        response = requests.get(server.url + "/dkkd/v2/doanh-nghiep", headers={"X-API-Key": "k"}, timeout=10)
        assert response.status_code == 429
        requests.post(server.url + "/_sandbox/faults", json={"rate_limit_every": 0}, timeout=10)
        response = requests.get(server.url + "/dkkd/v2/doanh-nghiep", headers={"X-API-Key": "k"}, timeout=10)
        assert response.status_code == 200
        requests.post(server.url + "/_sandbox/reset", timeout=10)  # back to the startup switches
        response = requests.get(server.url + "/dkkd/v2/doanh-nghiep", headers={"X-API-Key": "k"}, timeout=10)
        assert response.status_code == 429
    finally:
        server.stop()


def test_fault_arguments_target_one_server_or_both() -> None:
    parsed = parse_fault_args(["rate_limit_every=5", "business.truncate_body_every=3"])
    assert parsed == {
        "population": {"rate_limit_every": "5"},
        "business": {"rate_limit_every": "5", "truncate_body_every": "3"},
    }
    switches = switches_per_server({"population.change_during_walk": "true", "retry_after": 2})
    assert switches["population"] == FaultSwitches(change_during_walk=True, retry_after=2)
    assert switches["business"] == FaultSwitches(retry_after=2)
    with pytest.raises(ValueError, match="unknown fault switch 'nope'"):
        switches_per_server({"nope": 1})
