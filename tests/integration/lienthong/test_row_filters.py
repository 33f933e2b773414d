"""A row filter in schemas/agencies.yaml holds for its entity wherever an agency can read that entity: its own
view, every other granted dataset, every nested list (citizen_profile.parcels, enterprise_profile.land), and
the single-window lookups over real HTTP. Walks every agency with a filter x every granted dataset x every
column, nested lists included, and checks each value against the policy; also checks that no trace of a
filtered-out record (its certificate serials, its address) is reachable at all, and that what the filter
allows is still there."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from agency_fixtures import (
    AN,
    AN_PHAT,
    CITIZENS,
    CUONG,
    ENTERPRISES,
    PARCELS,
    agency_connect,
    password_auth_for_agencies,
    published_database,
    secrets_in_env,
)
from psycopg2.extras import RealDictCursor
from singlewindow_service import lookup_headers

from lienthong.access import Agency, apply_access, load_agencies
from lienthong.contracts import load_contracts

pytestmark = pytest.mark.integration

AGENCIES = load_agencies()
CONTRACTS = load_contracts()
FILTERED = sorted(a for a, ag in AGENCIES.items() if any(g.rows for g in ag.grants.values()))


def entity_filters(agency: Agency) -> dict[str, dict[str, tuple[Any, ...]]]:
    """entity -> {column: allowed values}, from the agency's row filters (as the configuration states them)."""
    out: dict[str, dict[str, tuple[Any, ...]]] = {}
    for ds, grant in agency.grants.items():
        if grant.rows:
            out.setdefault(CONTRACTS[ds].custom["entity"], {}).update(grant.rows)
    return out


def _entities(value: Any) -> set[str]:
    return set() if value is None else {value} if isinstance(value, str) else set(value)


def violations(agency: Agency, dataset: str, record: dict[str, Any]) -> list[str]:
    """Every value of `record` (a row of `dataset` as the agency reads it) that the agency's filters forbid."""
    filters = entity_filters(agency)
    contract = CONTRACTS[dataset]
    found = []
    entity = contract.custom.get("entity")
    for col, allowed in filters.get(entity, {}).items():
        if col in record and record[col] not in allowed:
            found.append(f"{dataset}.{col} = {record[col]!r}")
    for col, value in record.items():
        f = contract.field(col)
        for e in _entities(f.custom.get("itemEntity")) & filters.keys():
            if value is None or (isinstance(value, str) and len(value) == 64):  # absent, or pseudonymized whole
                continue
            assert isinstance(value, list), f"{dataset}.{col}: {value!r}"
            for item in value:
                for c, allowed in filters[e].items():
                    if item.get(c) not in allowed:
                        found.append(f"{dataset}.{col}[] {c} = {item.get(c)!r}")
    return found


def forbidden_traces(agency: Agency) -> set[str]:
    """Text that only a record outside the agency's parcel filter carries: its certificate serials, its address."""
    rows = entity_filters(agency).get("parcel", {})
    outside = [p for p in PARCELS if any(p[c] not in allowed for c, allowed in rows.items())]
    return {h["certificate_serial"] for p in outside for h in p["holders"]} | {p["address"] for p in outside}


@pytest.fixture(scope="module")
def warehouse() -> Iterator[str]:
    with secrets_in_env():
        url = published_database("access_row_filters")
        with password_auth_for_agencies(url):
            apply_access(url)
            yield url


