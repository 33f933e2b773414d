"""The single-window lookup service (FastAPI): one record of a published dataset, as the calling agency may see it.

Owns the HTTP surface: `GET /v1/citizens/{id}/profile`, `/v1/enterprises/{code}/profile`,
`/v1/parcels/{commune}/{sheet}/{parcel}`, `/healthz`, and the OpenAPI document. A request carries an API key
(`X-API-Key`) that names the agency; keys come from `LIENTHONG_SINGLEWINDOW_KEYS` (JSON `{"<agency>": "<key>"}`)
or the Airflow connection `lienthong_singlewindow` (extra `{"keys": {...}}`), are compared with
`hmac.compare_digest`, and are never stored or logged. The record is read through the agency's view
`agency_<name>.<dataset>` on a connection logged in as the agency's role (`readers`), so the answer holds
exactly the columns schemas/agencies.yaml grants, masked or pseudonymized as granted.

Status codes: 400 malformed key (the reason names what is wrong), 401 no or unknown API key, 403 dataset not
granted (or not to be looked up by that key), 404 no such record, 429 too many wrong API keys from this client
(Retry-After: see `throttle`), 500 the warehouse failed on the lookup, 503 warehouse unavailable or the access
could not be logged (fail closed: see `audit`). Every request that reaches a dataset is logged in
`lienthong_ops.access_log` before the answer is sent; every refused key in `lienthong_ops.auth_failure`.

Connections (`pools`): per worker, a pool per agency and one for the log, sized by the settings
LIENTHONG_SINGLEWINDOW_POOL_SIZE and _LOG_POOL_SIZE, opened on first use; at start the service checks that
all workers' pools fit the server (`pools.check_room`) and refuses to start otherwise.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import psycopg2
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel

from lienthong import feed
from lienthong.access import Agency, Purpose, load_agencies
from lienthong.contracts import Contract, load_contracts
from lienthong.sessions import PersonColumns
from lienthong.settings import Settings, passed_env
from lienthong.singlewindow import pools, usage, validation
from lienthong.singlewindow.audit import (
    AccessLog,
    AccessRecord,
    AuthFailure,
    ensure_access_log,
    log_session_options,
)
from lienthong.singlewindow.config import ServiceConfig
from lienthong.singlewindow.principals import (
    AgencyCaller,
    KeyRing,
    PortalCaller,
    ServiceError,
    kind_of,
    load_api_keys,
)
from lienthong.singlewindow.readers import AgencyReaders
from lienthong.singlewindow.throttle import FailureThrottle
from lienthong.subjects import readable_person_columns, subjects_query

log = logging.getLogger("lienthong.singlewindow")

MAX_ROWS = 100  # parcels sharing a locator: a handful in practice
MAX_CHANGE_ROWS = 5_000  # rows of a change feed page
PURPOSE_HEADER = "X-Purpose"
CASE_HEADER = "X-Case-Id"
_CASE_ID = re.compile(r"[A-Za-z0-9._/:-]{1,64}")
PUBLISHED_SCHEMA = "published"


class Problem(BaseModel):
    detail: str


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


@dataclass(frozen=True)
class Lookup:
    """A lookup endpoint: the dataset it reads and the columns its key matches."""

    dataset: str
    key_columns: tuple[str, ...]
    many: bool = False


CITIZEN = Lookup("citizen_profile", ("citizen_id",))
ENTERPRISE = Lookup("enterprise_profile", ("enterprise_code",))
PARCEL = Lookup("parcel_register", ("commune_code_2025", "map_sheet", "parcel_number"), many=True)


def load_passwords(agencies: dict[str, Agency], names) -> dict[str, str]:
    """The database password of every consuming agency among `names` (other callers have none here)."""
    passwords = {}
    for name in names:
        if kind_of(name, agencies) != "agency":
            continue
        pw = passed_env(agencies[name].password_env)
        if not pw:
            raise RuntimeError(f"agency {name!r} has an API key but {agencies[name].password_env} is not set")
        passwords[name] = pw
    return passwords


def _agencies_served(keys: dict[str, str], agencies: dict[str, Agency]) -> list[str]:
    return [name for name in keys if kind_of(name, agencies) == "agency"]


def check_start(url: str, agencies: dict[str, Agency], served: list[str], config: ServiceConfig, workers: int) -> None:
    """On one connection, closed again: refuse to start when `workers` workers' pools could outgrow the server
    (`pools.check_room`), warn when the server would log the IDs looked up, create the audit tables."""
    roles = {name: agencies[name].role for name in served}
    plan = pools.PoolPlan(workers, roles, config.pool_size, config.log_pool_size, config.db_headroom)
    try:
        conn = psycopg.connect(url, application_name=f"{pools.APP_NAME}-start", options=log_session_options(
            max(config.log_timeout, 10.0)), connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise pools.StartupError(f"cannot reach the warehouse ({type(exc).__name__})") from None
    with conn:
        pools.check_room(plan, pools.server_room(conn, list(roles.values())))
        for risk in pools.parameter_logging_risks(pools.logging_settings(conn)):
            log.warning("the PostgreSQL server may log the IDs looked up: %s", risk)
        try:
            ensure_access_log(conn)
        except psycopg.OperationalError as exc:  # a lock held past the timeout, the server gone
            raise pools.StartupError(f"the audit tables could not be created or checked ({type(exc).__name__}): "
                                     "is lienthong_ops.access_log locked by another session?") from None
    log.info("connections: up to %d per worker (%d agencies x %d + %d for the access log), %d worker(s)",
             plan.per_worker, len(roles), config.pool_size, config.log_pool_size, workers)


class Service:
    """Authentication, validation, the read as the agency, and the audit record of one lookup."""

    def __init__(self, url: str, agencies: dict[str, Agency], contracts: dict[str, Contract], keys: dict[str, str],
                 passwords: dict[str, str], config: ServiceConfig):
        self.url, self.agencies, self.contracts = url, agencies, contracts
        self._plans: dict[tuple[str, str], tuple[PersonColumns, sql.Composed | None]] = {}
        self.keys = KeyRing(keys, agencies)
        self.readers = AgencyReaders(url, agencies, passwords, config.pool_size, config.read_timeout)
        self.audit = AccessLog(url, config.log_pool_size, config.log_timeout)
        self.throttle = FailureThrottle(config.auth_failures, config.auth_window, config.auth_backoff,
                                        config.auth_backoff_max)

    def record_auth_failure(self, failure: AuthFailure) -> None:
        try:
            self.audit.write_auth_failure(failure)
        except Exception as exc:  # the caller gets its 401 all the same: nothing was to be returned
            log.error("request %s: refused key not recorded (%s)", failure.request_id, type(exc).__name__)

    def lookup(self, agency: Agency, spec: Lookup, raw: str, parse: Callable[[], tuple], purpose: str | None,
               case_id: str | None) -> Response:
        def answer(accepted: Purpose) -> tuple[int, dict[str, Any], int, tuple[str, ...], str]:
            try:
                values = parse()
            except validation.InvalidKey as exc:
                raise ServiceError(400, str(exc)) from None
            key_text = "/".join(map(str, values))
            rows = self._read(agency, spec, values)
            if not rows:
                return 404, {"detail": f"no {spec.dataset} record with this key"}, 0, (), key_text
            body = {"count": len(rows), "items": rows} if spec.many else rows[0]
            return 200, body, len(rows), self._subjects(agency, spec, values), key_text

        return self._recorded(agency, spec.dataset, validation.for_log(raw), purpose, case_id, answer)

    def changes(self, agency: Agency, dataset: str, since: int, after: str | None, limit: int, purpose: str | None,
                case_id: str | None) -> Response:
        """A page of the dataset's change feed after version `since` (and after cursor `after`, the previous
        page's `next`), as the agency's change views show it; recorded like a lookup, with the persons of the
        rows returned."""
        key_text = f"changes since {since}" + (f" after {validation.for_log(after, 24)}" if after else "")

        def answer(accepted: Purpose) -> tuple[int, dict[str, Any], int, tuple[str, ...], str]:
            try:
                # no cursor: every row of a version after `since` (a seq is never this large)
                cursor = validation.feed_cursor(after, since) if after else (since, 2**62)
            except validation.InvalidKey as exc:
                raise ServiceError(400, str(exc)) from None
            first, current, rows = self._change_page(agency, dataset, cursor, limit)
            if first is None or current is None:
                raise ServiceError(404, f"{dataset} has no change feed yet (published once, or never)")
            if since < first:
                raise ServiceError(410, f"{dataset}: the change feed is kept from version {first} on; version {since} "
                                        f"is older: read the dataset again and follow the feed from its version")
            if since > current:
                raise ServiceError(400, f"{dataset}: version {since} is newer than the current version {current}")
            more = len(rows) > limit
            rows = rows[:limit]
            last = (rows[-1]["_commit_version"], rows[-1]["_seq"]) if rows else None
            body = {"dataset": dataset, "since": since, "first_version": first, "current_version": current,
                    "count": len(rows), "items": rows, "next": f"{last[0]}.{last[1]}" if more and last else None}
            subjects = self._change_subjects(agency, dataset, cursor, last) if last else ()
            return 200, body, len(rows), subjects, key_text

        return self._recorded(agency, dataset, key_text, purpose, case_id, answer)

    def _recorded(self, agency: Agency, dataset: str, key_text: str, purpose: str | None, case_id: str | None,
                  answer: Callable[[Purpose], tuple[int, dict[str, Any], int, tuple[str, ...], str]]) -> Response:
        """Check the purpose, answer, and record the read in the access log before anything is returned (fail
        closed: an unrecorded answer becomes a 503). `answer` gives (status, body, rows, subjects, key text)."""
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        count = 0
        subjects: tuple[str, ...] = ()
        accepted: Purpose | None = None
        body: dict[str, Any]  # one record, a page of records, or an error's detail
        try:
            accepted = self._accept(agency, dataset, purpose, case_id)
            status, body, count, subjects, key_text = answer(accepted)
        except ServiceError as exc:
            status, body = exc.status, {"detail": exc.detail}
            count, subjects = 0, ()
        latency = (time.perf_counter() - t0) * 1000
        refused = status in (400, 403, 410)
        embargo = (datetime.now(UTC) + timedelta(days=accepted.embargo_days)
                   if accepted and accepted.embargo_days and subjects else None)
        try:
            self.audit.write(AccessRecord(
                agency.name, validation.for_log(purpose) if purpose else None, dataset, key_text, count,
                status, latency, request_id, case_id=validation.for_log(case_id) if case_id else None,
                legal_basis=accepted.legal_basis if accepted else None, refusal=body["detail"] if refused else None,
                subjects=subjects, embargo_until=embargo))
        except Exception as exc:  # fail closed; the exception text may hold the key: log its type only
            log.error("request %s: access log not written (%s); answering 503", request_id, type(exc).__name__)
            status, body = 503, {"detail": "the access could not be recorded; nothing is returned"}
        log.info("request %s agency=%s dataset=%s status=%d rows=%d purpose=%s ms=%.1f", request_id, agency.name,
                 dataset, status, count, accepted.code if accepted else "-", latency)
        return JSONBody(body, status_code=status, headers={"X-Request-ID": request_id})

    def _change_page(self, agency: Agency, dataset: str, cursor: tuple[int, int],
                     limit: int) -> tuple[int | None, int | None, list[dict[str, Any]]]:
        """(first version, current version, up to limit+1 change rows after `cursor`) in one statement, so the
        window and the rows are of one snapshot (a publish or an expiry in between cannot split them)."""
        # the change log view is ordered by (version, seq) itself: no ORDER BY here, so the LIMIT is planned
        # for the page's rows only (see lienthong.access._feed_views); the order is checked below
        statement = sql.SQL("""SELECT w.first_version AS _first_version, w.current_version AS _current_version, c.*
            FROM {window} w LEFT JOIN LATERAL (
                SELECT * FROM {log} l WHERE (l._commit_version, l._seq) > (%s, %s) LIMIT %s) c ON true""").format(
            window=sql.Identifier(agency.schema, feed.window_view(dataset)),
            log=sql.Identifier(agency.schema, feed.change_log_view(dataset)))
        names, rows = self._agency_read(agency, dataset, statement, (cursor[0], cursor[1], limit + 1))
        if not rows:
            return None, None, []
        out = [dict(zip(names, r, strict=True)) for r in rows]
        first, current = out[0]["_first_version"], out[0]["_current_version"]
        items = [{k: v for k, v in r.items() if k not in ("_first_version", "_current_version")} for r in out
                 if r["_commit_version"] is not None]
        places = [(r["_commit_version"], r["_seq"]) for r in items]
        if any(a >= b for a, b in zip(places, places[1:], strict=False)) or (places and places[0] <= cursor):
            raise RuntimeError(f"{dataset}: the change log view returned rows out of (version, seq) order")
        return first, current, items

    def _change_subjects(self, agency: Agency, dataset: str, cursor: tuple[int, int],
                         last: tuple[int, int]) -> tuple[str, ...]:
        """The persons in the change rows of a page (cursor, last], as the agency's grant shows them."""
        contract, grant = self.contracts[dataset], agency.grants[dataset]
        where = sql.SQL("(t._commit_version, t._seq) > (%s, %s) AND (t._commit_version, t._seq) <= (%s, %s)")
        statement = subjects_query(sql.Identifier(PUBLISHED_SCHEMA, feed.changes_table(dataset)), contract, grant,
                                   where)
        if statement is None:
            return ()
        try:
            return tuple(r[0] for r in self.audit.read(statement, (*cursor, *last)))
        except psycopg.Error as exc:  # fail closed: an answer whose persons are unknown cannot be recorded
            log.error("agency %s: the persons of a %s feed page could not be read (%s)", agency.name, dataset,
                      type(exc).__name__)
            raise ServiceError(503, "the access could not be recorded; nothing is returned") from None

    def usage(self, portal: str, raw: str, offset: int, limit: int) -> Response:
        """A person's data-usage history for the citizen portal (`usage`), recorded like a lookup."""
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        key_text, count, refusal = validation.for_log(raw), 0, None
        body: dict[str, Any]
        try:
            citizen_id = validation.personal_id(raw)
            key_text = citizen_id
            conn = psycopg2.connect(self.url, connect_timeout=10, application_name=f"{pools.APP_NAME}-usage",
                                    options=pools.session_options(statement_timeout=30_000,
                                                                  default_transaction_read_only="on"))
            try:
                body = usage.find_usage(conn, citizen_id, self.agencies, self.contracts, offset=offset, limit=limit)
            finally:
                conn.close()
            status, count = 200, len(body["usages"])
        except validation.InvalidKey as exc:
            status, body = 400, {"detail": str(exc)}
            refusal = body["detail"]
        except (psycopg2.Error, psycopg.Error) as exc:
            log.error("request %s: the usage history could not be read (%s)", request_id, type(exc).__name__)
            status, body = 503, {"detail": "the warehouse is unavailable"}
        latency = (time.perf_counter() - t0) * 1000
        try:  # the portal's read holds no subject: it never shows in anyone's history
            self.audit.write(AccessRecord(portal, usage.PURPOSE, usage.DATASET, key_text, count, status, latency,
                                          request_id, legal_basis=usage.RIGHT_TO_KNOW, refusal=refusal))
        except Exception as exc:
            log.error("request %s: access log not written (%s); answering 503", request_id, type(exc).__name__)
            status, body = 503, {"detail": "the access could not be recorded; nothing is returned"}
        log.info("request %s caller=%s dataset=%s status=%d rows=%d ms=%.1f", request_id, portal, usage.DATASET,
                 status, count, latency)
        return JSONBody(body, status_code=status, headers={"X-Request-ID": request_id})

    def _accept(self, agency: Agency, dataset: str, purpose: str | None, case_id: str | None) -> Purpose:
        """The purpose of this read if the agency may read the dataset for it, else a ServiceError: 403 dataset
        not granted or purpose not among the grant's, 400 a header missing or malformed (named)."""
        grant = agency.grants.get(dataset)
        if grant is None:
            raise ServiceError(403, f"dataset {dataset} is not granted to agency {agency.name}")
        allowed = ", ".join(grant.purposes)
        if not purpose:
            raise ServiceError(400, f"header {PURPOSE_HEADER} is required: the purpose of this read, one of "
                                    f"{allowed} (agency {agency.name}, dataset {dataset})")
        if purpose not in grant.purposes:
            raise ServiceError(403, f"purpose {validation.for_log(purpose, 64)!r} is not granted to agency "
                                    f"{agency.name} for dataset {dataset} (granted: {allowed})")
        if not case_id:
            raise ServiceError(400, f"header {CASE_HEADER} is required: the dossier or case number this read serves")
        if not _CASE_ID.fullmatch(case_id):
            raise ServiceError(400, f"header {CASE_HEADER}: 1 to 64 letters, digits and . _ / : - (a dossier number)")
        return agency.purposes[purpose]

    def _subject_plan(self, agency: Agency, spec: Lookup) -> tuple[PersonColumns, sql.Composed | None]:
        """Where the lookup's dataset holds persons as the agency sees them, and the statement listing them
        (made once per agency and dataset: the configuration does not change while the service runs)."""
        key = (agency.name, spec.dataset)
        if key not in self._plans:
            contract, grant = self.contracts[spec.dataset], agency.grants[spec.dataset]
            where = sql.SQL(" AND ").join(sql.SQL("t.{} = %s").format(sql.Identifier(c)) for c in spec.key_columns)
            self._plans[key] = (readable_person_columns(contract, grant),
                                subjects_query(sql.Identifier(PUBLISHED_SCHEMA, spec.dataset), contract, grant, where))
        return self._plans[key]

    def _subjects(self, agency: Agency, spec: Lookup, values: tuple) -> tuple[str, ...]:
        """The persons whose data the answer held (lienthong.subjects), read on the platform's connection."""
        places, statement = self._subject_plan(agency, spec)
        if not places.nested and places.top == spec.key_columns:  # the row looked up is the person: its key
            return tuple(map(str, values))
        if statement is None:
            return ()
        try:
            return tuple(r[0] for r in self.audit.read(statement, values))
        except psycopg.Error as exc:  # fail closed: an answer whose persons are unknown cannot be recorded
            log.error("agency %s: the persons of a %s answer could not be read (%s)", agency.name, spec.dataset,
                      type(exc).__name__)
            raise ServiceError(503, "the access could not be recorded; nothing is returned") from None

    def _read(self, agency: Agency, spec: Lookup, values: tuple) -> list[dict[str, Any]]:
        grant = agency.grants[spec.dataset]  # granted: checked by `_accept`
        hidden = [c for c in spec.key_columns if grant.columns[c] != "visible"]
        if hidden:
            raise ServiceError(403, f"agency {agency.name} may not look up {spec.dataset} by {', '.join(hidden)}")
        contract = self.contracts[spec.dataset]
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in spec.key_columns)
        order = sql.SQL(", ").join(map(sql.Identifier, contract.primary_key))
        statement = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT {}").format(
            sql.Identifier(agency.schema, spec.dataset), where, order, sql.Literal(MAX_ROWS))
        names, rows = self._agency_read(agency, spec.dataset, statement, values)
        return [dict(zip(names, r, strict=True)) for r in rows]

    def _agency_read(self, agency: Agency, dataset: str, statement: sql.Composed,
                     params: tuple) -> tuple[list[str], list[tuple]]:
        """One statement run as the agency; the database's refusals and failures as the caller's status."""
        try:
            return self.readers.query(agency.name, statement, params)
        except (pg_errors.InsufficientPrivilege, pg_errors.UndefinedTable, pg_errors.UndefinedColumn):
            # The database, not this service, has the last word on what the agency may read.
            raise ServiceError(403, f"dataset {dataset} is not available to agency {agency.name} in the warehouse") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # incl. timeouts and a full pool
            log.error("agency %s: warehouse unavailable (%s)", agency.name, type(exc).__name__)
            raise ServiceError(503, "the warehouse is unavailable") from None
        except psycopg.Error as exc:  # answered and recorded like any other outcome, not an unlogged 500
            log.error("agency %s: the warehouse failed on a read of %s (%s)", agency.name, dataset,
                      type(exc).__name__)
            raise ServiceError(500, "the warehouse could not answer this read") from None

    def close(self) -> None:
        self.readers.close()
        self.audit.close()


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed key; `detail` says what is wrong (e.g. the check digit)."},
    401: {"model": Problem, "description": "No API key, or an unknown one (header `X-API-Key`)."},
    403: {"model": Problem, "description": "The dataset is not granted to the calling agency (or not by this key)."},
    404: {"model": Problem, "description": "No record with this key."},
    429: {"model": Problem, "description": "Too many wrong API keys from this client; header Retry-After (seconds)."},
    500: {"model": Problem, "description": "The warehouse failed on this lookup (recorded in the access log)."},
    503: {"model": Problem, "description": "The warehouse is unavailable or the access could not be logged."},
}


