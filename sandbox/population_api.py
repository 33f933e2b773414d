"""Simulated population registry: REST + JSON with OAuth2 client credentials (agency-systems.md §1).

Owns: the FastAPI app (`create_app`) serving `population/citizens.parquet` as the registry's citizen list
and batch lookup, its tokens, its keyset page tokens, and the in-memory record changes that `touch` and
the `change_during_walk` fault make. The parquet file is read once into an Arrow table; paging keeps
only sort-key arrays in numpy and turns the rows of one page into dicts when that page is served.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.faults import FaultState, FaultSwitches, bad_request, control_router, fault_body_response

log = logging.getLogger(__name__)

SCOPE = "citizens.read"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_BATCH_IDS = 100
VN_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# "+07:00" sent unencoded in a query string arrives as " 07:00"
_SPACE_FOR_PLUS = re.compile(r"(T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")


def parse_instant(text: str) -> int:
    """RFC 3339 (Z or any offset) -> microseconds since the epoch. ValueError if there is no offset."""
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", text.strip())
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return (value - _EPOCH) // _US


def format_instant(micros: int) -> str:
    """Microseconds since the epoch -> RFC 3339 in Vietnam time, as the registry writes capNhatLuc."""
    value = (_EPOCH + timedelta(microseconds=int(micros))).astimezone(VN_TZ)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds")


@dataclass(frozen=True)
class _Key:
    """A record's place in the walk order (capNhatLuc, soDinhDanh), with the file row to break ties
    between two records that share both."""

    ts: int
    id: str
    row: int


_BULK_MOVE = 64  # above this many records a change re-sorts once instead of moving each record


class CitizenStore:
    """The citizen records and their walk order. Changes move a record in the sorted arrays in place
    (delete + insert, O(n) copies) rather than re-sorting a million keys."""

    def __init__(self, path: Path) -> None:
        table = pq.read_table(path)
        self.table = table.select([name for name in table.column_names if not name.startswith("_")])
        try:
            stamps = self.table["capNhatLuc"].cast(pa.timestamp("us", "UTC")).cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{path}: capNhatLuc is not RFC 3339 with an offset: {exc}") from exc
        self._base_ts = stamps.fill_null(0).to_numpy().astype(np.int64)
        self._ids = np.array(self.table["soDinhDanh"].fill_null("").to_pylist(), dtype=str)
        self._base_order = self._sort_order(self._base_ts, self._ids)
        self._by_id = np.argsort(self._ids, kind="stable")
        self._ids_by_id = self._ids[self._by_id]
        self.lock = threading.RLock()
        self.reset()
        log.info("population registry: %d citizens from %s", len(self), path)

    @staticmethod
    def _sort_order(ts: np.ndarray, ids: np.ndarray) -> np.ndarray:
        if len(ts) < 2:
            return np.arange(len(ts))
        ordered = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (ids[1:] >= ids[:-1]))
        if bool(ordered.all()):  # the generator writes rows in walk order: skip the sort
            return np.arange(len(ts))
        return np.lexsort((np.arange(len(ts)), ids, ts))

    def reset(self) -> None:
        with self.lock:
            self._ts = self._base_ts.copy()
            self._order = self._base_order.copy()
            self._sorted_ts = self._ts[self._order]
            self._sorted_ids = self._ids[self._order]
            self._overrides: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def key_of(self, row: int) -> _Key:
        return _Key(int(self._ts[row]), str(self._ids[row]), int(row))

    def position(self, key: _Key, *, inclusive: bool) -> int:
        """Index in walk order of the first record at `key` (inclusive) or after it."""
        lo = int(np.searchsorted(self._sorted_ts, key.ts, "left"))
        hi = int(np.searchsorted(self._sorted_ts, key.ts, "right"))
        ids = self._sorted_ids[lo:hi]
        lo2 = lo + int(np.searchsorted(ids, key.id, "left"))
        hi2 = lo + int(np.searchsorted(ids, key.id, "right"))
        return lo2 + int(np.searchsorted(self._order[lo2:hi2], key.row, "left" if inclusive else "right"))

    def start_of(self, since: int | None) -> int:
        return 0 if since is None else int(np.searchsorted(self._sorted_ts, since, "left"))

    def rows_between(self, start: int, end: int) -> list[int]:
        return [int(r) for r in self._order[start:end]]

    def freshest(self) -> int:
        """One second after the newest update: the sandbox's "now" for changes, so runs stay
        reproducible instead of depending on the wall clock."""
        return int(self._ts.max(initial=0)) + 1_000_000

    def rows_for_ids(self, ident: str) -> list[int]:
        lo = int(np.searchsorted(self._ids_by_id, ident, "left"))
        hi = int(np.searchsorted(self._ids_by_id, ident, "right"))
        return sorted(int(r) for r in self._by_id[lo:hi])

    def move(self, row: int, new_ts: int) -> None:
        """Give `row` a new update time and move it to its new place in walk order."""
        with self.lock:
            at = self.position(self.key_of(row), inclusive=True)
            self._order = np.delete(self._order, at)
            self._sorted_ts = np.delete(self._sorted_ts, at)
            self._sorted_ids = np.delete(self._sorted_ids, at)
            self._ts[row] = new_ts
            self._overrides[row] = format_instant(new_ts)
            to = self.position(self.key_of(row), inclusive=True)
            self._order = np.insert(self._order, to, row)
            self._sorted_ts = np.insert(self._sorted_ts, to, new_ts)
            self._sorted_ids = np.insert(self._sorted_ids, to, self._ids[row])

    def move_many(self, rows: list[int], new_ts: int) -> None:
        """Give many rows one new update time: one re-sort (O(n log n)) instead of an O(n) move each, so a
        bulk change (1 % of a 2M registry) takes seconds, not minutes."""
        with self.lock:
            for row in rows:
                self._ts[row] = new_ts
                self._overrides[row] = format_instant(new_ts)
            self._order = np.lexsort((np.arange(len(self._ts)), self._ids, self._ts))
            self._sorted_ts = self._ts[self._order]
            self._sorted_ids = self._ids[self._order]

    def records(self, rows: list[int]) -> list[dict[str, Any]]:
        """The served form of `rows`: spec fields only, nested addresses as objects, nulls as null."""
        if not rows:
            return []
        items = self.table.take(pa.array(rows, pa.int64())).to_pylist()
        for row, item in zip(rows, items, strict=True):
            if row in self._overrides:
                item["capNhatLuc"] = self._overrides[row]
        return items


class PageTokens:
    """Opaque page tokens: urlsafe base64 of a small JSON (the query's since and the last key served)
    with an HMAC, so a client cannot forge or edit one."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def encode(self, since: int | None, key: _Key | None) -> str:
        payload = json.dumps(
            {"s": since, "k": None if key is None else [key.ts, key.id, key.row]}, separators=(",", ":")
        ).encode()
        sig = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(sig)

    def decode(self, token: str) -> tuple[int | None, _Key | None]:
        try:
            body, sig = token.split(".")
            payload = _unb64(body)
            if not hmac.compare_digest(
                hmac.new(self._secret, payload, hashlib.sha256).digest()[:16], _unb64(sig)
            ):
                raise ValueError("bad signature")
            data = json.loads(payload)
            key = data["k"]
            return data["s"], None if key is None else _Key(int(key[0]), str(key[1]), int(key[2]))
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
            raise ValueError("page_token is not a token this server issued") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Token:
    client_id: str
    expires_at: float
    uses: int = 0


def _invalid_token(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_token", "message": message},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def create_app(
    data_dir: Path | str,
    *,
    clients: dict[str, str],
    faults: FaultSwitches | FaultState | None = None,
    token_ttl_seconds: int = 300,
) -> FastAPI:
    """The population registry over `data_dir/population/citizens.parquet`.
    `clients` maps OAuth2 client ids to secrets."""
    store = CitizenStore(Path(data_dir) / "population" / "citizens.parquet")
    state = faults if isinstance(faults, FaultState) else FaultState(faults)
    tokens: dict[str, _Token] = {}
    tokens_lock = threading.Lock()
    pages = PageTokens()

    def reset_data() -> None:
        store.reset()
        with tokens_lock:
            tokens.clear()

    state.on_reset(reset_data)

    app = FastAPI(title="Sandbox population registry", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = state
    app.state.store = store

    def authenticate(request: Request) -> JSONResponse | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return _invalid_token("missing bearer token")
        with tokens_lock:
            token = tokens.get(value.strip())
            if token is None:
                return _invalid_token("unknown token")
            if time.monotonic() >= token.expires_at:
                del tokens[value.strip()]
                return _invalid_token("token expired")
            limit = state.switches.token_expire_after
            if limit and token.uses >= limit:
                del tokens[value.strip()]
                state.note("token_expired")
                return _invalid_token("token expired")
            token.uses += 1
        return None

    @app.post("/oauth2/token")
    async def issue_token(request: Request) -> JSONResponse:
        state.count("token")
        # parsed by hand: a urlencoded body needs no multipart parser dependency
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        client_id = form.get("client_id") or ""
        client_secret = form.get("client_secret") or ""
        # RFC 6749 §2.3.1 also allows the credentials in HTTP Basic auth
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and not client_id:
            try:
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                pass
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        expected = clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), client_secret.encode()):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        scope = form.get("scope") or SCOPE
        if SCOPE not in scope.split():
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        value = secrets.token_urlsafe(32)
        with tokens_lock:
            tokens[value] = _Token(client_id, time.monotonic() + token_ttl_seconds)
        return JSONResponse(
            {"access_token": value, "token_type": "Bearer", "expires_in": token_ttl_seconds, "scope": SCOPE},
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/api/v1/citizens")
    def list_citizens(request: Request) -> Response:
        state.count("citizens")
        refused = authenticate(request)
        if refused is not None:
            return refused
        query = request.query_params
        try:
            page_size = _page_size(query.get("page_size"))
            since = parse_instant(query["updated_since"]) if query.get("updated_since") else None
        except ValueError as exc:
            return bad_request(str(exc))
        cursor: _Key | None = None
        if query.get("page_token"):
            try:
                token_since, cursor = pages.decode(query["page_token"])
            except ValueError as exc:
                return bad_request(str(exc))
            if since is not None and token_since != since:
                return bad_request("page_token belongs to a different updated_since")
            since = token_since
        fault = state.next_data_fault()
        if fault in ("rate_limit", "server_error"):
            return state.error_response(fault)
        if state.next_list_is_empty():
            payload = {"items": [], "next_page_token": pages.encode(since, cursor)}
            return fault_body_response(fault, _json_bytes(payload), "application/json")

        switches = state.switches
        with store.lock:
            start = store.start_of(since)
            repeat = 0
            if cursor is not None:
                at = store.position(cursor, inclusive=True)
                after = store.position(cursor, inclusive=False)
                # the last item of the previous page is still where it was: serve it again first
                repeat = 1 if switches.duplicate_across_pages and after > at and at >= start else 0
                start = max(start, at if repeat else after)
            new_items = max(page_size - repeat, 1)
            end = min(start + repeat + new_items, len(store))
            rows = store.rows_between(start, end)
            items = store.records(rows)
            next_token = pages.encode(since, store.key_of(rows[-1])) if rows and end < len(store) else None
            if repeat:
                state.note("duplicate_across_pages")
            if cursor is None and switches.change_during_walk and rows:
                _change_during_walk(
                    store, state, first=rows[0], unserved=store.rows_between(end + 1, end + 2)
                )
        state.served(len(items))
        payload = {"items": items, "next_page_token": next_token}
        return fault_body_response(fault, _json_bytes(payload), "application/json")

    @app.post("/api/v1/citizens:batchGet")
    async def batch_get(request: Request) -> Response:
        state.count("batchGet")
        refused = authenticate(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return bad_request('body must be JSON: {"ids": [...]}')
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return bad_request("ids must be a list of strings")
        if len(ids) > MAX_BATCH_IDS:
            return bad_request(f"at most {MAX_BATCH_IDS} ids per request, got {len(ids)}")
        fault = state.next_data_fault()
        if fault in ("rate_limit", "server_error"):
            return state.error_response(fault)
        rows: list[int] = []
        not_found: list[str] = []
        with store.lock:
            for ident in dict.fromkeys(ids):  # ask twice, answer once
                found = store.rows_for_ids(ident)
                rows.extend(found)
                if not found:
                    not_found.append(ident)
            items = store.records(rows)
        state.served(len(items))
        return fault_body_response(
            fault, _json_bytes({"items": items, "notFound": not_found}), "application/json"
        )

    def touch(body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of soDinhDanh strings")
        with store.lock:
            at = parse_instant(body["at"]) if body.get("at") else store.freshest()
            touched, missing, moved = [], [], []
            for ident in ids:
                rows = store.rows_for_ids(ident)
                moved += rows
                (touched if rows else missing).append(ident)
            if len(moved) > _BULK_MOVE:
                store.move_many(moved, at)
            else:
                for row in moved:
                    store.move(row, at)
        log.info("touched %d citizens to %s", len(touched), format_instant(at))
        return {"touched": touched, "notFound": missing, "capNhatLuc": format_instant(at)}

    app.include_router(control_router(state, touch))
    return app


def _change_during_walk(store: CitizenStore, state: FaultState, *, first: int, unserved: list[int]) -> None:
    """Simulate an edit while a client walks: the first record served (it will come round again at
    the end) and one record not served yet (it moves later, still served once) get fresh times."""
    fresh = store.freshest()
    for offset, row in enumerate([first, *unserved]):
        store.move(row, fresh + offset * 1_000_000)
    state.note("change_during_walk")


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"page_size must be a whole number 1..{MAX_PAGE_SIZE}, got {raw!r}") from None
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {value}")
    return value


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
