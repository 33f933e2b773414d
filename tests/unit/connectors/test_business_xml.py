"""Parsing the business registry's XML (spec §2) without a server: shapes, text kept as sent, cut-short
bodies told apart from broken ones, and entity tricks refused."""

from __future__ import annotations

import codecs
import gc
import json

import pytest
from lxml import etree

from connectors.base.landing import canonical_json
from connectors.business import xml as xml_module
from connectors.business.xml import (
    TruncatedXmlError,
    UnsafeXmlError,
    XmlPageError,
    declares_nothing,
    parse_enterprise_page,
)

SPEC_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<DanhSachDoanhNghiep tongSo="15234" offset="0" limit="500">
  <DoanhNghiep>
    <MaSoDN>0201234567</MaSoDN>                      <!-- 10-digit enterprise code = tax code -->
    <TenDN>CÔNG TY TNHH THƯƠNG MẠI HỒNG BÀNG</TenDN>
    <TenTiengAnh>HONG BANG TRADING CO., LTD</TenTiengAnh>
    <LoaiHinh>TNHH_1TV</LoaiHinh>
    <NgayThanhLap>14/05/2019</NgayThanhLap>
    <TinhTrang>DANG_HOAT_DONG</TinhTrang>
    <VonDieuLe donVi="VND">5000000000</VonDieuLe>
    <TruSo>
      <DiaChi>Số 5 Hoàng Văn Thụ</DiaChi>
      <MaXa>11320</MaXa><MaHuyen>303</MaHuyen><MaTinh>31</MaTinh>
    </TruSo>
    <NganhNghe><Nganh ma="4711" chinh="true"/><Nganh ma="4632" chinh="false"/></NganhNghe>
    <NguoiDaiDien>
      <HoTen>Trần Thị Bình</HoTen>
      <LoaiGiayTo>CCCD</LoaiGiayTo>
      <SoGiayTo>031185004321</SoGiayTo>
      <NgaySinh>02/09/1985</NgaySinh>
      <ChucDanh>Giám đốc</ChucDanh>
    </NguoiDaiDien>
    <NgayCapNhat>20/11/2026 14:03:11</NgayCapNhat>
  </DoanhNghiep>