async def _agency(request: Request, name: AgencyCaller) -> Agency:
    return request.app.state.service.agencies[name]


Caller = Annotated[Agency, Depends(_agency)]
PurposeHeader = Annotated[str | None, Header(
    alias=PURPOSE_HEADER, description="The purpose of this read: one of the purpose codes the agency's grant of the "
    "dataset lists (schemas/agencies.yaml). Required: a read without it is refused (400), with another purpose "
    "refused (403); both refusals are logged.", examples=["tax_registration"])]
CaseHeader = Annotated[str | None, Header(
    alias=CASE_HEADER, description="The dossier or case number this read serves (1-64 letters, digits and "
    ". _ / : -). Required; logged with the purpose and its legal basis.", examples=["HS-2026-000123"])]


def _record_schema(contract: Contract, description: str) -> dict[str, Any]:
    types = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "date": "string",
             "timestamp": "string", "array": "array", "object": "object"}
    props = {f.name: {"type": types[f.logical_type], "description": f"{f.description} [{f.classification}]"}
             for f in contract.fields}
    return {"type": "object", "description": description, "properties": props}


def _inputs(url: str | None, agencies_path: str | Path | None, api_keys: dict[str, str] | None,
            passwords: dict[str, str] | None):
    from lienthong.db import warehouse_url

    url = url or warehouse_url()
    contracts = load_contracts()
    agencies = load_agencies(agencies_path, contracts)
    keys = api_keys if api_keys is not None else load_api_keys(agencies)
    pw = passwords if passwords is not None else load_passwords(agencies, keys)
    return url, contracts, agencies, keys, pw


