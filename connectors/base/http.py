"""An HTTP session for agency REST APIs: timeouts on every request, transient faults classified for retry.

The client maps the spec's faults onto `TransientSourceError` (429 with Retry-After, 502/503/504, dropped
connections, truncated bodies) so the retry policy can handle them, and everything else onto `SourceError`.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from connectors.base.errors import AuthError, SourceError, TransientSourceError
from connectors.base.retry import call_with_retry

log = logging.getLogger(__name__)
TRANSIENT_STATUS = {429, 502, 503, 504}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """requests.Session + base URL + timeout + retry; `auth` may refresh itself on 401."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        attempts: int = 6,
        max_wait: float = 30.0,
        initial_wait: float = 0.5,
        headers: dict[str, str] | None = None,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts, self.max_wait, self.initial_wait = attempts, max_wait, initial_wait
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": "lienthong-connector/0.1", **(headers or {})})
        self.requests_made = 0

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def send_once(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One request; transient faults raise TransientSourceError, others SourceError."""
        url = self.url(path)
        self.requests_made += 1
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kw)
            # Reading the body here turns a connection dropped mid-body into an error we can retry.
            _ = resp.content
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientSourceError(f"{method} failed: {type(exc).__name__}: {exc}", url=url) from exc
        if resp.status_code in TRANSIENT_STATUS:
            raise TransientSourceError(
                f"{method} got a transient status",
                url=url,
                status=resp.status_code,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                body=resp.text[:200],
            )
        if resp.status_code == 403:
            raise AuthError(f"{method} refused", url=url, status=403, body=resp.text[:200])
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[requests.Response], Any] | None = None,
        **kw: Any,
    ) -> Any:
        """Send with retry. `parse` runs inside the retry, so a truncated body (a parse error raised as
        TransientSourceError) is fetched again."""

        def attempt() -> Any:
            resp = self.send_once(method, path, **kw)
            if resp.status_code >= 400:
                raise SourceError(f"{method} failed", url=resp.url, status=resp.status_code, body=resp.text[:200])
            return parse(resp) if parse else resp

        return call_with_retry(attempt, self.attempts, self.max_wait, self.initial_wait)


def json_body(resp: requests.Response) -> Any:
    """Decode a JSON body; a body cut short is a transient fault (the spec allows truncated bodies)."""
    try:
        return resp.json()
    except ValueError as exc:
        raise TransientSourceError(
            "response body is not complete JSON (truncated?)", url=resp.url, status=resp.status_code, body=resp.text[-200:]
        ) from exc