</DanhSachDoanhNghiep>
"""


def record(inner: str, total: int = 1) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><DanhSachDoanhNghiep tongSo="{total}" offset="0" limit="500">'
        f"<DoanhNghiep><MaSoDN>0200000001</MaSoDN>{inner}<NgayCapNhat>01/07/2025 08:00:00</NgayCapNhat></DoanhNghiep>"
        "</DanhSachDoanhNghiep>"
    ).encode()


def test_the_spec_example_parses_into_the_agency_names_with_text_as_sent():
    page = parse_enterprise_page(SPEC_EXAMPLE.encode())
    assert (page.total, page.offset, page.limit) == (15234, 0, 500)
    assert page.records == [
        {
            "MaSoDN": "0201234567",
            "TenDN": "CÔNG TY TNHH THƯƠNG MẠI HỒNG BÀNG",
            "TenTiengAnh": "HONG BANG TRADING CO., LTD",
            "LoaiHinh": "TNHH_1TV",
            "NgayThanhLap": "14/05/2019",
            "TinhTrang": "DANG_HOAT_DONG",
            "VonDieuLe": "5000000000",
            "VonDieuLe@donVi": "VND",
            "TruSo": {"DiaChi": "Số 5 Hoàng Văn Thụ", "MaXa": "11320", "MaHuyen": "303", "MaTinh": "31"},
            "NganhNghe": [{"ma": "4711", "chinh": "true"}, {"ma": "4632", "chinh": "false"}],
            "NguoiDaiDien": [
                {"HoTen": "Trần Thị Bình", "LoaiGiayTo": "CCCD", "SoGiayTo": "031185004321",
                 "NgaySinh": "02/09/1985", "ChucDanh": "Giám đốc"}
            ],
            "NgayCapNhat": "20/11/2026 14:03:11",
        }
    ]


def test_the_raw_payload_is_the_canonical_json_of_the_record():
    (item,) = parse_enterprise_page(SPEC_EXAMPLE.encode()).records
    payload = canonical_json(item)
    assert json.loads(payload) == item
    assert "CÔNG TY" in payload, "Vietnamese text is kept as characters, not escapes"


def test_several_representatives_are_a_list_in_document_order():
    reps = "".join(f"<NguoiDaiDien><HoTen>Người {i}</HoTen><ChucDanh>Thành viên</ChucDanh></NguoiDaiDien>" for i in range(3))
    (item,) = parse_enterprise_page(record(reps)).records
    assert [r["HoTen"] for r in item["NguoiDaiDien"]] == ["Người 0", "Người 1", "Người 2"]


def test_a_single_representative_and_a_single_trade_are_still_lists():
    (item,) = parse_enterprise_page(
        record('<NganhNghe><Nganh ma="4711" chinh="true"/></NganhNghe><NguoiDaiDien><HoTen>A</HoTen></NguoiDaiDien>')
    ).records
    assert item["NguoiDaiDien"] == [{"HoTen": "A"}]
    assert item["NganhNghe"] == [{"ma": "4711", "chinh": "true"}]


def test_a_post_2025_address_without_ma_huyen_has_no_ma_huyen_key():
    (item,) = parse_enterprise_page(record("<TruSo><DiaChi>Số 1</DiaChi><MaXa>11311</MaXa><MaTinh>31</MaTinh></TruSo>")).records
    assert item["TruSo"] == {"DiaChi": "Số 1", "MaXa": "11311", "MaTinh": "31"}
    assert "MaHuyen" not in item["TruSo"]


@pytest.mark.parametrize(
    "text",
    [
        "C«ng ty TNHH Th\u00a5¬ng m¹i",  # TCVN3 bytes read as Windows-1252
        "Coâng ty TNHH Thöông maïi",  # VNI bytes read as Windows-1252
        "Cong\u0302 ty",  # decomposed (NFD) text
        "  spaces kept  ",
    ],
    ids=["tcvn3", "vni", "nfd", "spaces"],
)
def test_legacy_and_decomposed_text_is_kept_exactly(text):
    body = record(f"<TenDN>{text}</TenDN><TruSo><DiaChi>{text}</DiaChi></TruSo>")
    (item,) = parse_enterprise_page(body).records
    assert item["TenDN"] == text and item["TruSo"]["DiaChi"] == text


def test_unknown_elements_and_attributes_are_kept():
    (item,) = parse_enterprise_page(
        record('<EmailLienHe loai="chinh">info@example.vn</EmailLienHe><ChiNhanh><Ma>001</Ma></ChiNhanh>'
               '<ChiNhanh><Ma>002</Ma></ChiNhanh><TruSo><DiaChi>X</DiaChi><MaXaMoi>99999</MaXaMoi></TruSo>')
    ).records
    assert item["EmailLienHe"] == "info@example.vn" and item["EmailLienHe@loai"] == "chinh"
    assert item["ChiNhanh"] == [{"Ma": "001"}, {"Ma": "002"}]
    assert item["TruSo"]["MaXaMoi"] == "99999"


def test_an_empty_element_is_an_empty_string_not_a_missing_key():
    (item,) = parse_enterprise_page(record("<TenTiengAnh/>")).records
    assert item["TenTiengAnh"] == ""


def test_a_default_namespace_does_not_change_the_names():
    body = SPEC_EXAMPLE.replace("<DanhSachDoanhNghiep ", '<DanhSachDoanhNghiep xmlns="urn:dkkd:v2" ').encode()
    (item,) = parse_enterprise_page(body).records
    assert item["MaSoDN"] == "0201234567" and item["TruSo"]["MaHuyen"] == "303"


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_a_document_cut_short_is_reported_as_truncated(cut):
    body = SPEC_EXAMPLE.encode()
    with pytest.raises(TruncatedXmlError, match="ends before it is complete"):
        parse_enterprise_page(body[: int(len(body) * cut)])


def test_a_document_cut_inside_a_multibyte_character_is_truncated():
    body = SPEC_EXAMPLE.encode()
    cut = body.index("Ô".encode()) + 1
    with pytest.raises(TruncatedXmlError):
        parse_enterprise_page(body[:cut])


def test_an_empty_body_is_truncated():
    with pytest.raises(TruncatedXmlError):
        parse_enterprise_page(b"")


def test_a_document_broken_in_the_middle_is_malformed_not_truncated():
    body = SPEC_EXAMPLE.replace("</TenDN>", "</TenDNx>").encode()
    with pytest.raises(XmlPageError, match="not well-formed") as info:
        parse_enterprise_page(body)
    assert not isinstance(info.value, TruncatedXmlError)


def test_an_error_document_is_not_taken_for_an_enterprise_list():
    with pytest.raises(XmlPageError, match="expected <DanhSachDoanhNghiep>, got <Loi>.*400"):
        parse_enterprise_page(b"<Loi><MaLoi>400</MaLoi><MoTa>tuNgay sai</MoTa></Loi>")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<DanhSachDoanhNghiep tongSo="1"><DoanhNghiep><TenDN>&lol9;</TenDN></DoanhNghiep></DanhSachDoanhNghiep>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<DanhSachDoanhNghiep tongSo="1"><DoanhNghiep><TenDN>&xxe;</TenDN></DoanhNghiep></DanhSachDoanhNghiep>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<DanhSachDoanhNghiep tongSo="0"/>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY], ids=["billion-laughs", "external", "parameter"])
def test_entity_declarations_are_refused_not_expanded_or_fetched(body):
    with pytest.raises(UnsafeXmlError, match="refused an XML document that declares entities"):
        parse_enterprise_page(body)


# ---- two parsers, one behaviour -------------------------------------------------------------------------
def test_only_a_document_without_any_doctype_in_an_ascii_compatible_encoding_takes_the_fast_parser():
    assert declares_nothing(SPEC_EXAMPLE.encode())
    assert declares_nothing(codecs.BOM_UTF8 + SPEC_EXAMPLE.encode()), "a UTF-8 byte order mark changes nothing"
    assert declares_nothing(b"<DanhSachDoanhNghiep/>"), "no XML declaration at all"
    assert not declares_nothing(BILLION_LAUGHS) and not declares_nothing(EXTERNAL_ENTITY)
    assert not declares_nothing(record("<!-- <!DOCTYPE x> -->")), "a DOCTYPE anywhere, even in a comment"
    assert not declares_nothing(SPEC_EXAMPLE.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    assert not declares_nothing(SPEC_EXAMPLE.replace("UTF-8", "UTF-16LE").encode("utf-16-le")), "no BOM, NULs"
    assert not declares_nothing(SPEC_EXAMPLE.replace("UTF-8", "EBCDIC-US").encode()), "another declared encoding"


SAME_RECORDS_BODIES = {
    "spec-example": SPEC_EXAMPLE.encode(),
    "doctype-in-a-comment": record("<!-- a comment that says <!DOCTYPE x> --><TenDN>A</TenDN>"),
    "attributes-namespaces-repeats": record(
        '<TenDN lang="vi">Công ty &amp; cộng sự</TenDN><X:Moi xmlns:X="urn:x" a="1">y</X:Moi><Moi>2</Moi>'
    ),
    "utf-16": SPEC_EXAMPLE.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
    "cdata-references-comments-pis": record(
        "<TenDN><![CDATA[A <b> & \\ \"q\"]]>&#x1EA0;&#7840;<!-- c -->B<?pi x?>C</TenDN>"
        "<DiaChi>\r\n tab\t end </DiaChi><Rong/><Rong2></Rong2>"
    ),
    "mixed-content-and-item-text": record(
        '<TruSo a:b="1" xmlns:a="urn:a">text<DiaChi>x</DiaChi>tail<MaTinh>31</MaTinh></TruSo>'
        '<NganhNghe><Nganh ma="1" chinh="true"> main </Nganh><Nganh ma="2"><ma>3</ma></Nganh></NganhNghe>'
        '<NganhNghe><Nganh ma="4"/><Nganh xmlns:x="urn:x" ma="5" x:chinh="true"/></NganhNghe>'
        '<Lap x="1">a</Lap><Lap x="2">b</Lap>'
    ),
    "default-namespace-latin1": (
        '<?xml version="1.0" encoding="ISO-8859-1"?><DanhSachDoanhNghiep xmlns="urn:dkkd" tongSo="1">'
        "<DoanhNghiep><MaSoDN>0200000001</MaSoDN><TenDN>C\u00d4NG TY \u00a7\u00b9I</TenDN></DoanhNghiep>"
        "</DanhSachDoanhNghiep>"
    ).encode("latin-1"),
}


@pytest.mark.parametrize("body", list(SAME_RECORDS_BODIES.values()), ids=list(SAME_RECORDS_BODIES))
def test_the_three_parsers_give_the_same_records(body, monkeypatch):
    """libxml2 (the usual path), the standard library's expat and defusedxml build the same records."""
    fast = parse_enterprise_page(body)
    monkeypatch.setattr(xml_module, "parse_xml", xml_module.parse_xml_strict)  # expat, or defusedxml
    strict = parse_enterprise_page(body)
    monkeypatch.setattr(xml_module, "declares_nothing", lambda data: False)  # everything through defusedxml
    hardened = parse_enterprise_page(body)
    for other in (strict, hardened):
        assert fast.records == other.records
        assert (fast.total, fast.offset, fast.limit) == (other.total, other.offset, other.limit)
    assert fast.records and fast.records[0]["MaSoDN"] in {"0201234567", "0200000001"}


