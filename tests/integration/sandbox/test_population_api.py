"""The sandbox population registry follows agency-systems.md §1 (REST + JSON, OAuth2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from sandbox.faults import FaultSwitches
from sandbox.population_api import create_app
from sandbox.runner import SandboxEndpoints, ServerThread

if TYPE_CHECKING:
    from conftest import SandboxClient

pytestmark = pytest.mark.integration

SPEC_FIELDS = [
    "soDinhDanh", "soCmndCu", "hoVaTen", "ngaySinh", "gioiTinh", "danToc", "tonGiao", "quocTich",
    "noiThuongTru", "queQuan", "soHoKhau", "quanHeChuHo", "trangThai", "ngayMat", "capNhatLuc",
]  # fmt: skip
TOKEN_FORM = {"grant_type": "client_credentials", "scope": "citizens.read"}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_token_is_issued_for_valid_client_credentials(sandbox: SandboxEndpoints) -> None:
    form = TOKEN_FORM | {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret}
    response = requests.post(sandbox.population_url + "/oauth2/token", data=form, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["access_token"]


@pytest.mark.parametrize("field", ["client_id", "client_secret"])
def test_token_request_with_wrong_credentials_is_refused_as_invalid_client(
    sandbox: SandboxEndpoints, field: str
) -> None:
    form = TOKEN_FORM | {
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        field: "wrong",
    }
    response = requests.post(sandbox.population_url + "/oauth2/token", data=form, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc"])
def test_citizens_without_a_valid_token_are_refused_as_invalid_token(
    sandbox: SandboxEndpoints, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = requests.get(sandbox.population_url + "/api/v1/citizens", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    batch = requests.post(
        sandbox.population_url + "/api/v1/citizens:batchGet", json={"ids": []}, headers=headers, timeout=10
    )
    assert batch.status_code == 401
    assert batch.json()["error"] == "invalid_token"


def test_paging_returns_every_citizen_exactly_once(client: SandboxClient) -> None:
    items = client.citizen_items(page_size=37)
    expected = [client.served_form(row) for row in client.citizen_rows()]
    assert len(items) == len(expected)
    assert sorted(items, key=repr) == sorted(expected, key=repr)


def test_items_carry_exactly_the_spec_fields(client: SandboxClient) -> None:
    items = client.citizens(page_size=50).json()["items"]
    assert items
    for item in items:
        assert list(item) == SPEC_FIELDS
        assert isinstance(item["noiThuongTru"], dict)
        assert item["queQuan"] is None or isinstance(item["queQuan"], dict)


def test_items_come_ordered_by_update_time_then_id(client: SandboxClient) -> None:
    items = client.citizen_items(page_size=1000)
    keys = [(_instant(i["capNhatLuc"]), i["soDinhDanh"]) for i in items]
    assert keys == sorted(keys)


@pytest.mark.parametrize("page_size", ["0", "1001", "-5", "ten"])
def test_page_size_outside_1_to_1000_is_rejected(client: SandboxClient, page_size: str) -> None:
    response = client.citizens(page_size=page_size)
    assert response.status_code == 400
    assert "page_size" in response.json()["message"]


@pytest.mark.parametrize("page_size", [1, 1000])
def test_page_size_bounds_are_allowed_and_respected(client: SandboxClient, page_size: int) -> None:
    response = client.citizens(page_size=page_size)
    assert response.status_code == 200
    assert 1 <= len(response.json()["items"]) <= page_size


def test_updated_since_is_inclusive_and_compared_as_instants(client: SandboxClient) -> None:
    rows = client.citizen_rows()
    boundary = _instant(rows[len(rows) // 2]["capNhatLuc"])
    expected = sorted(r["soDinhDanh"] for r in rows if _instant(r["capNhatLuc"]) >= boundary)
    as_utc = boundary.astimezone(UTC).isoformat().replace("+00:00", "Z")
    for text in (boundary.isoformat(), as_utc):
        got = sorted(i["soDinhDanh"] for i in client.citizen_items(page_size=25, updated_since=text))
        assert got == expected, text
    assert rows[len(rows) // 2]["soDinhDanh"] in expected  # the boundary record itself is in


@pytest.mark.parametrize("since", ["2026-11-20T08:00:00", "yesterday", "2026-13-01T00:00:00Z"])
def test_updated_since_that_is_not_rfc3339_with_offset_is_rejected(client: SandboxClient, since: str) -> None:
    response = client.citizens(updated_since=since)
    assert response.status_code == 400
    assert response.json()["message"]


def test_tampered_page_token_is_rejected(client: SandboxClient) -> None:
    page_token = client.citizens(page_size=5).json()["next_page_token"]
    assert page_token
    forged = ("A" if page_token[0] != "A" else "B") + page_token[1:]
    for bad in (forged, "garbage", page_token + "x"):
        response = client.citizens(page_token=bad)
        assert response.status_code == 400, bad
        assert "page_token" in response.json()["message"]


def test_citizens_sharing_a_timestamp_page_correctly(client: SandboxClient) -> None:
    rows = client.citizen_rows()
    ids = [r["soDinhDanh"] for r in rows[:: max(1, len(rows) // 7)]][:7]
    at = "2031-01-01T00:00:00+07:00"
    assert client.touch("population", ids, at)["notFound"] == []
    items = client.citizen_items(page_size=2, updated_since=at)
    assert [i["soDinhDanh"] for i in items] == sorted(ids)
    assert {i["capNhatLuc"] for i in items} == {at}


def test_touched_citizen_moves_to_the_end_of_the_walk(client: SandboxClient) -> None:
    rows = client.citizen_rows()
    first = rows[0]["soDinhDanh"]
    assert client.touch("population", [first, "999"])["notFound"] == ["999"]
    items = client.citizen_items(page_size=100)
    assert len(items) == len(rows)
    assert items[-1]["soDinhDanh"] == first
    assert _instant(items[-1]["capNhatLuc"]) > max(_instant(r["capNhatLuc"]) for r in rows)


def test_batch_get_returns_found_items_and_lists_unknown_ids(client: SandboxClient) -> None:
    rows = client.citizen_rows()
    wanted = [rows[3]["soDinhDanh"], "000000000000", rows[-1]["soDinhDanh"]]
    response = client.batch_get(wanted)
    assert response.status_code == 200
    body = response.json()
    assert body["notFound"] == ["000000000000"]
    assert body["items"] == [client.served_form(r) for r in rows if r["soDinhDanh"] == wanted[0]] + [
        client.served_form(r) for r in rows if r["soDinhDanh"] == wanted[2]
    ]


def test_batch_get_with_more_than_100_ids_is_rejected(client: SandboxClient) -> None:
    response = client.batch_get([f"{i:012d}" for i in range(101)])
    assert response.status_code == 400
    assert "100" in response.json()["message"]
    assert client.batch_get([f"{i:012d}" for i in range(100)]).status_code == 200


def test_expired_token_is_refused_and_a_fresh_token_works(sandbox_data: Path) -> None:
    app = create_app(sandbox_data, clients={"c": "s"}, faults=FaultSwitches(), token_ttl_seconds=1)
    server = ServerThread(app, "population-ttl").start()
    try:

        def token() -> str:
            form = TOKEN_FORM | {"client_id": "c", "client_secret": "s"}
            return requests.post(server.url + "/oauth2/token", data=form, timeout=10).json()["access_token"]

        old = token()
        time.sleep(1.1)
        url = server.url + "/api/v1/citizens"
        expired = requests.get(url, headers={"Authorization": f"Bearer {old}"}, timeout=10)
        assert expired.status_code == 401
        assert expired.json()["error"] == "invalid_token"
        fresh = requests.get(url, headers={"Authorization": f"Bearer {token()}"}, timeout=10)
        assert fresh.status_code == 200
    finally:
        server.stop()
