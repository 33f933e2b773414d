"""Text standardization: NFC, mojibake repair, case and spacing, the folding key, the name pipeline."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from standardize_truth import noise_rows, noisy_keys, representatives

from lienthong.standardize import text
from lienthong.standardize.text import (
    clean_case_and_space,
    fold_key,
    nfc,
    repair_mojibake,
    standardize_name,
)
from lienthong.text import legacy_encodings
from lienthong.text.legacy_encodings import mojibake

NFD = "NFD"


def test_nfc_composes_decomposed_text_and_says_so():
    r = nfc([unicodedata.normalize(NFD, "Trần Thị Bình"), "Trần Thị Bình", None])
    assert r.values.to_pylist() == ["Trần Thị Bình", "Trần Thị Bình", None]
    assert r.repaired.to_pylist() == [True, False, None]
    assert r.issue.to_pylist() == ["nfc_normalized", None, None]


def test_nfc_composes_windows_1258_mixed_form():
    # Windows-1258 writes a precomposed vowel with a separate combining tone: "ê" + U+0301.
    mixed = "Nguy\u00ea\u0303n"
    assert nfc([mixed]).values.to_pylist() == ["Nguyễn"]


@pytest.mark.parametrize(("encoding", "clean"), [
    ("tcvn3", "Công ty TNHH Hồng Bàng"), ("vni", "Công ty TNHH Hồng Bàng"),
    ("tcvn3", "Đặng Thùy Trâm"), ("vni", "Phạm Minh Đức"),
])
def test_repair_mojibake_restores_the_text_and_names_the_encoding(encoding, clean):
    r = repair_mojibake([mojibake(clean, encoding)])
    assert r.values.to_pylist() == [clean]
    assert r.repaired.to_pylist() == [True]
    assert r.issue.to_pylist() == [f"mojibake_{encoding}_repaired"]


def test_repair_mojibake_leaves_unicode_and_ascii_alone():
    values = ["Nguyễn Văn An", "Lê Hà", "Tran Van An", "Số 5 Hoàng Văn Thụ"]
    r = repair_mojibake(values)
    assert r.values.to_pylist() == values
    assert r.issue.null_count == len(values)


def test_capitals_become_title_case_vietnamese_letters_included():
    r = clean_case_and_space(["NGUYỄN VĂN AN", "ĐẶNG THÙY TRÂM", "H'HEN NIÊ", unicodedata.normalize(NFD, "ỨNG DŨNG")])
    assert r.values.to_pylist() == ["Nguyễn Văn An", "Đặng Thùy Trâm", "H'Hen Niê",
                                    unicodedata.normalize(NFD, "Ứng Dũng")]
    assert set(r.issue.to_pylist()) == {"capitals_title_cased"}


def test_mixed_case_and_lowercase_are_left_alone():
    values = ["Nguyễn Văn AN", "McDonald Trần", "nguyễn văn an"]
    r = clean_case_and_space(values)
    assert r.values.to_pylist() == values
    assert r.repaired.to_pylist() == [False, False, False]


def test_capitals_kept_where_the_caller_says_they_are_the_norm():
    r = clean_case_and_space(["CÔNG TY TNHH  HẢI AN"], title_case_capitals=False)
    assert r.values.to_pylist() == ["CÔNG TY TNHH HẢI AN"]
    assert r.issue.to_pylist() == ["whitespace_collapsed"]


def test_whitespace_of_every_kind_collapses_to_one_space():
    r = clean_case_and_space(["  Lê\tThị\u00a0\u00a0Hà\u200b ", "Lê Thị Hà"])
    assert r.values.to_pylist() == ["Lê Thị Hà", "Lê Thị Hà"]
    assert r.issue.to_pylist() == ["whitespace_collapsed", None]


def test_lookalike_eth_becomes_d_with_stroke():
    r = clean_case_and_space(["Ðặng Văn ðức"])
    assert r.values.to_pylist() == ["Đặng Văn đức"]
    assert r.issue.to_pylist() == ["lookalike_d_replaced"]


def test_fold_key_equates_old_and_new_tone_placement_and_unicode_forms():
    keys = fold_key(["Hoà", "Hòa", unicodedata.normalize(NFD, "Hòa"), "Thuỷ", "Thủy", "HOÀ"]).to_pylist()
    assert keys == ["hoa", "hoa", "hoa", "thuy", "thuy", "hoa"]


def test_fold_key_maps_d_with_stroke_and_its_lookalike_and_collapses_space():
    assert fold_key(["Đặng  Ðức", "đinh ðat", None]).to_pylist() == ["dang duc", "dinh dat", None]


def test_fold_key_is_ascii_for_vietnamese_text():
    key = fold_key(["Nguyễn Thị Ánh Tuyết Ưng Ơn Ỹ"]).to_pylist()[0]
    assert key == "nguyen thi anh tuyet ung on y"
    assert key.isascii()


def test_standardize_name_lists_every_repair_in_pipeline_order():
    r = standardize_name([unicodedata.normalize(NFD, "PHẠM  MINH ĐỨC"), mojibake("Lê Hoàng Dũng", "vni"),
                          "Nguyễn Văn An", None])
    assert r.values.to_pylist() == ["Phạm Minh Đức", "Lê Hoàng Dũng", "Nguyễn Văn An", None]
    assert r.issue.to_pylist() == ["nfc_normalized;whitespace_collapsed;capitals_title_cased",
                                   "mojibake_vni_repaired", None, None]
    assert r.repaired.to_pylist() == [True, True, False, None]
    assert r.issue_counts()["capitals_title_cased"] == 1


def test_standardize_name_accepts_chunked_and_dictionary_input():
    chunked = pa.chunked_array([["NGUYỄN VĂN AN"], ["NGUYỄN VĂN AN", None]])
    assert standardize_name(chunked).values.to_pylist() == ["Nguyễn Văn An", "Nguyễn Văn An", None]
    dictionary = pa.array(["NGUYỄN VĂN AN", "Lê Hà"]).dictionary_encode()
    assert standardize_name(dictionary).values.to_pylist() == ["Nguyễn Văn An", "Lê Hà"]


def test_python_logic_runs_once_per_distinct_value(monkeypatch):
    calls: list[str] = []
    real = legacy_encodings.repair_mojibake

    def counting(value: str):
        calls.append(value)
        return real(value)

    monkeypatch.setattr(legacy_encodings, "repair_mojibake", counting)
    names = ["Nguyễn Văn An", "TRẦN THỊ BÌNH", mojibake("Lê Hà Thu", "tcvn3"), None] * 2500
    r = standardize_name(names)
    assert len(r.values) == 10_000
    assert sorted(calls) == sorted({n for n in names if n is not None})

    calls.clear()
    fold_calls = []
    real_fold = text._fold_one
    monkeypatch.setattr(text, "_fold_one", lambda v: fold_calls.append(v) or real_fold(v))
    fold_key(names)
    assert len(fold_calls) == 3


# --- against the sandbox generator ---------------------------------------------------------------

NAME_FIELDS = r"hoVaTen|ho_ten|HoTen|NguoiDaiDien\[\d+\]\.HoTen"


@pytest.mark.parametrize(("dataset", "kind"), [
    ("citizen", "nfd"), ("land_holder", "nfd"), ("representative", "capitals"), ("land_holder", "capitals"),
])
def test_sandbox_name_noise_is_repaired_with_its_reason(noise, dataset, kind):
    rows = noise_rows(noise, dataset, kind, NAME_FIELDS)
    assert rows
    code = {"nfd": "nfc_normalized", "capitals": "capitals_title_cased"}[kind]
    noisy = standardize_name([r["noisy"] for r in rows])
    assert all(code in issue.split(";") for issue in noisy.issue.to_pylist())
    if kind == "nfd":
        # The original may carry an earlier noise (capitals, then NFD): compare cleaned with cleaned.
        assert noisy.values.to_pylist() == standardize_name([r["original"] for r in rows]).values.to_pylist()
    else:
        # Capitals are applied last: a name in proper case comes back exactly. A typo that doubled a
        # capital ('MMy') cannot (title case gives 'Mmy'), but it still matches on the folded key.
        assert fold_key(noisy.values).to_pylist() == fold_key([r["original"] for r in rows]).to_pylist()
        proper = [i for i, r in enumerate(rows) if all(w[:1].isupper() and w[1:] == w[1:].lower()
                                                       for w in r["original"].split())]
        assert len(proper) >= 0.9 * len(rows)
        assert [noisy.values[i].as_py() for i in proper] == [rows[i]["original"] for i in proper]


@pytest.mark.parametrize("kind", ["tcvn3", "vni", "nfd"])
def test_sandbox_enterprise_text_noise_is_repaired_with_its_reason(noise, kind):
    rows = noise_rows(noise, "enterprise", kind)
    assert rows
    if kind == "nfd":
        r = nfc([x["noisy"] for x in rows])
        code = "nfc_normalized"
    else:
        r = repair_mojibake([x["noisy"] for x in rows])
        code = f"mojibake_{kind}_repaired"
    assert r.values.to_pylist() == [x["original"] for x in rows]
    assert set(r.issue.to_pylist()) == {code}


def test_sandbox_clean_names_pass_unchanged(province, noise):
    citizens = pq.read_table(province / "population" / "citizens.parquet", columns=["soDinhDanh", "hoVaTen"])
    touched = noisy_keys(noise, "citizen", "hoVaTen")
    clean = [n for key, n in zip(citizens["soDinhDanh"].to_pylist(), citizens["hoVaTen"].to_pylist(), strict=True)
             if (key, "hoVaTen") not in touched]
    touched_reps = noisy_keys(noise, "representative", "HoTen")
    touched_ents = noisy_keys(noise, "enterprise")
    clean += [r["HoTen"] for r in representatives(province)
              if (r["key"], "HoTen") not in touched_reps and (r["enterprise"], f"{r['prefix']}.HoTen") not in touched_ents]
    r = standardize_name(clean)
    assert len(clean) > 900
    assert r.values.to_pylist() == clean
    assert r.issue.null_count == len(clean)
