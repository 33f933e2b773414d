"""An http connection's verify/cert/proxies/timeout extras reach the requests session and every request the
connectors send, over the settings' defaults; without them requests behaves as before. A transport adapter
mounted on the session records what each request is sent with: no network."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from connectors.base.http import HttpClient
from connectors.business.client import BusinessRegistryClient
from connectors.population.client import PopulationRegistryClient


class Recording(HTTPAdapter):
    """Answers every request from `answers` (path -> JSON body) and keeps the transport options it got."""

    def __init__(self, answers: dict[str, Any]):
        super().__init__()
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.sent.append({"path": request.path_url.split("?")[0], "timeout": timeout, "verify": verify, "cert": cert,
                          "proxies": proxies})
        resp = requests.Response()
        resp.status_code = 200
        resp.raw = io.BytesIO(json.dumps(self.answers[request.path_url.split("?")[0]]).encode())
        resp.headers["Content-Type"] = "application/json"
        resp.url, resp.request = request.url, request
        return resp


POPULATION = {"/oauth2/token": {"access_token": "t", "token_type": "Bearer", "expires_in": 300},
              "/api/v1/citizens": {"items": [{"soDinhDanh": "031203001234"}], "next_page_token": None}}


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return {k: str(v) for k, v in files.items()}


def define(monkeypatch: pytest.MonkeyPatch, conn_id: str, **extra: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "http", "host": "registry.example", "port": 443, "schema": "https", "login": "client",
        "password": "secret", "extra": extra}))


def test_population_extras_reach_the_session_and_every_request_token_included(monkeypatch, pem):
    proxies = {"https": "http://proxy.example:3128"}
    define(monkeypatch, "population_t", verify=pem["ca"], cert=[pem["cert"], pem["key"]], proxies=proxies, timeout=[3, 45])
    client = PopulationRegistryClient.from_connection("population_t", timeout=30.0, attempts=1)
    session = client.http.session
    assert session.verify == pem["ca"] and session.cert == (pem["cert"], pem["key"])
    assert session.proxies == proxies and client.http.timeout == (3.0, 45.0), "the extra wins over the settings' 30 s"
    adapter = Recording(POPULATION)
    session.mount("https://", adapter)
    assert [len(page) for page in client.iter_citizen_pages("1970-01-01T00:00:00Z", 10)] == [1]
    assert [s["path"] for s in adapter.sent] == ["/oauth2/token", "/api/v1/citizens"]
    for sent in adapter.sent:
        assert sent["verify"] == pem["ca"] and sent["cert"] == (pem["cert"], pem["key"])
        assert sent["timeout"] == (3.0, 45.0) and sent["proxies"]["https"] == "http://proxy.example:3128"


def test_business_extras_reach_the_session(monkeypatch, pem):
    define(monkeypatch, "business_t", verify="false", cert=pem["cert"], proxy="http://proxy.example:8080", timeout="12")
    client = BusinessRegistryClient.from_connection("business_t", timeout=30.0)
    assert client.http.session.verify is False and client.http.session.cert == pem["cert"]
    assert client.http.session.proxies["https"] == "http://proxy.example:8080" and client.http.timeout == 12.0
    assert client.http.send_options == {"verify": False, "cert": pem["cert"],
                                        "proxies": {"http": "http://proxy.example:8080", "https": "http://proxy.example:8080"}}


def test_a_ca_bundle_from_the_connection_beats_requests_ca_bundle_in_the_environment(monkeypatch, pem, tmp_path):
    other = tmp_path / "env-ca.pem"
    other.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    http = HttpClient("https://registry.example", verify=pem["ca"], attempts=1)
    adapter = Recording({"/x": {}})
    http.session.mount("https://", adapter)
    http.request("GET", "/x")
    assert adapter.sent[0]["verify"] == pem["ca"], "a session setting alone would lose to the environment"


def test_without_extras_requests_behaves_as_before(monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    define(monkeypatch, "population_plain")
    client = PopulationRegistryClient.from_connection("population_plain", timeout=30.0, attempts=1)
    assert client.http.send_options == {} and client.http.timeout == 30.0
    adapter = Recording(POPULATION)
    client.http.session.mount("https://", adapter)
    list(client.iter_citizen_pages("1970-01-01T00:00:00Z", 10))
    assert all(s["verify"] is True and s["cert"] is None and s["timeout"] == 30.0 for s in adapter.sent)
