"""The ID-less holder pass (`lienthong.reconcile.idless`) on hand-made registries: a unique name and birth year
in the province is linked, namesakes go to review with every candidate, a holder with no birth year is looked
for in its parcels' communes (2025 and pre-2025 codes), a holder with an ID is left alone, the model gate, the
merge with the model's links and the dirty keys of an incremental run."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong import adminunits
from lienthong.reconcile import idless, people

# Hà Nội (2025 code 01). Old ward 00007 (Cống Vị) was split in 2025 between 00008 (Ngọc Hà, its default
# 2025 code) and 00025 (Giảng Võ); 00004 is Ba Đình. 10507 is a ward of Hải Phòng (31).
OLD_SPLIT, NEW_DEFAULT, NEW_OTHER, BA_DINH, HAI_PHONG = "00007", "00008", "00025", "00004", "10507"


def test_the_commune_codes_used_here_are_what_the_official_lists_say():
    conv = adminunits.to_2025(OLD_SPLIT)
    assert conv is not None and conv.default == NEW_DEFAULT and set(conv.targets) == {NEW_DEFAULT, NEW_OTHER}
    new = adminunits.new_communes()
    assert {new[c].province_code for c in (NEW_DEFAULT, NEW_OTHER, BA_DINH)} == {"01"}
    assert new[HAI_PHONG].province_code == "31"


def _citizens(rows: list[tuple]) -> pa.Table:
    """(citizen_id, full_name, birth year, residence code as recorded, 2025 code, address)."""
    return pa.table({
        "citizen_id": [r[0] for r in rows],
        "legacy_id": pa.nulls(len(rows), pa.string()),
        "full_name": [r[1] for r in rows],
        "birth_date": pa.array([dt.date(r[2], 5, 1) for r in rows], pa.date32()),
        "birth_date_precision": ["day"] * len(rows),
        "residence_address": [r[5] for r in rows],
        "residence_commune_code": [r[3] for r in rows],
        "residence_commune_code_2025": [r[4] for r in rows],
    })


CITIZENS = _citizens([
    ("001080000001", "Nguyễn Văn An", 1980, BA_DINH, BA_DINH, "Số 1 Kim Mã"),
    ("031080000007", "Nguyễn Văn An", 1980, HAI_PHONG, HAI_PHONG, "Số 9 Lạch Tray"),  # other province
    ("001175000002", "Trần Thị Bình", 1975, BA_DINH, BA_DINH, "Thôn Đông"),
    ("001175000003", "Trần Thị Bình", 1975, NEW_DEFAULT, NEW_DEFAULT, "Thôn Tây"),
    ("001090000004", "Lê Văn Cường", 1990, NEW_OTHER, NEW_OTHER, "Số 4 Giảng Võ"),
    ("001185000005", "Phạm Thị Dung", 1985, NEW_DEFAULT, NEW_DEFAULT, "Số 5 Đội Cấn"),
    ("031160000006", "Phạm Thị Dung", 1960, HAI_PHONG, HAI_PHONG, "Số 6 Lạch Tray"),  # not in the parcel's commune
    ("001070000008", "Hoàng Văn Em", 1970, OLD_SPLIT, NEW_DEFAULT, "Số 8 Cống Vị"),  # residence under the old code
])

HOLDERS = pa.table({
    "province_code": ["01"] * 9,
    "holder_id": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "holder_type": ["CA_NHAN"] * 6 + ["TO_CHUC", "CA_NHAN", "CA_NHAN"],
    "name": ["Nguyễn Văn An", "TRẦN THỊ BÌNH", "Lê Văn Cường", "Phạm Thị Dung", "Nguyễn Văn An", "Vũ Văn Giang",
             "Công ty TNHH An Phát", "Đỗ Văn Hải", "Trần Thị Bình"],
    "document_type": [None, None, None, None, "CCCD", None, "MST", None, None],
    "document_number": [None, None, None, "  ", "001080000001", None, "0100233488", None, None],
    "birth_year": pa.array([1980, 1975, None, None, 1980, 1950, None, 1960, None], pa.int64()),
    "address": [None, None, None, None, None, None, None, None, "Thôn Đông, Phường Ba Đình"],
    "deleted": [False] * 7 + [True, False],
})
PARCELS = pa.table({
    "province_code": ["01", "01", "01"],
    "parcel_id": [10, 20, 30],
    "commune_code_original": [OLD_SPLIT, NEW_DEFAULT, "99999"],
    "commune_code_2025": [NEW_DEFAULT, NEW_DEFAULT, None],
    "deleted": [False, False, False],
})
CERTIFICATES = pa.table({
    "province_code": ["01", "01", "01", "01"],
    "holder_id": [3, 4, 9, 1],
    "parcel_id": [10, 20, 20, 30],
    "deleted": [False, False, False, False],
})


@pytest.fixture(scope="module")
def inputs():
    left = idless.idless_inputs(HOLDERS, CERTIFICATES, PARCELS)
    registry = idless.registry_with_places(CITIZENS)
    return left, registry


def _rows(table: pa.Table) -> dict[str, dict]:
    return {r["left_id"]: r for r in table.to_pylist()}


def test_inputs_are_the_live_person_holders_with_no_document_number_and_their_parcels_communes(inputs):
    left, _ = inputs
    assert left.schema == idless.INPUT_SCHEMA
    got = {r["unique_id"]: r for r in left.to_pylist()}
    # 5: has an ID; 7: an organisation; 8: deleted. A blank number (4) counts as none.
    assert set(got) == {"01:1", "01:2", "01:3", "01:4", "01:6", "01:9"}
    # The old code of parcel 10 stands for both 2025 wards it was split into.
    assert got["01:3"]["parcel_communes"] == [NEW_DEFAULT, NEW_OTHER]
    assert got["01:4"]["parcel_communes"] == [NEW_DEFAULT]
    assert got["01:1"]["parcel_communes"] is None  # its only parcel has no known commune
    assert got["01:2"]["name_fold"] == "tran thi binh" and got["01:2"]["province_code"] == "01"


def test_the_registry_side_has_each_citizens_2025_province_and_communes(inputs):
    _, registry = inputs
    assert registry.schema == idless.REGISTRY_SCHEMA
    got = {r["unique_id"]: r for r in registry.to_pylist()}
    assert got["001080000001"]["province_code"] == "01" and got["031080000007"]["province_code"] == "31"
    # recorded under the old split ward: both of its 2025 wards
    assert got["001070000008"]["commune_codes"] == [NEW_DEFAULT, NEW_OTHER]
    assert got["001090000004"]["commune_codes"] == [NEW_OTHER]


def test_rule_alone(inputs):
    left, registry = inputs
    links, candidates = idless.link_idless(left, registry)
    assert links.schema == people.LINK_SCHEMA and candidates.schema == idless.CANDIDATE_SCHEMA
    got = _rows(links)
    # a unique name and birth year in the holder's province; the namesake in Hải Phòng does not count
    assert got["01:1"] == {"left_id": "01:1", "right_id": "001080000001", "method": "unique_name",
                                "score": 1.0, "band": "accept", "runner_up_id": None, "runner_up_score": None}
    # two namesakes of the same year: review, both candidates listed
    assert got["01:2"]["band"] == "review" and got["01:2"]["score"] == 0.5
    assert (got["01:2"]["right_id"], got["01:2"]["runner_up_id"]) == ("001175000002", "001175000003")
    assert _rows(candidates)["01:2"]["candidates"] == ["001175000002", "001175000003"]
    # no birth year: the parcel's commune, through the pre-2025 code of a split ward
    assert (got["01:3"]["right_id"], got["01:3"]["band"]) == ("001090000004", "accept")
    # no birth year: the parcel's 2025 commune; the namesake elsewhere does not count
    assert (got["01:4"]["right_id"], got["01:4"]["band"]) == ("001185000005", "accept")
    # nobody of that name: no row (the model still runs for it)
    assert "01:6" not in got
    # no birth year, one namesake in the parcel's commune and one at the holder's address: the address decides
    assert (got["01:9"]["right_id"], got["01:9"]["band"]) == ("001175000002", "accept")
    assert set(_rows(candidates)) == {"01:2"}


def test_without_the_address_the_parcels_commune_alone_is_used(inputs):
    left, registry = inputs
    got = _rows(idless.link_idless(left, registry, address=False)[0])
    assert (got["01:9"]["right_id"], got["01:9"]["band"]) == ("001175000003", "accept")


def test_a_holder_with_an_id_is_not_touched(inputs):
    left, registry = inputs
    with_id = left.filter(pc.equal(left["unique_id"], "01:1"))
    with_id = with_id.set_column(with_id.schema.get_field_index("id_number"), "id_number",
                                 pa.array(["001080000001"]))
    links, candidates = idless.link_idless(with_id, registry)
    assert links.num_rows == 0 and candidates.num_rows == 0
    # and idless_inputs never takes it in
    assert "01:5" not in left["unique_id"].to_pylist()


def test_duplicate_records_of_one_citizen_count_once(inputs):
    left, registry = inputs
    dup = pa.table({"record_key": ["001175000002", "001175000003"], "survivor_key": ["001175000002"] * 2,
                    "cluster_size": pa.array([2, 2], pa.int64())})
    got = _rows(idless.link_idless(left, registry, duplicates=dup)[0])
    assert (got["01:2"]["right_id"], got["01:2"]["band"], got["01:2"]["score"]) == ("001175000002", "accept", 1.0)


def _model(rows: list[tuple[str, str | None, float | None, str]]) -> pa.Table:
    return pa.table({"left_id": [r[0] for r in rows], "right_id": [r[1] for r in rows],
                     "method": ["probabilistic"] * len(rows), "score": pa.array([r[2] for r in rows], pa.float64()),
                     "band": [r[3] for r in rows], "runner_up_id": pa.nulls(len(rows), pa.string()),
                     "runner_up_score": pa.nulls(len(rows), pa.float64())}, schema=people.LINK_SCHEMA)


def test_with_the_model_a_unique_name_is_accepted_only_where_the_model_ranks_it_first(inputs):
    left, registry = inputs
    model = _model([
        ("01:1", "001080000001", 0.9, "review"),  # agrees, above the review band: accepted, the model's score
        ("01:3", "001070000008", 0.97, "accept"),  # the model prefers another citizen
        ("01:4", "001185000005", 0.5, "reject"),  # agrees, below the review band
    ])
    links, candidates = idless.link_idless(left, registry, people.LinkBands(accept=0.95, review=0.8),
                                           model_links=model)
    got = _rows(links)
    assert (got["01:1"]["band"], got["01:1"]["score"], got["01:1"]["right_id"]) == ("accept", 0.9, "001080000001")
    assert (got["01:3"]["band"], got["01:3"]["right_id"]) == ("review", "001090000004")
    assert (got["01:3"]["runner_up_id"], got["01:3"]["runner_up_score"]) == ("001070000008", 0.97)
    assert got["01:4"]["band"] == "review"
    assert got["01:9"]["band"] == "review"  # no model row at all
    assert set(_rows(candidates)) == {"01:2", "01:3", "01:4", "01:9"}
    assert _rows(candidates)["01:3"]["candidates"] == ["001090000004"]


def test_combine_keeps_the_pass_accept_then_the_model_accept_then_the_pass_review():
    ours = _model([("a", "c1", 1.0, "accept"), ("b", "c2", 0.5, "review"), ("c", "c3", 0.5, "review")])
    ours = ours.set_column(2, "method", pa.array(["unique_name"] * 3))
    model = _model([("a", "c9", 0.99, "accept"), ("b", "c4", 0.99, "accept"), ("c", "c5", 0.85, "review"),
                    ("d", None, None, "reject")])
    got = _rows(idless.combine(ours, model))
    assert [(k, got[k]["right_id"], got[k]["method"]) for k in sorted(got)] == [
        ("a", "c1", "unique_name"), ("b", "c4", "probabilistic"), ("c", "c3", "unique_name"),
        ("d", None, "probabilistic")]


def test_a_registry_change_dirties_the_keys_of_the_holders_it_can_affect(inputs):
    left, registry = inputs
    assert idless.DIRTY_KEY_SCHEMA.names == ["name_fold", "birth_year", "province_code", "commune_code", "commune_name"]
    one = registry.filter(pc.equal(registry["unique_id"], "001080000001"))
    keys = idless.dirty_keys(one).to_pylist()
    assert {"name_fold": "nguyen van an", "birth_year": 1980, "province_code": "01", "commune_code": None,
            "commune_name": None} in keys
    assert {"name_fold": "nguyen van an", "birth_year": None, "province_code": None, "commune_code": BA_DINH,
            "commune_name": None} in keys
    assert idless.holders_to_relink(left, idless.dirty_keys(one)).to_pylist() == ["01:1"]
    # a new namesake moving into the ward that took part of the split old ward: the no-birth-year holder there
    mover = idless.registry_with_places(_citizens([("001091000099", "Lê Văn Cường", 1991, NEW_OTHER, NEW_OTHER, "Số 9 Giảng Võ")]))
    assert idless.holders_to_relink(left, idless.dirty_keys(mover)).to_pylist() == ["01:3"]
    # a change of a namesake at the holder's address (by commune name)
    at_address = registry.filter(pc.equal(registry["unique_id"], "001175000002"))
    assert idless.holders_to_relink(left, idless.dirty_keys(at_address)).to_pylist() == ["01:2", "01:9"]