def test_an_ordinary_page_is_read_by_libxml2_and_a_doctype_never_is():
    assert isinstance(xml_module.parse_xml(SPEC_EXAMPLE.encode()), etree._Element)
    assert not isinstance(xml_module.parse_xml(record("<!-- <!DOCTYPE x> --><TenDN>A</TenDN>")), etree._Element)


def test_list_members_keep_attributes_children_and_text():
    rec = parse_enterprise_page(SAME_RECORDS_BODIES["mixed-content-and-item-text"]).records[0]
    assert rec["NganhNghe"] == [
        {"ma": "1", "chinh": "true", "#text": " main "}, {"ma": ["2", "3"]}, {"ma": "4"}, {"ma": "5", "chinh": "true"},
    ]
    assert rec["TruSo"] == {"@b": "1", "DiaChi": "x", "MaTinh": "31"} and rec["Lap"] == ["a", "b"]
    assert rec["Lap@x"] == ["1", "2"]


def test_cdata_and_references_are_text():
    rec = parse_enterprise_page(SAME_RECORDS_BODIES["cdata-references-comments-pis"]).records[0]
    assert rec["TenDN"] == 'A <b> & \\ "q"\u1ea0\u1ea0BC'
    assert rec["DiaChi"] == "\n tab\t end " and rec["Rong"] == "" and rec["Rong2"] == ""


