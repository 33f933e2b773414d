"""The small parts of reconciliation: bands, name keys, the person shape of each source, in-source duplicate
rules and the organisation link passes, on hand-made tables."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from lienthong.reconcile import dedupe, people, sources
from lienthong.reconcile.organisations import link_holder_organisations


def test_bands_follow_the_thresholds_and_reject_bad_settings():
    b = people.LinkBands(accept=0.95, review=0.8)
    assert [b.band(p) for p in (0.99, 0.95, 0.9, 0.8, 0.5, None)] == ["accept", "accept", "review", "review",
                                                                      "reject", "reject"]
    with pytest.raises(ValueError, match="review"):
        people.LinkBands(accept=0.7, review=0.8)


def test_name_keys_fold_accents_case_and_order():
    parts = people.name_parts(pa.array(["Nguyễn Văn An", "NGUYỄN VĂN AN", "An Nguyễn Văn", "Đặng  Thị Hoà", None]))
    assert parts["name_fold"].to_pylist() == ["nguyen van an", "nguyen van an", "an nguyen van", "dang thi hoa", None]
    assert parts["name_sorted"].to_pylist()[:3] == ["an nguyen van"] * 3
    assert parts["family_name"].to_pylist()[:2] == ["nguyen", "nguyen"]
    assert parts["given_name"].to_pylist()[3] == "hoa"


def test_commune_names_lose_their_unit_word():
    assert people.fold_commune(pa.array(["Xã Tân Dân", "Phường Văn Chương", "Thị trấn Nam Sách", None])).to_pylist() \
        == ["tan dan", "van chuong", "nam sach", None]


def test_representatives_split_current_and_legacy_ids():
    reps = pa.table({
        "enterprise_code": ["0100000001", "0100000001", "0100000002"],
        "position": [0, 1, 0],
        "full_name": ["Lê Văn Bình", "Trần Thị Cúc", "Phạm An"],
        "document_type": ["CCCD", "CMND", None],
        "document_number": ["031090001234", "123456789", None],
        "birth_date": [dt.date(1990, 5, 1), dt.date(1985, 1, 2), None],
    })
    p = sources.representatives_as_people(reps).to_pylist()
    assert [r["unique_id"] for r in p] == ["0100000001#0", "0100000001#1", "0100000002#0"]
    assert (p[0]["id_number"], p[0]["legacy_id"]) == ("031090001234", None)
    assert (p[1]["id_number"], p[1]["legacy_id"]) == (None, "123456789")
    assert p[1]["birth_year"] == 1985 and p[2]["birth_year"] is None


def test_land_holder_addresses_split_into_street_and_commune():
    holders = pa.table({
        "province_code": ["01"], "holder_id": [7], "name": ["Nguyễn Thị Hà"], "document_type": ["CCCD"],
        "document_number": ["001190000111"], "birth_year": [1990], "address": ["Thôn Phú, Xã Đoàn Tùng"],
    })
    (p,) = sources.holders_as_people(holders).to_pylist()
    assert (p["unique_id"], p["street"], p["commune"]) == ("01:7", "thon phu", "doan tung")


def test_citizen_duplicates_need_every_identifying_field_equal():
    base = {"legacy_id": None, "full_name": "Lê Văn Bình", "birth_date": dt.date(1990, 5, 1),
            "birth_date_precision": "day", "sex": "NAM", "residence_commune_code_2025": "11224",
            "household_id": "HK-1", "source_updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    rows = [
        {**base, "citizen_id": "031090000001", "legacy_id": "123456789"},
        {**base, "citizen_id": "031090000002", "full_name": "LÊ VĂN BÌNH"},  # same person, other ID
        {**base, "citizen_id": "031090000003", "birth_date": dt.date(1990, 5, 2)},  # born a day later: not a duplicate
    ]
    d = dedupe.citizen_duplicates(pa.Table.from_pylist(rows)).to_pylist()
    assert {(r["record_key"], r["survivor_key"]) for r in d} == {("031090000001", "031090000001"),
                                                                  ("031090000002", "031090000001")}


def test_organisation_holders_link_by_tax_code_then_by_name_and_street():
    enterprises = pa.table({
        "enterprise_code": ["0100000001", "0100000002", "0100000003", "0100000004"],
        "name": ["CÔNG TY TNHH AN PHÁT", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY TNHH CÁT"],
        "head_office_address": ["Số 1 Lê Lợi", "Số 2 Trần Phú", "Số 9 Hùng Vương", "Số 3 Lý Thái Tổ"],
    })
    duplicates = pa.table({"record_key": ["0100000004"], "survivor_key": ["0100000001"], "cluster_size": [2]},
                          schema=dedupe.DUPLICATE_SCHEMA)
    holders = pa.table({
        "province_code": ["31"] * 5, "holder_id": [1, 2, 3, 4, 5],
        "name": ["Công ty TNHH An Phát", "CÔNG TY TNHH AN PHÁT", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY TNHH CÁT", "X"],
        "document_number": ["0100000001", "0100000009", "0100000008", "0100000004", None],
        "address": ["Số 1 Lê Lợi, Phường A", "Số 1 Lê Lợi, Phường A", "Số 2 Trần Phú, Phường B", "?", None],
    })
    links = {r["left_id"]: r for r in link_holder_organisations(holders, enterprises, duplicates).to_pylist()}
    assert (links["31:1"]["right_id"], links["31:1"]["method"], links["31:1"]["band"]) == ("0100000001", "exact_id", "accept")
    # unknown code, unique name, street agrees
    assert (links["31:2"]["right_id"], links["31:2"]["method"], links["31:2"]["band"]) == ("0100000001", "name_address", "accept")
    # two enterprises share the name: review, the one whose street agrees first
    assert (links["31:3"]["right_id"], links["31:3"]["band"]) == ("0100000002", "review")
    # a duplicate enterprise code resolves to its survivor
    assert links["31:4"]["right_id"] == "0100000001"
    assert (links["31:5"]["right_id"], links["31:5"]["band"]) == (None, "reject")
