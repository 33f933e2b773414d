"""Data Docs fit for the Airflow origin (lienthong.audit.datadocs): every CDN asset GX 1.24 names has a pinned
copy, the pipeline's Data Docs load nothing from elsewhere, a value from the data is text on a page and never
markup, and the CSP hashes of a page's inline code are the ones a browser computes.

Data Docs are built here by the real `lienthong.quality.validate` (as tests/unit/lienthong/test_quality.py
does); the browser side is in tests/e2e/test_audit_ui.py."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from lienthong import quality
from lienthong.audit import datadocs
from lienthong.audit.datadocs import (
    CDN_ASSETS,
    GX_WEB_ASSETS,
    STATIC,
    VENDOR,
    offline_site,
    offline_text,
    offsite_loads,
    script_hashes,
)
from lienthong.contracts import contract

# Links GX's pages have for the reader to follow (navigation, not something the page loads).
GX_LINKS = {"https://greatexpectations.io", "https://greatexpectations.io/",
            "https://greatexpectations.io/newsletter?utm_source=datadocs&utm_medium=product&utm_campaign=newsletter"
            "&utm_content=form"}
# A value in a non-personal column (birth_date_precision) that would be code if a page took it as markup.
HOSTILE = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>&amp;"


def _staged(path: Path, precisions: list[str]) -> Path:
    """A staged citizen file (the contract's Arrow types) with valid IDs, one row per birth date precision."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"citizen_id": f"0312030{i:05d}", "full_name": "Nguyễn Văn An", "birth_date": dt.date(2003, 5, 14),
             "birth_date_precision": precision, "sex": "NAM", "status": "CON_SONG",
             "source_updated_at": dt.datetime(2026, 11, 20, 1, 15, tzinfo=dt.UTC)}
            for i, precision in enumerate(precisions)]
    full = contract("citizen").arrow_schema()
    schema = pa.schema([pa.field(n, full.field(n).type) for n in rows[0]])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _gx_view() -> Path:
    import great_expectations

    return Path(great_expectations.__file__).parent / "render" / "view"


def _sha(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "_store", lambda result, url: None)


@pytest.fixture
def site(tmp_path: Path, stored) -> Path:
    """The Data Docs site of one validation, with a hostile value among the failing ones."""
    path = _staged(tmp_path / "citizen.parquet", ["day"] * 4 + [HOSTILE] + ["day"] * 5)
    result = quality.validate(contract("citizen"), path, run_id="manual__2026-11-20T00:00:00+00:00",
                              reports_dir=tmp_path / "reports")
    return Path(result.data_docs_path).parent


def _pages(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8")
            for p in site.rglob("*.html") if datadocs.SITE_STATIC not in p.relative_to(site).as_posix()}


# ------------------------------------------------------------------------------------------ the vendored files


def test_the_vendored_files_are_the_bytes_their_manifest_lists():
    listed = {}
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert present - {"SHA256SUMS", "README.md"} == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    readme = (VENDOR / "README.md").read_text()
    for folder in {name.split("/")[0] for name in listed}:
        assert f"`{folder}/`" in readme, folder  # every package is described (version, licence, source)


def test_every_cdn_url_has_a_vendored_copy_and_gxs_sri_hashes_match_the_copies():
    for url, copy in CDN_ASSETS.items():
        assert (VENDOR / copy).is_file(), url
    # GX pins popper and bootstrap's JS with SRI: the copies must be those exact bytes
    imports = (_gx_view() / "templates" / "js_script_imports.j2").read_text()
    sri = dict(re.findall(r'src="([^"]+)" integrity="([^"]+)"', imports))
    assert len(sri) == 2
    for url, integrity in sri.items():
        algorithm, digest = integrity.split("-", 1)
        assert _sha(algorithm, (VENDOR / CDN_ASSETS[url]).read_bytes()) == digest, url


def test_every_off_site_url_in_gxs_templates_and_styles_is_vendored_or_a_link():
    # Fails when a GX upgrade names a new CDN asset: vendor it (static/vendor/README.md says how).
    view = _gx_view()
    sources = [*(view / "templates").glob("*.j2"), *(view / "static" / "styles").glob("*.css")]
    assert len(sources) > 30
    unknown = set()
    for source in sources:
        for url in re.findall(r"""https?://[^\s"'<>)]+""", source.read_text()):
            if url not in CDN_ASSETS and url not in GX_LINKS and not url.startswith(GX_WEB_ASSETS):
                unknown.add(f"{source.name}: {url}")
    assert not unknown
    for source in sources:  # and what a page would load from there is rewritten away
        assert offsite_loads(offline_text(source.read_text(), "../")) == [], source.name


