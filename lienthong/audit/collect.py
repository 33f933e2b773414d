"""Gather the figures of one audit report from the warehouse bookkeeping and the zones on disk.

Owns what a report says about a run (the integrate run that staged, validated and reconciled; its
publications) and how each figure is computed:

- quality: every expectation of every staged dataset with its unexpected counts, and per dataset the pass
  rate and the gate (from `quality_run` / `quality_result`);
- conservation of each run's change: rows in = staged + quarantined + unchanged per dataset (`stage_run`);
- quarantine by dataset and reason, with a few example records (masked: `lienthong.masking`);
- findings by type, severity and responsible agency: open after the run, and what the run opened, reopened
  and resolved (`finding_event`), with the new and resolved findings listed (masked);
- links by method and band (`reconcile_run.metrics`) and, where a ground truth exists
  (`LIENTHONG_GROUND_TRUTH_DIR`, e.g. a sandbox's `truth/`), link precision / recall / F1;
- the versions the publish run wrote;
- discrepancy cases (`lienthong.cases`): per responsible agency, the open findings by case state, median and
  max open days, overdue against the deadline of each finding's type (`LIENTHONG_FINDING_DEADLINES`), disputed
  with a reason, and the open findings per age bucket; as of the report's generation (the cases' state now),
  with what this run did to the claims (`reconcile_run.counts.cases`);
- trends over the last runs: quality pass rate, record pass rate, open findings by type (counted from the
  event history, so a past run's count is what was open then), rows per zone, run duration;
- over the same runs, the entity registry and the link state: linking mode, records relinked, links moved,
  entity events and active entities per kind, models, ID-less holders (`lienthong.audit.entity_runs`).

Everything returned is plain JSON (numbers, text, lists, objects) with personal values masked.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from lienthong import runs, zones
from lienthong.audit.entity_runs import entity_runs
from lienthong.db import connect, warehouse_url
from lienthong.duck import session
from lienthong.findings import TAXONOMY, ensure_findings_schema
from lienthong.masking import mask_by_key, mask_id, mask_json, mask_name, mask_year
from lienthong.settings import Settings

log = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 3
LISTED_FINDINGS = 200  # new / resolved findings listed one by one; the rest are counted


def _rows(cur, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _iso(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _iso(v) for k, v in r.items()} for r in rows]


def latest_run_id(url: str) -> str:
    """The integrate run the next report is about: the newest run that staged something."""
    with connect(url) as conn:
        run_id = runs.latest_staged_run_id(conn)
    if run_id is None:
        raise LookupError("nothing to report on yet: no integrate run has staged a dataset")
    return run_id


def collect(run_id: str, settings: Settings, *, publish_run_id: str | None = None) -> dict[str, Any]:
    """Every figure of the report on integrate run `run_id` (see the module docstring)."""
    url = warehouse_url(settings)
    with connect(url) as conn:
        ensure_findings_schema(conn)
        stages = runs.stage_runs(conn, run_id)
        if not stages:
            raise LookupError(f"run {run_id!r}: no staged dataset recorded for this run")
        found = runs.reconcile_run(conn, run_id)
        rec = found.as_dict() if found else None
        quality = runs.quality_runs(conn, run_id)
        figures: dict[str, Any] = {
            "run_id": run_id,
            "publish_run_id": publish_run_id,
            "generated_at": datetime.now(UTC).isoformat(),
            "quality": _quality(quality),
            "quality_datasets": _quality_datasets(quality, run_id, settings),
            "conservation": _conservation(stages),
            "quarantine": _quarantine(stages),
            "quarantine_examples": _quarantine_examples(stages, settings),
            "links": _links(rec),
            "accuracy": _accuracy(rec, stages, settings),
            "publications": _publications(conn, run_id, publish_run_id),
        }
        with conn.cursor() as cur:
            figures.update(_findings(cur, run_id))
        figures.update(_cases(conn, rec, settings))
        figures.update(_grants(settings))
        figures["reads"] = _reads(conn)
        figures["trends"] = _trends(conn, run_id, settings.audit_trend_runs)
        figures["entity_runs"] = entity_runs(conn, figures["trends"], settings)
    this = next(t for t in figures["trends"] if t["run_id"] == run_id)
    figures["run"] = {
        "run_id": run_id, "started_at": this["started_at"], "finished_at": this["finished_at"],
        "duration_seconds": this["duration_seconds"], "reconciled": rec is not None and rec["status"] == "success",
        "reconcile_seconds": (rec["metrics"] or {}).get("seconds") if rec else None,
    }
    figures["headline"] = headline(figures)
    return figures


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a list of reports shows per run."""
    qd = figures["quality_datasets"]
    this = next(t for t in figures["trends"] if t["run_id"] == figures["run_id"])
    return {
        "gate_passed": bool(qd) and all(d["gate_passed"] for d in qd),
        "quality_pass_rate": this["quality_pass_rate"],
        "record_pass_rate": this["record_pass_rate"],
        "conservation_ok": all(c["conservation_ok"] for c in figures["conservation"]),
        "open_findings": this["open_findings"],
        "new_findings": figures["findings_changes"]["opened"] + figures["findings_changes"]["reopened"],
        "resolved_findings": figures["findings_changes"]["resolved"],
        "published": [f"{p['dataset']} v{p['version']}" for p in figures["publications"] if p["status"] == "published"],
    }