def read_view(url: str, agency: str, dataset: str) -> list[dict[str, Any]]:
    conn = agency_connect(url, agency)
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute(f"SELECT * FROM agency_{agency}.{dataset}")
            return [dict(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_the_fixture_has_records_outside_every_filter():
    # Without them the walk below could pass on a leaking view.
    assert FILTERED, "no agency in agencies.yaml has a row filter"
    for agency in FILTERED:
        assert forbidden_traces(AGENCIES[agency])
        assert any(violations(AGENCIES[agency], "citizen_profile", {"parcels": c["parcels"]}) for c in CITIZENS
                   if "citizen_profile" in AGENCIES[agency].grants)


@pytest.mark.parametrize("agency", FILTERED)
def test_every_value_of_every_view_obeys_the_row_filter(warehouse, agency):
    ag = AGENCIES[agency]
    traces = forbidden_traces(ag)
    walked = 0
    for dataset in ag.grants:
        for record in read_view(warehouse, agency, dataset):
            assert not violations(ag, dataset, record), (agency, dataset, violations(ag, dataset, record))
            text = json.dumps(record, ensure_ascii=False, default=str)
            assert not [t for t in traces if t in text], (agency, dataset, [t for t in traces if t in text])
            walked += 1
    assert walked >= len(CITIZENS)


def test_the_land_department_keeps_the_parcels_of_its_province_in_the_nested_lists(warehouse):
    citizens = {r["citizen_id"]: r for r in read_view(warehouse, "land_department", "citizen_profile")}
    assert len(citizens) == len(CITIZENS)  # the citizens themselves are not parcels: all still there
    assert citizens[AN["citizen_id"]]["parcels"] == [p for p in AN["parcels"] if p["province_code"] == "31"]
    assert citizens[CUONG["citizen_id"]]["parcels"] is None  # his only parcel is in Hà Nội
    enterprises = {r["enterprise_code"]: r for r in read_view(warehouse, "land_department", "enterprise_profile")}
    assert len(enterprises) == len(ENTERPRISES)
    assert enterprises[AN_PHAT["enterprise_code"]]["land"] == [p for p in AN_PHAT["land"] if p["province_code"] == "31"]
    # an agency without a filter still sees every parcel, in the published order
    desk = {r["citizen_id"]: r for r in read_view(warehouse, "single_window_desk", "citizen_profile")}
    assert desk[AN["citizen_id"]]["parcels"] == AN["parcels"] and desk[CUONG["citizen_id"]]["parcels"] == CUONG["parcels"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lookup_service(warehouse) -> Iterator[tuple[str, dict[str, str]]]:
    """The single-window service on a real localhost port (uvicorn in a thread), reading as each agency."""
    import os

    from lienthong.singlewindow.app import create_app

    keys = {name: secrets.token_urlsafe(24) for name in AGENCIES}
    passwords = {name: os.environ[AGENCIES[name].password_env] for name in AGENCIES}
    app = create_app(warehouse, api_keys=keys, passwords=passwords)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", keys
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.mark.parametrize("agency", FILTERED)
def test_every_lookup_answer_obeys_the_row_filter(lookup_service, agency):
    base, keys = lookup_service
    ag = AGENCIES[agency]
    traces = forbidden_traces(ag)
    routes = [("citizen_profile", f"/v1/citizens/{c['citizen_id']}/profile") for c in CITIZENS]
    routes += [("enterprise_profile", f"/v1/enterprises/{e['enterprise_code']}/profile") for e in ENTERPRISES]
    routes += [("parcel_register", f"/v1/parcels/{p['commune_code_2025']}/{p['map_sheet']}/{p['parcel_number']}")
               for p in PARCELS]
    answered = 0
    for dataset, path in routes:
        r = requests.get(base + path, headers=lookup_headers(keys[agency], agency), timeout=30)
        assert r.status_code in (200, 403, 404), (path, r.status_code, r.text)
        if r.status_code != 200:
            continue
        body = r.json()
        for record in body["items"] if dataset == "parcel_register" else [body]:
            assert not violations(ag, dataset, record), (path, violations(ag, dataset, record))
        assert not [t for t in traces if t in r.text], (path, [t for t in traces if t in r.text])
        answered += 1
    assert answered >= len(CITIZENS)
    # the land department's citizen lookup now agrees with its parcel lookup: no Hà Nội parcel either way
    if agency == "land_department":
        r = requests.get(base + f"/v1/citizens/{CUONG['citizen_id']}/profile", headers=lookup_headers(keys[agency], agency),
                         timeout=30)
        assert r.status_code == 200 and r.json()["parcels"] is None
        assert requests.get(base + "/v1/parcels/00070/3/17", headers=lookup_headers(keys[agency], agency),
                            timeout=30).status_code == 404
