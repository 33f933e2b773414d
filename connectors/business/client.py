"""Client for the business registry (spec §2): API-key auth, XML pages, an offset walk that cannot skip.

Owns: the request for one page (`GET /dkkd/v2/doanh-nghiep?tuNgay=dd/mm/yyyy&offset=&limit=`, header
`X-API-Key`, timeouts and retry from `connectors.base.http`), the mapping of the registry's faults onto
retryable / not retryable errors, the time handling of `NgayCapNhat`, and the walk below.

Times. `NgayCapNhat` is local Asia/Ho_Chi_Minh wall-clock time without an offset. The incremental cursor
converts it to UTC (`INCREMENTAL.parse`), the watermark is stored as RFC 3339 UTC (`INCREMENTAL.render`),
and a request's `tuNgay` is the watermark's *local* date: the filter has day granularity and is inclusive,
so the records of the watermark's day come again and are deduplicated downstream.

Why a plain offset walk is not enough. The list is ordered by k = (NgayCapNhat, MaSoDN). A record updated
during the walk gets a new NgayCapNhat and moves to the end; every record after its old place shifts one
place left, so the record that was first on the next page slides onto the page already read and a naive
walker never sees it (and sees the moved one twice).

The walk (`ContinuousOffsetPaginator`), and why it cannot skip:

1. Overlap. After a page that started at offset o and held n records, the next request starts at
   o + n - 1, the place of the page's last record P, not at o + n.
2. Continuity check. A page is accepted only if it starts at offset 0, or it contains P (same MaSoDN and
   NgayCapNhat), or it contains a record whose key is <= c, the largest key of the accepted pages.
   Because a page is a contiguous slice of the ordered list as it was when the server answered, an
   accepted page holds every record whose key then lay in (c, largest key of this page].
3. Step back. A page that fails the check (records before it moved away, so it starts past c) is not
   used: the walk asks again from o - 1, o - 2, o - 4, ... (at worst offset 0, which always passes), i.e.
   log2(shift) extra requests for a shift of `shift` places. A registry changing faster than it can be
   read would keep this going, so the client gives up with a SourceError after 20 + 2 x (pages) step-backs.
4. End. The walk ends after an accepted page that is short (and reaches `tongSo` when announced).

Claim: every record present when the walk starts is returned at least once. Assumed: the server answers
each page from one state of the list, and its clock does not run backwards, so a record's key never
decreases (an update sets NgayCapNhat to the present, and MaSoDN does not change). Take the first accepted
page i whose largest key c_i is >= the record's key at the time of that answer. If i is the first page,
the record is in it (the page starts at the beginning of the list). Otherwise the record's key was > c_(i-1)
before, so it is still > c_(i-1) and <= c_i, and by (2) the page holds it. If no such page exists before
the last one, the last page holds it, since by (4) nothing in that answer lies after it. Each accepted
page adds at least one new place (pages hold >= 2 records), so the walk ends; (3) is bounded per page.

Sending ahead. A page's body is parsed while the next page is being answered: as soon as a full page's
body is in, the request for offset o + n - 1 (where an accepted full page sends the walk) goes out on a
second thread (sent by that thread itself when the walk is already waiting for the body, else by the walk
when it takes the body), and the walk uses that answer if the page is accepted (almost always). If the walk goes
elsewhere (a step back, the end) the early answer is waited out and dropped, before the next request is
sent, so requests still go out one at a time in walk order and each is sent after the previous answer
arrived: the claim above holds as is. The server sees the same requests, one parse time sooner each.

Deduplication inside one run is by version (MaSoDN, NgayCapNhat): the overlap record, pages asked again
after a step back, and a server repeating an item across pages are landed once per version; a record that
changed during the walk is landed once per version it was seen in. The seen versions are kept as 8-byte
digests (about 60 bytes a record); the records themselves are yielded page by page and never held.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import requests

from connectors.base.auth import ApiKeyAuth
from connectors.base.errors import AuthError, SourceError, TransientSourceError
from connectors.base.http import Cert, HttpClient, TimeoutValue
from connectors.base.ingest import Incremental
from connectors.base.landing import canonical_json
from connectors.base.paging import OffsetPaginator, Page, paginate
from connectors.business.xml import EnterprisePage, TruncatedXmlError, XmlPageError, parse_enterprise_page

log = logging.getLogger(__name__)

SOURCE = "business_registry"
ENTITY = "enterprises"
ENTERPRISES_PATH = "/dkkd/v2/doanh-nghiep"
MAX_LIMIT = 500
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
LOCAL_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M")
TU_NGAY_FORMAT = "%d/%m/%Y"

OrderKey = tuple[datetime, str]


_LOCAL_RE = re.compile(r"(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2})(?::(\d{2}))?")


@lru_cache(maxsize=65536)
def parse_update_time(text: str) -> datetime:
    """`NgayCapNhat` (local `dd/mm/yyyy HH:MM:SS`) or an RFC 3339 time (the stored watermark) -> UTC.
    Called several times per record (walk order, watermark, schema check): a regex instead of strptime and
    a cache of recent values (update times repeat within a walk) keep it off the profile."""
    value = text.strip()
    m = _LOCAL_RE.fullmatch(value)
    if m:
        d, mo, y, h, mi, sec = m.groups()
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0), tzinfo=LOCAL_TZ).astimezone(UTC)
    for fmt in LOCAL_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=LOCAL_TZ).astimezone(UTC)
        except ValueError:
            pass
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    # an ISO time without an offset is read as the registry's local time, like NgayCapNhat
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=LOCAL_TZ)).astimezone(UTC)


def render_utc(value: datetime) -> str:
    """RFC 3339 in UTC, e.g. `2026-11-20T07:03:11Z` (the stored watermark)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def tu_ngay(watermark: str) -> str:
    """The `tuNgay` of a walk from `watermark`: its local date (day granularity, inclusive)."""
    return parse_update_time(watermark).astimezone(LOCAL_TZ).strftime(TU_NGAY_FORMAT)


