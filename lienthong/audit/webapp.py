"""The auditors' view: a small FastAPI app that the Airflow API server mounts (plugins/lienthong_audit.py).

Owns the pages and the read-only file route, not the reports (lienthong.audit.render writes them) nor the
findings (lienthong.findings). Everything is relative to where the app is mounted (`/lienthong-audit/` in the
local stack), so it works behind a proxy path and inside the Airflow UI's iframe:

    ./                              the runs that have a report: headline figures, links to report, figures, CSVs
    ./findings                      the findings browser (filter by type, agency, status, severity, case
                                    state; paging), each finding with its case state and last case action
    ./api/reports, ./api/findings   the same as JSON
    ./files/audit/<id>/...          a report's folder (report.html, figures.json, csv/*.csv), read-only
    ./files/data_docs/...           the GX Data Docs the reports link to as `../../data_docs/...`

Every response carries a Content-Security-Policy that lets no other host supply a script, style, font or
image (`content_security_policy`): the app's own pages and the reports run no script at all; a Data Docs page
runs the vendored copies of the libraries GX loads from CDNs (lienthong.audit.datadocs, served from this
package at `files/data_docs/static/lienthong/...`) and, if the pipeline built it with the data's values
escaped, its own inline scripts, allowed by their hashes (`_data_docs_page`).
Numeric query parameters are bounded, so a value out of range is a 422, never a server error.

Every route needs an Airflow user allowed to read the runs of the `audit_report` DAG. Plugin apps are not
protected by Airflow, so `require_user` calls Airflow's own `get_user` (the `Authorization: Bearer` JWT, else
the UI's `_token` cookie) and the configured auth manager's `is_authorized_dag`. Without a valid token a
browser asking for a page is sent to Airflow's login (`api/v2/auth/login?next=...`, what the Airflow UI does
itself on a 401) and anything else gets 401; a user without the permission gets 403. Personal values in
findings are masked with lienthong.masking before they leave the app.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lienthong.audit.datadocs import SITE_STATIC, STATIC, offline_text, script_hashes, to_site_root
from lienthong.masking import mask_json

log = logging.getLogger(__name__)

AUDIT_DAG_ID = "audit_report"
"""Reading the reports and findings is reading this DAG's runs (what the auth manager is asked)."""
SERVED_FOLDERS = ("audit", "data_docs")
"""The only folders of the reports dir that `files/` serves."""
PAGE_SIZES = (25, 50, 100, 250)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
"""The largest `limit` lienthong.findings.query_findings accepts."""
MAX_OFFSET = 2**63 - 1
"""PostgreSQL's OFFSET is a bigint: one more is an error in the warehouse, so it is refused here."""
TEMPLATES = Path(__file__).resolve().parent / "templates" / "webapp"
_APP_STATIC = ("data_docs", *SITE_STATIC.split("/"))
"""`files/data_docs/static/lienthong/...`: the vendored Data Docs assets, served from this package."""


def content_security_policy(script_src: Sequence[str] = ("'none'",)) -> str:
    """The Content-Security-Policy of a response: only `script_src` differs between them.

    Nothing is loaded from another origin. Inline styles stay allowed (the pages, the reports' SVG and GX's
    pages style elements in place); scripts never inline unless `script_src` names their hashes, never
    evaluated from strings, never from elsewhere.
    """
    return "; ".join((
        "default-src 'none'",
        "script-src " + " ".join(script_src),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'self'",  # the Airflow UI shows the app in an iframe
    ))


CSP = content_security_policy()
"""The policy of every response without a script: the app's pages, reports, JSON, files, errors."""
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # audit data is not for shared caches
}


