"""The land connector's pure logic: keyset positions and their watermark text, where a run starts, how the
watermark moves, how a fetched batch becomes columns. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectors.base.landing import record_hash
from connectors.land.extract import (
    SPEC_COLUMNS,
    Batch,
    Keyset,
    keyset_query,
    next_watermark,
    parse_ts,
    render_ts,
)
from connectors.land.render import Column

T = datetime(2026, 11, 20, 5, 0, 0, 123456, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_timestamps_render_as_fixed_width_rfc3339_utc_whatever_the_offset():
    hanoi = timezone(timedelta(hours=7))
    assert render_ts(datetime(2026, 11, 20, 12, 0, tzinfo=hanoi)) == "2026-11-20T05:00:00.000000Z"
    assert parse_ts("2026-11-20T12:00:00+07:00") == datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="without offset"):
        render_ts(datetime(2026, 11, 20, 5, 0))
    with pytest.raises(ValueError, match="without offset"):
        parse_ts("2026-11-20T05:00:00")


def test_keyset_watermark_text_round_trips_both_parts():
    mark = Keyset(T, 42)
    assert mark.encode() == '{"ts":"2026-11-20T05:00:00.123456Z","id":42}'
    assert Keyset.decode(mark.encode()) == mark
    assert Keyset.decode(Keyset(T).encode()) == Keyset(T, None)


@pytest.mark.parametrize("text", ["2026-11-20T05:00:00Z", "{}", '{"ts": "yesterday", "id": 1}', '{"ts": null}'])
def test_a_watermark_that_is_not_a_keyset_is_refused_with_its_text(text):
    with pytest.raises(ValueError, match="not a land registry watermark"):
        Keyset.decode(text)


def test_rewind_without_overlap_starts_strictly_after_the_watermark():
    assert Keyset(T, 42).rewind(timedelta(0)) == Keyset(T, 42)


def test_rewind_with_overlap_starts_that_much_earlier_inclusive():
    assert Keyset(T, 42).rewind(timedelta(minutes=15)) == Keyset(T - timedelta(minutes=15), None)


def test_next_watermark_is_the_last_row_landed():
    assert next_watermark(Keyset(T, 1), Keyset(T, 9), NOW) == Keyset(T, 9)
    assert next_watermark(None, Keyset(T, 9), NOW) == Keyset(T, 9)


def test_next_watermark_never_moves_back_after_an_overlap_reread():
    assert next_watermark(Keyset(T, 9), Keyset(T - timedelta(minutes=3), 100), NOW) == Keyset(T, 9)
    assert next_watermark(Keyset(T, 9), None, NOW) == Keyset(T, 9)
    assert next_watermark(None, None, NOW) is None


def test_next_watermark_is_held_at_the_source_clock_when_a_row_is_dated_in_the_future():
    future = Keyset(datetime(2099, 1, 1, tzinfo=UTC), 7)
    assert next_watermark(Keyset(T, 9), future, NOW) == Keyset(NOW, None)
    assert next_watermark(Keyset(NOW, None), future, NOW) == Keyset(NOW, None)


def test_an_inclusive_position_sorts_before_every_row_of_its_instant():
    assert Keyset(T, None).sort_key() < Keyset(T, -(2**63)).sort_key() < Keyset(T, 0).sort_key()


COLUMNS = [Column("id", "int8"), Column("ma_xa", "text"), Column("dien_tich", "numeric"),
           Column("cap_nhat_luc", "timestamptz"), Column("da_xoa", "bool")]


def test_a_batch_becomes_columns_with_its_tombstones_and_last_position():
    a, b, c = (render_ts(T + timedelta(microseconds=i)) for i in (0, 1, 1))
    rows = [("1", "00001", "1.50", a, "false"), ("2", None, "2", b, "true"), ("3", "0003", None, c, "true")]
    batch = Batch.from_rows("thua_dat", rows, COLUMNS)
    assert batch.keys.to_pylist() == ["1", "2", "3"], "keys are landed as their decimal text"
    assert batch.payloads.to_pylist()[1] == f'{{"id":2,"ma_xa":null,"dien_tich":2,"cap_nhat_luc":"{b}","da_xoa":true}}'
    assert batch.tombstones == 2 and len(batch) == 3
    assert batch.last == Keyset(T + timedelta(microseconds=1), 3), "the last row's fixed-format text read back exactly"
    assert batch.updated.to_pylist() == [a, b, c]
    assert batch.hashes == [record_hash(p) for p in batch.payloads.to_pylist()]


def test_keyset_query_parameters_follow_the_start_position():
    columns = [Column(c, "text") for c in SPEC_COLUMNS["thua_dat"]]
    assert keyset_query("thua_dat", None, columns)[1] == {}
    assert keyset_query("thua_dat", Keyset(T, 5), columns)[1] == {"ts": T, "id": 5}
    assert keyset_query("thua_dat", Keyset(T, None), columns)[1] == {"ts": T}, "an inclusive start has no id term"
    with pytest.raises(ValueError, match="cap_nhat_luc"):
        keyset_query("thua_dat", None, [Column("id", "int8"), Column("da_xoa", "bool")])