# ------------------------------------------------------------------------------------------- quality

def _round4(value: float | None) -> float | None:
    """Rounded to 4 decimals as PostgreSQL's `round(value::numeric, 4)` does: from the value's 15 significant
    digits, halves away from zero (Python's round() works on the binary value, halves to even)."""
    if value is None:
        return None
    return float(Decimal(format(value, ".15g")).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def _quality(quality: list[runs.QualityRun]) -> list[dict[str, Any]]:
    rows = []
    for q in quality:
        for r in q.results:
            details = r.details or {}
            rows.append({
                "dataset": q.dataset, "rule": r.rule, "expectation": r.expectation, "column": r.column_name,
                "severity": r.severity, "success": r.success, "element_count": r.element_count,
                "unexpected_count": r.unexpected_count, "unexpected_percent": _round4(r.unexpected_percent),
                "tolerance": r.tolerance, "unexpected_staged": details.get("unexpected_staged"),
                "unexpected_quarantined": details.get("unexpected_quarantined"),
            })
    return rows


def _quality_datasets(quality: list[runs.QualityRun], run_id: str, settings: Settings) -> list[dict[str, Any]]:
    docs = data_docs_pages(settings.reports_dir, run_id)
    return [{
        "dataset": q.dataset, "suite": q.suite, "evaluated": q.evaluated, "gate_passed": q.gate_passed,
        "failed_critical": q.failed_critical, "failed_warning": q.failed_warning, "passed": q.passed,
        "pass_rate": round(q.passed / q.evaluated, 4) if q.evaluated else None, "data_docs": docs.get(q.suite),
    } for q in quality]


def data_docs_pages(reports_dir: Path, run_id: str) -> dict[str, str]:
    """Suite name -> this run's Data Docs validation page, relative to the reports dir."""
    from lienthong.paths import safe_run_id

    base = Path(reports_dir) / "data_docs" / "validations"
    pages: dict[str, str] = {}
    run = safe_run_id(run_id)
    if base.is_dir():
        # GX files a result under the suite name split at its dots: `citizen@1.0.0` -> citizen@1/0/0/<run>/<time>/
        for page in sorted(base.glob(f"**/{run}/*/*.html")):
            parts = page.relative_to(base).parts
            suite = ".".join(parts[: len(parts) - 3])
            pages[suite] = page.relative_to(reports_dir).as_posix()  # sorted: the latest validation of the run wins
    return pages


# --------------------------------------------------------------------------- conservation, quarantine

def _conservation(stages: list[runs.StageRun]) -> list[dict[str, Any]]:
    return [
        {"dataset": s.dataset, "raw_rows": s.raw_rows, "duplicates_removed": s.duplicates_removed,
         "rows_in": s.rows_in, "rows_staged": s.rows_staged, "rows_quarantined": s.rows_quarantined,
         "rows_unchanged": s.rows_unchanged, "mode": s.mode,
         "difference": s.rows_in - s.rows_staged - s.rows_quarantined - s.rows_unchanged,
         "conservation_ok": s.conservation_ok}
        for s in stages
    ]


def _quarantine(stages: list[runs.StageRun]) -> list[dict[str, Any]]:
    out = []
    for s in stages:
        by_rule = s.quarantine_by_rule
        out += [{"dataset": s.dataset, "reason": rule, "rows": n}
                for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))]
    return out


