"""TCVN3 (ABC) and VNI tables, mojibake and its repair, over real Vietnamese names and company names."""

from __future__ import annotations

import unicodedata

import pytest

from lienthong.text.legacy_encodings import (
    decode_tcvn3,
    decode_vni,
    encode_tcvn3,
    encode_vni,
    legacy_tables,
    mojibake,
    repair_mojibake,
)

NAMES = [
    "Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Dũng", "Phạm Minh Đức", "Hoàng Thị Hương", "Huỳnh Tấn Phát",
    "Phan Bội Châu", "Vũ Trọng Phụng", "Võ Nguyên Giáp", "Đặng Thùy Trâm", "Bùi Xuân Phái", "Đỗ Mười",
    "Hồ Xuân Hương", "Ngô Bảo Châu", "Dương Quỳnh Như", "Lý Thường Kiệt", "Trịnh Công Sơn", "Đinh Bộ Lĩnh",
    "Nguyễn Thị Minh Khai", "Tôn Đức Thắng", "Lương Thế Vinh", "Chu Văn An", "Nguyễn Thị Ánh Tuyết",
    "Đoàn Thị Điểm", "Phùng Khắc Khoan", "Nguyễn Ứng Dũng", "Lê Thị Ý Nhi", "Trương Vĩnh Ký",
]
COMPANIES = [
    "CÔNG TY TNHH THƯƠNG MẠI HỒNG BÀNG", "CÔNG TY CỔ PHẦN CẢNG HẢI PHÒNG", "DOANH NGHIỆP TƯ NHÂN ĐỒ SƠN",
    "CÔNG TY TNHH MỘT THÀNH VIÊN XÂY DỰNG ĐÔNG Á", "CÔNG TY CỔ PHẦN VẬN TẢI BIỂN VIỆT NAM",
    "CÔNG TY TNHH ĐẦU TƯ ÁNH DƯƠNG", "CÔNG TY HỢP DANH LUẬT SƯ ỨNG HÒA", "Công ty TNHH Thủy sản Cát Bà",
    "Số 5 Hoàng Văn Thụ", "Giám đốc", "Chủ tịch Hội đồng quản trị", "Ủy ban nhân dân phường Lạch Tray",
]
ALL = NAMES + COMPANIES

VOWELS = "aăâeêioôơuưy"
TONES = ("", "\u0300", "\u0309", "\u0303", "\u0301", "\u0323")
LETTERS = sorted({unicodedata.normalize("NFC", v + t) for v in VOWELS for t in TONES} | {"đ"})


def test_tables_cover_every_vietnamese_letter_in_both_cases():
    tables = legacy_tables()
    for letter in LETTERS:
        for ch in (letter, letter.upper()):
            if ch.isascii():
                continue
            assert ch in tables["tcvn3"], ch
            assert ch in tables["vni"], ch
    # Each lower-case letter has its own TCVN3 byte, and each letter its own VNI sequence.
    lower = [tables["tcvn3"][c] for c in LETTERS if not c.isascii()]
    assert len(set(lower)) == len(lower)
    assert len(set(tables["vni"].values())) == len(tables["vni"])


@pytest.mark.parametrize("text", ALL)
def test_vni_round_trips_exactly(text):
    assert decode_vni(encode_vni(text)) == text


@pytest.mark.parametrize("text", ALL)
def test_tcvn3_round_trips_up_to_the_case_it_cannot_store(text):
    # TCVN3 has no codes for capitals with a tone (the .VnTimeH font drew them from the lowercase code).
    assert decode_tcvn3(encode_tcvn3(text)).lower() == text.lower()
    assert decode_tcvn3(encode_tcvn3(text.lower())) == text.lower()


def test_known_mojibake_forms():
    assert mojibake("Công ty", "tcvn3") == "C«ng ty"
    assert mojibake("Công ty", "vni") == "Coâng ty"
    assert mojibake("Việt Nam", "vni") == "Vieät Nam"
    assert mojibake("Mường Khương", "tcvn3") == "M\xadêng Kh\xad¬ng"
    assert encode_tcvn3("Công") == b"C\xabng"


def test_nfd_input_encodes_like_nfc():
    text = "Nguyễn Thị Hương"
    assert encode_vni(unicodedata.normalize("NFD", text)) == encode_vni(text)
    assert encode_tcvn3(unicodedata.normalize("NFD", text)) == encode_tcvn3(text)


@pytest.mark.parametrize("encoding", ["tcvn3", "vni"])
@pytest.mark.parametrize("text", ALL)
def test_repair_mojibake_recovers_the_text_and_names_the_encoding(text, encoding):
    assert repair_mojibake(mojibake(text, encoding)) == (text, encoding)


@pytest.mark.parametrize("text", [*ALL, "Nguyen Van An", "CONG TY TNHH ABC", "", "Hoà", "Thuý", "Công"])
def test_repair_mojibake_leaves_clean_unicode_alone(text):
    assert repair_mojibake(text) == (text, None)


def test_unknown_characters_become_question_marks():
    assert encode_tcvn3("a€b") == b"a?b"
    assert encode_vni("a€b") == b"a?b"