def preflight(workers: int, settings: Settings | None = None, *, pool_size: int | None = None) -> None:
    """The start-up checks of `create_app` without building the service: run once before `workers` worker
    processes are started, so that a configuration that does not fit stops the service, not each worker."""
    config = ServiceConfig.from_settings(settings, pool_size=pool_size)
    url, _, agencies, keys, _ = _inputs(None, None, None, None)
    check_start(url, agencies, _agencies_served(keys, agencies), config, workers)


def create_app(url: str | None = None, *, agencies_path: str | Path | None = None,
               api_keys: dict[str, str] | None = None, passwords: dict[str, str] | None = None,
               pool_size: int | None = None, workers: int = 1, settings: Settings | None = None,
               check_logins: bool = True) -> FastAPI:
    """The service over the warehouse `url` (default: the platform's, `lienthong.db.warehouse_url`).

    `url` is the platform's own connection (used for the access log only); reads log in as each agency's role
    on the same server. Keys and passwords default to the environment (see module docstring), pool sizes,
    timeouts and the back-off to `settings` (`pool_size` overrides LIENTHONG_SINGLEWINDOW_POOL_SIZE). `workers`
    is how many processes serve this app: the start-up check counts their pools together."""
    config = ServiceConfig.from_settings(settings, pool_size=pool_size)
    url, contracts, agencies, keys, pw = _inputs(url, agencies_path, api_keys, passwords)
    check_start(url, agencies, _agencies_served(keys, agencies), config, workers)
    service = Service(url, agencies, contracts, keys, pw, config)
    if check_logins:
        service.readers.check_logins()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        lifespan=lifespan,
        title="lienthong single window",
        version="1.0.0",
        description="Look up a citizen, an enterprise or a land parcel in the shared datasets; the answer holds "
                    "the columns the calling agency is granted (schemas/agencies.yaml), nothing else. Every "
                    "lookup is recorded in the platform's access log.",
    )
    app.state.service = service

    @app.exception_handler(ServiceError)
    def _service_error(request: Request, exc: ServiceError) -> Response:
        return JSONBody({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONBody({"detail": "malformed request"}, status_code=400)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> Response:
        route = getattr(request.scope.get("route"), "path", "?")  # the template: the path itself holds an ID
        log.error("unexpected %s on %s", type(exc).__name__, route)
        return JSONBody({"detail": "internal error"}, status_code=500)

    def ok(lookup: Lookup, what: str) -> dict[int | str, dict[str, Any]]:
        contract = contracts[lookup.dataset]
        desc = f"The {what}: the columns of {lookup.dataset} granted to the calling agency (others are absent)."
        schema = _record_schema(contract, desc)
        if lookup.many:
            schema = {"type": "object", "properties": {"count": {"type": "integer"}, "items": {"type": "array", "items": schema}}}
        return {200: {"description": desc, "content": {"application/json": {"schema": schema}}}, **_ERRORS}

    @app.get("/v1/citizens/{citizen_id}/profile", response_model=None, responses=ok(CITIZEN, "citizen's profile"),
             tags=["lookups"], summary="A citizen's profile by personal ID")
    def citizen_profile(
        citizen_id: Annotated[str, PathParam(description="12-digit personal ID (CCCD)", examples=["031085001234"])],
        agency: Caller, purpose: PurposeHeader = None, case_id: CaseHeader = None,
    ) -> Response:
        return service.lookup(agency, CITIZEN, citizen_id, lambda: (validation.personal_id(citizen_id),), purpose,
                              case_id)

    @app.get("/v1/enterprises/{code}/profile", response_model=None, responses=ok(ENTERPRISE, "enterprise's profile"),
             tags=["lookups"], summary="An enterprise's profile by enterprise code (tax code)")
    def enterprise_profile(
        code: Annotated[str, PathParam(description="Tax code: 10 digits, or NNNNNNNNNN-NNN for a branch",
                                       examples=["0100233488"])],
        agency: Caller, purpose: PurposeHeader = None, case_id: CaseHeader = None,
    ) -> Response:
        return service.lookup(agency, ENTERPRISE, code, lambda: (validation.tax_code(code),), purpose, case_id)

    @app.get("/v1/parcels/{commune}/{sheet}/{parcel}", response_model=None, responses=ok(PARCEL, "parcels"),
             tags=["lookups"], summary="The parcels at a 2025 commune, map sheet and parcel number")
    def parcels(
        commune: Annotated[str, PathParam(description="5-digit commune code (2025 units)", examples=["11311"])],
        sheet: Annotated[str, PathParam(description="Map sheet number (1-99999)", examples=["12"])],
        parcel: Annotated[str, PathParam(description="Parcel number on the sheet (1-99999)", examples=["345"])],
        agency: Caller, purpose: PurposeHeader = None, case_id: CaseHeader = None,
    ) -> Response:
        return service.lookup(agency, PARCEL, f"{commune}/{sheet}/{parcel}", lambda: (
            validation.commune_code(commune), validation.positive_int(sheet, "the map sheet"),
            validation.positive_int(parcel, "the parcel number")), purpose, case_id)

    @app.get("/v1/datasets/{name}/changes", response_model=None, tags=["feeds"],
             summary="The rows of a published dataset changed after a version (its change feed), page by page",
             description="The change feed as the calling agency's views show the dataset: `items` are rows with "
                         "`_change_type` (insert, update_preimage, update_postimage, delete), `_commit_version`, "
                         "`_commit_timestamp` and `_seq`, in that order; hidden columns absent, masked and "
                         "pseudonymized ones as in the agency's view, rows outside its filter left out. Apply "
                         "deletes and pre-images as removals, inserts and post-images as additions. `next` is the "
                         "cursor of the following page (pass it as `after`), null on the last one. Recorded in the "
                         "access log with the persons of the rows returned, like a lookup.",
             responses={200: {"description": "`dataset`, `since`, `first_version`, `current_version`, `count`, "
                                             "`items`, `next`."},
                        410: {"model": Problem, "description": "`since` is older than the feed keeps (retention): "
                                                               "read the dataset again, then follow from its version."},
                        **_ERRORS})
    def dataset_changes(
        name: Annotated[str, PathParam(description="A published dataset granted to the agency",
                                       pattern=r"^[a-z][a-z0-9_]{0,62}$", examples=["citizen_profile"])],
        agency: Caller,
        since: Annotated[int, Query(ge=0, le=2_000_000_000, description="The version the caller's copy holds")],
        after: Annotated[str | None, Query(max_length=40, description="`next` of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_CHANGE_ROWS, description="Rows per page")] = 500,
        purpose: PurposeHeader = None, case_id: CaseHeader = None,
    ) -> Response:
        return service.changes(agency, name, since, after, limit, purpose, case_id)

    @app.get("/v1/citizens/{citizen_id}/usage", response_model=None, tags=["citizens"],
             summary="A citizen's data-usage history (citizen portal)",
             description="Who used the person's data: every answered lookup that held it and every agency database "
                         "session whose views served a published version containing the person, newest first "
                         "(the shape of the Estonian Data Tracker's findUsage). Entries under an embargo are left "
                         "out until it ends. Only the citizen portal's key opens this route.",
             responses={200: {"description": "`personId`, `offset`, `limit`, `total`, `unchecked` (reads of "
                                             "versions no longer kept) and `usages`: logTime, action (lookup or "
                                             "bulk_read), receiver, receiverName, dataset, version, purpose, "
                                             "legalBasis, caseId."}, **_ERRORS})
    def citizen_usage(
        citizen_id: Annotated[str, PathParam(description="12-digit personal ID (CCCD)", examples=["031085001234"])],
        portal: PortalCaller,
        offset: Annotated[int, Query(ge=0, le=1_000_000, description="Entries to skip")] = 0,
        limit: Annotated[int, Query(ge=1, le=usage.MAX_LIMIT, description="Entries to return")] = 50,
    ) -> Response:
        return service.usage(portal, citizen_id, offset, limit)

    @app.get("/healthz", tags=["operations"], summary="Liveness, and whether the access log can be written",
             responses={503: {"model": Problem, "description": "The access log cannot be written now (warehouse "
                                                               "unreachable, or the table locked past the timeout)."}})
    def healthz() -> Response:
        try:
            service.audit.check_writable()  # within LIENTHONG_SINGLEWINDOW_LOG_TIMEOUT
        except Exception as exc:
            log.error("health check: the access log cannot be written (%s)", type(exc).__name__)
            return JSONBody({"status": "unavailable"}, status_code=503)
        return JSONBody({"status": "ok"})

    from lienthong.singlewindow import cases, principals  # the registry agencies' cases: /v1/findings

    cases.register(app, url, principals.source_caller)
    return app
