"""The single window's discrepancy-case routes: a registry agency works the findings assigned to it.

Owns the HTTP surface of `lienthong.cases` (which owns the workflow, its states and its rules):

    GET  /v1/findings                              the calling agency's findings, newest first, paged
                                                   (filters: status, case_state, type; limit, offset)
    GET  /v1/findings/{finding_id}                 one of them, with its case history
    POST /v1/findings/{finding_id}/acknowledge     -> acknowledged
    POST /v1/findings/{finding_id}/dispute         -> disputed; JSON body {"reason": "..."} (required)
    POST /v1/findings/{finding_id}/corrected       -> corrected (a claim the next run on newer data judges);
                                                   optional JSON body {"note": "..."}

The caller is a registry agency (`population_registry`, `business_registry`, `land_registry`), identified by
its own API key through the dependency the app passes (`principals.source_caller`); it sees and acts on its own
findings only. Personal values in subjects and evidence are masked (`lienthong.masking`), as in the auditors'
views. Status codes: 400 malformed request, unknown filter value, a dispute without a reason; 401 no or unknown
key; 403 not a registry agency's key, or another agency's finding; 404 no such finding; 409 the action is not
allowed from the case's state (both named); 503 the warehouse is unavailable (fail closed: nothing is changed
or returned). Every answer carries `X-Request-ID`, which an action's case event records.

Connections: a small pool of the platform's own connections (the service's warehouse URL), opened on first use,
every statement and lock wait bounded; an action is one transaction (the finding's row locked for it).
"""

# (no `from __future__ import annotations`: the routes' annotations name the caller dependency given to
# `register`, which FastAPI must see as objects, not as text to resolve in this module's globals)

import logging
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import Body, Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from lienthong import cases
from lienthong.masking import mask_json
from lienthong.singlewindow.pools import APP_NAME, Pool, session_options
from lienthong.singlewindow.principals import ServiceError

log = logging.getLogger("lienthong.singlewindow.cases")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_FINDING_ID = 200


class Problem(BaseModel):
    detail: str


class DisputeBody(BaseModel):
    reason: str = Field(description="Why the agency holds the finding to be wrong (required, at most "
                                    f"{cases.MAX_REASON_CHARS} characters).", examples=["The record was merged "
                                                                                          "under decision 12/QĐ"])


