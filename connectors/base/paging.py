"""Pagination as a small interface (after dlt's paginators): cursor, offset and keyset are three small
classes that one loop drives, not three copies of a loop.

A paginator sets the next request's parameters (`update_request`), reads what the response says about the
next page (`update_state`) and answers `has_next_page`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class Paginator(ABC):
    has_next_page: bool = True

    @abstractmethod
    def update_request(self, params: dict[str, Any]) -> None:
        """Set the paging parameters of the next request."""

    @abstractmethod
    def update_state(self, page: Any, items: list[Any]) -> None:
        """Read the page just received and decide whether there is another."""


class CursorPaginator(Paginator):
    """An opaque next-page token (never parsed). Stops only when the token is null: an empty page with a
    token is not the end."""

    def __init__(self, param: str = "page_token", next_field: str = "next_page_token"):
        self.param, self.next_field = param, next_field
        self.cursor: str | None = None

    def update_request(self, params: dict[str, Any]) -> None:
        if self.cursor is not None:
            params[self.param] = self.cursor
        else:
            params.pop(self.param, None)

    def update_state(self, page: Any, items: list[Any]) -> None:
        self.cursor = page.get(self.next_field) if isinstance(page, dict) else None
        self.has_next_page = self.cursor is not None


class OffsetPaginator(Paginator):
    """offset/limit paging. Ends when a page is short or the offset reaches the announced total."""

    def __init__(self, limit: int, offset_param: str = "offset", limit_param: str = "limit"):
        self.limit, self.offset_param, self.limit_param = limit, offset_param, limit_param
        self.offset = 0
        self.total: int | None = None

    def update_request(self, params: dict[str, Any]) -> None:
        params[self.offset_param] = self.offset
        params[self.limit_param] = self.limit

    def update_state(self, page: Any, items: list[Any]) -> None:
        total = page.get("total") if isinstance(page, dict) else None
        if total is not None:
            self.total = int(total)
        self.offset += len(items)
        self.has_next_page = len(items) >= self.limit and (self.total is None or self.offset < self.total)


class KeysetPaginator(Paginator):
    """(timestamp, id) keyset: the next page starts strictly after the last row seen, so rows sharing a
    timestamp are never skipped."""

    def __init__(
        self, limit: int, start: tuple[Any, Any] | None = None, key: Callable[[Any], tuple[Any, Any]] | None = None
    ):
        self.limit = limit
        self.after = start
        self.key = key  # a row -> its (timestamp, id); default: the first two fields, or "ts" and "id"

    def update_request(self, params: dict[str, Any]) -> None:
        params["after"] = self.after
        params["limit"] = self.limit

    def update_state(self, page: Any, items: list[Any]) -> None:
        if items:
            last = items[-1]
            if self.key is not None:
                self.after = self.key(last)
            else:
                self.after = (last[0], last[1]) if isinstance(last, tuple | list) else (last["ts"], last["id"])
        self.has_next_page = len(items) >= self.limit
