"""The business registry's offset walk and times, without a server: an in-memory list that changes under
the walk (records moving to the end, as the spec's updates do) stands in for the registry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base.paging import OffsetPaginator
from connectors.business.client import (
    INCREMENTAL,
    BusinessRegistryClient,
    ContinuousOffsetPaginator,
    parse_update_time,
    render_utc,
    tu_ngay,
)
from connectors.business.xml import EnterprisePage

BASE = datetime(2026, 11, 20, 8, 0, 0)


class ChangingList:
    """Records ordered by (NgayCapNhat, MaSoDN); after each answer `churn(self, offset)` may update some."""

    def __init__(self, n: int, churn=None):
        self.rows = [[f"02{i:08d}", BASE + timedelta(seconds=i // 3)] for i in range(n)]  # ties on time, too
        self.churn = churn
        self.now = BASE + timedelta(days=1)
        self.requests = 0

    def ordered(self):
        return sorted(self.rows, key=lambda r: (r[1], r[0]))

    def touch(self, code: str) -> None:
        self.now += timedelta(seconds=1)
        for row in self.rows:
            if row[0] == code:
                row[1] = self.now

    def page(self, offset: int, limit: int) -> EnterprisePage:
        self.requests += 1
        rows = self.ordered()
        records = [{"MaSoDN": c, "NgayCapNhat": t.strftime("%d/%m/%Y %H:%M:%S")} for c, t in rows[offset : offset + limit]]
        if self.churn:
            self.churn(self, offset, limit)
        return EnterprisePage(total=len(rows), offset=offset, limit=limit, records=records)


def walk_with(pager, source: ChangingList, limit: int) -> list[dict]:
    out = []
    while pager.has_next_page:
        params: dict = {}
        pager.update_request(params)
        page = source.page(params["offset"], limit)
        pager.update_state({"total": page.total}, page.records)
        if getattr(pager, "accepted", True):
            out.extend(page.records)
    return out


def spec_churn(src: ChangingList, offset: int, limit: int) -> None:
    """The sandbox's `change_during_walk`: after the first page, its first record and the second record
    after it move to the end."""
    if offset == 0 and src.requests == 1:
        rows = src.ordered()
        src.touch(rows[0][0])
        src.touch(rows[limit + 1][0])


def test_a_naive_offset_walk_skips_a_record_when_an_earlier_one_moves():
    src = ChangingList(50, spec_churn)
    codes = {r[0] for r in src.rows}
    seen = {r["MaSoDN"] for r in walk_with(OffsetPaginator(10), src, 10)}
    assert codes - seen, "the scenario must be one where a naive walk loses a record"


def test_the_continuous_walk_loses_nothing_when_an_earlier_record_moves():
    src = ChangingList(50, spec_churn)
    codes = {r[0] for r in src.rows}
    pager = ContinuousOffsetPaginator(10)
    seen = {r["MaSoDN"] for r in walk_with(pager, src, 10)}
    assert seen == codes
    assert pager.step_backs >= 1


@pytest.mark.parametrize("seed", range(40))
def test_the_continuous_walk_loses_nothing_under_random_updates(seed):
    rng = random.Random(seed)

    budget = [rng.randint(0, 60)]

    def churn(src: ChangingList, offset: int, limit: int) -> None:
        # anything may be updated between two answers: behind the walk, ahead of it, at the boundary;
        # a limited number in all, as a run is short next to the registry's rate of change
        for _ in range(min(budget[0], rng.choice([0, 0, 1, 2, 5, 12]))):
            budget[0] -= 1
            src.touch(rng.choice(src.rows)[0])

    src = ChangingList(rng.randint(1, 120), churn)
    codes = {r[0] for r in src.rows}
    limit = rng.randint(2, 15)
    assert {r["MaSoDN"] for r in walk_with(ContinuousOffsetPaginator(limit), src, limit)} == codes


def test_the_client_lands_each_version_once_and_every_record_at_least_once(monkeypatch):
    src = ChangingList(60, spec_churn)
    codes = {r[0] for r in src.rows}
    client = BusinessRegistryClient("http://registry.invalid", "key")
    monkeypatch.setattr(client, "fetch_page", lambda day, offset, limit, **_: src.page(offset, limit))
    items = [it for page in client.iter_enterprise_pages("2026-11-20T00:00:00Z", 10) for it in page]
    versions = [(it["MaSoDN"], it["NgayCapNhat"]) for it in items]
    assert len(versions) == len(set(versions)), "the overlap record and re-read pages are not landed twice"
    assert {code for code, _ in versions} == codes
    assert client.last_walk.repeats_skipped > 0 and client.last_walk.step_backs > 0


def test_pages_of_one_record_are_refused_since_the_overlap_would_stall_the_walk():
    with pytest.raises(ValueError, match="at least 2"):
        ContinuousOffsetPaginator(1)


def test_local_update_time_becomes_utc_and_the_watermark_is_rfc3339_utc():
    assert parse_update_time("20/11/2026 14:03:11") == datetime(2026, 11, 20, 7, 3, 11, tzinfo=UTC)
    assert render_utc(parse_update_time("20/11/2026 14:03:11")) == "2026-11-20T07:03:11Z"
    assert INCREMENTAL.parse(INCREMENTAL.initial_value) == datetime(1970, 1, 1, tzinfo=UTC)


def test_tu_ngay_is_the_local_date_of_the_watermark():
    # 18:30 UTC is already the next day in Vietnam (UTC+7)
    assert tu_ngay("2026-11-20T18:30:00Z") == "21/11/2026"
    assert tu_ngay("2026-11-20T07:03:11Z") == "20/11/2026"


def test_an_update_time_that_is_not_a_time_is_a_value_error():
    with pytest.raises(ValueError):
        parse_update_time("32/13/2026 25:00:00")
