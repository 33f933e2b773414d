"""Fault switches for the sandbox agency servers, and the counters that make them deterministic.

Owns: `FaultSwitches` (what to break, settable at startup and at runtime), `FaultState` (the request
counters that decide which request breaks: every Nth, never random, so a test can say exactly which
request fails), the fault responses shared by both HTTP servers (429, 5xx, dropped connection, truncated
body) and the `/_sandbox/...` control routes (faults, reset, stats) both servers mount.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

SERVERS = ("population", "business")
_SERVER_ERRORS = (502, 503, 504)


@dataclass
class FaultSwitches:
    """What the server breaks. 0 / false means off. Every count is over data requests only
    (the citizen list, batchGet, the enterprise list): token and `/_sandbox` calls never fail."""

    rate_limit_every: int = 0  # every Nth data request -> 429 + Retry-After
    retry_after: int = 1  # seconds, sent in Retry-After
    server_error_every: int = 0  # every Nth data request -> 502, 503, 504, 502, ...
    drop_connection_every: int = 0  # every Nth data request -> headers + part of the body, then close
    truncate_body_every: int = 0  # every Nth data request -> 200 with the body cut in the middle
    empty_page_every: int = 0  # population: every Nth list request -> no items, same position, a next token
    token_expire_after: int = 0  # population: a token is refused after N data requests
    duplicate_across_pages: bool = False  # population: a page starts with the previous page's last item
    change_during_walk: bool = False  # after a walk's first page, two records get a fresh update time

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: FaultSwitches | None = None) -> FaultSwitches:
        """Switches from `values` (names as in this class; strings from a command line are converted),
        on top of `base`. Unknown names and bad values raise ValueError."""
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in known:
                raise ValueError(f"unknown fault switch {name!r}; known: {', '.join(sorted(known))}")
            changes[name] = _coerce(name, known[name].type, raw)
        return dataclasses.replace(base or cls(), **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    # `from __future__ import annotations` leaves field types as strings
    if type_name in ("bool", bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise ValueError(f"fault switch {name} needs true/false, got {raw!r}")
    if isinstance(raw, bool):
        raise ValueError(f"fault switch {name} needs a whole number >= 0, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"fault switch {name} needs a whole number >= 0, got {raw!r}") from None
    if value < 0 or (isinstance(raw, float) and raw != value):
        raise ValueError(f"fault switch {name} needs a whole number >= 0, got {raw!r}")
    return value


def parse_fault_args(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`NAME=VALUE` or `SERVER.NAME=VALUE` strings (as given to `--fault`) -> switches per server.
    A bare name applies to both servers."""
    per_server: dict[str, dict[str, Any]] = {server: {} for server in SERVERS}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--fault wants NAME=VALUE, got {item!r}")
        server, dot, short = name.strip().rpartition(".")
        targets = [server] if dot else list(SERVERS)
        for target in targets:
            if target not in per_server:
                raise ValueError(f"unknown server {target!r} in {item!r}; known: {', '.join(SERVERS)}")
            per_server[target][short] = value.strip()
    return per_server


def switches_per_server(faults: FaultSwitches | Mapping[str, Any] | None) -> dict[str, FaultSwitches]:
    """Normalise what `run_sandbox(faults=...)` accepts: one FaultSwitches for both servers, a flat mapping
    (`{"rate_limit_every": 3, "business.truncate_body_every": 2}`), or `{"population": ..., "business": ...}`."""
    if faults is None:
        return {server: FaultSwitches() for server in SERVERS}
    if isinstance(faults, FaultSwitches):
        return {server: dataclasses.replace(faults) for server in SERVERS}
    if set(faults) <= set(SERVERS):
        per_server: dict[str, FaultSwitches] = {}
        for server in SERVERS:
            value = faults.get(server) or {}
            per_server[server] = (
                value if isinstance(value, FaultSwitches) else FaultSwitches.from_mapping(value)
            )
        return per_server
    flat = parse_fault_args(f"{name}={value}" for name, value in faults.items())
    return {server: FaultSwitches.from_mapping(flat[server]) for server in SERVERS}


class DroppedConnection(Exception):
    """Raised on purpose inside a response so uvicorn closes the connection mid-body."""


