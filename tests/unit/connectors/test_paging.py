"""The one paging loop (`paginate`) and each paginator's edge cases, after dlt's paginator tests: in-memory
sources that count the requests they answer, no server."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from connectors.base.errors import SourceError
from connectors.base.paging import (
    CursorPaginator,
    KeysetPaginator,
    OffsetPaginator,
    PagingStalledError,
    paginate,
)
from connectors.business.client import ContinuousOffsetPaginator


class Recorder:
    """A fetch function over `answer(request)` that keeps every request it was asked."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> Any:
        self.requests.append(dict(request))
        return self.answer(request)


def walk(fetch, paginator, params=None, *, items=None, source="test_source") -> list[Any]:
    return [it for page in paginate(fetch, paginator, params, source=source, items=items) for it in page.items]


# --- cursor ----------------------------------------------------------------------------------------------
def token_server(pages: dict[str | None, dict[str, Any]]) -> Recorder:
    """Answers by the request's page_token (None: the first page)."""
    return Recorder(lambda request: pages[request.get("page_token")])


def test_cursor_an_empty_page_with_a_next_token_is_not_the_end():
    fetch = token_server({
        None: {"items": [], "next_page_token": "a"},
        "a": {"items": [1, 2], "next_page_token": "b"},
        "b": {"items": [], "next_page_token": "c"},
        "c": {"items": [3], "next_page_token": None},
    })
    assert walk(fetch, CursorPaginator(), {"page_size": 2}, items=lambda p: p["items"]) == [1, 2, 3]
    assert [r.get("page_token") for r in fetch.requests] == [None, "a", "b", "c"]
    assert all(r["page_size"] == 2 for r in fetch.requests), "the caller's own parameters go with every request"


def test_cursor_a_null_token_ends_the_walk_without_another_request():
    fetch = token_server({None: {"items": [1, 2], "next_page_token": None}})
    assert walk(fetch, CursorPaginator(), items=lambda p: p["items"]) == [1, 2]
    assert len(fetch.requests) == 1


def test_cursor_a_missing_token_field_ends_the_walk():
    fetch = token_server({None: {"items": [1]}})
    assert walk(fetch, CursorPaginator(), items=lambda p: p["items"]) == [1]
    assert len(fetch.requests) == 1


def test_cursor_the_first_request_carries_no_token_and_the_token_is_sent_as_given():
    p = CursorPaginator()
    params: dict[str, Any] = {"page_token": "stale"}
    p.update_request(params)
    assert "page_token" not in params
    p.update_state({"next_page_token": "b64+/=="}, [1])
    p.update_request(params)
    assert params == {"page_token": "b64+/=="}, "opaque: never parsed or re-encoded"


def test_cursor_a_server_echoing_its_token_with_the_same_page_stops_naming_source_and_token():
    fetch = token_server({
        None: {"items": [1], "next_page_token": "t"},
        "t": {"items": [2], "next_page_token": "t"},  # a stateless server: the same answer for ever
    })
    seen = []
    with pytest.raises(PagingStalledError, match=r"population_registry: paging does not advance: page 3 .*page_token='t'"):
        for page in paginate(fetch, CursorPaginator(), source="population_registry", items=lambda p: p["items"]):
            seen.extend(page.items)
    assert seen == [1, 2] and len(fetch.requests) == 3, "stopped at the first repeat, not after many"


def test_cursor_an_echoed_token_with_an_empty_page_stops():
    fetch = token_server({None: {"items": [], "next_page_token": "t"}, "t": {"items": [], "next_page_token": "t"}})
    with pytest.raises(PagingStalledError, match="page_token='t'"):
        walk(fetch, CursorPaginator(), items=lambda p: p["items"])
    assert len(fetch.requests) == 2


def test_cursor_a_scroll_style_token_that_stays_the_same_while_pages_change_is_read_to_the_end():
    rows = iter([[1, 2], [3, 4], [5]])

    def answer(request):
        items = next(rows)
        return {"items": items, "next_page_token": "scroll-1" if len(items) == 2 else None}

    fetch = Recorder(answer)
    assert walk(fetch, CursorPaginator(), items=lambda p: p["items"]) == [1, 2, 3, 4, 5]
    assert len(fetch.requests) == 3


def test_a_stalled_walk_is_a_source_error():
    assert issubclass(PagingStalledError, SourceError)


# --- offset ----------------------------------------------------------------------------------------------
def list_server(rows: list[Any], *, total: bool) -> Recorder:
    def answer(request):
        page = rows[request["offset"] : request["offset"] + request["limit"]]
        return {"items": page, "total": len(rows)} if total else {"items": page}

    return Recorder(answer)


