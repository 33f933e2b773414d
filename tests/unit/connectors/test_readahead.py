"""connectors.base.readahead: pages fetched ahead in a worker thread, in order, bounded, errors forwarded,
the source closed in its own thread when the caller stops."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.base.readahead import read_ahead


def test_pages_arrive_in_order_and_complete():
    assert list(read_ahead(iter(range(1000)), depth=2)) == list(range(1000))
    assert list(read_ahead([])) == []


def test_the_walk_runs_in_another_thread_at_most_depth_pages_ahead():
    produced: list[int] = []
    threads: set[str] = set()

    def pages():
        for i in range(10):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    it = read_ahead(pages(), depth=2, name="ahead-test")
    assert next(it) == 0
    time.sleep(0.3)  # let the worker run as far as it may
    # the caller holds page 0; the queue holds 2; the worker has built one more and waits to hand it over
    assert len(produced) <= 1 + 2 + 1
    assert list(it) == list(range(1, 10))
    assert threads == {"ahead-test"}


def test_an_error_in_the_walk_reaches_the_caller_after_the_pages_before_it():
    class Boom(Exception):
        pass

    def pages():
        yield 1
        yield 2
        raise Boom("page 3 failed")

    got = []
    with pytest.raises(Boom, match="page 3 failed"):
        for page in read_ahead(pages()):
            got.append(page)
    assert got == [1, 2]


def test_a_caller_that_stops_early_closes_the_walk_in_the_walks_thread_and_waits_for_it():
    events: list[tuple[str, str]] = []

    def pages():
        try:
            yield from range(1_000_000)
        finally:
            events.append(("closed", threading.current_thread().name))

    it = read_ahead(pages(), name="walker")
    for page in it:
        if page == 3:
            break
    it.close()  # what a for loop's caller does when it raises or returns
    assert events == [("closed", "walker")], "the source's finally ran, in its own thread, before close returned"
    assert not any(t.name == "walker" for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        list(read_ahead([1], depth=0))
