"""Where a published version came from: the chain from a published dataset version back to the raw extracts.

`published_lineage` reads the version's manifest (`published/<dataset>/v<NNNNNN>/_manifest.json`, which
froze the lineage when it was published: per staged source the integrate run and the ingest runs, and the
reconcile run) and completes it from the bookkeeping in `lienthong_ops` (publication, reconcile_run,
stage_run, quality_run, ingest_run). `render` prints it in one screen; `lienthong lineage` is the command.

Only run ids, counts, times, watermarks, hashes and rule outcomes are read and shown: never a record's values.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from lienthong import runs
from lienthong.settings import Settings, load_settings

MAX_SCOPE_LINES = 3  # ingest scopes listed one per line per source; more (many provinces) are summed up


class LineageNotFound(LookupError):
    """The dataset, or the version asked for, was never published (the message says which and what exists)."""


def _url(settings: Settings) -> str:
    from lienthong.db import warehouse_url

    if not settings.database_url and not settings.embedded_pgdata.exists():
        raise LineageNotFound(f"no warehouse under {settings.data_dir}: nothing has been published from this data "
                              "dir (set LIENTHONG_DATA_DIR or LIENTHONG_DATABASE_URL)")
    return warehouse_url(settings)


def _source_of(staged_dataset: str, settings: Settings) -> tuple[str | None, str | None]:
    from lienthong.contracts import contract

    try:
        c = contract(staged_dataset, settings.contracts_dir)
    except KeyError:
        return None, None
    return c.custom.get("sourceSystem"), c.custom.get("sourceEntity")


def _feeds(run: dict[str, Any], source: str | None, entity: str | None) -> bool:
    """Whether an ingest run landed the raw entity a staged dataset is built from (a provincial scope is
    `<province>/<table>`)."""
    if source is None:
        return True
    return run.get("source") == source and (not run.get("scope") or run["scope"].rsplit("/", 1)[-1] == entity)


def published_lineage(dataset: str, version: int | None = None, *, settings: Settings | None = None,
                      url: str | None = None) -> dict[str, Any]:
    """The chain behind version `version` of `dataset` (default: the version the CURRENT pointer names, else
    the newest published one). Raises `LineageNotFound` naming the dataset and version when there is none."""
    from lienthong.db import connect

    s = settings or load_settings()
    with connect(url or _url(s)) as conn:
        if runs.ledger_version(conn) == 0:  # a read-only command: it creates no bookkeeping in a bare warehouse
            raise LineageNotFound(f"no published dataset {dataset!r}: nothing has been published yet")
        versions = [asdict(v) for v in runs.publications(conn, dataset)]
        if not versions:
            known = ", ".join(runs.published_datasets(conn)) or "none"
            raise LineageNotFound(f"no published dataset {dataset!r} (published datasets: {known})")
        pointer = Path(s.published_dir) / dataset / "CURRENT"
        text = pointer.read_text().strip() if pointer.is_file() else ""
        current = int(text[1:]) if text[1:].isdigit() else None
        live = [v["version"] for v in versions if v["status"] == "published"]
        current = current if current in live else (max(live) if live else None)
        wanted = version if version is not None else current
        chosen = next((v for v in versions if v["version"] == wanted), None)
        if chosen is None:
            listed = ", ".join(str(v["version"]) for v in versions)
            what = f"version {wanted}" if wanted is not None else "a current version"
            raise LineageNotFound(f"{dataset} has no {what} (versions: {listed})")

        manifest_file = Path(chosen["parquet_path"]) / "_manifest.json"
        manifest = json.loads(manifest_file.read_text(encoding="utf-8")) if manifest_file.is_file() else None
        out: dict[str, Any] = {
            "dataset": dataset,
            "version": chosen["version"],
            "current": chosen["version"] == current,
            "status": chosen["status"],
            "published_at": chosen["published_at"],
            "publish_run_id": chosen["run_id"],
            "rows": chosen["row_count"],
            "content_hash": chosen["content_hash"],
            "contract_id": (manifest or {}).get("contract_id"),
            "contract_version": chosen["contract_version"],
            "table": f"published.{chosen['table_name']}",
            "path": chosen["parquet_path"],
            "manifest": str(manifest_file) if manifest else None,
            "files": (manifest or {}).get("files", []),
            "quality": (manifest or {}).get("quality"),
            "reconcile": None,
            "sources": {},
        }
        if manifest is None:
            return out  # removed by retention: the publication row is all that is left
        lineage = dict(manifest.get("lineage") or {})
        rec = lineage.pop("reconcile", None)
        if rec:
            found = runs.reconcile_run(conn, rec["run_id"])
            row = None if found is None else {"started_at": found.started_at, "finished_at": found.finished_at,
                                              "status": found.status, "counts": found.counts,
                                              "links": (found.metrics or {}).get("links")}
            out["reconcile"] = {"run_id": rec["run_id"], **(row or {}),
                                "outputs": {n: {"rows": o.get("rows"), "content_hash": o.get("content_hash")}
                                            for n, o in (rec.get("outputs") or {}).items()}}
        for name, src in lineage.items():
            run_id = src.get("integrate_run_id")
            stage = runs.stage_run(conn, run_id, name)
            quality = runs.quality_run(conn, run_id, name)
            source, entity = _source_of(name, s)
            fed = [r for r in src.get("ingest_runs") or [] if _feeds(r, source, entity)]
            landed = {}
            if fed:
                for r in runs.ingest_runs(conn, {r["run_id"] for r in fed}, {r["source"] for r in fed}):
                    landed[(r.run_id, r.source, r.scope)] = r
            out["sources"][name] = {
                "integrate_run_id": run_id,
                "staged_path": src.get("staged_path"),
                **({"created_at": stage.created_at, "rows_in": stage.rows_in, "rows_staged": stage.rows_staged,
                    "rows_quarantined": stage.rows_quarantined, "conservation_ok": stage.conservation_ok}
                   if stage else {}),
                "quality": None if quality is None else {
                    "gate_passed": quality.gate_passed, "evaluated": quality.evaluated,
                    "failed_critical": quality.failed_critical, "failed_warning": quality.failed_warning},
                "ingest_runs": [
                    {**r, "finished_at": getattr(landed.get((r["run_id"], r["source"], r["scope"])), "finished_at", None)}
                    for r in fed
                ],
            }
    return out


# ---------------------------------------------------------------- rendering


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return "?"


def _mark(value: str | None) -> str:
    """A watermark as stored (a time, or a land keyset `{"ts": ..., "id": ...}`), shortened for one line."""
    if not value:
        return "start"
    if value.startswith("{"):
        try:
            k = json.loads(value)
            return f"{str(k['ts']).replace('.000000', '')} #{k['id']}"
        except (ValueError, KeyError, TypeError):
            return value
    return "start" if value.startswith("1970-01-01") else value


def _gate(q: dict[str, Any] | None) -> str:
    if not q:
        return "gate not run"
    verdict = "passed" if q.get("gate_passed") else "FAILED"
    return f"gate {verdict} ({q.get('failed_critical', 0)} critical, {q.get('failed_warning', 0)} warning failed)"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _links(name: str, counts: dict[str, Any]) -> str:
    bands: dict[str, int] = {}
    methods: dict[str, int] = {}
    for key, n in counts.items():
        method, _, band = key.rpartition("_")
        if band not in ("accept", "review", "reject") or not isinstance(n, int):
            continue
        bands[band] = bands.get(band, 0) + n
        if band == "accept" and n:
            methods[method] = methods.get(method, 0) + n
    by = ", ".join(f"{m} {n}" for m, n in methods.items())
    return (f"{name.replace('_', '→', 1):<24} accept {bands.get('accept', 0)}" + (f" ({by})" if by else "")
            + f", review {bands.get('review', 0)}, reject {bands.get('reject', 0)}")


def _scope_lines(runs: list[dict[str, Any]]) -> list[str]:
    by_scope: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        by_scope.setdefault((r["source"], r.get("scope") or ""), []).append(r)
    if len(by_scope) > MAX_SCOPE_LINES:  # many provinces: one line per source with totals
        sources: dict[str, list[dict[str, Any]]] = {}
        for (source, _), rs in by_scope.items():
            sources.setdefault(source, []).extend(rs)
        lines = []
        for source, rs in sources.items():
            scopes = {r.get("scope") for r in rs}
            newest = max((_mark(r.get("watermark_to")) for r in rs), default="?")
            lines.append(f"    ← {source} {len(scopes)} scopes, {len(rs)} runs, {sum(r.get('rows_landed') or 0 for r in rs)} "
                         f"rows, newest watermark {newest} (--json lists them)")
        return lines
    lines = []
    for (source, scope), rs in by_scope.items():
        ids = [r["run_id"] for r in rs]
        run_text = ids[0] if len(ids) == 1 else f"{len(ids)} runs {ids[0]} … {ids[-1]}"
        rows = sum(r.get("rows_landed") or 0 for r in rs)
        label = f"{source}/{scope}" if scope else source
        lines.append(f"    ← {label:<34} {run_text:<20} rows {rows:>7}  watermark {_mark(rs[0].get('watermark_from'))} "
                     f"→ {_mark(rs[-1].get('watermark_to'))}")
    return lines


def render(info: dict[str, Any]) -> str:
    """The chain in one screen: the version, its reconciliation, then per staged source its integrate run
    and the ingest runs (grouped by source and scope) that landed what it was built from."""
    state = "current" if info["current"] else info["status"]
    lines = [
        f"{info['dataset']} v{info['version']:06d} ({state}) published {_when(info['published_at'])} "
        f"by run {info['publish_run_id']}",
        f"  rows {info['rows']}, content {info['content_hash'][:16]}…, contract "
        f"{info.get('contract_id') or info['dataset']} {info['contract_version']}",
    ]
    q = info.get("quality")
    if q is not None:
        failed = "; ".join(q.get("failed_critical") or [])
        lines.append(f"  quality gate {'passed' if q.get('gate_passed') else 'FAILED'}" + (f": {failed}" if failed else ""))
    files = info.get("files") or []
    size = sum(f.get("bytes") or 0 for f in files)
    lines.append(f"  {info['path']} ({len(files)} file{'s' if len(files) != 1 else ''}, {_size(size)}), "
                 f"table {info['table']}")
    if info.get("manifest") is None:
        lines.append("  manifest gone (version removed by retention): no further lineage")
        return "\n".join(lines)
    rec = info.get("reconcile")
    if rec:
        took = ""
        if isinstance(rec.get("started_at"), datetime) and isinstance(rec.get("finished_at"), datetime):
            took = f" ({(rec['finished_at'] - rec['started_at']).total_seconds():.1f} s)"
        lines.append(f"← reconcile run {rec['run_id']} {_when(rec.get('finished_at'))}{took} {rec.get('status') or ''}".rstrip())
        for name, counts in (rec.get("links") or {}).items():
            if name != "model_seconds" and isinstance(counts, dict):
                lines.append("    " + _links(name, counts))
        outputs = rec.get("outputs") or {}
        if outputs:
            lines.append("    integrated: " + ", ".join(f"{n} {o.get('rows')}" for n, o in outputs.items()))
    if not info["sources"]:
        lines.append("← built from the platform's stores (quality and findings), no staged sources")
    else:
        lines.append("← staged sources: integrate run, rows in = staged + quarantined, quality gate")
    for name, src in info["sources"].items():
        counts = (f"{src.get('rows_in')} = {src.get('rows_staged')} + {src.get('rows_quarantined')}"
                  if src.get("rows_in") is not None else "stage run not found")
        lines.append(f"  {name:<21} run {src['integrate_run_id']:<14} {counts:<18} {_gate(src.get('quality'))}")
        lines.extend(_scope_lines(src.get("ingest_runs") or []))
    return "\n".join(lines)


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, ensure_ascii=False, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
