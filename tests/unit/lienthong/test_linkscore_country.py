"""`link_accuracy` on a country's truth (docs/sandbox.md, "A synthetic country"): every link type is scored
again for the records outside their entity's province and for those inside, and a citizen ID registered for
two people counts as the right person for a link of either (the staged registry keys records by ID)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.linkscore import link_accuracy


def _truth(tmp_path, country: bool = True):
    # (dataset, record_key, person, enterprise, cross_province, shared_id)
    rows = [
        ("citizen", "c1", 1, None, False, False), ("citizen", "c2", 2, None, False, False),
        ("citizen", "c3", 3, None, False, True), ("citizen", "c3", 4, None, False, True),  # one ID, two people
        ("enterprise", "e1", None, 100, False, False),
        ("representative", "e1#0", 1, None, False, False),   # in province, linked right
        ("representative", "e1#1", 2, None, True, False),    # another province's resident, linked wrong
        ("representative", "e1#2", 4, None, True, False),    # the second holder of ID c3, linked to c3
        ("land_holder", "79:1", 1, None, True, False),       # land in another province, linked right
        ("land_holder", "31:2", 2, None, False, False),      # in province, linked right
        ("land_holder", "79:3", None, 100, True, False),     # an enterprise's land elsewhere, linked right
    ]
    table = {
        "dataset": [r[0] for r in rows], "record_key": [r[1] for r in rows],
        "person_id": pa.array([r[2] for r in rows], pa.int64()),
        "enterprise_id": pa.array([r[3] for r in rows], pa.int64()),
    }
    if country:
        table |= {"cross_province": [r[4] for r in rows], "shared_id": [r[5] for r in rows]}
    pq.write_table(pa.table(table), tmp_path / "links.parquet")
    return tmp_path


TABLES = {
    "enterprise_representative_link": pa.table({
        "enterprise_code": ["e1"] * 3, "position": [0, 1, 2], "citizen_id": ["c1", "c1", "c3"],
        "band": ["accept"] * 3}),
    "parcel_holder_link": pa.table({
        "province_code": ["79", "31", "79"], "holder_id": [1, 2, 3], "holder_type": ["CA_NHAN", "CA_NHAN", "TO_CHUC"],
        "person_key": ["c1", "c2", None], "enterprise_code": [None, None, "e1"], "band": ["accept"] * 3}),
}
CITIZENS = pa.table({"citizen_id": ["c1", "c2", "c3"]})
ENTERPRISES = pa.table({"enterprise_code": ["e1"]})


def test_cross_province_links_are_scored_apart(tmp_path):
    acc = link_accuracy(TABLES, CITIZENS, ENTERPRISES, _truth(tmp_path))
    # representatives: e1#0 right (in province); e1#1 wrong and e1#2 right through the shared ID (outside)
    assert acc["representative_citizen"]["true_positives"] == 2 and acc["representative_citizen"]["accepted"] == 3
    cross, inside = acc["representative_citizen_cross_province"], acc["representative_citizen_in_province"]
    assert (cross["accepted"], cross["true_positives"], cross["precision"]) == (2, 1, 0.5)
    assert (inside["accepted"], inside["true_positives"], inside["precision"]) == (1, 1, 1.0)
    assert acc["holder_citizen_cross_province"]["records"] == 1 and acc["holder_citizen_cross_province"]["f1"] == 1.0
    assert acc["holder_citizen_in_province"]["records"] == 1
    assert acc["holder_enterprise_cross_province"]["true_positives"] == 1
    assert acc["holder_enterprise_in_province"]["records"] == 0
    assert acc["citizen_ids_registered_twice"] == 1


def test_a_province_truth_gets_no_country_entries(tmp_path):
    acc = link_accuracy(TABLES, CITIZENS, ENTERPRISES, _truth(tmp_path, country=False))
    assert not [k for k in acc if k.endswith(("_cross_province", "_in_province"))]
    assert "citizen_ids_registered_twice" not in acc
    # without the shared-ID column an ID is one person, the last its truth lists (here person 4, e1#2's)
    assert (acc["representative_citizen"]["accepted"], acc["representative_citizen"]["true_positives"]) == (3, 2)
