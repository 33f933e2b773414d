"""The one ingestion-run protocol (`connectors.base.ingest.run_job`) and the in-memory `IngestStore`: the
watermarks move only with the run's success mark, after the landings are committed; a failure anywhere before
leaves them where they were. No database, no server: landings go to a temporary folder."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from connectors.base.ingest import Incremental, run_ingestion, run_job
from connectors.base.state import IngestOutcome, IngestStore, MemoryIngestStore

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SOURCE = "fake_registry"
INCREMENTAL = Incremental(
    cursor_field="updated", key_field="id", initial_value="2000-01-01T00:00:00+00:00",
    parse=datetime.fromisoformat, render=lambda d: d.isoformat(),
)


class FakeJob:
    """A job over several scopes: `land` returns one outcome per scope (watermark_to from `moves_to`) or
    raises `fail`; `aborted` says whether the protocol called `abort`."""

    source = SOURCE
    initial_mark = None

    def __init__(self, moves_to: Mapping[str, str | None], fail: BaseException | None = None):
        self.scopes = tuple(moves_to)
        self.moves_to, self.fail = dict(moves_to), fail
        self.seen_marks: dict[str, str | None] = {}
        self.aborted = False

    def land(self, marks: Mapping[str, str | None]) -> list[IngestOutcome]:
        self.seen_marks = dict(marks)
        if self.fail is not None:
            raise self.fail
        return [IngestOutcome(s, 1, 1, marks[s], to, f"/raw/{s}") for s, to in self.moves_to.items()]

    def abort(self) -> None:
        self.aborted = True


def test_the_memory_store_is_an_ingest_store():
    assert isinstance(MemoryIngestStore(), IngestStore)


def test_a_successful_run_moves_every_scopes_watermark_and_records_success():
    store = MemoryIngestStore({(SOURCE, "a"): "1"})
    job = FakeJob({"a": "2", "b": "5"})
    outcomes = run_job(job, store, "r1")
    assert job.seen_marks == {"a": "1", "b": None}, "the job starts from the stored watermarks"
    assert [o.scope for o in outcomes] == ["a", "b"]
    assert (store.watermark(SOURCE, "a"), store.watermark(SOURCE, "b")) == ("2", "5")
    assert {k: v["status"] for k, v in store.runs.items()} == {("r1", SOURCE, "a"): "success",
                                                              ("r1", SOURCE, "b"): "success"}
    assert store.marks[(SOURCE, "a")].run_id == "r1"


def test_a_scope_whose_watermark_did_not_move_keeps_its_row_and_the_run_that_moved_it():
    store = MemoryIngestStore()
    run_job(FakeJob({"a": "2"}), store, "r1")
    run_job(FakeJob({"a": "2", "b": None}), store, "r2")  # nothing new in a, nothing ever in b
    assert store.marks[(SOURCE, "a")].run_id == "r1"
    assert store.watermark(SOURCE, "b") is None
    assert store.runs[("r2", SOURCE, "b")]["status"] == "success"


def test_watermark_does_not_advance_when_landing_fails():
    store = MemoryIngestStore({(SOURCE, "a"): "1"})
    job = FakeJob({"a": "2", "b": "5"}, fail=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        run_job(job, store, "r1")
    assert job.aborted, "the job's uncommitted landings are removed"
    assert (store.watermark(SOURCE, "a"), store.watermark(SOURCE, "b")) == ("1", None)
    assert {k[2]: (v["status"], v["error"]) for k, v in store.runs.items()} == {
        "a": ("failed", "OSError: disk full"), "b": ("failed", "OSError: disk full")}


def test_a_failure_while_marking_success_leaves_watermarks_and_run_as_they_were():
    store = MemoryIngestStore({(SOURCE, "a"): "1"})
    store.fail_on_success = ConnectionError("warehouse went away")
    with pytest.raises(ConnectionError, match="went away"):
        run_job(FakeJob({"a": "2", "b": "5"}), store, "r1")
    assert (store.watermark(SOURCE, "a"), store.watermark(SOURCE, "b")) == ("1", None)
    assert {k[2]: v["status"] for k, v in store.runs.items()} == {"a": "running", "b": "running"}


def test_run_ingestion_lands_pages_and_moves_the_watermark_to_the_newest_cursor(tmp_path):
    store = MemoryIngestStore()
    pages = [[{"id": "1", "updated": "2026-11-19T10:00:00+00:00"}, {"id": "2", "updated": "2026-11-19T12:00:00+00:00"}],
             [{"id": "3", "updated": "2026-11-19T11:00:00+00:00"}]]
    asked: list[str] = []

    def walk(since: str):
        asked.append(since)
        yield from pages

    result = run_ingestion(store=store, source=SOURCE, entity="things", run_id="r1", raw_dir=tmp_path,
                           incremental=INCREMENTAL, pages=walk, scope="s")
    assert asked == [INCREMENTAL.initial_value], "a scope without a watermark starts at the declared initial value"
    assert (result.rows, result.pages) == (3, 2)
    assert result.watermark_from == INCREMENTAL.initial_value
    assert result.watermark_to == store.watermark(SOURCE, "s") == "2026-11-19T12:00:00+00:00"
    assert store.runs[("r1", SOURCE, "s")]["landing_path"] == result.landing_path
    second = run_ingestion(store=store, source=SOURCE, entity="things", run_id="r2", raw_dir=tmp_path,
                           incremental=INCREMENTAL, pages=lambda since: iter(asked.append(since) or []), scope="s")
    assert asked[-1] == "2026-11-19T12:00:00+00:00" and second.rows == 0
    assert store.marks[(SOURCE, "s")].run_id == "r1", "an empty run leaves the watermark where it was"


def test_run_ingestion_that_fails_mid_walk_leaves_no_landing_and_no_watermark(tmp_path):
    store = MemoryIngestStore()

    def walk(since: str):
        yield [{"id": "1", "updated": "2026-11-19T10:00:00+00:00"}]
        raise RuntimeError("401 mid-walk")

    with pytest.raises(RuntimeError, match="401 mid-walk"):
        run_ingestion(store=store, source=SOURCE, entity="things", run_id="r1", raw_dir=tmp_path,
                      incremental=INCREMENTAL, pages=walk)
    assert store.watermark(SOURCE) is None
    assert store.runs[("r1", SOURCE, "")]["status"] == "failed"
    assert list(tmp_path.rglob("*.parquet")) == [], "an aborted landing leaves no parts behind"