def _secured(response: Response) -> Response:
    """`response` with the CSP (unless the route set its own) and the other security headers."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class NotAuthorized(HTTPException):
    """An authenticated user the auth manager does not allow to read the audit_report runs."""

    def __init__(self) -> None:
        super().__init__(status_code=403, detail=f"Forbidden: reading the runs of DAG {AUDIT_DAG_ID!r} is not allowed")


async def require_user(request: Request) -> Any:
    """The Airflow user of the request, allowed to read the runs of the audit_report DAG.

    Uses Airflow's own dependency `airflow.api_fastapi.core_api.security.get_user` (bearer header first,
    else the `_token` cookie; 401 without a token or with an expired one, 403 "Invalid JWT token" for a bad one)
    and the auth manager's `is_authorized_dag(method="GET", access_entity=RUN, details=DagDetails(id=...))`.
    Tests replace this dependency through `app.dependency_overrides[require_user]`.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, _oauth_token=None, bearer_credentials=credentials)
    allowed = await run_in_threadpool(
        get_auth_manager().is_authorized_dag,
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=AUDIT_DAG_ID), user=user,
    )
    if not allowed:
        raise NotAuthorized()
    return user


def login_redirect(request: Request) -> RedirectResponse:
    """To Airflow's login, coming back to this page afterwards: the public `api/v2/auth/login` redirects to
    whatever login the configured auth manager has (the Airflow UI does the same on a 401)."""
    from airflow.api_fastapi.app import API_ROOT_PATH  # the path of [api] base_url, ending in "/"

    return RedirectResponse(f"{API_ROOT_PATH}api/v2/auth/login?{urlencode({'next': str(request.url)})}",
                            status_code=307)


def _wants_html(request: Request) -> bool:
    """A browser asking for a page (not the JSON API, not a script)."""
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    inner = path[len(root):] if root and path.startswith(root) else path
    return not inner.startswith("/api/") and "text/html" in request.headers.get("accept", "")


@dataclass
class _Where:
    """Where the app reads from; resolved on first use (the API server's environment names the data dir)."""

    reports_dir: Path | None
    database_url: str | None

    def reports(self) -> Path:
        if self.reports_dir is None:
            from lienthong.settings import load_settings

            self.reports_dir = load_settings().reports_dir
        return self.reports_dir

    def url(self) -> str:
        if self.database_url is None:
            from lienthong.db import warehouse_url

            self.database_url = warehouse_url()
        return self.database_url


# ------------------------------------------------------------------------------------------ the files route


def resolve_served_file(reports_dir: Path, relative: str) -> Path:
    """The file `relative` under `reports_dir` if the files route may serve it, else HTTPException 404.

    Only files under `audit/<report id>/` and `data_docs/` (`data_docs/static/lienthong/` is this package's
    `static/`, see lienthong.audit.datadocs); no empty, `.` or `..` segment, no hidden name
    (a report being written is a hidden temporary folder), no backslash or NUL; and, after resolving links, the
    file must still lie inside the served folder.
    """
    parts = relative.split("/")
    refused = HTTPException(status_code=404, detail="Not Found")
    if (len(parts) < 2 or parts[0] not in SERVED_FOLDERS
            or any(not p or p.startswith(".") or "\\" in p or "\x00" in p for p in parts)):
        raise refused
    if parts[0] == "audit":
        from lienthong.audit.store import report_id_for

        if len(parts) < 3 or report_id_for(parts[1]) != parts[1]:
            raise refused
    base, inner = (Path(reports_dir) / parts[0]).resolve(), parts[1:]
    if tuple(parts[:len(_APP_STATIC)]) == _APP_STATIC:
        # the site's copy of the vendored assets: served from this package, whatever the data dir holds
        base, inner = STATIC.resolve(), parts[len(_APP_STATIC):]
        if not inner:
            raise refused
    target = (base / Path(*inner)).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise refused
    return target


# ------------------------------------------------------------------------------------------ pages


@functools.cache
def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.2f} %"
    env.filters["num"] = lambda v: "–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.4g}")
    env.filters["when"] = lambda v: "–" if v is None else v.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(
        v, "strftime") else str(v)
    env.filters["urlpart"] = lambda v: quote(str(v), safe="")
    env.filters["compact"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return env


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates().get_template(name).render(**context), status_code=status_code)


