"""Client for the population registry (spec §1): token, cursor-paged citizens, batchGet.

Coded to the spec's text, not to our sandbox: the page token is opaque, an empty page with a token is not
the end, an expired token gets one refresh and one retry, 429/5xx/dropped connections/truncated bodies are
retried with backoff that honours Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.base.auth import OAuth2ClientCredentials
from connectors.base.errors import AuthError, SourceError
from connectors.base.http import Cert, HttpClient, TimeoutValue, json_body
from connectors.base.ingest import Incremental
from connectors.base.paging import CursorPaginator, paginate

log = logging.getLogger(__name__)

SOURCE = "population_registry"
ENTITY = "citizens"
TOKEN_PATH = "/oauth2/token"
CITIZENS_PATH = "/api/v1/citizens"
BATCH_GET_PATH = "/api/v1/citizens:batchGet"
MAX_PAGE_SIZE = 1000
MAX_BATCH_IDS = 100


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 instant; one without an offset is refused (the spec says times carry one)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time without offset: {text!r}")
    return value


def render_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


INCREMENTAL = Incremental(
    cursor_field="capNhatLuc",
    key_field="soDinhDanh",
    initial_value="1970-01-01T00:00:00Z",
    parse=parse_rfc3339,
    render=render_rfc3339,
)


class PopulationRegistryClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = "citizens.read",
        timeout: TimeoutValue = 30.0,
        attempts: int = 6,
        max_wait: float = 30.0,
        initial_wait: float = 0.5,
        verify: bool | str = True,
        cert: Cert | None = None,
        proxies: dict[str, str] | None = None,
    ):
        self.http = HttpClient(base_url, timeout=timeout, attempts=attempts, max_wait=max_wait, initial_wait=initial_wait,
                               verify=verify, cert=cert, proxies=proxies)
        self.auth = OAuth2ClientCredentials(self.http, TOKEN_PATH, client_id, client_secret, scope)

    @classmethod
    def from_connection(cls, conn_id: str = SOURCE, **kw: Any) -> PopulationRegistryClient:
        """Build from an Airflow http connection: host/port/schema, login = client id, password = secret;
        extras `scope`, and `verify`/`cert`/`proxies`/`timeout` (over the defaults given in `kw`)."""
        from lienthong.connections import get_connection

        conn = get_connection(conn_id)
        scope = conn.extra.get("scope", "citizens.read")
        return cls(conn.base_url(), conn.login or "", conn.password or "", scope=scope, **{**kw, **conn.http_options()})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        """An authorised call; on 401 the token is refreshed and the call retried once."""
        for attempt in (1, 2):
            try:
                return self.http.request(method, path, headers=self.auth.headers(), parse=json_body, **kw)
            except AuthError:
                raise  # the credentials themselves were refused: a new token would not help
            except SourceError as exc:
                if exc.status != 401:
                    raise
                if attempt == 2:
                    raise AuthError("access token refused again after a refresh", url=exc.url, status=401, body=exc.body) from exc
                log.info("access token rejected (%s); fetching a new one and retrying once", exc.body)
                self.auth.invalidate()
        raise AssertionError("unreachable")

    def iter_citizen_pages(self, updated_since: str, page_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every citizen updated at or after `updated_since`, one list per page, in server order."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        params = {"updated_since": updated_since, "page_size": page_size}
        pages = paginate(lambda request: self._call("GET", CITIZENS_PATH, params=request), CursorPaginator(), params,
                         source=SOURCE, items=self._citizen_items)
        for page in pages:
            yield page.items

    def _citizen_items(self, page: Any) -> list[dict[str, Any]]:
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise SourceError("citizens page has no items list", url=self.http.url(CITIZENS_PATH), body=str(page)[:200])
        return page["items"]

    def batch_get(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Look up citizens by ID (chunks of at most 100); returns (items, not found ids)."""
        found: list[dict[str, Any]] = []
        missing: list[str] = []
        for i in range(0, len(ids), MAX_BATCH_IDS):
            body = self._call("POST", BATCH_GET_PATH, json={"ids": ids[i : i + MAX_BATCH_IDS]})
            found.extend(body.get("items") or [])
            missing.extend(body.get("notFound") or [])
        return found, missing
