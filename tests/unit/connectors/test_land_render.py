"""Client-side rendering of land payloads (connectors.land.render): each kind of column, escaping, nulls,
non-finite numbers; the hashes taken from Arrow's buffer. No database: the integration tests compare the
rendering with PostgreSQL's own `row_to_json` on a real server."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from connectors.base.landing import record_hash, record_hashes
from connectors.land.render import Column, render_rows, select_list

COLUMNS = [Column("id", "int8"), Column("ho_ten", "text"), Column("ty_le", "numeric"), Column("ngay_cap", "date"),
           Column("cap_nhat_luc", "timestamptz"), Column("da_xoa", "bool"), Column("ghi chú", "varchar")]


def render(rows):
    return render_rows(COLUMNS, rows)[1].to_pylist()


def test_each_kind_is_written_as_json_in_the_tables_column_order():
    row = ("7", "Lê Thu Nhung", "50.00", '"1994-01-19"', "2023-11-21T05:39:12.000000Z", "false", "x")
    (text,) = render([row])
    assert text == ('{"id":7,"ho_ten":"Lê Thu Nhung","ty_le":50.00,"ngay_cap":"1994-01-19",'
                    '"cap_nhat_luc":"2023-11-21T05:39:12.000000Z","da_xoa":false,"ghi chú":"x"}')
    assert json.loads(text)["ty_le"] == 50.0


def test_nulls_of_every_kind_are_json_null():
    (text,) = render([("7", None, None, None, "2023-11-21T05:39:12.000000Z", None, None)])
    assert json.loads(text) == {"id": 7, "ho_ten": None, "ty_le": None, "ngay_cap": None,
                                "cap_nhat_luc": "2023-11-21T05:39:12.000000Z", "da_xoa": None, "ghi chú": None}


@pytest.mark.parametrize("value", ['Số "77"', "a\\b", "dòng 1\ndòng 2", "tab\there", "\x01\x1f", "\x7f/</"])
def test_strings_are_escaped_as_postgresql_escape_json_does(value):
    ts = "2023-11-21T05:39:12.000000Z"
    plain = ("1", "Nguyễn Văn A", "1", "null", ts, "true", "ok")
    texts = render([plain, ("2", value, "1", "null", ts, "true", "ok"), plain])
    assert json.loads(texts[1])["ho_ten"] == value
    assert json.loads(texts[0])["ho_ten"] == "Nguyễn Văn A", "the other rows of the column are unchanged"
    # escape_json: \" \\ \n \t as short escapes, other control characters as \u00xx, everything else as is
    expected = json.dumps(value, ensure_ascii=False)
    assert f'"ho_ten":{expected},' in texts[1]


def test_non_finite_numbers_are_quoted_as_row_to_json_writes_them():
    ts = "2023-11-21T05:39:12.000000Z"
    texts = render([("1", "a", v, "null", ts, "false", "b") for v in ("NaN", "Infinity", "-Infinity", "1e-7")])
    assert [json.loads(t)["ty_le"] for t in texts[:3]] == ["NaN", "Infinity", "-Infinity"]
    assert '"ty_le":1e-7,' in texts[3]


def test_each_column_type_has_its_kind():
    kinds = {c.name: c.kind for c in COLUMNS}
    assert kinds == {"id": "literal", "ho_ten": "string", "ty_le": "literal", "ngay_cap": "json",
                     "cap_nhat_luc": "string", "da_xoa": "literal", "ghi chú": "string"}
    assert Column("tags", "_text").kind == "json" and Column("trang_thai", "my_enum").kind == "json"
    pieces = repr(select_list(COLUMNS))
    assert pieces.count("to_json(") == 1 and pieces.count("SQL('::text')") == 3 and pieces.count("to_char(") == 1


def test_hashes_are_taken_from_the_arrow_buffer_like_record_hash():
    values = pa.array(["{}", '{"ho_ten":"Lê"}', "", '{"a":1}'])
    assert record_hashes(values) == [record_hash(v) for v in values.to_pylist()]
    sliced = values.slice(1, 2)
    assert record_hashes(sliced) == [record_hash(v) for v in sliced.to_pylist()]
    assert record_hashes(values.cast(pa.large_string())) == [record_hash(v) for v in values.to_pylist()]
    with pytest.raises(ValueError, match="null"):
        record_hashes(pa.array(["{}", None]))