def _report_links(reports_dir: Path, report_id: str) -> dict[str, Any]:
    """Relative links (from the app's root) to what a report's folder holds."""
    from lienthong.audit.store import report_id_for

    if report_id_for(report_id) != report_id:
        return {"report": None, "figures": None, "csv": {}}
    folder = Path(reports_dir) / "audit" / report_id
    prefix = f"files/audit/{quote(report_id)}/"
    csv_dir = folder / "csv"
    return {
        "report": prefix + "report.html" if (folder / "report.html").is_file() else None,
        "figures": prefix + "figures.json" if (folder / "figures.json").is_file() else None,
        "csv": {p.stem: f"{prefix}csv/{quote(p.name)}" for p in sorted(csv_dir.glob("*.csv"))} if csv_dir.is_dir()
        else {},
    }


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    """A finding as it may be shown: personal values in subject and evidence masked, times as ISO text."""
    out = dict(row)
    out["subject"] = mask_json(row.get("subject") or {})
    out["evidence"] = mask_json(row.get("evidence") or {})
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


@dataclass
class FindingFilter:
    type: str | None
    agency: str | None
    status: str | None
    severity: str | None
    limit: int
    offset: int
    case_state: str | None = None

    def query(self, **changes: Any) -> str:
        """The query string of these filters (with `changes`), empty values left out."""
        values = {**self.__dict__, **changes}
        return urlencode({k: v for k, v in values.items() if v not in (None, "") and not (k == "offset" and v == 0)})


def finding_filter(
    type_: Annotated[str | None, Query(alias="type")] = None,
    agency: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    case_state: str | None = None,
) -> FindingFilter:
    """The browser's filters from the query string; an empty text value means "any" (what the form sends).
    A number that is not a whole number in range is refused by FastAPI (422) before the warehouse is asked."""

    def text(value: str | None) -> str | None:
        return (value or "").strip() or None

    return FindingFilter(type=text(type_), agency=text(agency), status=text(status), severity=text(severity),
                         limit=limit, offset=offset, case_state=text(case_state))


def _data_docs_page(target: Path, inside_site: str) -> HTMLResponse:
    """A Data Docs page as the browser gets it: scripts and styles from the vendored copies, and a CSP that
    runs exactly the page's own inline scripts and handlers (their hashes).

    A page that still names a CDN was built before lienthong.quality rewrote the links and escaped the data's
    values (lienthong.audit.datadocs): its links are rewritten here, but its inline code cannot be told from
    markup that came with a value, so none of it runs (its styles and tables still show).
    """
    text = target.read_text(encoding="utf-8", errors="replace")
    html = offline_text(text, to_site_root(inside_site))
    hashes = script_hashes(html) if html == text else []
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(("'self'", *hashes))})


# ------------------------------------------------------------------------------------------ the app


