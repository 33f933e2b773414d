"""Connector base pieces that need no server: paginators, Retry-After, retry policy, raw landing."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from connectors.base.errors import SourceError, TransientSourceError
from connectors.base.http import parse_retry_after
from connectors.base.landing import RawLanding
from connectors.base.paging import CursorPaginator, OffsetPaginator
from connectors.base.retry import call_with_retry, wait_retry_after_or_backoff
from lienthong.paths import safe_run_id


def test_cursor_paginator_continues_past_an_empty_page_with_a_token():
    p = CursorPaginator()
    p.update_state({"items": [], "next_page_token": "abc"}, [])
    assert p.has_next_page
    params = {}
    p.update_request(params)
    assert params == {"page_token": "abc"}
    p.update_state({"items": [1], "next_page_token": None}, [1])
    assert not p.has_next_page


def test_offset_paginator_stops_at_total_or_short_page():
    p = OffsetPaginator(limit=2)
    p.update_state({"total": 3}, [1, 2])
    assert p.has_next_page and p.offset == 2
    p.update_state({"total": 3}, [3])
    assert not p.has_next_page


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after(None) is None


def test_retry_honours_retry_after_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientSourceError("429", retry_after=0.01)
        return "ok"

    assert call_with_retry(flaky, attempts=5, initial=0.01) == "ok"
    assert len(calls) == 3


def test_retry_gives_up_with_the_last_error():
    def always():
        raise TransientSourceError("503 forever", status=503, url="http://x/y")

    with pytest.raises(TransientSourceError, match="503 forever.*status 503.*url http://x/y"):
        call_with_retry(always, attempts=2, initial=0.01)


def test_non_transient_errors_are_not_retried():
    calls = []

    def bad():
        calls.append(1)
        raise SourceError("400")

    with pytest.raises(SourceError):
        call_with_retry(bad, attempts=5, initial=0.01)
    assert len(calls) == 1


def test_wait_uses_retry_after_capped_by_max_wait():
    class State:
        class outcome:  # noqa: N801
            @staticmethod
            def exception():
                return TransientSourceError("429", retry_after=120)

        attempt_number = 1

    assert wait_retry_after_or_backoff(max_wait=30)(State()) == 30


def test_landing_rerun_of_the_same_run_replaces_its_folder(tmp_path):
    for _ in range(2):
        landing = RawLanding(tmp_path, "src", "things", "manual__2026-11-22T10:00:00+00:00", ingest_date="2026-11-22")
        landing.write_page([{"k": "1", "u": "t", "x": 1}, {"k": "2", "u": "t"}], key_field="k", updated_field="u")
        path = landing.commit()
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 1 and path.name == "run=" + safe_run_id("manual__2026-11-22T10:00:00+00:00")
    rows = pq.read_table(files[0]).to_pylist()
    assert [r["_key"] for r in rows] == ["1", "2"]
    assert json.loads(rows[0]["payload"]) == {"k": "1", "u": "t", "x": 1}
    assert rows[0]["_record_hash"] != rows[1]["_record_hash"]


def test_aborted_landing_leaves_nothing(tmp_path):
    landing = RawLanding(tmp_path, "src", "things", "r1")
    landing.write_page([{"k": "1"}], key_field="k", updated_field="u")
    landing.abort()
    assert list(tmp_path.rglob("*.parquet")) == []


def test_landing_parts_written_in_the_background_hold_every_row_in_order_with_metadata(tmp_path):
    landing = RawLanding(tmp_path, "src", "things", "r1", flush_rows=3)
    landing.write_columns(keys=[1, 2, None], updated=["a", None, "c"], payloads=['{"a":1}', '{"a":2}', "{}"])
    landing.write_page([{"k": "x", "u": "t"}], key_field="k", updated_field="u", issues=[["k: bad"]])
    landing.write_columns(keys=[], updated=[], payloads=[])
    path = landing.commit()
    assert sorted(p.name for p in path.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    rows = pq.read_table(path).to_pylist()
    assert [r["_key"] for r in rows] == ["1", "2", None, "x"], "integer keys land as their text"
    assert [r["_page"] for r in rows] == [1, 1, 1, 2] and [r["_issues"] for r in rows] == [[], [], [], ["k: bad"]]
    assert {(r["_source"], r["_entity"], r["_run_id"], r["_ingested_at"]) for r in rows} == {
        ("src", "things", "r1", landing.ingested_at)
    }
    assert all(r["_record_hash"] == hashlib.sha256(r["payload"].encode()).hexdigest() for r in rows)


def test_a_part_that_cannot_be_written_fails_the_landing_and_leaves_nothing(tmp_path, monkeypatch):
    import connectors.base.landing as landing_module

    def disk_full(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(landing_module.pq, "write_table", disk_full)
    landing = RawLanding(tmp_path, "src", "things", "r1", flush_rows=1)
    landing.write_page([{"k": "1"}], key_field="k", updated_field="u")  # handed to the writer thread
    with pytest.raises(OSError, match="disk full"):
        landing.write_page([{"k": "2"}], key_field="k", updated_field="u")  # the writer's error surfaces here
    landing.abort()
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp-*"))
    assert not landing.final_dir.exists()


def _watch(schema=None):
    from datetime import datetime

    from connectors.base.schema import SchemaWatch

    return SchemaWatch(schema, "src", "id", "updated", lambda t: datetime.fromisoformat(t))


def test_schema_watch_flags_missing_key_and_unparseable_cursor_naming_record_and_field():
    issues = _watch().check_page([{"id": "7", "updated": "not a time"}, {"id": None, "updated": "2026-01-01T00:00:00+00:00"}], 3)
    assert issues[0] == ["record 7: field updated cannot be parsed: 'not a time'"]
    assert issues[1] == ["record #3.1: missing key field id"]


def test_schema_watch_reports_new_fields_once_and_fails_when_a_required_field_vanishes():
    from connectors.base.errors import SchemaDriftError
    from connectors.base.schema import SourceSchema

    schema = SourceSchema(frozenset({"id", "updated", "name"}), frozenset({"id", "updated", "name"}))
    watch = _watch(schema)
    watch.check_page([{"id": "1", "updated": None, "name": "a", "phone": "1"}, {"id": "2", "name": "b", "phone": "2"}], 1)
    assert watch.new_fields == {"phone": "record 1"}
    with pytest.raises(SchemaDriftError, match="required field 'name' is absent from all 2 records of page 2"):
        watch.check_page([{"id": "3", "updated": "x"}, {"id": "4", "updated": "y"}], 2)


def test_source_schema_from_the_citizen_contract_knows_the_registry_fields():
    from connectors.base.schema import SourceSchema
    from lienthong.contracts import contract

    schema = SourceSchema.from_contract(contract("citizen"))
    assert {"soDinhDanh", "hoVaTen", "noiThuongTru", "queQuan", "capNhatLuc"} <= schema.known_fields
    assert {"soDinhDanh", "hoVaTen", "capNhatLuc", "trangThai"} == schema.required_fields
