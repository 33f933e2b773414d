"""Authentication for agency APIs: OAuth2 client credentials (token cached, refreshed on 401) and API key."""

from __future__ import annotations

import logging
import threading
import time

from connectors.base.errors import AuthError, SourceError
from connectors.base.http import HttpClient, json_body

log = logging.getLogger(__name__)


class ApiKeyAuth:
    """A static API key sent in a header (the business registry's `X-API-Key`)."""

    def __init__(self, key: str, header: str = "X-API-Key"):
        if not key:
            raise AuthError("no API key configured (set the connection's password)")
        self.header, self._key = header, key

    def headers(self) -> dict[str, str]:
        return {self.header: self._key}

    def __repr__(self) -> str:  # never show the key
        return f"ApiKeyAuth(header={self.header!r}, key=***)"


class OAuth2ClientCredentials:
    """OAuth2 client-credentials grant. The token is cached until shortly before it expires; a 401 from the
    API invalidates it so the next call gets a new one (the caller retries once)."""

    def __init__(self, http: HttpClient, token_path: str, client_id: str, client_secret: str, scope: str, skew: float = 15.0):
        if not client_id or not client_secret:
            raise AuthError("no OAuth2 client id/secret configured (set the connection's login and password)")
        self.http, self.token_path, self.scope, self.skew = http, token_path, scope, skew
        self._client_id, self._client_secret = client_id, client_secret
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(client_id={self._client_id!r}, secret=***)"

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def _fetch(self) -> None:
        try:
            body = self.http.request(
                "POST",
                self.token_path,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "scope": self.scope,
                },
                parse=json_body,
            )
        except SourceError as exc:
            if exc.status in (400, 401, 403):
                raise AuthError("token request refused", url=exc.url, status=exc.status, body=exc.body) from exc
            raise
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise AuthError("token response has no access_token", url=self.http.url(self.token_path))
        expires_in = float(body.get("expires_in") or 300)
        self._token = token
        self._expires_at = time.monotonic() + max(1.0, expires_in - self.skew)
        self.tokens_fetched += 1
        log.info("obtained an access token valid for %ss", int(expires_in))