def _quarantine_examples(stages: list[runs.StageRun], settings: Settings) -> list[dict[str, Any]]:
    """A few quarantined records per dataset and reason, every source value masked unless the contract
    marks its field as not personal."""
    from lienthong.contracts import contract

    out: list[dict[str, Any]] = []
    for s in stages:
        path = s.quarantine_path
        if not path or not Path(zones.split_ref(path)[0]).exists() or not s.rows_quarantined:
            continue
        c = contract(s.dataset)
        key_public = not any(c.field(k).is_personal for k in c.primary_key)
        with session(settings, purpose="audit") as con:
            zones.register(con, "quarantined", path)
            # this run's quarantined records (the table also holds those of earlier runs)
            rows = con.execute(
                """WITH q AS (SELECT unnest(rules) AS rule, record_key, reasons, payload FROM quarantined
                              WHERE run_id = ?)
                   SELECT rule, record_key, reasons, payload FROM q
                   QUALIFY row_number() OVER (PARTITION BY rule ORDER BY record_key) <= ?
                   ORDER BY rule, record_key""",
                [s.run_id, EXAMPLES_PER_REASON],
            ).fetchall()
        for rule, key, reasons, payload in rows:
            out.append({
                "dataset": s.dataset, "reason": rule,
                "record_key": key if key_public else mask_id(key),
                "reasons": "; ".join(_mask_reason(r, key, key_public) for r in reasons or []),
                "record": json.dumps(_mask_payload(payload, c), ensure_ascii=False, sort_keys=True),
            })
    return out


def _mask_reason(reason: str, key: str | None, key_public: bool) -> str:
    # A reason names its record and quotes the bad value ("record 0312...: unparseable: birth_date (ngaySinh)
    # = 29/10/2001"): the value is dropped and the key masked like the key column.
    text = reason.split(" = ", 1)[0]
    return text if key_public or not key else text.replace(key, mask_id(key) or "")


def _mask_payload(payload: str | None, contract: Any) -> Any:
    """The record as received, each value masked by what its contract field is (a source field the contract
    does not know is masked as an ID would be)."""
    try:
        doc = json.loads(payload) if payload else {}
    except ValueError:
        return "<unreadable record>"
    if not isinstance(doc, dict):
        return "<not an object>"
    by_source = {(f.source_field or f.name).split(".")[0]: f for f in contract.fields}
    out = {}
    for key in sorted(doc):
        value, f = doc[key], by_source.get(key)
        if f is None or isinstance(value, dict | list):
            out[key] = mask_by_key(key, value)
        elif not f.is_personal or value is None:
            out[key] = value
        elif f.logical_type in ("date", "timestamp"):
            out[key] = mask_year(value)
        elif "name" in f.name:
            out[key] = mask_name(value)
        else:
            out[key] = mask_id(value)
    return out


# ------------------------------------------------------------------------------------ links, accuracy