def create_app(*, reports_dir: Path | None = None, database_url: str | None = None) -> FastAPI:
    """The auditors' app. `reports_dir` and `database_url` default to the platform's settings (read on first use)."""
    import psycopg2

    from lienthong.db import connect

    where = _Where(Path(reports_dir) if reports_dir is not None else None, database_url)
    app = FastAPI(title="Liên thông audit", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(require_user)])

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException) -> Response:
        # Not logged in (or a token the server no longer accepts, e.g. after a restart with a new JWT secret):
        # a browser goes to the login page, as the Airflow UI does on these two answers; an API client gets
        # the status.
        not_logged_in = exc.status_code == 401 or (exc.status_code == 403 and exc.detail == "Invalid JWT token")
        if not_logged_in and _wants_html(request):
            return login_redirect(request)
        if _wants_html(request):
            return _page("error.html.j2", status_code=exc.status_code, status=exc.status_code, detail=exc.detail)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_html(request):
            detail = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors())
            return _page("error.html.j2", status_code=422, status=422, detail=detail)
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        # Starlette answers an unhandled error outside every middleware (and then re-raises it for the server to
        # log): the headers are set here.
        if _wants_html(request):
            response: Response = _page("error.html.j2", status_code=500, status=500, detail="Internal Server Error")
        else:
            response = JSONResponse({"detail": "Internal Server Error"}, status_code=500)
        return _secured(response)

    @app.exception_handler(psycopg2.OperationalError)
    async def _warehouse_down(request: Request, exc: psycopg2.OperationalError) -> Response:
        log.warning("audit view: the warehouse is not reachable: %s", exc)
        detail = "The warehouse is not reachable; try again later."
        if _wants_html(request):
            return _page("error.html.j2", status_code=503, status=503, detail=detail)
        return JSONResponse({"detail": detail}, status_code=503)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        return _secured(await call_next(request))

    def reports_rows() -> list[dict[str, Any]]:
        from lienthong.audit.store import list_reports

        with connect(where.url()) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('lienthong_ops.audit_report')")
            if cur.fetchone()[0] is None:  # no report yet: do not create tables from a viewer
                return []
            rows = list_reports(conn)
        for row in rows:
            row["links"] = _report_links(where.reports(), row["report_id"])
            row["headline"] = row.get("headline") or {}
        return rows

    def findings_page(flt: FindingFilter, *, summary: bool = True) -> tuple[int, list[dict[str, Any]], list[dict]]:
        from lienthong.findings import findings_summary, query_findings

        with connect(where.url()) as conn:
            try:
                total, rows = query_findings(conn, type=flt.type, agency=flt.agency, status=flt.status,
                                             severity=flt.severity, case_state=flt.case_state, limit=flt.limit,
                                             offset=flt.offset)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            by_type = findings_summary(conn) if summary else []
        return total, [_masked(r) for r in rows], by_type

    @app.get("/", response_class=HTMLResponse)
    def reports_page() -> HTMLResponse:
        return _page("reports.html.j2", reports=reports_rows())

    @app.get("/api/reports")
    def reports_json() -> JSONResponse:
        rows = reports_rows()
        return JSONResponse({"reports": [
            {"report_id": r["report_id"], "run_id": r["run_id"], "publish_run_id": r["publish_run_id"],
             "audit_run_id": r["audit_run_id"], "created_at": r["created_at"].isoformat() if r["created_at"] else None,
             "headline": r["headline"], "links": r["links"]}
            for r in rows
        ]})

    @app.get("/findings", response_class=HTMLResponse)
    def findings_html(flt: Annotated[FindingFilter, Depends(finding_filter)]) -> HTMLResponse:
        from lienthong.cases import CASE_STATES
        from lienthong.findings import AGENCIES, SEVERITIES, TAXONOMY

        total, rows, summary = findings_page(flt)
        pages = max(1, math.ceil(total / flt.limit))
        return _page(
            "findings.html.j2", rows=rows, total=total, flt=flt, summary=summary, taxonomy=TAXONOMY,
            agencies=AGENCIES, severities=SEVERITIES, statuses=("open", "resolved"), case_states=CASE_STATES,
            page_sizes=sorted({*PAGE_SIZES, flt.limit}), page=flt.offset // flt.limit + 1, pages=pages,
            prev_query=flt.query(offset=max(0, flt.offset - flt.limit)) if flt.offset > 0 else None,
            next_query=flt.query(offset=flt.offset + flt.limit) if flt.offset + flt.limit < total else None,
        )

    @app.get("/api/findings")
    def findings_json(flt: Annotated[FindingFilter, Depends(finding_filter)]) -> JSONResponse:
        total, rows, _ = findings_page(flt, summary=False)
        return JSONResponse({"total": total, "limit": flt.limit, "offset": flt.offset, "findings": rows})

    @app.get("/files/{relative:path}")
    def files(relative: str) -> Response:
        target = resolve_served_file(where.reports(), relative)
        if relative.startswith("data_docs/") and target.suffix.lower() in (".html", ".htm"):
            return _data_docs_page(target, relative.removeprefix("data_docs/"))
        response = FileResponse(target)
        if tuple(relative.split("/")[:len(_APP_STATIC)]) == _APP_STATIC:
            response.headers["Cache-Control"] = "private, max-age=86400"  # versioned third-party files
        return response

    return app