class FaultState:
    """The live switches of one server and its counters. Thread-safe: FastAPI runs sync routes in a pool."""

    def __init__(self, switches: FaultSwitches | None = None) -> None:
        self._startup = dataclasses.replace(switches or FaultSwitches())
        self.switches = dataclasses.replace(self._startup)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.items_served = 0
        self._data_requests = 0
        self._list_requests = 0
        self._server_error_turn = 0
        self._reset_hooks: list[Callable[[], None]] = []

    def on_reset(self, hook: Callable[[], None]) -> None:
        self._reset_hooks.append(hook)

    def update(self, values: Mapping[str, Any]) -> FaultSwitches:
        with self._lock:
            self.switches = FaultSwitches.from_mapping(values, self.switches)
            log.info("fault switches now %s", self.switches)
            return self.switches

    def reset(self) -> None:
        """Back to the startup switches, counters at zero, data changes undone."""
        with self._lock:
            self.switches = dataclasses.replace(self._startup)
            self.requests.clear()
            self.injected.clear()
            self.items_served = 0
            self._data_requests = 0
            self._list_requests = 0
            self._server_error_turn = 0
        for hook in self._reset_hooks:
            hook()

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def served(self, items: int) -> None:
        with self._lock:
            self.items_served += items

    def next_data_fault(self) -> str | None:
        """Count one data request and say which fault (if any) it gets. When two switches hit the same
        request, the order below wins: a dropped connection, a 5xx, a 429, then a truncated body."""
        with self._lock:
            self._data_requests += 1
            n = self._data_requests
            s = self.switches
            for name, every in (
                ("drop_connection", s.drop_connection_every),
                ("server_error", s.server_error_every),
                ("rate_limit", s.rate_limit_every),
                ("truncate_body", s.truncate_body_every),
            ):
                if every and n % every == 0:
                    self.injected[name] += 1
                    return name
            return None

    def next_list_is_empty(self) -> bool:
        with self._lock:
            self._list_requests += 1
            every = self.switches.empty_page_every
            if every and self._list_requests % every == 0:
                self.injected["empty_page"] += 1
                return True
            return False

    def note(self, fault: str) -> None:
        with self._lock:
            self.injected[fault] += 1

    def error_response(self, fault: str) -> Response:
        """The response for a fault that replaces the whole answer (429, 5xx)."""
        if fault == "rate_limit":
            return JSONResponse(
                {"error": "rate_limited", "message": "too many requests"},
                status_code=429,
                headers={"Retry-After": str(self.switches.retry_after)},
            )
        with self._lock:
            status = _SERVER_ERRORS[self._server_error_turn % len(_SERVER_ERRORS)]
            self._server_error_turn += 1
        return JSONResponse({"error": "upstream_unavailable", "status": status}, status_code=status)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "total_requests": sum(self.requests.values()),
                "data_requests": self._data_requests,
                "faults_injected": dict(self.injected),
                "items_served": self.items_served,
            }


class DroppingResponse(Response):
    """Promise the whole body (Content-Length), send part of it, then fail so the server closes the
    connection: the client sees an incomplete read, as when a gateway drops a connection."""

    def __init__(self, body: bytes, media_type: str) -> None:
        super().__init__(content=body, media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send(
            {"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True}
        )
        raise DroppedConnection("sandbox fault: connection dropped mid-body")


def truncated(body: bytes) -> bytes:
    """The first half of `body`, cut on a UTF-8 character boundary so the damage shows up as broken
    JSON/XML rather than as an undecodable byte."""
    cut = len(body) // 2
    while cut > 0 and (body[cut] & 0xC0) == 0x80:
        cut -= 1
    return body[:cut]


def fault_body_response(fault: str | None, body: bytes, media_type: str) -> Response:
    """Wrap a finished body, applying a body-level fault (drop, truncate) if this request got one."""
    if fault == "drop_connection":
        return DroppingResponse(body, media_type)
    if fault == "truncate_body":
        return Response(truncated(body), media_type=media_type)
    return Response(body, media_type=media_type)


class DroppedConnectionLogFilter(logging.Filter):
    """Keep uvicorn from printing a traceback for every connection the sandbox drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


def install_log_filter() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DroppedConnectionLogFilter) for f in target.filters):
        target.addFilter(DroppedConnectionLogFilter())


def control_router(state: FaultState, touch: Callable[[dict[str, Any]], dict[str, Any]]) -> APIRouter:
    """The `/_sandbox` routes both servers share; `touch` is the server's own record-update function."""
    router = APIRouter(prefix="/_sandbox", include_in_schema=False)

    @router.get("/faults")
    def get_faults() -> dict[str, Any]:
        return state.switches.as_dict()

    @router.post("/faults")
    async def set_faults(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        try:
            return JSONResponse(state.update(body).as_dict())
        except ValueError as exc:
            return bad_request(str(exc))

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        state.reset()
        return {"faults": state.switches.as_dict(), "stats": state.stats()}

    @router.get("/stats")
    def stats() -> dict[str, Any]:
        return state.stats()

    @router.post("/touch")
    async def touch_records(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        try:
            return JSONResponse(touch(body))
        except ValueError as exc:
            return bad_request(str(exc))

    return router


async def _json_object(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except ValueError:
        return bad_request("body must be a JSON object")
    if not isinstance(body, dict):
        return bad_request("body must be a JSON object")
    return body


def bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "message": message}, status_code=400)
