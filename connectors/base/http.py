"""An HTTP session for agency REST APIs: timeouts on every request, transient faults classified for retry.

The client maps the spec's faults onto `TransientSourceError` (429 with Retry-After, 502/503/504, dropped
connections, truncated bodies) so the retry policy can handle them, and everything else onto `SourceError`.

TLS and proxies come from the connection's extras (`lienthong.connections.ConnInfo.http_options`: verify,
cert, proxies, timeout, as Airflow's HttpHook names them). The hook itself is not used: its session sends
the connection's login/password as basic auth and its other extras as headers, and this client keeps its
own session for the retry policy, the send-ahead thread and the 1 MiB body reads below.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


TimeoutValue = float | tuple[float, float]  # seconds, or (connect, read) as requests takes it
Cert = str | tuple[str, str]  # a PEM file with certificate and key, or (certificate, key)


class HttpClient:
    """requests.Session + base URL + timeout + retry; `auth` may refresh itself on 401.

    `verify` (False, or a CA bundle file or directory), `cert` (a client certificate) and `proxies` are set
    on the session and also passed with every request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and
    the proxy variables of the environment override what is set on a session alone. Left at their defaults,
    requests behaves as it always does (the environment's CA bundle and proxies included)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: TimeoutValue = 30.0,
        attempts: int = 6,
        max_wait: float = 30.0,
        initial_wait: float = 0.5,
        headers: dict[str, str] | None = None,
        session: requests.Session | None = None,
        verify: bool | str = True,
        cert: Cert | None = None,
        proxies: dict[str, str] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts, self.max_wait, self.initial_wait = attempts, max_wait, initial_wait
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": "lienthong-connector/0.1", **(headers or {})})
        self.send_options: dict[str, Any] = {}  # given to every request, see the class docstring
        if verify is not True:
            self.session.verify = self.send_options["verify"] = verify
        if cert is not None:
            self.session.cert = self.send_options["cert"] = cert
        if proxies:
            self.session.proxies.update(proxies)
            self.send_options["proxies"] = dict(proxies)
        self.requests_made = 0
        self._ahead: ThreadPoolExecutor | None = None

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def send_once(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One request; transient faults raise TransientSourceError, others SourceError."""
        url = self.url(path)
        self.requests_made += 1
        try:
            resp = self.session.request(method, url, timeout=self.timeout, stream=True, **{**self.send_options, **kw})
            # Reading the body here turns a connection dropped mid-body into an error we can retry.
            read_body(resp)
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

    def send_ahead(
        self, method: str, path: str, *, then: Callable[[requests.Response], None] | None = None, **kw: Any
    ) -> Future[requests.Response]:
        """Send one request in the background (one thread: requests go out in the order asked); pass the
        future as `request(..., sent=)`. A future nobody collects is harmless: `settle` waits it out.
        `then` sees the answer in that thread as soon as its body is in, before the future completes (e.g.
        to send the next request without waiting for another thread to get the GIL); its own errors are
        logged and dropped, the answer stands."""
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-ahead")

        def task() -> requests.Response:
            resp = self.send_once(method, path, **kw)
            if then is not None:
                try:
                    then(resp)
                except Exception:  # noqa: BLE001 - only an optimisation hangs on it; the answer is still good
                    log.warning("hook after %s %s failed", method, path, exc_info=True)
            return resp

        return self._ahead.submit(task)

    @staticmethod
    def settle(sent: Future[requests.Response]) -> None:
        """Wait for a request sent ahead whose answer is no longer wanted (its error too is dropped)."""
        try:
            sent.result()
        except Exception:  # noqa: BLE001 - the answer is not used, so neither is its fault
            pass

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.shutdown(wait=True)
            self._ahead = None

    def request(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[requests.Response], Any] | None = None,
        sent: Future[requests.Response] | None = None,
        on_response: Callable[[requests.Response], None] | None = None,
        **kw: Any,
    ) -> Any:
        """Send with retry. `parse` runs inside the retry, so a truncated body (a parse error raised as
        TransientSourceError) is fetched again. `sent` is this same request already sent ahead (`send_ahead`):
        its answer is the first attempt. `on_response` sees each good answer before `parse` does (e.g. to
        send the next request while this body is parsed)."""
        first = sent

        def attempt() -> Any:
            nonlocal first
            if first is not None:
                ahead, first = first, None
                resp = ahead.result()  # a fault there is this attempt's fault: the next attempt sends again
            else:
                resp = self.send_once(method, path, **kw)
            if resp.status_code >= 400:
                raise SourceError(f"{method} failed", url=resp.url, status=resp.status_code, body=resp.text[:200])
            if on_response is not None:
                on_response(resp)
            return parse(resp) if parse else resp

        return call_with_retry(attempt, self.attempts, self.max_wait, self.initial_wait)


BODY_READ_SIZE = 1 << 20


def read_body(resp: requests.Response) -> bytes:
    """The whole body, read in reads of up to 1 MiB instead of requests' 10 KiB ones (`resp.content`).

    Every read takes the GIL again. A connector lands one page while the next is fetched in another thread
    (connectors.base.readahead); with the landing thread busy, each take can wait a switch interval (5 ms),
    and forty 10 KiB reads of a 400 KiB page then cost more than the server's answer. requests' own
    iteration is used, so a connection dropped mid-body still raises requests' errors; the body is stored
    where `resp.content` / `resp.json()` read it (requests' documented content cache, `_content`)."""
    body = b"".join(resp.iter_content(BODY_READ_SIZE))
    resp._content = body
    resp.close()  # the body is complete: hands the connection back to the pool
    return body


def json_body(resp: requests.Response) -> Any:
    """Decode a JSON body; a body cut short is a transient fault (the spec allows truncated bodies)."""
    try:
        return resp.json()
    except ValueError as exc:
        raise TransientSourceError(
            "response body is not complete JSON (truncated?)", url=resp.url, status=resp.status_code, body=resp.text[-200:]
        ) from exc
