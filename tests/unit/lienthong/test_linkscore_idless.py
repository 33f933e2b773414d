"""`link_accuracy` reports the person land holders with no document number apart (`holder_citizen_idless`)
when given the staged land holders, and leaves every other entry as it was."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.linkscore import idless_holder_keys, link_accuracy


def _truth(tmp_path):
    rows = [
        # citizens: person 1..4 in the registry (c1..c4); person 5 has no staged record
        *[("citizen", f"c{i}", i, None) for i in range(1, 6)],
        ("enterprise", "e1", None, 100),
        ("representative", "e1#0", 1, None),
        # holders of province 01: 1 with an ID; 2..5 without; 6 an organisation
        ("land_holder", "01:1", 1, None), ("land_holder", "01:2", 2, None), ("land_holder", "01:3", 3, None),
        ("land_holder", "01:4", 4, None), ("land_holder", "01:5", 5, None), ("land_holder", "01:6", None, 100),
    ]
    pq.write_table(pa.table({
        "dataset": [r[0] for r in rows], "record_key": [r[1] for r in rows],
        "person_id": pa.array([r[2] for r in rows], pa.int64()),
        "enterprise_id": pa.array([r[3] for r in rows], pa.int64()),
    }), tmp_path / "links.parquet")
    return tmp_path


def _tables():
    reps = pa.table({"enterprise_code": ["e1"], "position": [0], "citizen_id": ["c1"], "band": ["accept"]})
    holders = pa.table({
        "province_code": ["01"] * 7,
        "holder_id": [1, 2, 3, 3, 4, 5, 6],
        "holder_type": ["CA_NHAN"] * 6 + ["TO_CHUC"],
        # 2: right; 3: wrong (and listed twice, for two certificates: counted once); 4: review; 5: not linkable
        "person_key": ["c1", "c2", "c4", "c4", None, None, None],
        "enterprise_code": [None] * 6 + ["e1"],
        "band": ["accept", "accept", "accept", "accept", "review", "reject", "accept"],
    })
    return {"enterprise_representative_link": reps, "parcel_holder_link": holders}


STAGED_HOLDERS = pa.table({
    "province_code": ["01"] * 6,
    "holder_id": [1, 2, 3, 4, 5, 6],
    "holder_type": ["CA_NHAN"] * 5 + ["TO_CHUC"],
    "document_number": ["001080000001", None, " ", None, None, None],  # blank counts as none; 6 is no person
})
CITIZENS = pa.table({"citizen_id": ["c1", "c2", "c3", "c4"]})
ENTERPRISES = pa.table({"enterprise_code": ["e1"]})


def test_the_idless_keys_are_the_person_holders_with_a_null_or_blank_number():
    assert idless_holder_keys(STAGED_HOLDERS) == {"01:2", "01:3", "01:4", "01:5"}


def test_the_idless_entry_scores_only_those_holders_and_changes_no_other_entry(tmp_path):
    truth = _truth(tmp_path)
    before = link_accuracy(_tables(), CITIZENS, ENTERPRISES, truth)
    after = link_accuracy(_tables(), CITIZENS, ENTERPRISES, truth, staged_holders=STAGED_HOLDERS)
    assert "holder_citizen_idless" not in before
    assert {k: v for k, v in after.items() if k != "holder_citizen_idless"} == before
    assert after["holder_citizen_idless"] == {
        "records": 4, "linkable": 3, "accepted": 2, "true_positives": 1, "false_positives": 1, "review": 1,
        "precision": 0.5, "recall": round(1 / 3, 6), "f1": 0.4,
    }
    # the same metrics as holder_citizen, which also holds the holder with an ID
    assert set(after["holder_citizen_idless"]) == set(after["holder_citizen"])
    assert after["holder_citizen"]["records"] == 5 and after["holder_citizen"]["true_positives"] == 2
