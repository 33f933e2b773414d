"""The auditors' app without a database: who gets in (Airflow's token, the auth manager's verdict), where a
browser without a token is sent, which files the read-only route serves, the Content-Security-Policy of every
response, how Data Docs pages are served, numeric parameters out of range, and how the plugin registers it.
Pages that read the warehouse are tested in tests/integration/lienthong/test_audit_pages.py."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from lienthong.audit import webapp
from lienthong.audit.datadocs import STATIC, offsite_loads
from lienthong.audit.webapp import MAX_OFFSET, MAX_PAGE_SIZE, create_app, require_user, resolve_served_file

REPO = Path(__file__).resolve().parents[3]
REPORT_ID = "manual__2026-11-22T10_00_00_00_00"
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NO_WAREHOUSE = "postgresql://nobody@/none?host=/nonexistent-socket-dir"
# A Data Docs page as GX 1.24 writes it (the CDN links of its templates, its inline code), three folders down.
GX_PAGE = """<!DOCTYPE html><html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://cdn.jsdelivr.net/npm/vega-embed@6"></script>
<style>.navbar-brand a { background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/x.png') }</style>
</head><body>
<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=c">
<button onclick="showAllValidations()">Show All</button>
<script>
    function showAllValidations() { $(".hide").fadeIn(); }
</script>
</body></html>"""


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    """A reports dir with one report folder, a report being written (hidden), Data Docs and things not to serve."""
    root = tmp_path / "reports"
    report = root / "audit" / REPORT_ID
    (report / "csv").mkdir(parents=True)
    (report / "report.html").write_text("<section id='trends'><svg></svg></section>", encoding="utf-8")
    (report / "figures.json").write_text("{}", encoding="utf-8")
    (report / "csv" / "trends.csv").write_text("run_id\nr1\n", encoding="utf-8")
    (root / "audit" / f".{REPORT_ID}.tmp-123").mkdir()
    (root / "audit" / f".{REPORT_ID}.tmp-123" / "report.html").write_text("half written", encoding="utf-8")
    (root / "data_docs" / "validations").mkdir(parents=True)
    (root / "data_docs" / "index.html").write_text("<h1>Data Docs</h1>", encoding="utf-8")
    (root / "data_docs" / "validations" / "s" / "r").mkdir(parents=True)
    (root / "data_docs" / "validations" / "s" / "r" / "gx.html").write_text(GX_PAGE, encoding="utf-8")
    (root / "secret.txt").write_text("not for the browser", encoding="utf-8")
    (root / "quarantine").mkdir()
    (root / "quarantine" / "rows.json").write_text("[]", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("outside the reports dir", encoding="utf-8")
    (root / "data_docs" / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "data_docs" / "validations" / "up").symlink_to(root)
    return root


@pytest.fixture
def client(reports_dir: Path) -> TestClient:
    """The app with the Airflow check replaced by a logged-in user (no database is touched by these routes)."""
    app = create_app(reports_dir=reports_dir, database_url="postgresql://unused/none")
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    return TestClient(app)


@pytest.fixture
def anonymous(reports_dir: Path) -> TestClient:
    """The app with Airflow's real authentication dependency."""
    return TestClient(create_app(reports_dir=reports_dir, database_url="postgresql://unused/none"))


# ------------------------------------------------------------------------------------------ authentication


@pytest.mark.parametrize("path", ["/", "/findings", "/api/findings", "/api/reports",
                                  f"/files/audit/{REPORT_ID}/report.html", "/files/data_docs/index.html"])
def test_a_request_without_a_token_is_refused_with_401(anonymous: TestClient, path: str):
    resp = anonymous.get(path, headers={"accept": "application/json"}, follow_redirects=False)
    assert resp.status_code == 401
    assert resp.json() == {"detail": "Not authenticated"}
    assert "svg" not in resp.text


@pytest.mark.parametrize("path", ["/", "/findings?type=duplicate_records", f"/files/audit/{REPORT_ID}/report.html"])
def test_a_browser_without_a_token_is_sent_to_the_airflow_login_and_back(anonymous: TestClient, path: str):
    resp = anonymous.get(path, headers=HTML, follow_redirects=False)
    assert resp.status_code == 307
    location = urlsplit(resp.headers["location"])
    assert location.path.endswith("/api/v2/auth/login")
    assert parse_qs(location.query)["next"] == [f"http://testserver{path}"]


def test_the_json_api_answers_401_even_to_a_browser(anonymous: TestClient):
    assert anonymous.get("/api/findings", headers=HTML, follow_redirects=False).status_code == 401


class FakeAuthManager:
    """Stands in for the configured auth manager: knows one token, allows or refuses, records the question."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.asked: list[dict] = []

    async def get_user_from_token(self, token: str):
        from jwt import InvalidTokenError

        if token != "good-token":
            raise InvalidTokenError("bad signature")
        return SimpleNamespace(username="auditor")

    def is_authorized_dag(self, **kwargs) -> bool:
        self.asked.append(kwargs)
        return self.allow


@pytest.fixture
def auth_manager(monkeypatch):
    import airflow.api_fastapi.app as airflow_app
    import airflow.api_fastapi.core_api.security as security

    def install(allow: bool) -> FakeAuthManager:
        manager = FakeAuthManager(allow)
        monkeypatch.setattr(airflow_app, "get_auth_manager", lambda: manager)
        monkeypatch.setattr(security, "get_auth_manager", lambda: manager)
        return manager

    return install


@pytest.mark.parametrize("how", ["bearer", "cookie"])
def test_a_valid_airflow_token_from_header_or_ui_cookie_lets_an_allowed_user_in(anonymous, auth_manager, how):
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = auth_manager(allow=True)
    if how == "bearer":
        resp = anonymous.get(f"/files/audit/{REPORT_ID}/figures.json", headers={"authorization": "Bearer good-token"})
    else:
        anonymous.cookies.set("_token", "good-token")
        resp = anonymous.get(f"/files/audit/{REPORT_ID}/figures.json")
    assert resp.status_code == 200, resp.text
    (asked,) = manager.asked
    assert asked["method"] == "GET" and asked["access_entity"] == DagAccessEntity.RUN
    assert asked["details"] == DagDetails(id="audit_report") and asked["user"].username == "auditor"


def test_a_user_not_allowed_to_read_audit_report_runs_gets_403_not_the_login(anonymous, auth_manager):
    auth_manager(allow=False)
    headers = {**HTML, "authorization": "Bearer good-token"}
    resp = anonymous.get(f"/files/audit/{REPORT_ID}/report.html", headers=headers, follow_redirects=False)
    assert resp.status_code == 403
    assert "audit_report" in resp.text and "svg" not in resp.text
    api = anonymous.get("/api/findings", headers={"authorization": "Bearer good-token"})
    assert api.status_code == 403


def test_a_token_the_server_does_not_accept_sends_a_browser_to_login_and_an_api_client_gets_403(
        anonymous, auth_manager):
    auth_manager(allow=True)
    anonymous.cookies.set("_token", "token-from-an-earlier-stack")
    page = anonymous.get("/", headers=HTML, follow_redirects=False)
    assert page.status_code == 307 and "/api/v2/auth/login" in page.headers["location"]
    api = anonymous.get("/api/reports")
    assert api.status_code == 403 and api.json() == {"detail": "Invalid JWT token"}


def test_require_user_is_airflows_get_user_then_the_auth_manager():
    # the dependency tests override must be the one every route uses
    app = create_app(reports_dir=Path("/nonexistent"), database_url="postgresql://unused/none")
    assert [d.dependency for d in app.router.dependencies] == [require_user]


# ------------------------------------------------------------------------------------------ files


def test_a_reports_files_are_served_read_only(client: TestClient):
    page = client.get(f"/files/audit/{REPORT_ID}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg>" in page.text
    assert "default-src 'none'; script-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/files/audit/{REPORT_ID}/csv/trends.csv").text == "run_id\nr1\n"
    assert client.get("/files/data_docs/index.html").status_code == 200
    assert client.post(f"/files/audit/{REPORT_ID}/report.html").status_code == 405


def test_data_docs_are_reachable_by_the_relative_link_a_report_uses(client: TestClient):
    # the report at files/audit/<id>/report.html links to ../../data_docs/index.html
    base = f"http://testserver/files/audit/{REPORT_ID}/report.html"
    from urllib.parse import urljoin

    target = urljoin(base, "../../data_docs/index.html")
    assert client.get(target).text == "<h1>Data Docs</h1>"


@pytest.mark.parametrize("path", [
    "/files/secret.txt",                                   # the reports dir itself is not served
    "/files/quarantine/rows.json",                         # nor any other folder than audit/ and data_docs/
    "/files/audit/%2e%2e/secret.txt",                      # encoded dot segments
    f"/files/audit/{REPORT_ID}/%2e%2e/%2e%2e/secret.txt",
    "/files/data_docs/..%2fsecret.txt",
    "/files/data_docs/%2e%2e%2f%2e%2e%2foutside.txt",
    f"/files/audit/{REPORT_ID}/..%5c..%5csecret.txt",       # backslashes
    "/files/%2fetc%2fpasswd",                              # absolute paths
    "/files/audit//etc/passwd",
    f"/files/audit/.{REPORT_ID}.tmp-123/report.html",      # a report being written
    "/files/data_docs/escape.txt",                         # a link out of the served folder
    "/files/data_docs/validations/up/secret.txt",
    "/files/audit/no%20such%20id/report.html",             # not a report id
    "/files/audit",
    "/files/data_docs/",
])
def test_paths_outside_the_report_and_data_docs_folders_are_refused(client: TestClient, path: str):
    resp = client.get(path)
    assert resp.status_code == 404, (path, resp.text[:200])
    assert "not for the browser" not in resp.text and "outside the reports dir" not in resp.text


@pytest.mark.parametrize("relative", ["../secret.txt", "audit/../secret.txt", "data_docs/../../outside.txt",
                                      f"audit/{REPORT_ID}/../../secret.txt", "data_docs/./index.html",
                                      "/etc/passwd", "data_docs/index.html\x00.png"])
def test_resolve_served_file_refuses_dot_segments_and_absolute_paths(reports_dir: Path, relative: str):
    with pytest.raises(HTTPException) as refused:
        resolve_served_file(reports_dir, relative)
    assert refused.value.status_code == 404


# ------------------------------------------------------------------------------------------ the plugin


def test_the_plugin_mounts_the_app_and_adds_two_nav_views_with_relative_links():
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        import lienthong_audit
    finally:
        sys.path.remove(str(REPO / "plugins"))
    plugin = lienthong_audit.LienthongAuditPlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/lienthong-audit" and app["name"]
    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    views = {v["url_route"]: v for v in plugin.external_views}
    assert set(views) == {"audit-reports", "audit-findings"}
    for view in views.values():
        assert view["destination"] == "nav" and not view["href"].startswith("/")
        assert view["href"].startswith("lienthong-audit/")


def test_loading_the_plugin_does_not_import_the_app_until_a_request_comes(reports_dir: Path):
    code = (
        "import sys; sys.path.insert(0, 'plugins'); import lienthong_audit, asyncio;"
        "assert 'lienthong.audit.webapp' not in sys.modules, 'imported at load';"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'lienthong'], 'platform code imported at load';"
        "from starlette.testclient import TestClient;"
        "c = TestClient(lienthong_audit.LazyAuditApp());"
        "r = c.get('/api/reports');"
        "assert r.status_code == 401, r.status_code;"
        "assert 'lienthong.audit.webapp' in sys.modules; print('ok')"
    )
    env = {**os.environ, "LIENTHONG_DATA_DIR": str(reports_dir.parent)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_webapp_module_exposes_the_dag_it_asks_about():
    assert webapp.AUDIT_DAG_ID == "audit_report"


def test_an_unreachable_warehouse_is_a_503_naming_it(reports_dir: Path):
    app = create_app(reports_dir=reports_dir, database_url="postgresql://nobody@/none?host=/nonexistent-socket-dir")
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    client = TestClient(app)
    api = client.get("/api/findings")
    assert api.status_code == 503 and "warehouse is not reachable" in api.json()["detail"]
    page = client.get("/", headers=HTML)
    assert page.status_code == 503 and "warehouse is not reachable" in page.text


# ------------------------------------------------------------------------------------------ CSP on every response


def _policy(resp) -> dict[str, list[str]]:
    """The response's CSP as {directive: sources}, checked to let no other host supply anything."""
    header = resp.headers.get("content-security-policy")
    assert header, (resp.request.method, resp.request.url, resp.status_code)
    directives = {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"] and directives["frame-ancestors"] == ["'self'"]
    keywords = {"'self'", "'none'", "'unsafe-hashes'", "data:"}
    for name, sources in directives.items():
        assert all(s in keywords or re.fullmatch(r"'sha256-[A-Za-z0-9+/]+={0,2}'", s)
                   or (name == "style-src" and s == "'unsafe-inline'") for s in sources), (name, sources)
    assert "data:" not in directives["script-src"]
    return directives


def test_every_response_carries_a_csp_that_lets_no_other_host_supply_a_script(reports_dir: Path):
    app = create_app(reports_dir=reports_dir, database_url=NO_WAREHOUSE)
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    client = TestClient(app)
    anonymous = TestClient(create_app(reports_dir=reports_dir, database_url=NO_WAREHOUSE))
    broken = create_app(reports_dir=reports_dir, database_url=NO_WAREHOUSE)
    broken.dependency_overrides[require_user] = lambda: 1 / 0  # any bug in a request
    crashing = TestClient(broken, raise_server_exceptions=False)
    vendored = "/files/data_docs/static/lienthong/vendor/jquery-3.7.1/jquery.min.js"
    requests = [
        (client, "GET", "/", HTML, 503), (client, "GET", "/api/reports", {}, 503),
        (client, "GET", "/findings", HTML, 503), (client, "GET", "/api/findings", {}, 503),
        (client, "GET", "/api/findings?offset=-1", {}, 422), (client, "GET", "/findings?limit=abc", HTML, 422),
        (client, "GET", f"/files/audit/{REPORT_ID}/report.html", HTML, 200),
        (client, "GET", f"/files/audit/{REPORT_ID}/csv/trends.csv", {}, 200),
        (client, "GET", "/files/data_docs/index.html", HTML, 200),
        (client, "GET", "/files/data_docs/validations/s/r/gx.html", HTML, 200),
        (client, "GET", vendored, {}, 200),
        (client, "GET", "/files/secret.txt", {}, 404), (client, "GET", "/files/secret.txt", HTML, 404),
        (client, "GET", "/no/such/page", HTML, 404), (client, "GET", "/api/nothing", {}, 404),
        (client, "POST", f"/files/audit/{REPORT_ID}/report.html", {}, 405),
        (anonymous, "GET", "/api/reports", {}, 401), (anonymous, "GET", "/", HTML, 307),
        (crashing, "GET", "/api/reports", {}, 500), (crashing, "GET", "/findings", HTML, 500),
    ]
    for who, method, path, headers, status in requests:
        resp = who.request(method, path, headers=headers, follow_redirects=False)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text[:200])
        directives = _policy(resp)
        assert resp.headers["x-content-type-options"] == "nosniff"
        if "/files/data_docs/" in path and path.endswith(".html"):
            assert directives["script-src"][0] == "'self'"  # the vendored libraries
        else:
            assert directives["script-src"] == ["'none'"], path  # nothing the app serves runs a script
    assert crashing.get("/api/reports").json() == {"detail": "Internal Server Error"}


# ------------------------------------------------------------------------------------------ Data Docs


def _sha256(code: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"


def test_a_data_docs_page_written_with_cdn_links_is_served_with_the_vendored_copies_and_no_inline_code(
        client: TestClient):
    # a page GX wrote before the pipeline rewrote its links (and escaped its values): links are rewritten on
    # the way out, but its inline code cannot be told from markup that came with the data, so none runs
    path = "/files/data_docs/validations/s/r/gx.html"
    page = client.get(path)
    assert page.status_code == 200 and offsite_loads(page.text) == []
    assert "https://" not in page.text and "dataContextId" not in page.text
    assert _policy(page)["script-src"] == ["'self'"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "../../../static/lienthong/vendor/jquery-3.7.1/jquery.min.js" in refs
    assert "../../../static/lienthong/vega-embed-ast.js" in refs
    from urllib.parse import urljoin

    for ref in refs:
        if "static/lienthong/" in ref:  # served from this package, whatever the data dir holds
            asset = client.get(urljoin(f"http://testserver{path}", ref))
            assert asset.status_code == 200, ref
            assert asset.content == (STATIC / ref.split("static/lienthong/", 1)[1]).read_bytes()
            assert "max-age" in asset.headers["cache-control"]


def test_a_data_docs_page_the_pipeline_built_runs_exactly_its_own_inline_code(client: TestClient, reports_dir: Path):
    from lienthong.audit.datadocs import offline_site

    offline_site(reports_dir / "data_docs")  # what lienthong.quality does after GX built the site
    page = client.get("/files/data_docs/validations/s/r/gx.html")
    assert page.status_code == 200
    script = _policy(page)["script-src"]
    assert script == ["'self'", "'unsafe-hashes'", _sha256("\n    function showAllValidations() { $(\".hide\").fadeIn(); }\n"),
                      _sha256("showAllValidations()")]
    # the site's copy is never what the app serves: a changed copy does not reach the browser
    copy = reports_dir / "data_docs" / "static" / "lienthong" / "vendor" / "jquery-3.7.1" / "jquery.min.js"
    copy.write_text("alert('changed')")
    served = client.get("/files/data_docs/static/lienthong/vendor/jquery-3.7.1/jquery.min.js")
    assert served.content == (STATIC / "vendor" / "jquery-3.7.1" / "jquery.min.js").read_bytes()


@pytest.mark.parametrize("path", ["/files/data_docs/static/lienthong/", "/files/data_docs/static/lienthong/vendor",
                                  "/files/data_docs/static/lienthong/%2e%2e/datadocs.py",
                                  "/files/data_docs/static/lienthong/vendor/../../datadocs.py",
                                  "/files/data_docs/static/lienthong/__pycache__/x.pyc"])
def test_the_vendored_route_serves_nothing_outside_the_packages_static_folder(client: TestClient, path: str):
    assert client.get(path).status_code == 404


# ------------------------------------------------------------------------------------------ numeric parameters


@pytest.fixture
def no_warehouse(reports_dir: Path) -> TestClient:
    """A logged-in client of an app whose warehouse is unreachable: a request that passed validation is a 503."""
    app = create_app(reports_dir=reports_dir, database_url=NO_WAREHOUSE)
    app.dependency_overrides[require_user] = lambda: SimpleNamespace(username="auditor")
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/api/findings", "/findings"])
@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("value", [str(MAX_OFFSET + 1), "1" + "0" * 40, "-1", "-9223372036854775809", "abc", "1e3",
                                   "0x10", ""])
def test_a_numeric_parameter_out_of_range_or_not_a_number_is_422_before_the_warehouse(no_warehouse, path, name, value):
    api = no_warehouse.get(path, params={name: value})
    assert api.status_code == 422, (api.status_code, api.text[:300])
    page = no_warehouse.get(path, params={name: value}, headers=HTML)
    assert page.status_code == 422
    if path == "/findings":
        assert 'id="error"' in page.text and name in page.text
    else:
        assert api.json()["detail"][0]["loc"] == ["query", name]


@pytest.mark.parametrize(("name", "value"), [("limit", "0"), ("limit", str(MAX_PAGE_SIZE + 1))])
def test_a_page_size_outside_what_the_warehouse_query_takes_is_422(no_warehouse, name, value):
    assert no_warehouse.get("/api/findings", params={name: value}).status_code == 422


@pytest.mark.parametrize("query", [{"offset": str(MAX_OFFSET)}, {"limit": str(MAX_PAGE_SIZE)}, {"limit": "1"}])
def test_the_bounds_themselves_are_accepted(no_warehouse, query):
    # accepted: the request goes on to the warehouse (unreachable here)
    assert no_warehouse.get("/api/findings", params=query).status_code == 503