class CorrectedBody(BaseModel):
    note: str | None = Field(default=None, description="What was corrected, and where (optional).")


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed request, an unknown filter value, or a dispute without a "
                                           "reason; `detail` says which."},
    401: {"model": Problem, "description": "No API key, or an unknown one (header `X-API-Key`)."},
    403: {"model": Problem, "description": "Not a registry agency's key, or the finding is another agency's."},
    404: {"model": Problem, "description": "No finding with this id."},
    409: {"model": Problem, "description": "The action is not allowed from the case's current state (named)."},
    500: {"model": Problem, "description": "The warehouse failed on this request."},
    503: {"model": Problem, "description": "The warehouse is unavailable; nothing was changed or returned."},
}
_FINDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A finding with its case: finding_id, type, severity, agency, subject and evidence (personal "
                   "values masked), status (open/resolved), case_state (" + ", ".join(cases.CASE_STATES) + "), "
                   "case_changed_at, first/last seen run and time, resolved run and time, times_reopened, and the "
                   "last case event's last_action, last_reason, last_note, last_action_at, last_actor.",
}
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "One case transition: " + ", ".join(cases.EVENT_COLUMNS) + ".",
}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A finding as the agency gets it: personal values masked, times as ISO text."""
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "history"}
    out["subject"] = mask_json(row.get("subject") or {})
    out["evidence"] = mask_json(row.get("evidence") or {})
    if "history" in row:
        out["history"] = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in e.items()}
                          for e in row["history"]]
    return out


class CaseDesk:
    """The routes' work over a pool of the platform's connections: reads, and one action per transaction."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 5.0):
        ms = int(timeout * 1000)
        self._pool = Pool(url, name=f"{APP_NAME}-cases", size=pool_size, wait=timeout,
                          options=session_options(lock_timeout=ms, statement_timeout=ms,
                                                  idle_in_transaction_session_timeout=max(ms, 10_000)))

    def _run(self, work: Callable[[psycopg.Connection], Any], *, retry: bool) -> Any:
        try:
            return self._pool.run(work, retry=retry)
        except (ServiceError, cases.CaseError, ValueError):
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # incl. timeouts and a full pool
            log.error("cases: warehouse unavailable (%s)", type(exc).__name__)
            raise ServiceError(503, "the warehouse is unavailable") from None
        except psycopg.Error as exc:
            log.error("cases: the warehouse failed (%s)", type(exc).__name__)
            raise ServiceError(500, "the warehouse could not answer this request") from None

    def list(self, agency: str, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        def work(conn: psycopg.Connection) -> tuple[int, list[dict[str, Any]]]:
            with conn.transaction():
                if not _ready(conn):
                    return 0, []
                return cases.agency_findings(conn, agency, **filters)

        return self._run(work, retry=True)

    def one(self, agency: str, finding_id: str) -> dict[str, Any]:
        def work(conn: psycopg.Connection) -> dict[str, Any] | None:
            with conn.transaction():
                return cases.finding_case(conn, finding_id) if _ready(conn) else None

        found = self._run(work, retry=True)
        if found is None:
            raise ServiceError(404, f"no finding {finding_id!r}")
        if found["agency"] != agency:
            raise ServiceError(403, f"finding {finding_id} is assigned to {found['agency']}, not to {agency}")
        return found

    def act(self, agency: str, finding_id: str, action: str, request_id: str, *, reason: str | None = None,
            note: str | None = None) -> tuple[cases.Transition, dict[str, Any]]:
        def work(conn: psycopg.Connection) -> tuple[cases.Transition, dict[str, Any] | None]:
            with conn.transaction():
                if not _ready(conn):
                    raise cases.UnknownFinding(f"no finding {finding_id!r}")
                done = cases.act_on_finding(conn, finding_id, agency, action, reason=reason, note=note,
                                            request_id=request_id)
            return done, cases.finding_case(conn, finding_id)

        try:
            done, row = self._run(work, retry=False)  # a write: never run twice
        except cases.CaseError as exc:
            raise ServiceError(exc.status, exc.detail) from None
        return done, row or {}

    def close(self) -> None:
        self._pool.close()


def _ready(conn: psycopg.Connection) -> bool:
    """Whether the warehouse has the findings with their cases (a service must not create them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('lienthong_ops.finding')")
        row = cur.fetchone()
        return bool(row and row[0] is not None) and cases.has_cases(cur)


def register(app: FastAPI, url: str, caller: Callable[..., Any], *, pool_size: int = 2,
             timeout: float = 5.0) -> CaseDesk:
    """Add the case routes to `app` (the lookup service), reading and writing the findings over the warehouse
    `url` (the platform's own connection); `caller` is the FastAPI dependency returning the calling registry
    agency's name (or raising 401/403). The pool is closed when the app shuts down. Returns the desk."""
    desk = CaseDesk(url, pool_size=pool_size, timeout=timeout)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with inner(a) as state:
            yield state
        desk.close()

    app.router.lifespan_context = lifespan
    Agency = Annotated[str, Depends(caller)]
    FindingId = Annotated[str, PathParam(description="The finding's id, as listed (`<type>:<16 hex digits>`)",
                                         max_length=MAX_FINDING_ID, examples=["same_id_different_name:0123456789abcdef"])]
    one = {200: {"description": "The finding with its case history (oldest first).", "content": {
        "application/json": {"schema": {**_FINDING_SCHEMA, "properties": {
            "history": {"type": "array", "items": _EVENT_SCHEMA}}}}}}, **_ERRORS}
    acted = {200: {"description": "The transition recorded and the finding as it is now.", "content": {
        "application/json": {"schema": {"type": "object", "properties": {
            "transition": _EVENT_SCHEMA, "finding": _FINDING_SCHEMA}}}}}, **_ERRORS}

    def answer(body: Any, request_id: str) -> Response:
        return _JSON(body, headers={"X-Request-ID": request_id})

    def refused(exc: ServiceError, request_id: str) -> ServiceError:
        exc.headers = {**(exc.headers or {}), "X-Request-ID": request_id}
        return exc

    @app.get("/v1/findings", response_model=None, tags=["discrepancy cases"],
             summary="The calling registry agency's findings, newest first",
             responses={200: {"description": "One page: total, limit, offset and the findings.", "content": {
                 "application/json": {"schema": {"type": "object", "properties": {
                     "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
                     "findings": {"type": "array", "items": _FINDING_SCHEMA}}}}}}, **_ERRORS})
    def list_findings(
        agency: Agency,
        status: Annotated[str | None, Query(description="open or resolved")] = None,
        case_state: Annotated[str | None, Query(description="One of: " + ", ".join(cases.CASE_STATES))] = None,
        type: Annotated[str | None, Query(description="A finding type code")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    ) -> Response:
        request_id = uuid.uuid4().hex
        try:
            total, rows = desk.list(agency, status=status or None, case_state=case_state or None,
                                    type=type or None, limit=limit, offset=offset)
        except ValueError as exc:
            raise refused(ServiceError(400, str(exc)), request_id) from None
        except ServiceError as exc:
            raise refused(exc, request_id) from None
        return answer({"total": total, "limit": limit, "offset": offset, "findings": [_shown(r) for r in rows]},
                      request_id)

    @app.get("/v1/findings/{finding_id}", response_model=None, tags=["discrepancy cases"], responses=one,
             summary="One of the calling agency's findings, with its case history")
    def get_finding(finding_id: FindingId, agency: Agency) -> Response:
        request_id = uuid.uuid4().hex
        try:
            return answer(_shown(desk.one(agency, finding_id)), request_id)
        except ServiceError as exc:
            raise refused(exc, request_id) from None

    def act(agency: str, finding_id: str, action: str, **text: str | None) -> Response:
        request_id = uuid.uuid4().hex
        try:
            done, row = desk.act(agency, finding_id, action, request_id, **text)
        except ServiceError as exc:
            log.info("request %s agency=%s action=%s status=%d", request_id, agency, action, exc.status)
            raise refused(exc, request_id) from None
        log.info("request %s agency=%s action=%s %s -> %s", request_id, agency, action, done.from_state,
                 done.to_state)
        return answer({"transition": done.as_dict(), "finding": _shown(row)}, request_id)

    @app.post("/v1/findings/{finding_id}/acknowledge", response_model=None, tags=["discrepancy cases"],
              responses=acted, summary="Acknowledge a finding (from new, disputed or reopened)")
    def acknowledge(finding_id: FindingId, agency: Agency) -> Response:
        return act(agency, finding_id, "acknowledge")

    @app.post("/v1/findings/{finding_id}/dispute", response_model=None, tags=["discrepancy cases"],
              responses=acted, summary="Dispute a finding, with a reason (from new, acknowledged or reopened)")
    def dispute(finding_id: FindingId, agency: Agency, body: Annotated[DisputeBody, Body()]) -> Response:
        return act(agency, finding_id, "dispute", reason=body.reason)

    @app.post("/v1/findings/{finding_id}/corrected", response_model=None, tags=["discrepancy cases"],
              responses=acted,
              summary="Claim the record corrected at the source (from new, acknowledged, disputed or reopened); "
                      "the next run on source data read after the claim verifies it or reopens the case")
    def corrected(finding_id: FindingId, agency: Agency,
                  body: Annotated[CorrectedBody | None, Body()] = None) -> Response:
        return act(agency, finding_id, "corrected", note=body.note if body else None)

    return desk