def _links(rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not rec:
        return []
    out = []
    for link, counts in ((rec["metrics"] or {}).get("links") or {}).items():
        if isinstance(counts, dict):
            out.append({"link": link, **{k: v for k, v in counts.items() if isinstance(v, int | float)}})
    return out


def _accuracy(rec: dict[str, Any] | None, stages: list[runs.StageRun], settings: Settings) -> list[dict[str, Any]]:
    truth = settings.ground_truth_dir
    if not rec or truth is None or not (Path(truth) / "links.parquet").exists():
        return []

    from lienthong.linkscore import link_accuracy

    try:
        paths = {s.dataset: s.staged_path for s in stages}
        tables = {name: zones.read_table(out["path"]) for name, out in (rec["outputs"] or {}).items()
                  if name in ("enterprise_representative_link", "parcel_holder_link")}
        acc = link_accuracy(tables, zones.read_table(paths["citizen"] or ""), zones.read_table(paths["enterprise"] or ""), truth)
    except (KeyError, OSError, ValueError) as exc:  # a partial run: say so rather than fail the report
        log.warning("link accuracy not computed for run %s: %s", rec["run_id"], exc)
        return []
    return [{"link": name, **{k: v for k, v in m.items() if isinstance(v, int | float)}}
            for name, m in acc.items() if isinstance(m, dict)]


# -------------------------------------------------------------------------------------- publications

def _publications(conn, run_id: str, publish_run_id: str | None) -> list[dict[str, Any]]:
    if publish_run_id:
        found = runs.publications(conn, run_id=publish_run_id)
    else:  # the versions written after this run's reconciliation and before the next integrate run
        found = runs.publications_after_staging(conn, run_id)
    return _plain([{"dataset": p.dataset, "version": p.version, "status": p.status, "rows": p.row_count,
                    "content_hash": p.content_hash, "contract_version": p.contract_version,
                    "published_at": p.published_at, "publish_run_id": p.run_id} for p in found])


# ------------------------------------------------------------------------------------------ findings

def _findings(cur, run_id: str) -> dict[str, Any]:
    by = _rows(cur, """SELECT f.type, f.severity, f.agency,
                              count(*) FILTER (WHERE f.status = 'open') AS open,
                              count(*) FILTER (WHERE e.event = 'opened') AS new,
                              count(*) FILTER (WHERE e.event = 'reopened') AS reopened,
                              count(*) FILTER (WHERE e.event = 'resolved') AS resolved
                       FROM lienthong_ops.finding f
                       LEFT JOIN lienthong_ops.finding_event e
                         ON e.finding_id = f.finding_id AND e.run_id = %s AND e.event <> 'seen'
                       GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", (run_id,))
    for r in by:
        r["title"] = TAXONOMY[r["type"]].title if r["type"] in TAXONOMY else r["type"]
    listed: dict[str, list[dict[str, Any]]] = {}
    for event in ("opened", "reopened", "resolved"):
        rows = _rows(cur, """SELECT f.finding_id, f.type, f.severity, f.agency, f.subject, f.status, f.first_seen_run
                             FROM lienthong_ops.finding_event e JOIN lienthong_ops.finding f USING (finding_id)
                             WHERE e.run_id = %s AND e.event = %s
                             ORDER BY array_position(ARRAY['critical','high','medium','low','info'], f.severity),
                                      f.type, f.finding_id LIMIT %s""", (run_id, event, LISTED_FINDINGS))
        for r in rows:
            r["subject"] = json.dumps(mask_json(r["subject"] or {}), ensure_ascii=False, sort_keys=True)
        listed[event] = rows
    cur.execute("""SELECT event, count(*) FROM lienthong_ops.finding_event WHERE run_id = %s GROUP BY event""", (run_id,))
    counts = dict(cur.fetchall())
    return {
        "findings": by,
        "findings_changes": {k: int(counts.get(k, 0)) for k in ("opened", "reopened", "resolved")},
        "findings_new": listed["opened"] + listed["reopened"],
        "findings_resolved": listed["resolved"],
    }


def _cases(conn, rec: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """The ageing of the discrepancy cases per agency (now), the deadlines applied, and this run's judgements
    of claims of correction."""
    from lienthong.cases import CASE_STATES, case_ageing  # (checks the deadlines' keys)

    ageing = case_ageing(conn, datetime.now(UTC), dict(settings.finding_deadlines))
    rows = [{"agency": a["agency"], "open": a["open"],
             **{f"state_{s}": a["by_state"].get(s, 0) for s in CASE_STATES if s in a["by_state"]},
             "median_open_days": a["median_open_days"], "max_open_days": a["max_open_days"],
             "overdue": a["overdue"], "disputed_with_reason": a["disputed_with_reason"]}
            for a in ageing["agencies"]]
    buckets = [{"agency": a["agency"], **b} for a in ageing["agencies"] for b in a["buckets"]]
    judged = ((rec or {}).get("counts") or {}).get("cases") or {}
    return {"cases": rows, "case_ageing": buckets,
            "case_deadlines": {"by_severity": ageing["deadlines"], "overrides": ageing["deadline_overrides"]},
            "case_run": {k: judged.get(k) for k in ("claims_verified", "claims_reopened", "claims_pending")}}


# -------------------------------------------------------------------------------------------- trends

READS_WINDOW_DAYS = 30


def _grants(settings: Settings) -> dict[str, Any]:
    """Every agency's grants with their purposes and legal bases (schemas/agencies.yaml); a configuration the
    views would refuse is reported as such instead of a table."""
    from lienthong.access import AccessConfigError, grants_table, load_agencies

    try:
        table = grants_table(load_agencies(settings.contracts_dir / "agencies.yaml"))
    except AccessConfigError as exc:
        return {"grants": [], "grants_error": str(exc)}
    return {"grants_error": None, "grants": [
        {"agency": g["agency"], "dataset": g["dataset"], "purposes": ", ".join(g["purposes"]),
         "legal_bases": "; ".join(g["legal_bases"]), "embargo_days": g["embargo_days"],
         **{f"columns_{mode}": n for mode, n in g["columns"].items()},
         "row_filter": "; ".join(f"{c} in {', '.join(map(str, v))}" for c, v in g["rows"].items())} for g in table]}


def _reads(conn) -> list[dict[str, Any]]:
    """Lookups of the last READS_WINDOW_DAYS days per caller, dataset and declared purpose: answered, not found,
    refused (a missing or ungranted purpose or case, a dataset not granted) and failed."""
    from lienthong.singlewindow.audit import ensure_access_log

    ensure_access_log(conn)
    with conn.cursor() as cur:
        return _rows(cur, f"""
            SELECT agency, dataset, coalesce(purpose, '(none)') AS purpose,
                   count(*) FILTER (WHERE status_code = 200) AS answered,
                   count(*) FILTER (WHERE status_code = 404) AS not_found,
                   count(*) FILTER (WHERE status_code IN (400, 403)) AS refused,
                   count(*) FILTER (WHERE status_code >= 500) AS failed,
                   count(DISTINCT case_id) AS cases, max(legal_basis) AS legal_basis
            FROM lienthong_ops.access_log WHERE at > now() - interval '{READS_WINDOW_DAYS} days'
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""")


def _published_at(p: runs.Publication) -> datetime:
    if p.published_at is None:  # the ledger sets it on insert (NOT NULL DEFAULT now())
        raise ValueError(f"publication {p.dataset} v{p.version} read from the ledger without published_at")
    return p.published_at


def _trends(conn, run_id: str, limit: int) -> list[dict[str, Any]]:
    """One point per integrate run up to and including `run_id` (the last `limit` of them), oldest first."""
    integrate_runs = runs.integrate_run_totals(conn, run_id, limit)
    integrate_runs.reverse()
    quality = runs.rule_pass_counts(conn, [r["run_id"] for r in integrate_runs])
    with conn.cursor() as cur:
        open_by_type = _open_by_type(cur, integrate_runs)
    publications = sorted(runs.publications(conn, status="published"), key=_published_at)
    points = []
    for i, r in enumerate(integrate_runs):
        finished = r["reconciled_at"] or r["staged_at"]
        until = integrate_runs[i + 1]["started_at"] if i + 1 < len(integrate_runs) else None
        served: dict[str, int] = {}
        for p in publications:  # the version of each dataset served once this run's publications were done
            if until is None or p.published_at < until:
                served[p.dataset] = p.row_count
        passed, evaluated = quality.get(r["run_id"], (0, 0))
        counts = {k: v for k, v in (r["counts"] or {}).items() if k != "findings" and isinstance(v, int)}
        by_type = open_by_type.get(r["run_id"], {})
        points.append({
            "run_id": r["run_id"], "started_at": _iso(r["started_at"]), "finished_at": _iso(finished),
            "duration_seconds": round((finished - r["started_at"]).total_seconds(), 1),
            "quality_pass_rate": round(passed / evaluated, 4) if evaluated else None,
            "record_pass_rate": round(int(r["rows_staged"]) / int(r["rows_in"]), 4) if r["rows_in"] else None,
            "rows_raw": int(r["rows_raw"]), "rows_staged": int(r["rows_staged"]),
            "rows_quarantined": int(r["rows_quarantined"]),
            "rows_integrated": sum(counts.values()) if counts else None,
            "rows_published": sum(served.values()) if served else None,
            "open_findings": sum(by_type.values()), "open_by_type": dict(sorted(by_type.items())),
        })
    return points


def _fetch(cur, sql: str, params: Any) -> list[tuple]:
    cur.execute(sql, params)
    return cur.fetchall()


def _open_by_type(cur, runs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Findings open after each run, by type. A finding's events alternate opened / resolved / reopened /
    resolved, so the open count after a run is the running sum of opened + reopened - resolved over every
    sync up to it, in time order; only per-sync totals are read (not one row per finding and run)."""
    events = _fetch(cur, """SELECT e.run_id, min(e.at) AS at, f.type,
                                   count(*) FILTER (WHERE e.event IN ('opened', 'reopened'))
                                   - count(*) FILTER (WHERE e.event = 'resolved')
                            FROM lienthong_ops.finding_event e JOIN lienthong_ops.finding f USING (finding_id)
                            WHERE e.event <> 'seen' GROUP BY e.run_id, f.type ORDER BY 2""", None)
    per_sync: dict[str, tuple[datetime, dict[str, int]]] = {}
    for sync_run, at, type_, delta in events:
        at0, deltas = per_sync.setdefault(sync_run, (at, {}))
        per_sync[sync_run] = (min(at0, at), deltas)
        deltas[type_] = deltas.get(type_, 0) + int(delta)
    running: dict[str, int] = defaultdict(int)
    after: dict[str, dict[str, int]] = {}
    for sync_run, (_, deltas) in sorted(per_sync.items(), key=lambda kv: kv[1][0]):
        for t, d in deltas.items():
            running[t] += d
        after[sync_run] = {t: n for t, n in running.items() if n}
    # A run without a sync of its own (nothing reconciled) shows what was open before it.
    out: dict[str, dict[str, int]] = {}
    last: dict[str, int] = {}
    syncs = sorted(per_sync.items(), key=lambda kv: kv[1][0])
    for r in runs:
        if r["run_id"] in after:
            last = after[r["run_id"]]
        else:
            until = r["reconciled_at"] or r["staged_at"]
            done = [after[s] for s, (at, _) in syncs if at <= until]
            last = done[-1] if done else {}
        out[r["run_id"]] = dict(last)
    return out
