"""A minimal population registry that follows shared/specs/agency-systems.md §1 and nothing more.

Independent of sandbox/: the connector tests run against it AND the sandbox, so the connector is held to the
spec's text rather than to one server's habits. Records live in memory; faults are counters set by tests.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class MinimalPopulationRegistry:
    records: list[dict[str, Any]]
    client_id: str = field(default_factory=lambda: "min-" + secrets.token_hex(4))
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    faults: dict[str, Any] = field(default_factory=dict)
    data_requests: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)  # token -> uses

    def reset(self, **faults: Any) -> None:
        self.faults = dict(faults)
        self.data_requests = 0
        self.injected = {}
        self.tokens = {}

    def _hit(self, name: str) -> bool:
        every = self.faults.get(name)
        if every and self.data_requests % int(every) == 0:
            self.injected[name] = self.injected.get(name, 0) + 1
            return True
        return False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/oauth2/token")
        async def token(request: Request):
            form = dict(x.split("=", 1) for x in (await request.body()).decode().split("&") if "=" in x)
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            tok = secrets.token_urlsafe(12)
            self.tokens[tok] = 0
            return {"access_token": tok, "token_type": "Bearer", "expires_in": 300}

        @app.get("/api/v1/citizens")
        def citizens(request: Request, updated_since: str, page_size: int = 100, page_token: str | None = None):
            tok = request.headers.get("authorization", "").removeprefix("Bearer ")
            if tok not in self.tokens:
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            self.tokens[tok] += 1
            expire = self.faults.get("token_expire_after")
            if expire and self.tokens[tok] > int(expire):
                self.injected["token_expire"] = self.injected.get("token_expire", 0) + 1
                del self.tokens[tok]
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            self.data_requests += 1
            if self._hit("rate_limit_every"):
                return JSONResponse({"error": "rate"}, status_code=429, headers={"Retry-After": str(self.faults.get("retry_after", 1))})
            if self._hit("server_error_every"):
                return JSONResponse({"error": "busy"}, status_code=(502, 503, 504)[self.data_requests % 3])
            since = _instant(updated_since)
            rows = sorted((r for r in self.records if _instant(r["capNhatLuc"]) >= since),
                          key=lambda r: (_instant(r["capNhatLuc"]), r["soDinhDanh"]))
            offset = json.loads(base64.urlsafe_b64decode(page_token))["o"] if page_token else 0
            if self._hit("empty_page_every") and offset < len(rows):
                return {"items": [], "next_page_token": page_token or base64.urlsafe_b64encode(b'{"o":0}').decode()}
            page = rows[offset : offset + page_size]
            if self.faults.get("duplicate_across_pages") and offset > 0:
                page = [rows[offset - 1], *page]
            nxt = offset + page_size
            body = {"items": page, "next_page_token": base64.urlsafe_b64encode(json.dumps({"o": nxt}).encode()).decode() if nxt < len(rows) else None}
            text = json.dumps(body, ensure_ascii=False).encode()
            if self._hit("truncate_body_every"):
                return Response(text[: len(text) // 2], media_type="application/json")
            if self._hit("drop_connection_every"):
                def broken():
                    yield text[: len(text) // 2]
                    raise ConnectionResetError("dropped on purpose")
                return StreamingResponse(broken(), media_type="application/json")
            return Response(text, media_type="application/json")

        return app


class ServeInThread:
    """uvicorn on 127.0.0.1 on a free port, in a daemon thread."""

    def __init__(self, app: FastAPI):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServeInThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("minimal server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