def test_offline_text_is_idempotent_and_keeps_sri():
    page = ('<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>\n'
            '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
            'integrity="sha384-x" crossorigin="anonymous"></script>\n'
            '<script src="https://cdn.jsdelivr.net/npm/vega-embed@6"></script>\n'
            f'<img src="{GX_WEB_ASSETS}logo-long.png?d=20261120T000000Z&dataContextId=abc">\n'
            f"<style>a {{ background: url('{GX_WEB_ASSETS}full_logo_dark.png') 0 0 no-repeat; }}</style>")
    once = offline_text(page, "../../")
    assert offline_text(once, "../../") == once
    assert offsite_loads(page) and offsite_loads(once) == []
    assert '<script src="../../static/lienthong/vendor/jquery-3.7.1/jquery.min.js"></script>' in once
    assert 'integrity="sha384-x"' in once
    assert "dataContextId" not in once and 'src="../../static/images/logo-long.png"' in once
    assert "background: none 0 0 no-repeat" in once
    # vega-embed is followed by our script that makes it interpret expressions (no eval under the CSP)
    assert once.index("vega-embed.min.js") < once.index('src="../../static/lienthong/vega-embed-ast.js"')


# ------------------------------------------------------------------------------------------ the pipeline's site


def test_the_pipelines_data_docs_load_nothing_from_elsewhere_and_every_asset_is_in_the_site(site: Path):
    pages = _pages(site)
    assert any(name.startswith("validations/") for name in pages) and "index.html" in pages
    for name, text in pages.items():
        assert offsite_loads(text) == [], name
        assert "cdn" not in text.lower() and "unpkg" not in text, name
        local = re.findall(r'<(?:script|link|img)\b[^>]*\s(?:src|href)="([^"#]+)"', text)
        assert any("jquery" in ref for ref in local), name
        base = f"http://site/{name}"
        for ref in local:
            target = urlsplit(urljoin(base, ref))
            assert target.netloc == "site", (name, ref)
            if target.path.endswith("favicon.ico"):
                continue  # GX's favicon link on a validation page is one folder short (a GX bug, same origin)
            assert (site / target.path.lstrip("/")).is_file(), (name, ref)
    # the site's copy is the package's
    copy = site / datadocs.SITE_STATIC
    for source in STATIC.rglob("*"):
        if source.is_file():
            assert (copy / source.relative_to(STATIC)).read_bytes() == source.read_bytes()


def test_a_value_from_the_data_is_text_on_the_page_never_markup(site: Path):
    (name, page), = [(n, t) for n, t in _pages(site).items() if n.startswith("validations/")]
    assert "&lt;img src=x onerror=window.pwned=1&gt;&lt;script&gt;window.pwned=2&lt;/script&gt;&amp;amp;" in page
    assert "<img src=x" not in page and "window.pwned=2</script>" not in page
    parser = datadocs._InlineCode()
    parser.feed(page)
    assert not any("pwned" in code for code in [*parser.scripts, *parser.handlers])
    # GX's own inline script of that page (the validation filter buttons) is still there
    assert any("hideSucceededValidations" in code for code in parser.scripts)


def test_offline_site_rewrites_only_files_changed_since_the_build_and_keeps_their_mode(tmp_path: Path):
    site = tmp_path / "data_docs"
    (site / "validations" / "a").mkdir(parents=True)
    cdn = '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
    old, new = site / "validations" / "a" / "old.html", site / "validations" / "a" / "new.html"
    old.write_text(cdn)
    new.write_text(cdn)
    new.chmod(0o600)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert offline_site(site, since=time.time() - 5) == [new]
    assert new.read_text() == '<script src="../../static/lienthong/vendor/jquery-3.7.1/jquery.min.js"></script>'
    assert new.stat().st_mode & 0o777 == 0o600 and old.read_text() == cdn
    assert offline_site(site) == [old]
    assert not [p for p in site.rglob(".*") if p.is_file()]  # no temporary file left behind


# ------------------------------------------------------------------------------------------ CSP hashes


def _browser_hash(code: str) -> str:
    return "'sha256-" + _sha("sha256", code.encode()) + "'"


def test_script_hashes_cover_inline_scripts_and_handlers_not_scripts_with_a_source():
    page = ('<script src="static/x.js">ignored()</script><script>\n  go(1);\r\n</script>'
            '<button onclick="clearTableFilters(&#39;t1&#39;)">x</button><SCRIPT type="text/javascript">b()</SCRIPT>')
    # a browser hashes the body after turning CR LF into LF, and a handler after decoding its references
    sources = script_hashes(page)
    assert sources[0] == "'unsafe-hashes'" and len(sources) == 4
    assert set(sources[1:]) == {_browser_hash("\n  go(1);\n"), _browser_hash("clearTableFilters('t1')"),
                                _browser_hash("b()")}
    assert script_hashes("<p>no code</p>") == []
    assert script_hashes("<script>a()</script><script>a()</script>") == [_browser_hash("a()")]
