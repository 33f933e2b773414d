"""Connector errors. Each carries what failed: the URL, the status, the record key."""

from __future__ import annotations


class SourceError(RuntimeError):
    """An agency system answered in a way we cannot use (after retries, or not retryable)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None, body: str | None = None):
        self.url, self.status, self.body = url, status, body
        detail = []
        if status is not None:
            detail.append(f"status {status}")
        if url:
            detail.append(f"url {url}")
        if body:
            detail.append(f"body {body[:200]!r}")
        super().__init__(message + (f" ({'; '.join(detail)})" if detail else ""))


class TransientSourceError(SourceError):
    """A fault the spec says may pass: 429, 502/503/504, a dropped connection, a truncated body."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuthError(SourceError):
    """Credentials were refused (bad client secret or API key)."""


class SchemaDriftError(SourceError):
    """A field the contract requires disappeared from the source."""
