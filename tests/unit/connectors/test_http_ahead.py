"""`HttpClient.send_ahead` with a `then` hook, against a real HTTP server on localhost: the hook sees the
answer in the sending thread before the future completes (so a next request can go out from there at
once), and a failing hook does not spoil the answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base.http import HttpClient


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_then_runs_in_the_sending_thread_before_the_answer_is_handed_over(server: str) -> None:
    http = HttpClient(server, attempts=1)
    seen: list[tuple[str, bytes]] = []
    chained: list = []

    def then(resp):
        seen.append((threading.current_thread().name, resp.content))
        chained.append(http.send_ahead("GET", "/p/2"))  # the next request, from this thread

    try:
        first = http.send_ahead("GET", "/p/1", then=then)
        assert first.result(timeout=10).content == b"/p/1"
        assert seen and seen[0][1] == b"/p/1" and seen[0][0].startswith("http-ahead")
        assert chained, "the hook ran before the future completed: its request is already there"
        assert chained[0].result(timeout=10).content == b"/p/2"
        assert http.requests_made == 2
    finally:
        http.close()


def test_a_failing_then_hook_leaves_the_answer_intact(server: str, caplog: pytest.LogCaptureFixture) -> None:
    http = HttpClient(server, attempts=1)

    def broken(resp):
        raise RuntimeError("hook bug")

    try:
        assert http.send_ahead("GET", "/p/9", then=broken).result(timeout=10).content == b"/p/9"
    finally:
        http.close()
    assert "hook after GET /p/9 failed" in caplog.text
