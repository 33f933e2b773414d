"""Fixtures for the sandbox server tests (the generated data set and the running sandbox come from
tests/integration/conftest.py).

The data come from the real generator (`sandbox.generator`); tests read its parquet files for what to
expect rather than hard-coding values.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from defusedxml import ElementTree as DefusedET

from sandbox.runner import SandboxEndpoints


@pytest.fixture
def client(sandbox: SandboxEndpoints, sandbox_data: Path) -> SandboxClient:
    return SandboxClient(sandbox, sandbox_data)


class SandboxClient:
    """Plain HTTP calls to the running sandbox, no retries: the tests check what each response is."""

    def __init__(self, endpoints: SandboxEndpoints, data_dir: Path) -> None:
        self.endpoints = endpoints
        self.data_dir = data_dir
        self._token: str | None = None

    # --- population -----------------------------------------------------------------------------------
    def token(self) -> str:
        response = requests.post(
            self.endpoints.population_url + "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.endpoints.client_id,
                "client_secret": self.endpoints.client_secret,
                "scope": "citizens.read",
            },
            timeout=10,
        )
        response.raise_for_status()
        self._token = response.json()["access_token"]
        return self._token

    def _bearer(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self._token or self.token()}"}

    def citizens(self, token: str | None = None, **params: Any) -> requests.Response:
        return requests.get(
            self.endpoints.population_url + "/api/v1/citizens",
            params=params,
            headers=self._bearer(token),
            timeout=10,
        )

    def batch_get(self, ids: list[str], token: str | None = None) -> requests.Response:
        return requests.post(
            self.endpoints.population_url + "/api/v1/citizens:batchGet",
            json={"ids": ids},
            headers=self._bearer(token),
            timeout=10,
        )

    def citizen_pages(self, **params: Any) -> list[dict[str, Any]]:
        """Every page of one walk, following next_page_token until null."""
        pages = []
        for _ in range(10_000):
            response = self.citizens(**params)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            if pages[-1]["next_page_token"] is None:
                return pages
            params["page_token"] = pages[-1]["next_page_token"]
        raise AssertionError("the walk did not end")

    def citizen_items(self, **params: Any) -> list[dict[str, Any]]:
        return [item for page in self.citizen_pages(**params) for item in page["items"]]

    # --- business -------------------------------------------------------------------------------------
    def enterprises(self, api_key: str | None = None, **params: Any) -> requests.Response:
        return requests.get(
            self.endpoints.business_url + "/dkkd/v2/doanh-nghiep",
            params=params,
            headers={"X-API-Key": self.endpoints.api_key if api_key is None else api_key},
            timeout=10,
        )

    def enterprise_walk(self, limit: int, **params: Any) -> list[ET.Element]:
        """A naive offset walk: offset += limit until a short page."""
        records: list[ET.Element] = []
        offset = 0
        while True:
            response = self.enterprises(offset=offset, limit=limit, **params)
            assert response.status_code == 200, response.text
            page = list(DefusedET.fromstring(response.content))
            records.extend(page)
            if len(page) < limit:
                return records
            offset += limit

    # --- control --------------------------------------------------------------------------------------
    def url(self, server: str) -> str:
        return {"population": self.endpoints.population_url, "business": self.endpoints.business_url}[server]

    def set_faults(self, server: str, **switches: Any) -> dict[str, Any]:
        response = requests.post(self.url(server) + "/_sandbox/faults", json=switches, timeout=10)
        response.raise_for_status()
        return response.json()

    def touch(self, server: str, ids: list[str], at: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"ids": ids} | ({"at": at} if at else {})
        response = requests.post(self.url(server) + "/_sandbox/touch", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self, server: str) -> dict[str, Any]:
        return requests.get(self.url(server) + "/_sandbox/stats", timeout=10).json()

    # --- expectations from the files ------------------------------------------------------------------
    def citizen_rows(self) -> list[dict[str, Any]]:
        return pq.read_table(self.data_dir / "population" / "citizens.parquet").to_pylist()

    def enterprise_rows(self) -> list[dict[str, Any]]:
        return pq.read_table(self.data_dir / "business" / "enterprises.parquet").to_pylist()

    @staticmethod
    def served_form(row: dict[str, Any]) -> dict[str, Any]:
        """A parquet row as the server must serve it: without `_row` or other `_` columns."""
        return {k: v for k, v in row.items() if not k.startswith("_")}