INCREMENTAL = Incremental(
    cursor_field="NgayCapNhat",
    key_field="MaSoDN",
    initial_value="1970-01-01T00:00:00Z",
    parse=parse_update_time,
    render=render_utc,
)


def order_key(record: dict[str, Any]) -> OrderKey | None:
    """The registry's sort key (NgayCapNhat as a time, MaSoDN); None when NgayCapNhat is unreadable."""
    stamp, code = record.get("NgayCapNhat"), record.get("MaSoDN")
    if not isinstance(stamp, str) or not isinstance(code, str):
        return None
    try:
        return parse_update_time(stamp), code
    except ValueError:
        return None


def version_digest(record: dict[str, Any]) -> bytes:
    """8 bytes naming one version of one record: (MaSoDN, NgayCapNhat), or the whole record when either is
    missing (so two different records without a code are not taken for one)."""
    stamp, code = record.get("NgayCapNhat"), record.get("MaSoDN")
    text = f"{code}\x1f{stamp}" if isinstance(stamp, str) and isinstance(code, str) else "\x1e" + canonical_json(record)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


_RECORD_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?DoanhNghiep\s*>")


def full_page(body: bytes, page_size: int) -> bool:
    """Whether a body holds a full page (`page_size` records), counted on the bytes before parsing: only
    whether to send the next request early hangs on it, so a miscount costs time, never a record."""
    if body.count(b"</DoanhNghiep>") >= page_size:  # the usual case, without a regex over the whole body
        return True
    return b":DoanhNghiep" in body and len(_RECORD_END.findall(body)) >= page_size  # prefixed names


class ContinuousOffsetPaginator(OffsetPaginator):
    """offset/limit paging over a list that changes while it is read: overlapping pages, a continuity check
    and a step back when records before the current place moved away (see the module docstring).
    `accepted` says whether the page just given to `update_state` may be used."""

    def __init__(
        self,
        limit: int,
        offset_param: str = "offset",
        limit_param: str = "limit",
        total_of: Callable[[Any], Any] | None = None,
    ):
        if limit < 2:
            raise ValueError("a continuous offset walk needs pages of at least 2 records (one is the overlap)")
        super().__init__(limit, offset_param, limit_param, total_of)
        self.cursor: OrderKey | None = None  # largest key of the accepted pages
        self.last_version: bytes | None = None  # the last record of the last accepted page (P)
        self.anchor = 0  # where P was when its page was served
        self.step = 0
        self.accepted = False
        self.pages_accepted = 0
        self.step_backs = 0

    def continues(self, items: list[dict[str, Any]]) -> bool:
        if self.offset == 0:
            return True
        for item in items:
            if self.last_version is not None and version_digest(item) == self.last_version:
                return True
            key = order_key(item)
            if key is not None and self.cursor is not None and key <= self.cursor:
                return True
        return False

    def update_state(self, page: Any, items: list[Any]) -> None:
        total = self.read_total(page)
        if not self.continues(items):
            self.accepted = False
            self.step = max(1, self.step * 2)
            self.step_backs += 1
            self.offset = max(0, self.anchor - self.step)
            self.has_next_page = True
            return
        self.accepted = True
        self.step = 0
        self.pages_accepted += 1
        n = len(items)
        keys = [k for k in (order_key(it) for it in items) if k is not None]
        if keys:
            top = max(keys)
            self.cursor = top if self.cursor is None or top > self.cursor else self.cursor
        # End only on a short page, and (when the answer has one) at `tongSo`: a server that caps `limit`
        # below what we asked then still gets read to the end, and one that repeats an item at a page
        # boundary is not cut one record short. A page holding only P cannot advance: the end as well.
        short = n < self.limit
        end = short and (total is None or self.offset + n >= total or n <= 1)
        if n:
            self.last_version = version_digest(items[-1])
            self.anchor = self.offset + n - 1
        self.has_next_page = not end
        self.offset = self.anchor


