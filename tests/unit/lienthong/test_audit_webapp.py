"""The auditors' app without a database: who gets in (Airflow's token, the auth manager's verdict), where a
browser without a token is sent, which files the read-only route serves, and how the plugin registers it.
Pages that read the warehouse are tested in tests/integration/lienthong/test_audit_pages.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from lienthong.audit import webapp
from lienthong.audit.webapp import create_app, require_user, resolve_served_file

REPO = Path(__file__).resolve().parents[3]
REPORT_ID = "manual__2026-11-22T10_00_00_00_00"
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


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
    assert "default-src 'self'" in page.headers["content-security-policy"]
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