def test_a_prefix_without_a_namespace_is_malformed_although_libxml2_would_read_on():
    # libxml2 only warns about an undeclared prefix; expat refuses it, and the page must not be read with
    # "x:DoanhNghiep" taken for an unknown element (its records would be silently missed)
    body = b'<DanhSachDoanhNghiep tongSo="1"><x:DoanhNghiep><MaSoDN>0200000001</MaSoDN></x:DoanhNghiep></DanhSachDoanhNghiep>'
    with pytest.raises(XmlPageError, match="not well-formed"):
        parse_enterprise_page(body)


def test_an_undeclared_entity_is_malformed_on_the_fast_path_too():
    assert declares_nothing(record("<TenDN>&nbsp;</TenDN>"))
    with pytest.raises(XmlPageError, match="not well-formed"):
        parse_enterprise_page(record("<TenDN>&nbsp;</TenDN>"))


def test_a_record_nested_thousands_deep_is_malformed_not_an_internal_error():
    depth = 3000  # past libxml2's limit (read by expat then) and past Python's recursion limit
    body = record("<A>" * depth + "x" + "</A>" * depth)
    with pytest.raises(XmlPageError, match="nests elements too deeply"):
        parse_enterprise_page(body)
    value = parse_enterprise_page(record("<A>" * 50 + "x" + "</A>" * 50)).records[0]["A"]
    for _ in range(49):  # ordinary nesting is still read, all the way down
        value = value["A"]
    assert value == "x"


def test_cyclic_collection_is_back_on_after_a_page_even_a_broken_one():
    assert gc.isenabled()
    parse_enterprise_page(SPEC_EXAMPLE.encode())
    assert gc.isenabled()
    with pytest.raises(XmlPageError):
        parse_enterprise_page(b"<Loi/>")
    assert gc.isenabled()
    gc.disable()
    try:
        parse_enterprise_page(SPEC_EXAMPLE.encode())
        assert not gc.isenabled(), "a caller that had switched it off keeps it off"
    finally:
        gc.enable()
