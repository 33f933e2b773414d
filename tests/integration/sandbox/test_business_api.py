"""The sandbox business registry follows agency-systems.md §2 (REST + XML, API key)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from defusedxml import ElementTree as DefusedET

from sandbox.business_api import render_page

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from conftest import SandboxClient

pytestmark = pytest.mark.integration

RECORD_ORDER = [
    "MaSoDN", "TenDN", "TenTiengAnh", "LoaiHinh", "NgayThanhLap", "TinhTrang", "VonDieuLe", "TruSo",
    "NganhNghe", "NguoiDaiDien", "NgayCapNhat",
]  # fmt: skip


def _local(text: str) -> datetime:
    return datetime.strptime(text, "%d/%m/%Y %H:%M:%S")


def _key(node: ET.Element) -> tuple[str, str]:
    return node.findtext("MaSoDN") or "", node.findtext("NgayCapNhat") or ""


@pytest.mark.parametrize("api_key", ["", "wrong-key"], ids=["missing", "wrong"])
def test_missing_or_wrong_api_key_is_forbidden(client: SandboxClient, api_key: str) -> None:
    assert client.enterprises(api_key=api_key).status_code == 403


def test_response_is_utf8_xml_in_the_spec_shape(client: SandboxClient) -> None:
    response = client.enterprises(offset=0, limit=20)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml; charset=utf-8"
    root = DefusedET.fromstring(response.content)
    assert root.tag == "DanhSachDoanhNghiep"
    assert root.attrib == {"tongSo": str(len(client.enterprise_rows())), "offset": "0", "limit": "20"}
    assert len(root) == min(20, len(client.enterprise_rows()))
    for record in root:
        assert record.tag == "DoanhNghiep"
        tags = [child.tag for child in record]
        assert [t for t in RECORD_ORDER if t in tags] == list(dict.fromkeys(tags))
        assert {"MaSoDN", "TenDN", "TruSo", "NganhNghe", "NguoiDaiDien", "NgayCapNhat"} <= set(tags)
        assert record.find("VonDieuLe").get("donVi") == "VND"
        assert [c.tag for c in record.find("TruSo")][0] == "DiaChi"
        for trade in record.find("NganhNghe"):
            assert trade.tag == "Nganh" and trade.get("ma") and trade.get("chinh") in ("true", "false")
        _local(record.findtext("NgayCapNhat"))  # dd/mm/yyyy HH:MM:SS, no offset


def test_offset_paging_returns_every_enterprise_exactly_once(client: SandboxClient) -> None:
    served = Counter(_key(node) for node in client.enterprise_walk(limit=23))
    expected = Counter((r["MaSoDN"], r["NgayCapNhat"]) for r in client.enterprise_rows())
    assert served == expected


def test_records_carry_the_parquet_values(client: SandboxClient) -> None:
    rows = client.enterprise_rows()
    nodes = client.enterprise_walk(limit=500)
    assert len(nodes) == len(rows)
    for node, row in zip(nodes, rows, strict=True):  # the file is in walk order (docs/sandbox.md)
        assert node.findtext("MaSoDN") == row["MaSoDN"]
        assert node.findtext("NgayCapNhat") == row["NgayCapNhat"]
        assert node.findtext("TenDN") == row["TenDN"]
        assert node.findtext("TenTiengAnh") == row["TenTiengAnh"]
        assert node.findtext("VonDieuLe") == (None if row["VonDieuLe"] is None else str(row["VonDieuLe"]))
        office = node.find("TruSo")
        for field in ("DiaChi", "MaXa", "MaHuyen", "MaTinh"):
            assert office.findtext(field) == row["TruSo"][field]
        trades = [(t.get("ma"), t.get("chinh") == "true") for t in node.find("NganhNghe")]
        assert trades == [(t["ma"], bool(t["chinh"])) for t in row["NganhNghe"]]
        reps = node.findall("NguoiDaiDien")
        assert [r.findtext("HoTen") for r in reps] == [p["HoTen"] for p in row["NguoiDaiDien"]]
        assert [r.findtext("SoGiayTo") for r in reps] == [p["SoGiayTo"] for p in row["NguoiDaiDien"]]


def test_mahuyen_is_omitted_when_null(client: SandboxClient) -> None:
    rows = client.enterprise_rows()
    without = {r["MaSoDN"] for r in rows if r["TruSo"] and r["TruSo"]["MaHuyen"] is None}
    with_code = {r["MaSoDN"] for r in rows if r["TruSo"] and r["TruSo"]["MaHuyen"] is not None}
    if not without or not with_code:
        pytest.skip("the data set needs addresses with and without MaHuyen")
    for node in client.enterprise_walk(limit=500):
        has = node.find("TruSo/MaHuyen") is not None
        assert has == (node.findtext("MaSoDN") in with_code)


def test_records_are_ordered_by_local_update_time_then_code(client: SandboxClient) -> None:
    keys = [
        (_local(node.findtext("NgayCapNhat")), node.findtext("MaSoDN"))
        for node in client.enterprise_walk(500)
    ]
    assert keys == sorted(keys)


@pytest.mark.parametrize("limit", ["0", "501", "x"])
def test_limit_outside_1_to_500_is_rejected(client: SandboxClient, limit: str) -> None:
    response = client.enterprises(offset=0, limit=limit)
    assert response.status_code == 400
    assert "limit" in DefusedET.fromstring(response.content).findtext("MoTa")


def test_limit_bounds_are_allowed_and_respected(client: SandboxClient) -> None:
    for limit in (1, 500):
        root = DefusedET.fromstring(client.enterprises(offset=0, limit=limit).content)
        assert 1 <= len(root) <= limit


@pytest.mark.parametrize("tu_ngay", ["2026-11-20", "20/11", "31/02/2026"])
def test_tungay_that_is_not_dd_mm_yyyy_is_rejected(client: SandboxClient, tu_ngay: str) -> None:
    assert client.enterprises(tuNgay=tu_ngay).status_code == 400


def test_tungay_filters_on_the_local_update_day_inclusive(client: SandboxClient) -> None:
    rows = client.enterprise_rows()
    day = _local(rows[len(rows) // 2]["NgayCapNhat"]).date()
    expected = Counter(
        (r["MaSoDN"], r["NgayCapNhat"]) for r in rows if _local(r["NgayCapNhat"]).date() >= day
    )
    nodes = client.enterprise_walk(limit=17, tuNgay=day.strftime("%d/%m/%Y"))
    assert Counter(_key(n) for n in nodes) == expected
    root = DefusedET.fromstring(client.enterprises(tuNgay=day.strftime("%d/%m/%Y"), limit=1).content)
    assert root.get("tongSo") == str(sum(expected.values()))
    assert any(_local(k[1]).date() == day for k in expected)  # the day itself is in


def test_touched_enterprise_moves_to_the_end_with_the_given_local_time(client: SandboxClient) -> None:
    code = client.enterprise_rows()[0]["MaSoDN"]
    answer = client.touch("business", [code], "2031-01-02T03:04:05Z")
    assert answer["NgayCapNhat"] == "02/01/2031 10:04:05"  # Vietnam is UTC+7
    nodes = client.enterprise_walk(limit=500, tuNgay="02/01/2031")
    assert [(n.findtext("MaSoDN"), n.findtext("NgayCapNhat")) for n in nodes] == [
        (code, "02/01/2031 10:04:05")
    ]


def test_xml_escapes_markup_and_replaces_characters_xml_forbids() -> None:
    record: dict[str, Any] = {
        "MaSoDN": "0201234567",
        "TenDN": 'C«ng ty <A> & "B"\x01',
        "TenTiengAnh": None,
        "VonDieuLe": 5,
        "TruSo": {"DiaChi": "Số 5 & 6", "MaXa": "11320", "MaHuyen": None, "MaTinh": "31"},
        "NganhNghe": [{"ma": "4711", "chinh": True}],
        "NguoiDaiDien": [{"HoTen": "Trần Thị Bình", "LoaiGiayTo": "CCCD", "SoGiayTo": "031185004321"}],
        "NgayCapNhat": "20/11/2026 14:03:11",
    }
    root = DefusedET.fromstring(render_page([record], total=1, offset=0, limit=1))
    node = root.find("DoanhNghiep")
    assert node.findtext("TenDN") == 'C«ng ty <A> & "B"\ufffd'
    assert node.find("TenTiengAnh") is None
    assert node.find("TruSo/MaHuyen") is None
    assert node.findtext("TruSo/DiaChi") == "Số 5 & 6"
