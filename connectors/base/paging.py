"""Pagination as a small interface (after dlt's paginators and `RESTClient.paginate`): cursor, offset and
keyset are three small classes, and one loop, `paginate`, drives them for every connector.

A paginator sets the next request's parameters (`update_request`), reads what the answer says about the
next page (`update_state`) and answers `has_next_page`. `paginate` asks it for the request, has the
connector's `fetch` send it, hands the answer back to the paginator and yields the page, until the
paginator has no next page: the last page is never followed by one more request. It also guarantees the
walk ends: when a paginator's position after a page is the one it was asked from (a server echoing the
token it was sent, an offset or keyset that did not move), the same page would be asked for for ever, so
the walk stops with `PagingStalledError`, naming the source and the position.

The connector keeps what is its own inside `fetch` (auth, retry, sending the next request ahead, a FETCH
on a server-side cursor) and after the yield (deduplication, accounting): the loop itself is here only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from connectors.base.errors import SourceError


class PagingStalledError(SourceError):
    """A paginator asked to go on from where it already was: the walk would never end."""


class Paginator(ABC):
    has_next_page: bool = True

    @abstractmethod
    def update_request(self, params: dict[str, Any]) -> None:
        """Set the paging parameters of the next request."""

    @abstractmethod
    def update_state(self, page: Any, items: Any) -> None:
        """Read the page just received and decide whether there is another."""

    def position(self) -> Any:
        """Where the next request starts, compared by `paginate` before and after a page: the paging
        parameters `update_request` would set."""
        params: dict[str, Any] = {}
        self.update_request(params)
        return tuple(sorted(params.items()))

    def describe(self) -> str:
        """The position for an error message."""
        params: dict[str, Any] = {}
        self.update_request(params)
        return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the start"


@dataclass(frozen=True, slots=True)
class Page:
    """One answered page: its items (what `items` made of the answer), the request's parameters, the answer
    itself and its number in the walk (1 for the first)."""

    items: Any
    request: dict[str, Any]
    answer: Any
    number: int


def paginate(
    fetch: Callable[[dict[str, Any]], Any],
    paginator: Paginator,
    params: dict[str, Any] | None = None,
    *,
    source: str,
    items: Callable[[Any], Any] | None = None,
) -> Iterator[Page]:
    """Walk every page: `fetch(request)` gets the answer for one request (`params` plus the paginator's
    paging parameters), `items(answer)` its items (default: the answer itself). The paginator's state is
    updated before a page is yielded, so the caller may read it (e.g. whether the page was accepted).
    Raises PagingStalledError, naming `source` and the position, when a page leaves the paginator where it
    was (see the module docstring)."""
    number = 0
    while paginator.has_next_page:
        request = dict(params) if params else {}
        paginator.update_request(request)
        before = paginator.position()
        answer = fetch(request)
        page_items = answer if items is None else items(answer)
        paginator.update_state(answer, page_items)
        number += 1
        if paginator.has_next_page and paginator.position() == before:
            raise PagingStalledError(
                f"{source}: paging does not advance: page {number} leaves the walk where it was "
                f"({paginator.describe()}), so the same page would be asked for again and again"
            )
        yield Page(page_items, request, answer, number)


class CursorPaginator(Paginator):
    """An opaque next-page token (never parsed). Stops only when the token is null: an empty page with a
    token is not the end.

    Its position is the token and the page that came with it: a token that comes back unchanged stalls the
    walk only if the page is also the same (a stateless server echoing its token would answer the same page
    for ever), while a server whose token names a server-side walk and stays the same from page to page
    (scroll style; the spec does not forbid it) is still read to the end."""

    def __init__(self, param: str = "page_token", next_field: str = "next_page_token"):
        self.param, self.next_field = param, next_field
        self.cursor: str | None = None
        self._last_page: tuple[Any, ...] | None = None  # (count, first item, last item) of the last page

    def update_request(self, params: dict[str, Any]) -> None:
        if self.cursor is not None:
            params[self.param] = self.cursor
        else:
            params.pop(self.param, None)

    def update_state(self, page: Any, items: Any) -> None:
        self.cursor = page.get(self.next_field) if isinstance(page, dict) else None
        self.has_next_page = self.cursor is not None
        self._last_page = (len(items), items[0], items[-1]) if items else (0,)

    def position(self) -> Any:
        return (self.cursor, self._last_page)


def _total_field(page: Any) -> Any:
    return page.get("total") if isinstance(page, dict) else None


class OffsetPaginator(Paginator):
    """offset/limit paging. Ends when a page is short or the offset reaches the announced total (read from
    the answer by `total_of`; default: its "total" field; none announced: pages end on a short one)."""

    def __init__(
        self,
        limit: int,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_of: Callable[[Any], Any] | None = None,
    ):
        self.limit, self.offset_param, self.limit_param = limit, offset_param, limit_param
        self.total_of = total_of or _total_field
        self.offset = 0
        self.total: int | None = None

    def update_request(self, params: dict[str, Any]) -> None:
        params[self.offset_param] = self.offset
        params[self.limit_param] = self.limit

    def read_total(self, page: Any) -> int | None:
        """The total the answer announces (kept for the walk), or None."""
        total = self.total_of(page)
        if total is not None:
            self.total = int(total)
        return None if total is None else int(total)

    def update_state(self, page: Any, items: Any) -> None:
        self.read_total(page)
        self.offset += len(items)
        self.has_next_page = len(items) >= self.limit and (self.total is None or self.offset < self.total)


class KeysetPaginator(Paginator):
    """(timestamp, id) keyset: the next page starts strictly after the last row seen, so rows sharing a
    timestamp are never skipped. `items` need only a length and a last element (`items[-1]`)."""

    def __init__(
        self, limit: int, start: tuple[Any, Any] | None = None, key: Callable[[Any], tuple[Any, Any]] | None = None
    ):
        self.limit = limit
        self.after = start
        self.key = key  # a row -> its (timestamp, id); default: the first two fields, or "ts" and "id"

    def update_request(self, params: dict[str, Any]) -> None:
        params["after"] = self.after
        params["limit"] = self.limit

    def update_state(self, page: Any, items: Any) -> None:
        if len(items):
            last = items[-1]
            if self.key is not None:
                self.after = self.key(last)
            else:
                self.after = (last[0], last[1]) if isinstance(last, tuple | list) else (last["ts"], last["id"])
        self.has_next_page = len(items) >= self.limit