class TruncatedPageError(TransientSourceError):
    """A page whose XML ended early (transient: fetched again; after the last attempt, this names the page)."""


@dataclass
class WalkStats:
    requests: int = 0
    pages_accepted: int = 0
    step_backs: int = 0
    records_yielded: int = 0
    repeats_skipped: int = 0
    wasted_requests: int = 0  # sent ahead for a page the walk did not go to (a step back, an early end)
    tu_ngay: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BusinessRegistryClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: TimeoutValue = 30.0,
        attempts: int = 6,
        max_wait: float = 30.0,
        initial_wait: float = 0.5,
        verify: bool | str = True,
        cert: Cert | None = None,
        proxies: dict[str, str] | None = None,
        conn_id: str = SOURCE,
    ):
        self.http = HttpClient(base_url, timeout=timeout, attempts=attempts, max_wait=max_wait, initial_wait=initial_wait,
                               verify=verify, cert=cert, proxies=proxies)
        self.auth = ApiKeyAuth(api_key)
        self.conn_id = conn_id
        self.last_walk = WalkStats()

    @classmethod
    def from_connection(cls, conn_id: str = SOURCE, **kw: Any) -> BusinessRegistryClient:
        """Build from an Airflow http connection: host/port/schema, password = API key; extras
        `verify`/`cert`/`proxies`/`timeout` (over the defaults given in `kw`)."""
        from lienthong.connections import get_connection

        conn = get_connection(conn_id)
        return cls(conn.base_url(), conn.password or "", conn_id=conn_id, **{**kw, **conn.http_options()})

    def page_url(self, params: dict[str, Any]) -> str:
        return requests.Request("GET", self.http.url(ENTERPRISES_PATH), params=params).prepare().url or ""

    def page_request(self, tu_ngay: str, offset: int, limit: int) -> dict[str, Any]:
        """The keyword arguments of one page's GET (query and API key)."""
        return {"params": {"tuNgay": tu_ngay, "offset": offset, "limit": limit}, "headers": self.auth.headers()}

    def fetch_page(
        self,
        tu_ngay: str,
        offset: int,
        limit: int,
        *,
        sent: Future[requests.Response] | None = None,
        on_response: Callable[[requests.Response], None] | None = None,
    ) -> EnterprisePage:
        """One page, with retry on the transient faults (a truncated body included). `sent`/`on_response`
        are HttpClient.request's: this page's request already sent ahead, a hook before the body is parsed."""
        request = self.page_request(tu_ngay, offset, limit)
        params = request["params"]
        url = self.page_url(params)

        def parse(resp: requests.Response) -> EnterprisePage:
            # runs inside the retry: a body cut short raises a transient error and is fetched again
            try:
                return parse_enterprise_page(resp.content)
            except TruncatedXmlError as exc:
                raise TruncatedPageError(
                    f"enterprise page at offset {offset} is not complete XML (truncated?): {exc}",
                    url=url, status=resp.status_code, body=resp.text[-200:],
                ) from exc
            except XmlPageError as exc:
                raise SourceError(
                    f"enterprise page at offset {offset} is not a usable enterprise list: {exc}",
                    url=url, status=resp.status_code, body=resp.text[:200],
                ) from exc

        try:
            return self.http.request("GET", ENTERPRISES_PATH, parse=parse, sent=sent, on_response=on_response, **request)
        except AuthError as exc:
            raise AuthError(
                f"the business registry refused the API key: check the password of connection {self.conn_id!r}",
                url=url, status=exc.status, body=exc.body,
            ) from exc
        except TruncatedPageError:
            raise  # already names the page
        except TransientSourceError as exc:
            raise TransientSourceError(
                f"enterprise page at offset {offset} still failing after {self.http.attempts} attempts: {exc}",
                url=url, status=exc.status, retry_after=exc.retry_after,
            ) from exc

    def iter_enterprise_pages(self, since: str, page_size: int = MAX_LIMIT) -> Iterator[list[dict[str, Any]]]:
        """Every enterprise updated on or after the local date of `since`, at least once, each version
        once; one list per accepted page (possibly empty when a page held only repeats). The loop is the
        shared `paginate` driving a `ContinuousOffsetPaginator`; sending ahead lives in its `fetch`."""
        if not 2 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be 2..{MAX_LIMIT}, got {page_size}")
        day = tu_ngay(since)
        stats = self.last_walk = WalkStats(tu_ngay=day)
        pager = ContinuousOffsetPaginator(page_size, total_of=lambda page: page.total)
        seen: set[bytes] = set()
        # The next page's request goes out as soon as this page's body is in, and is parsed meanwhile
        # (see `full_page`). `ahead` holds such requests by offset. Whichever thread has the answer first
        # sends the next one: the http-ahead thread that read it, when the walk is already waiting for that
        # answer (`waiting`), else the walk when it takes the answer. Sending from the thread that read the
        # body saves a handover of the GIL to another thread, which waits out the switch interval while
        # the walk parses (about 10 ms a page measured).
        ahead: dict[int, Future[requests.Response]] = {}
        lock = threading.Lock()
        waiting: list[int | None] = [None]  # the offset whose answer the walk is blocked on

        def send_next(offset: int) -> Callable[[requests.Response], None]:
            def hook(resp: requests.Response) -> None:
                nxt = offset + page_size - 1  # where an accepted full page sends the walk (the overlap)
                if not full_page(resp.content, page_size):
                    return
                with lock:
                    if nxt not in ahead:
                        ahead[nxt] = self.http.send_ahead("GET", ENTERPRISES_PATH, then=early(nxt),
                                                          **self.page_request(day, nxt, page_size))
            return hook

        def early(offset: int) -> Callable[[requests.Response], None]:
            def then(resp: requests.Response) -> None:
                # runs in the http-ahead thread, before the walk sees this answer (it then finds the next
                # request in `ahead` and does not send it again)
                if resp.status_code < 400 and waiting[0] == offset:
                    send_next(offset)(resp)
            return then

        def take_ahead(offset: int | None) -> Future[requests.Response] | None:
            """The request sent ahead for `offset`, if any; any other one (a step back, an early end) is not
            wanted: waited out and dropped before another request goes out, so none overtakes."""
            with lock:
                sent = ahead.pop(offset, None) if offset is not None else None
                unwanted = list(ahead.values())
                ahead.clear()
            for future in unwanted:
                self.http.settle(future)
                stats.wasted_requests += 1
            return sent

        def fetch(request: dict[str, Any]) -> EnterprisePage:
            """The page the paginator asks for: its answer sent ahead if there is one, else sent now; a full
            page's answer sends the request for the page after it."""
            offset = request[pager.offset_param]
            sent = take_ahead(offset)
            waiting[0] = offset if sent is not None else None
            try:
                return self.fetch_page(day, offset, page_size, sent=sent, on_response=send_next(offset))
            finally:
                waiting[0] = None

        try:
            for page in paginate(fetch, pager, source=SOURCE, items=lambda answer: answer.records):
                yield from self._take(page, pager, stats, seen, day)
        finally:
            take_ahead(None)
            self.http.close()
        log.info(
            "business registry walk from %s: %d records in %d pages (%d requests, %d step-backs, %d repeats skipped)",
            day, stats.records_yielded, stats.pages_accepted, stats.requests, stats.step_backs, stats.repeats_skipped,
        )

    def _take(
        self, page: Page, pager: ContinuousOffsetPaginator, stats: WalkStats, seen: set[bytes], day: str
    ) -> Iterator[list[dict[str, Any]]]:
        """Account for one answered page (the paginator has read it): a step back, or the page's new
        versions."""
        stats.requests += 1
        offset = page.request[pager.offset_param]
        if not pager.accepted:
            stats.step_backs += 1
            log.info(
                "page at offset %d does not continue from the record last read (records before it moved); "
                "asking again from offset %d", offset, pager.offset,
            )
            # a registry changing faster than it can be read would keep us stepping back for ever
            if pager.step_backs > 20 + 2 * pager.pages_accepted:
                raise SourceError(
                    f"the enterprise list kept shifting under the walk ({pager.step_backs} step-backs for "
                    f"{pager.pages_accepted} pages); last at offset {offset}",
                    url=self.page_url(page.request | {"tuNgay": day}),
                )
            return
        stats.pages_accepted += 1
        fresh = []
        for record in page.items:
            digest = version_digest(record)
            if digest in seen:
                stats.repeats_skipped += 1
                continue
            seen.add(digest)
            fresh.append(record)
        stats.records_yielded += len(fresh)
        yield fresh