def test_offset_without_a_total_ends_on_a_short_page():
    fetch = list_server(list(range(7)), total=False)
    assert walk(fetch, OffsetPaginator(limit=3), items=lambda p: p["items"]) == list(range(7))
    assert [r["offset"] for r in fetch.requests] == [0, 3, 6]


def test_offset_without_a_total_needs_the_empty_page_after_an_exact_multiple():
    fetch = list_server(list(range(6)), total=False)
    assert walk(fetch, OffsetPaginator(limit=3), items=lambda p: p["items"]) == list(range(6))
    assert [r["offset"] for r in fetch.requests] == [0, 3, 6], "without a total only an empty page says the end"


def test_offset_with_a_total_ends_at_the_total_even_when_every_page_is_full():
    fetch = list_server(list(range(6)), total=True)
    assert walk(fetch, OffsetPaginator(limit=3), items=lambda p: p["items"]) == list(range(6))
    assert [r["offset"] for r in fetch.requests] == [0, 3], "no request past the announced total"


def test_offset_a_short_page_ends_the_walk_even_below_the_total():
    fetch = Recorder(lambda request: {"items": [1], "total": 100})  # e.g. rows deleted during the walk
    assert walk(fetch, OffsetPaginator(limit=3), items=lambda p: p["items"]) == [1]
    assert len(fetch.requests) == 1


def test_offset_the_total_may_be_read_from_any_answer_shape():
    class Answer:
        def __init__(self, records, total):
            self.records, self.total = records, total

    rows = list(range(4))
    fetch = Recorder(lambda r: Answer(rows[r["offset"] : r["offset"] + r["limit"]], len(rows)))
    paginator = OffsetPaginator(limit=2, total_of=lambda answer: answer.total)
    assert walk(fetch, paginator, items=lambda a: a.records) == rows
    assert len(fetch.requests) == 2 and paginator.total == 4


class MovingList:
    """Records ordered by (update time, code); after the first answer, the first record is updated and so
    moves to the end of the list (the business registry's order), shifting every later record one place."""

    def __init__(self, n: int):
        base = datetime(2026, 11, 20, 8, 0)
        self.rows = [[base + timedelta(seconds=i), f"02{i:08d}"] for i in range(n)]
        self.now = base + timedelta(days=1)
        self.requests = 0

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        ordered = sorted(self.rows)
        page = ordered[request["offset"] : request["offset"] + request["limit"]]
        records = [{"MaSoDN": code, "NgayCapNhat": ts.strftime("%d/%m/%Y %H:%M:%S")} for ts, code in page]
        if self.requests == 1:
            ordered[0][0] = self.now
        return {"items": records, "total": len(self.rows)}


def test_offset_a_plain_walk_skips_a_record_when_an_earlier_one_moves():
    source = MovingList(10)
    seen = {r["MaSoDN"] for r in walk(source, OffsetPaginator(limit=4), items=lambda p: p["items"])}
    assert {code for _, code in source.rows} - seen, "the scenario is one where a plain offset walk loses a record"


def test_offset_the_continuous_walk_lands_every_record_at_least_once_when_an_earlier_one_moves():
    source = MovingList(10)
    pager = ContinuousOffsetPaginator(4)
    seen = set()
    for page in paginate(source, pager, source="business_registry", items=lambda p: p["items"]):
        if pager.accepted:  # the paginator has read the page when it is yielded
            seen.update(r["MaSoDN"] for r in page.items)
    assert seen == {code for _, code in source.rows}
    assert pager.step_backs >= 1


# --- keyset ----------------------------------------------------------------------------------------------
T = datetime(2026, 11, 20, 5, 0)


def keyset_table(rows: list[tuple[datetime, int]]) -> Recorder:
    """`WHERE (ts, id) > after ORDER BY ts, id LIMIT limit` over `rows`."""
    ordered = sorted(rows)
    return Recorder(lambda r: [row for row in ordered if r["after"] is None or row > r["after"]][: r["limit"]])


def test_keyset_rows_sharing_a_timestamp_across_pages_are_each_returned_once_ordered_by_id():
    rows = [(T, 1)] + [(T + timedelta(seconds=1), i) for i in (9, 3, 7, 5, 4)] + [(T + timedelta(seconds=2), 2)]
    fetch = keyset_table(rows)
    got = walk(fetch, KeysetPaginator(limit=2))
    assert got == sorted(rows), "every row once, ties on the timestamp in id order"
    tie = T + timedelta(seconds=1)
    assert [r["after"] for r in fetch.requests] == [None, (tie, 3), (tie, 5), (tie, 9)], "boundaries inside the tie"
    assert len(fetch.requests) == 4, "the last page is short: no request after it"


