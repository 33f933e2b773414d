"""GX Data Docs fit for the Airflow origin: nothing loaded from elsewhere, no value from the data run as code.

Great Expectations 1.24 writes pages that load about ten scripts and style sheets from six CDNs (floating
versions for vega, no SRI for most) and a logo from an S3 bucket (with the data context id in the URL). The
audit app serves these pages from the Airflow API server's origin, where a script could use the login cookie
against `/api/v2`, so no third-party host may supply one. This module owns:

- the exact files those URLs name, pinned, in `static/vendor/` (README.md there: package, version, licence,
  source; SHA256SUMS: the bytes), and the map from each URL to its copy (`CDN_ASSETS`);
- the rewrite of a page or style sheet to relative links into the site's own copy (`offline_text`), done
  when the pipeline builds the docs (`offline_site`, called by lienthong.quality) and again by the app when it
  serves a page (a page built before still shows, styled);
- the copy of a validation result that GX renders (`escaped_for_docs`): GX 1.24 writes some values from the
  data into its pages as raw HTML (the table of unexpected values), so a value `<script>...</script>` in a
  non-personal column would become a script on the page. In that copy every string of the results is
  HTML-escaped and shows as the text it is;
- the CSP sources for the inline scripts and `on...` handlers of a page (`script_hashes`). GX inlines its
  table data and small helpers in `<script>` blocks and `onclick` attributes; they stay inline (moving them
  out would mean rewriting GX's templates) and are allowed by their sha256, computed by the app from the page
  it serves. That is only sound for a page whose data was escaped, so the app hashes nothing in a page that
  still names a CDN (built before the pipeline did both): such a page runs no inline script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
"""What a Data Docs site gets a copy of: `vendor/` (third-party files) and `vega-embed-ast.js` (ours)."""
VENDOR = STATIC / "vendor"
SITE_STATIC = "static/lienthong"
"""Where a site keeps that copy, relative to its root (beside GX's own `static/images`, `static/styles`)."""

# Every off-site script and style sheet in great_expectations/render/view/templates/ (js_script_imports.j2,
# page.j2, index_page.j2, page_minimal.j2) and the file under static/vendor/ with the same bytes. The
# floating `vega@5`, `vega-lite@5`, `vega-embed@6` are pinned to the newest release of that major version
# when they were vendored; popper and bootstrap's JS match the SRI hashes GX gives them.
CDN_ASSETS: dict[str, str] = {
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free-6.6.0/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/umd/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/js/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table-1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker-1.9.0/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker-1.9.0/css/bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark-1.1.0/css/bootstrap-prefers-dark.css",
}
# The navbar logo (`logo-long.png?d=<time>&dataContextId=<id>`) is a file GX also copies into the site's
# static/images/; the dark-mode logo in GX's inline styles is not, so that background is dropped.
GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_SITE_IMAGES = ("logo-long.png", "logo-long-vector.svg", "short-logo.png", "short-logo-vector.svg", "favicon.ico")
"""Images GX copies into every site's static/images/ that its pages also name on GX_WEB_ASSETS."""
_GX_IMAGE = re.compile(re.escape(GX_WEB_ASSETS) + "(" + "|".join(map(re.escape, GX_SITE_IMAGES)) + r")(?:\?[^\"'\s<>)]*)?")
_GX_CSS_URL = re.compile(r"url\(\s*(['\"]?)" + re.escape(GX_WEB_ASSETS) + r"[^)'\"]*\1\s*\)")
# GX's graph.j2 calls vegaEmbed(el, spec, {actions: false}): vega then compiles expressions with Function(),
# which a CSP without 'unsafe-eval' refuses. Our small script, loaded right after vega-embed, makes vega-embed's
# AST interpreter (`ast: true`) the default.
VEGA_EMBED_AST = "vega-embed-ast.js"
_VEGA_EMBED_TAG = re.compile(r"""<script\b[^>]*\bsrc=["'][^"']*/vega-embed-6\.29\.0/vega-embed\.min\.js["'][^>]*>\s*</script>""")
# A resource a page would load from another host: a script, style sheet, image, frame... (links to follow
# are not loads) or a CSS url()/@import.
_OFFSITE_LOAD = re.compile(
    r"""<(?:script|link|img|iframe|frame|source|video|audio|embed|object|input|track)\b[^>]*?"""
    r"""\s(?:src|href|data|srcset|poster)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)"""
    r"""|url\(\s*["']?\s*((?:https?:)?//[^"')\s]+)|@import\s+["']((?:https?:)?//[^"']+)""",
    re.IGNORECASE,
)
_REWRITTEN_SUFFIXES = (".html", ".htm", ".css")


def to_site_root(relative: str | PurePosixPath) -> str:
    """The relative prefix from a file of the site (`relative` to the site's root) back to the root."""
    return "../" * (len(PurePosixPath(relative).parts) - 1)


def offline_text(text: str, to_root: str) -> str:
    """A page or style sheet of the site with every known CDN asset replaced by the site's copy.

    `to_root` leads from the file back to the site's root ("" for index.html, "../../" two folders down).
    Nothing changes in a file already rewritten. SRI attributes stay: the copies are the same bytes.
    """
    vendor = f"{to_root}{SITE_STATIC}/vendor/"
    for url, copy in CDN_ASSETS.items():
        for quote in ('"', "'"):
            text = text.replace(f"{quote}{url}{quote}", f"{quote}{vendor}{copy}{quote}")
    text = _GX_CSS_URL.sub("none", text)
    text = _GX_IMAGE.sub(lambda m: f"{to_root}static/images/{m.group(1)}", text)
    if VEGA_EMBED_AST not in text:
        text = _VEGA_EMBED_TAG.sub(
            lambda m: f'{m.group(0)}\n<script src="{to_root}{SITE_STATIC}/{VEGA_EMBED_AST}"></script>', text, count=1)
    return text


def offsite_loads(text: str) -> list[str]:
    """The URLs of other hosts a page or style sheet would load something from (empty when self-contained)."""
    return [next(g for g in m.groups() if g) for m in _OFFSITE_LOAD.finditer(text)]


def _same_copy(site_static: Path) -> bool:
    sums = site_static / "vendor" / "SHA256SUMS"
    ours = site_static / VEGA_EMBED_AST
    return (sums.is_file() and sums.read_bytes() == (VENDOR / "SHA256SUMS").read_bytes()
            and ours.is_file() and ours.read_bytes() == (STATIC / VEGA_EMBED_AST).read_bytes())


def _copy_static(target: Path) -> None:
    # File by file with copyfile: new files and folders get the modes the process's umask gives (the data
    # dir is private), not the package's; the checksum file last, so a copy cut short is redone.
    files = sorted(p for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files.sort(key=lambda p: p.name == "SHA256SUMS")
    for source in files:
        dest = target / source.relative_to(STATIC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


def offline_site(site: Path, *, since: float | None = None) -> list[Path]:
    """Give the Data Docs site at `site` its own copy of the vendored assets and rewrite its pages to use it.

    Only pages and style sheets changed at or after `since` (a `time.time()`; every one when None) are read:
    GX rewrites the index and the pages of one run per build, the others were rewritten when they were
    built. A file is replaced whole (no reader sees half of it) and keeps its mode. Returns the files
    rewritten; logs a warning for any off-site load left (a GX upgrade that added a CDN asset).
    """
    site = Path(site)
    target = site / SITE_STATIC
    if not _same_copy(target):
        _copy_static(target)
    changed: list[Path] = []
    # a second of slack: file times come from the kernel's coarser clock
    cutoff = None if since is None else since - 1.0
    for path in sorted(site.rglob("*")):
        if path.suffix.lower() not in _REWRITTEN_SUFFIXES or target in path.parents or not path.is_file():
            continue
        stat = path.stat()
        if cutoff is not None and stat.st_mtime < cutoff:
            continue
        relative = path.relative_to(site).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        new = offline_text(text, to_site_root(relative))
        left = offsite_loads(new)
        if left:
            log.warning("data docs: %s still loads from another host: %s", relative, ", ".join(sorted(set(left))))
        if new == text:
            continue
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
        tmp.write_text(new, encoding="utf-8")
        os.chmod(tmp, stat.st_mode & 0o7777)
        os.replace(tmp, path)
        changed.append(path)
    return changed


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_escaped(v) for v in value)
    return value


def escaped_for_docs(res: Any) -> Any:
    """A copy of a GX suite validation result for Data Docs: every string in each expectation's `result`
    (unexpected values, their counts, observed values: what comes from the data) HTML-escaped.

    GX escapes the parameters of its sentence templates itself but not the cells of the table of unexpected
    values; with the platform's expectations the data's values appear only in that table. A value GX also
    puts in a sentence would show escaped twice (`&lt;` as text): wrong-looking, never markup.
    """
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    results = [
        ExpectationValidationResult(success=r.success, expectation_config=r.expectation_config,
                                    result=_escaped(r.result or {}), meta=r.meta, exception_info=r.exception_info)
        for r in res.results
    ]
    return ExpectationSuiteValidationResult(
        success=res.success, results=results, suite_name=res.suite_name, suite_parameters=res.suite_parameters,
        statistics=res.statistics, meta=res.meta, batch_id=res.batch_id,
    )


class _InlineCode(HTMLParser):
    """Collects what a browser runs from a page itself: `<script>` bodies without `src`, `on...` attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.handlers: list[str] = []
        self._body: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers.extend(v for k, v in attrs if k.startswith("on") and v)
        if tag == "script" and not any(k == "src" for k, _ in attrs):
            self._body = []

    def handle_data(self, data: str) -> None:
        # a script's body comes raw (no character references decoded), as the browser hashes it
        if self._body is not None:
            self._body.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._body is not None:
            self.scripts.append("".join(self._body))
            self._body = None


def _sha256(code: str) -> str:
    # the browser hashes the text after its input stream turned CR LF and CR into LF
    code = code.replace("\r\n", "\n").replace("\r", "\n")
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii") + "'"


def script_hashes(html: str) -> list[str]:
    """The CSP `script-src` sources that let exactly this page's inline scripts and handlers run.

    One `'sha256-...'` per distinct inline script or `on...` attribute value, and `'unsafe-hashes'` when there
    are attributes (CSP level 3: a hash then also allows an event handler with exactly that text).
    """
    parser = _InlineCode()
    parser.feed(html)
    parser.close()
    if parser._body is not None:  # a script left open runs to the end of the page
        parser.scripts.append("".join(parser._body))
    sources = list(dict.fromkeys(_sha256(code) for code in [*parser.scripts, *parser.handlers]))
    return (["'unsafe-hashes'"] if parser.handlers else []) + sources
