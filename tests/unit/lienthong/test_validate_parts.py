"""Validation in parts (`quality.check_part` per part, `quality.validate(parts=...)` combining) gives what
validating the same staged version whole gives, on a crafted version where every kind of outcome occurs: a
critical row-level rule failing beyond its tolerance, a warning rule failing (flagged rows), a duplicated
key (a dataset-level rule, with one copy unchanged), and unchanged rows whose earlier failures still count."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from lienthong import quality, zones
from lienthong.contracts import contract

WARNING = "personal_id_matches_birth"
SEX = "sex:invalidValues:validValues"


def _staged(tmp_path) -> str:
    rows = []
    for i in range(60):
        changed = i >= 20
        cid = f"0012030{i:05d}"  # century 20, male, born 2003
        birth = dt.date(2003, 5, 14) if i % 7 else dt.date(1990, 5, 14)  # every 7th: ID does not match birth
        sex = "NAM" if i % 9 else "XX"  # every 9th: not a valid value (critical)
        rows.append({"citizen_id": cid, "full_name": f"Người {i}", "birth_date": birth, "sex": sex,
                     "status": "CON_SONG", "source_updated_at": dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
                     "_merge_key": cid, "_staged_version": 1 if changed else 0,
                     "_failed_rules": [WARNING] if not changed and birth.year != 2003 else []})
    dup = dict(rows[3], _merge_key="dup-of-3", _staged_version=1, _failed_rules=[])  # the key twice, once changed
    rows.append(dup)
    path = tmp_path / "staged" / "citizen"
    zones.create(path, pa.Table.from_pylist(rows), run_id="t")
    return zones.ref(path, zones.version(path) or 0)


def _sorted(by_rule: dict) -> dict:
    return {k: sorted(json.dumps(v, sort_keys=True, default=str) for v in vs) for k, vs in by_rule.items()}


@pytest.mark.parametrize("where", [
    {"a": ["hash(_merge_key) % 3 = 0"], "b": ["hash(_merge_key) % 3 = 1", "hash(_merge_key) % 3 = 2"]},
    {"all": ["true"]},
])
def test_parts_combine_to_the_whole_validation(tmp_path, where):
    c = contract("citizen")
    ref = _staged(tmp_path)
    kw = {"run_id": "r1", "since_version": 0, "rows_in": 61, "store": False}
    whole = quality.validate(c, ref, **kw)
    parts = [quality.check_part(c, ref, run_id="r1", part=p, where=w, since_version=0, rows_in=61)
             for p, w in where.items()]
    combined = quality.validate(c, ref, parts=parts, **kw)

    # the crafted failures are all there
    assert whole.rows_changed == 41 and not whole.gate_passed
    assert set(whole.failed_merge_keys) == {SEX, "citizen_id:duplicateValues"}
    assert sorted(whole.failed_merge_keys["citizen_id:duplicateValues"]) == ["001203000003", "dup-of-3"]
    assert whole.flagged[WARNING] and all(k >= "001203000020" or k == "dup-of-3" for k in whole.flagged[WARNING])
    warning = next(o for o in whole.outcomes if o.rule == WARNING)
    assert warning.unexpected_staged == len(whole.flagged[WARNING]) + 3  # the unchanged rows 0, 7, 14 still count

    assert sum(p.rows_changed for p in parts) == 41 and combined.parts == len(parts)
    assert combined.outcomes == whole.outcomes
    assert (combined.gate_passed, combined.rows_changed) == (whole.gate_passed, whole.rows_changed)
    for attr in ("failed_merge_keys", "failed_keys", "flagged"):
        assert _sorted(getattr(combined, attr)) == _sorted(getattr(whole, attr)), attr
    # positions: in the parts' batches one after the other, then the batch of rows sharing a value
    assert {k: len(v) for k, v in combined.failed_rows.items()} == {k: len(v) for k, v in whole.failed_rows.items()}
    assert max(combined.failed_rows[SEX]) < 41 <= min(combined.failed_rows["citizen_id:duplicateValues"])


def test_a_part_writes_its_own_result_and_data_docs_page(tmp_path):
    c = contract("citizen")
    ref = _staged(tmp_path)
    reports = tmp_path / "reports"
    part = quality.check_part(c, ref, run_id="r1", part="79", where=["hash(_merge_key) % 2 = 0", "hash(_merge_key) % 2 = 1"],
                              since_version=0, rows_in=61, reports_dir=reports)
    assert len(part.result_paths) == 2 and part.rows_changed == 41
    body = json.loads(open(part.result_paths[0]).read())
    assert body["part"] == "79" and "great_expectations" in body and "gate" not in body
    pages = sorted(p.name for p in (reports / "data_docs" / "validations").rglob("*.html"))
    assert pages == ["staged_citizen.79.0-citizen.79.0.html", "staged_citizen.79.1-citizen.79.1.html"], pages
    # a round trip through the work folder's JSON
    assert quality.PartChecks.from_dict(json.loads(json.dumps(part.as_dict()))) == part
