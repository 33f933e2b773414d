"""Land-use purpose codes: '+'-joined parts checked against the catalogue, with its version."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from lienthong.standardize import land_use as land_use_module
from lienthong.standardize.land_use import CATALOGUE_PATH, land_use, load_catalogue


def test_current_codes_match_the_2024_catalogue():
    r = land_use(["ODT", "ODT+CLN", "LUC", "RSX"])
    assert r.values.to_pylist() == ["ODT", "ODT+CLN", "LUC", "RSX"]
    assert r.version.to_pylist() == ["08/2024"] * 4
    assert r.equivalent.to_pylist() == ["ODT", "ODT+CLN", "LUC", "RSX"]
    assert r.issue.to_pylist() == [None] * 4


def test_case_and_spaces_around_parts_are_normalised():
    r = land_use([" odt + cln ", "Ont"])
    assert r.values.to_pylist() == ["ODT+CLN", "ONT"]
    assert r.repaired.to_pylist() == [True, True]
    assert r.issue.to_pylist() == [None, None]


def test_a_2014_code_is_kept_with_its_version_and_2024_equivalent():
    r = land_use(["BHK", "ODT+BHK", "LUN", "DTS"])
    assert r.values.to_pylist() == ["BHK", "ODT+BHK", "LUN", "DTS"]
    assert r.version.to_pylist() == ["25/2014"] * 4
    assert r.equivalent.to_pylist() == ["HNK", "ODT+HNK", "LUK", None]
    assert r.issue.to_pylist() == ["land_use_code_outdated"] * 4


def test_unknown_parts_are_named():
    r = land_use(["XYZ", "ODT+XYZ+ABC", "ODT+", None])
    assert r.issue.to_pylist() == ["unknown_land_use_code:XYZ",
                                   "unknown_land_use_code:XYZ;unknown_land_use_code:ABC",
                                   "empty_land_use_part", None]
    assert r.version.to_pylist() == [None] * 4
    assert r.issue_counts() == {"unknown_land_use_code:XYZ": 2, "unknown_land_use_code:ABC": 1,
                                "empty_land_use_part": 1}


def test_catalogue_lists_each_code_once_with_a_known_version():
    doc = yaml.safe_load(CATALOGUE_PATH.read_text(encoding="utf-8"))
    codes = [e["code"] for e in doc["codes"]]
    assert len(codes) == len(set(codes))
    assert {e["version"] for e in doc["codes"]} == set(doc["versions"]) == {"08/2024", "25/2014"}
    cat = load_catalogue()
    assert {"LUC", "LUK", "HNK", "CLN", "RDD", "RPH", "RSX", "NTS", "ONT", "ODT", "TMD", "SKC", "DGT"} <= {
        c for c, v in cat.version.items() if v == "08/2024"}


def test_a_broken_catalogue_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('current: "08/2024"\nversions: {"08/2024": x, "25/2014": y}\ncodes:\n'
                    '  - {code: BHK, version: "25/2014", name: b, now: NOPE}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="not a 08/2024 code"):
        load_catalogue(path)


def test_each_distinct_value_is_checked_once(monkeypatch):
    calls = []
    real = land_use_module._one
    monkeypatch.setattr(land_use_module, "_one", lambda v, cat: calls.append(v) or real(v, cat))
    r = land_use(["ODT", "ODT+CLN", "BHK", None] * 5000)
    assert len(r.values) == 20_000
    assert sorted(calls) == ["BHK", "ODT", "ODT+CLN"]


def test_sandbox_parcel_codes_are_all_known(province):
    for code in ("31", "01"):
        uses = pq.read_table(province / "land" / code / "thua_dat.parquet", columns=["muc_dich_su_dung"])
        r = land_use(uses["muc_dich_su_dung"])
        assert r.values.to_pylist() == uses["muc_dich_su_dung"].to_pylist()
        for value, version, issue, eq in zip(r.values.to_pylist(), r.version.to_pylist(),
                                             r.issue.to_pylist(), r.equivalent.to_pylist(), strict=True):
            if "BHK" in value.split("+"):  # the generator's one 25/2014 code
                assert (version, issue, eq) == ("25/2014", "land_use_code_outdated", value.replace("BHK", "HNK"))
            else:
                assert (version, issue, eq) == ("08/2024", None, value)
