"""Reading ahead: the next page is fetched while the caller lands the current one.

Owns `read_ahead(pages, depth)`. Run one after the other, a connector's time per page is the source's
answer time plus our own work on the page (parsing, checks, hashing, Parquet): the source sits idle while
we work and we sit idle while it answers. Here a worker thread drives the page iterator (request, wait,
parse) and hands finished pages over through a queue of `depth` pages, so the two overlap. The worker
spends most of its time waiting on a socket, where the GIL is released, so this pays off even though both
threads run Python.

Guarantees the callers rely on:
- order and content are the iterator's own: the worker makes exactly the requests the walk would make one
  after the other (a page is asked for only after the previous answer arrived), only earlier;
- memory stays bounded: at most `depth` pages wait in the queue, plus the one the worker is building;
- an exception in the walk reaches the caller, as the same exception object, at the page where it
  happened (the pages before it are delivered first);
- when the caller stops early (its own error, a closed generator), the worker finishes the page in hand,
  closes the iterator in its own thread (so `finally` blocks and context managers inside the walk run)
  and is joined before `read_ahead` returns: nothing keeps using a connection after the caller moved on.

Written by hand (about 40 lines): the standard library has no bounded, closeable, exception-forwarding
prefetch, and the small PyPI packages that offer one (e.g. prefetch_generator) neither close the source
iterator in its own thread nor stop a blocked producer when the consumer goes away.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def read_ahead(pages: Iterable[T], depth: int = 1, *, name: str = "read-ahead") -> Iterator[T]:
    """Iterate `pages` with up to `depth` pages fetched ahead by a worker thread (see the module docstring)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        source = iter(pages)
        try:
            for page in source:
                if not put(page):
                    return
            put(_DONE)
        except BaseException as exc:  # forwarded to the caller, who decides
            put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