def test_keyset_starts_strictly_after_the_given_position():
    rows = [(T, i) for i in range(1, 6)]
    fetch = keyset_table(rows)
    assert walk(fetch, KeysetPaginator(limit=10, start=(T, 3))) == [(T, 4), (T, 5)]
    assert len(fetch.requests) == 1


def test_keyset_reads_the_position_with_a_key_function_and_needs_only_len_and_last():
    class Answer:  # like the land connector's Fetched: a length and the last row, nothing else
        def __init__(self, rows):
            self._rows = rows

        def __len__(self):
            return len(self._rows)

        def __getitem__(self, i):
            if i != -1:
                raise IndexError(i)
            return self._rows[-1]

    rows = [{"ts": "2026-11-20T05:00:00Z", "id": i} for i in range(5)]
    fetch = Recorder(lambda r: Answer([x for x in rows if r["after"] is None or (x["ts"], x["id"]) > r["after"]][: r["limit"]]))
    pages = [len(page.items) for page in paginate(fetch, KeysetPaginator(2, key=lambda x: (x["ts"], x["id"])), source="land")]
    assert pages == [2, 2, 1]


def test_keyset_a_source_that_ignores_the_position_stops_naming_it():
    fetch = Recorder(lambda r: [(T, 1), (T, 2)])  # answers the same full page whatever it is asked
    with pytest.raises(PagingStalledError, match=r"land_registry 31 thua_dat: paging does not advance: page 2"):
        walk(fetch, KeysetPaginator(limit=2), source="land_registry 31 thua_dat")
    assert len(fetch.requests) == 2


# --- the driver ------------------------------------------------------------------------------------------
class NeverMoves(OffsetPaginator):
    def update_state(self, page: Any, items: Any) -> None:
        self.has_next_page = True  # a paginator bug: always more, never further


def test_a_paginator_that_does_not_advance_raises_instead_of_looping():
    fetch = Recorder(lambda r: {"items": [1, 2]})
    with pytest.raises(PagingStalledError, match=r"orders: paging does not advance: page 1 .*offset=0, limit=2"):
        walk(fetch, NeverMoves(limit=2), source="orders", items=lambda p: p["items"])
    assert len(fetch.requests) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: (token_server({None: {"items": [1], "next_page_token": "a"}, "a": {"items": [2], "next_page_token": None}}),
                 CursorPaginator(), 2),
        lambda: (list_server(list(range(5)), total=True), OffsetPaginator(limit=2), 3),
        lambda: (list_server(list(range(4)), total=True), OffsetPaginator(limit=2), 2),
        lambda: (keyset_table([(T, i) for i in range(5)]), KeysetPaginator(limit=2), 3),
    ],
    ids=["cursor", "offset-short-last", "offset-total", "keyset"],
)
def test_the_driver_sends_no_request_after_the_last_page(make):
    fetch, paginator, pages = make()
    got = list(paginate(fetch, paginator, source="s", items=lambda p: p["items"] if isinstance(p, dict) else p))
    assert len(got) == pages == len(fetch.requests)
    assert [page.number for page in got] == list(range(1, pages + 1))


def test_the_driver_is_lazy_one_request_per_page_taken():
    fetch = list_server(list(range(10)), total=True)
    pages = paginate(fetch, OffsetPaginator(limit=2), source="s", items=lambda p: p["items"])
    assert fetch.requests == []
    next(pages)
    assert len(fetch.requests) == 1
    next(pages)
    assert len(fetch.requests) == 2


def test_a_fetch_error_reaches_the_caller_after_the_pages_before_it():
    def answer(request):
        if request["offset"] >= 2:
            raise SourceError("503 after retries", status=503)
        return {"items": [request["offset"], request["offset"] + 1]}

    got = []
    with pytest.raises(SourceError, match="503 after retries"):
        for page in paginate(Recorder(answer), OffsetPaginator(limit=2), source="s", items=lambda p: p["items"]):
            got.extend(page.items)
    assert got == [0, 1]


def test_the_population_walk_goes_through_the_driver_and_names_its_source_when_stalled(monkeypatch):
    from connectors.population.client import PopulationRegistryClient

    client = PopulationRegistryClient("http://registry.invalid", "id", "secret")
    answers = {None: {"items": [{"soDinhDanh": "1"}], "next_page_token": "x"},
               "x": {"items": [], "next_page_token": "x"}}
    monkeypatch.setattr(client, "_call", lambda method, path, params: answers[params.get("page_token")])
    with pytest.raises(PagingStalledError, match="population_registry: paging does not advance"):
        list(client.iter_citizen_pages("1970-01-01T00:00:00Z", 10))
