"""The auditors' view in a real browser: headless Chromium against the running Airflow API server.

The local stack (devstack.localstack) runs the whole chain with the real scheduler, the `audit_report` DAG
included, exactly as tests/e2e/test_scheduler_chain.py does (its helpers are reused); the report under test is
the newest row of `lienthong_ops.audit_report`. Chromium (the system's, never a downloaded one) logs in on
Airflow's own login page, opens the plugin's report page through the API server, checks that the plots and
tables are in the DOM, filters the findings browser, opens the view from the Airflow UI's navigation, and
shows the discrepancy cases' states on the findings page (agencies having acted on three findings), and
keeps full-page screenshots in `artifacts/` (audit-report.png, audit-findings.png, audit-nav.png,
audit-data-docs.png). Requests without a login are refused. Every request the pages make stays on this host
and every response carries a CSP that lets no other host supply a script: Data Docs render styled with their
vendored libraries, a GX chart included.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from .test_scheduler_chain import (
    ALL_DAGS,
    CHAIN_TIMEOUT,
    CITIZENS,
    INGEST_DAGS,
    Api,
    _chain_settled,
    _diagnostics,
    _wait_until_parsed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
PLUGIN = "/lienthong-audit"
AUDIT_DAG = "audit_report"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
UI_TIMEOUT_MS = 30_000
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Collects the page's CSP violations (blocked scripts, styles, images...); injected by the browser, not the page.
CSP_VIOLATIONS = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                  "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def _chromium() -> str | None:
    """The system Chromium (Debian package `chromium`; `make test` installs it when missing)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A running stack after the scheduler has run the chain to the audit report; stopped after the module."""
    import psycopg2
    import psycopg2.extras

    from devstack.localstack import down, up

    base = tmp_path_factory.mktemp("audit-stack")
    stack = api = None
    try:
        stack = up(base, citizens=CITIZENS, port=0, timeout=240)
        api = Api(stack)
        _wait_until_parsed(api)
        dags = ALL_DAGS if AUDIT_DAG in ALL_DAGS else (*ALL_DAGS, AUDIT_DAG)
        for dag_id in dags:
            assert api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})["is_paused"] is False
        triggered = {d: api.call("POST", f"/dags/{d}/dagRuns", json={"logical_date": None})["dag_run_id"]
                     for d in INGEST_DAGS}
        deadline = time.monotonic() + CHAIN_TIMEOUT
        done, failure = False, None
        while time.monotonic() < deadline and not (done or failure):
            done, failure, _ = _chain_settled(api, triggered)
            # the chain's own list may not include the audit DAG: then wait for its run as well
            if done and AUDIT_DAG not in ALL_DAGS:
                audit_runs = api.runs(AUDIT_DAG)
                done = bool(audit_runs) and all(r["state"] in ("success", "failed") for r in audit_runs)
            if not (done or failure):
                time.sleep(3)
        if not done:
            raise AssertionError(failure or f"the chain did not reach the audit report within {CHAIN_TIMEOUT}s")
        with psycopg2.connect(stack.warehouse_url) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT report_id, run_id, publish_run_id, audit_run_id, folder"
                        " FROM lienthong_ops.audit_report ORDER BY created_at DESC LIMIT 1")
            report = cur.fetchone()
            cur.execute("SELECT type, count(*) AS n FROM lienthong_ops.finding GROUP BY type ORDER BY n, type")
            finding_types = {r["type"]: r["n"] for r in cur.fetchall()}
        assert report, "the audit_report DAG ran but lienthong_ops.audit_report has no row"
        assert report["audit_run_id"] in {r["dag_run_id"] for r in api.runs(AUDIT_DAG)}, report
    except Exception as exc:
        note = _diagnostics(api, stack, f"{type(exc).__name__}: {exc}") if stack else repr(exc)
        down(base)
        raise AssertionError(note) from exc
    try:
        yield SimpleNamespace(stack=stack, api=api, report=dict(report), finding_types=finding_types,
                              url=stack.api_url + PLUGIN)
    finally:
        down(base)


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no system Chromium: `make test` installs it as root, else `sudo apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def session(audited, browser):
    """A browser context logged in through Airflow's own login page, starting from the plugin's URL."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    seen: list[str] = []
    page.on("framenavigated", lambda frame: seen.append(frame.url) if frame == page.main_frame else None)
    page.goto(audited.url + "/")
    # Airflow's simple auth manager login form (the React page at /auth/login)
    page.locator("input[name=username]").fill(audited.stack.username)
    page.locator("input[name=password]").fill(audited.stack.password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(audited.url + "/")
    yield SimpleNamespace(context=context, page=page, login_path=seen)
    context.close()


# ------------------------------------------------------------------------------------------ without a login


def test_requests_without_a_login_are_refused(audited):
    rid = audited.report["report_id"]
    for path in ("/", "/findings", "/api/findings", "/api/reports", f"/files/audit/{rid}/report.html",
                 "/files/data_docs/index.html"):
        resp = requests.get(audited.url + path, headers={"accept": "application/json"}, timeout=30,
                            allow_redirects=False)
        assert resp.status_code == 401, (path, resp.status_code, resp.text[:300])
        assert "<svg" not in resp.text
    page = requests.get(f"{audited.url}/files/audit/{rid}/report.html", headers={"accept": "text/html"},
                        timeout=30, allow_redirects=False)
    assert page.status_code == 307, page.text[:300]
    login = urlsplit(page.headers["location"])
    assert login.path == "/api/v2/auth/login"
    assert parse_qs(login.query)["next"] == [f"{audited.url}/files/audit/{rid}/report.html"]
    # the JSON API never redirects, even when a browser asks
    api = requests.get(audited.url + "/api/reports", headers={"accept": "text/html"}, timeout=30, allow_redirects=False)
    assert api.status_code == 401, api.text[:300]
    forged = requests.get(audited.url + "/api/reports", headers={"authorization": "Bearer not.a.jwt"}, timeout=30)
    assert forged.status_code == 403, forged.text[:300]


def test_the_api_server_loads_the_plugin_with_its_app_and_nav_views(audited):
    token = {"authorization": f"Bearer {audited.stack.token()}"}
    plugins = requests.get(audited.stack.api_url + "/api/v2/plugins", headers=token, timeout=30).json()["plugins"]
    (plugin,) = [p for p in plugins if p["name"] == "lienthong_audit"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == [PLUGIN]
    assert {v["url_route"] for v in plugin["external_views"]} == {"audit-reports", "audit-findings"}
    errors = requests.get(audited.stack.api_url + "/api/v2/plugins/importErrors", headers=token, timeout=30).json()
    assert not [e for e in errors["import_errors"] if "lienthong_audit" in e["source"]], errors
    reports = requests.get(audited.url + "/api/reports", headers=token, timeout=30).json()["reports"]
    assert audited.report["report_id"] in {r["report_id"] for r in reports}


# ------------------------------------------------------------------------------------------ in the browser


def test_the_browser_logs_in_on_airflows_login_page_and_comes_back_to_the_plugin(audited, session):
    paths = [urlsplit(u).path for u in session.login_path]
    assert "/auth/login" in paths, session.login_path
    assert paths[-1] == PLUGIN + "/"
    assert any(c["name"] == "_token" for c in session.context.cookies())
    assert session.page.locator("#reports").is_visible()


def test_the_report_page_renders_its_plots_and_tables(audited, session):
    page = session.page
    rid = audited.report["report_id"]
    page.goto(audited.url + "/")
    row = page.locator(f'tr[data-report-id="{rid}"]')
    assert row.count() == 1, page.content()[:2000]
    row.locator("a.report-link").click()
    page.wait_for_url(f"{audited.url}/files/audit/{rid}/report.html")
    page.wait_for_load_state("load")

    plots = page.locator("#trends svg")
    assert plots.count() >= 1
    box = plots.first.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, box  # drawn, not an empty element
    tables = page.locator("table.figures")
    assert tables.count() > 0
    assert page.locator("table.figures tr:has(td)").count() > 0
    assert page.evaluate("() => document.querySelectorAll('script[src], link[rel=stylesheet]').length") == 0

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the report's relative link to the Data Docs resolves through the same route
    docs = page.locator('a[href*="data_docs/index.html"]')
    if docs.count():
        href = docs.first.get_attribute("href")
        resp = page.request.get(urljoin(page.url, href))
        assert resp.status == 200, (href, resp.status)


def test_the_findings_browser_filters_in_the_page(audited, session):
    assert audited.finding_types, "the chain produced no finding to browse"
    page = session.page
    page.goto(audited.url + "/findings")
    total_all = int(page.locator("#total").get_attribute("data-total"))
    assert total_all == sum(audited.finding_types.values())
    # the rarest type, so the filter visibly narrows the list
    chosen, expected = next(iter(audited.finding_types.items()))
    page.locator('select[name="type"]').select_option(chosen)
    page.locator("#apply").click()
    page.wait_for_url(lambda url: f"type={chosen}" in url)
    assert int(page.locator("#total").get_attribute("data-total")) == expected
    types = page.locator("#findings tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert types and set(types) == {chosen}, types
    assert page.locator('select[name="type"]').input_value() == chosen
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-findings.png"), full_page=True)


def test_the_findings_page_shows_the_case_states(audited, session):
    """Agencies act on three findings (as the lookup service does, through lienthong.cases); the browser sees
    each case's state and last action, filters by case state, and the JSON API returns the same."""
    import psycopg2

    from lienthong.cases import act_on_finding

    with psycopg2.connect(audited.stack.warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("""SELECT finding_id, agency FROM lienthong_ops.finding
                       WHERE status = 'open' AND case_state = 'new' ORDER BY finding_id LIMIT 3""")
        picked = cur.fetchall()
        assert len(picked) == 3, picked
        (ack, ack_agency), (dis, dis_agency), (cor, cor_agency) = picked
        act_on_finding(conn, ack, ack_agency, "acknowledge", request_id="e2e-1")
        act_on_finding(conn, dis, dis_agency, "dispute", reason="E2E: the registry record is right")
        act_on_finding(conn, cor, cor_agency, "corrected", note="E2E: fixed at the source")
    page = session.page
    page.goto(audited.url + "/findings?limit=1000")
    states = dict(page.locator("#findings tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.findingId, r.dataset.caseState])"))
    assert (states[ack], states[dis], states[cor]) == ("acknowledged", "disputed", "corrected")
    assert set(states.values()) <= {"new", "acknowledged", "disputed", "corrected"}
    row = page.locator(f'#findings tbody tr[data-finding-id="{dis}"]')
    assert row.locator("td.case").inner_text() == "disputed"
    assert "E2E: the registry record is right" in row.locator("td.case-action").inner_text()
    # the case filter, from the form
    page.locator('select[name="case_state"]').select_option("disputed")
    page.locator("#apply").click()
    page.wait_for_url(lambda url: "case_state=disputed" in url)
    assert int(page.locator("#total").get_attribute("data-total")) == 1
    assert page.locator("#findings tbody tr").evaluate_all("rows => rows.map(r => r.dataset.findingId)") == [dis]
    page.screenshot(path=str(ARTIFACTS / "audit-findings-cases.png"), full_page=True)
    data = session.context.request.get(audited.url + "/api/findings?case_state=corrected").json()  # its cookie
    assert [(f["finding_id"], f["case_state"], f["last_note"]) for f in data["findings"]] == [
        (cor, "corrected", "E2E: fixed at the source")]


def test_the_audit_reports_open_from_the_airflow_navigation(audited, session):
    page = session.page
    page.goto(audited.stack.api_url + "/")
    page.get_by_role("button", name="Plugins").click()
    page.get_by_role("menuitem", name="Audit", exact=True).hover()
    page.get_by_role("menuitem", name="Audit reports").click()
    page.wait_for_url(lambda url: urlsplit(url).path.startswith("/plugin/audit-reports"))
    frame = page.frame_locator('iframe[title="Audit reports"]')
    rid = audited.report["report_id"]
    frame.locator(f'tr[data-report-id="{rid}"]').wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-nav.png"))


# ------------------------------------------------------------------------------------------ nothing from elsewhere


def _gx_chart_page(site: Path) -> str:
    """A Data Docs page with a chart, rendered by GX's own page view and rewritten as lienthong.quality does
    (the platform's expectations draw no chart; vega must still run without 'unsafe-eval')."""
    import altair as alt
    import pandas as pd
    from great_expectations.render import (
        RenderedDocumentContent,
        RenderedGraphContent,
        RenderedSectionContent,
    )
    from great_expectations.render.view import DefaultJinjaPageView

    from lienthong.audit.datadocs import offline_site

    chart = alt.Chart(pd.DataFrame({"run": ["a", "b", "c"], "failing": [3, 1, 2]})).mark_bar().encode(
        x="run", y="failing")
    doc = RenderedDocumentContent(
        renderer_type="ExpectationSuitePageRenderer", page_title="e2e chart", expectation_suite_name="e2e_chart",
        sections=[RenderedSectionContent(section_name="chart", content_blocks=[
            RenderedGraphContent(graph=chart.to_json(), header="Failing rows per run")])])
    started = time.time()
    (site / "expectations" / "e2e_chart.html").write_text(DefaultJinjaPageView().render(doc), encoding="utf-8")
    offline_site(site, since=started)
    return "files/data_docs/expectations/e2e_chart.html"


def _csp_script_sources(header: str | None) -> list[str]:
    assert header, "no Content-Security-Policy"
    directives = {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"], header
    return directives["script-src"]


def test_pages_load_nothing_from_elsewhere_and_data_docs_run_their_vendored_libraries(audited, session):
    context = session.context
    site = audited.stack.paths.data_dir / "reports" / "data_docs"
    chart = _gx_chart_page(site)
    requests: list[str] = []
    responses: list = []
    def on_request(request) -> None:
        requests.append(request.url)

    def on_response(response) -> None:
        responses.append(response)

    context.on("request", on_request)
    context.on("response", on_response)
    page = context.new_page()
    page.add_init_script(CSP_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text[:300]}"))
    try:
        rid = audited.report["report_id"]
        page.goto(f"{audited.url}/files/audit/{rid}/report.html")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("() => getComputedStyle(document.querySelector('.cards')).display") == "flex"
        assert page.evaluate("() => window.__csp") == []
        runs = page.locator('a[href*="data_docs/validations/"]')
        assert runs.count() > 0, "the report links no Data Docs page of its run"
        validation = urljoin(page.url, runs.first.get_attribute("href"))

        docs = {"index": f"{audited.url}/files/data_docs/index.html", "validation": validation,
                "chart": f"{audited.url}/{chart}"}
        for name, url in docs.items():
            page.goto(url)
            page.wait_for_load_state("networkidle")
            if name == "chart":  # vega-embed draws asynchronously, on a canvas
                page.locator(".vega-embed canvas").first.wait_for(timeout=UI_TIMEOUT_MS)
            state = page.evaluate("""() => ({
                jquery: typeof window.jQuery === 'function' && window.jQuery.fn.jquery,
                table: !!(window.jQuery && window.jQuery.fn.bootstrapTable),
                vega: typeof window.vegaEmbed === 'function',
                navbar: getComputedStyle(document.querySelector('nav.navbar')).position,
                font: getComputedStyle(document.body).fontFamily,
                tables: document.querySelectorAll('.bootstrap-table').length,
                charts: Array.from(document.querySelectorAll('.vega-embed canvas')).filter(c => c.width > 50).length,
                violations: window.__csp,
            })""")
            # vendored scripts ran (no CDN is reachable here) and bootstrap styles apply (sticky-top, font stack)
            assert state["jquery"] == "3.7.1" and state["table"] and state["vega"], (name, state)
            assert state["navbar"] == "sticky" and "apple-system" in state["font"], (name, state)
            assert state["violations"] == [], (name, state, console)  # no inline script of GX's was refused
            if name == "chart":
                assert state["charts"] == 1, (state, console)  # vega drew it without 'unsafe-eval'
            else:
                assert state["tables"] >= 1, (name, state)  # bootstrap-table ran (the index: its inline scripts)
            if name == "index":
                page.evaluate("document.fonts.ready")
                assert page.evaluate("() => document.fonts.check('900 16px \"Font Awesome 6 Free\"')"), "icons"
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "audit-data-docs-index.png"), full_page=True)
            if name == "validation":
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "audit-data-docs.png"), full_page=True)

        page.goto(f"{audited.url}/findings")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("() => getComputedStyle(document.querySelector('nav')).display") == "flex"
        assert page.evaluate("() => window.__csp") == []
        headers = [(r.url, r.all_headers()) for r in responses]  # while the page is open
    finally:
        context.remove_listener("request", on_request)
        context.remove_listener("response", on_response)
        page.close()

    offsite = [u for u in requests if urlsplit(u).hostname not in LOCAL_HOSTS]
    assert not offsite, offsite
    assert any("/static/lienthong/vendor/jquery-3.7.1/jquery.min.js" in u for u in requests)
    ours = [(url, h) for url, h in headers if urlsplit(url).path.startswith(PLUGIN + "/")]
    assert len(ours) > 20 and {urlsplit(url).path for url, _ in headers} - {urlsplit(url).path for url, _ in ours} <= {
        "/favicon.ico"}  # the browser may ask the API server for its icon
    for url, h in ours:
        script = _csp_script_sources(h.get("content-security-policy"))
        assert not [s for s in script if s not in ("'self'", "'none'", "'unsafe-hashes'")
                    and not re.fullmatch(r"'sha256-[A-Za-z0-9+/]+={0,2}'", s)], (url, script)
        is_data_docs_page = "/files/data_docs/" in url and url.endswith(".html")
        assert (script[0] == "'self'") if is_data_docs_page else (script == ["'none'"]), (url, script)
