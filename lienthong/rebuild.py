"""`lienthong rebuild --from raw`: every staged dataset recomputed from all its raw landings, and the check
that the incrementally maintained tables equal that recomputation row for row.

`rebuild` replaces the staged and quarantine tables of each dataset in one commit each (a new version: the
history stays readable until vacuumed), validates them whole and reconciles. `check` rebuilds into a scratch
folder beside the zones and compares, leaving the zones and the ledger untouched: the invariant the
incremental path must keep (incremental state == rebuild from raw) as a command an operator can run.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from lienthong import zones
from lienthong.datasets import STAGED
from lienthong.duck import session
from lienthong.settings import Settings

log = logging.getLogger(__name__)

# Bookkeeping that says when or by which run a row was written, not what it holds: not compared.
NOT_COMPARED = {"staged": ("_staged_version",), "quarantine": ("run_id",)}


def rebuild(run_id: str, settings: Settings, datasets: list[str] | None = None, *, reconcile: bool = True) -> dict[str, Any]:
    """Restage and revalidate `datasets` (default: every staged dataset) from every raw landing, then
    reconcile. Returns each step's summary."""
    from lienthong.stagestep import NothingToStage, stage_dataset
    from lienthong.validatestep import validate_dataset

    out: dict[str, Any] = {"run_id": run_id, "datasets": {}}
    for name in datasets or list(STAGED):
        try:
            summary = stage_dataset(name, run_id, settings, rebuild=True)
        except NothingToStage as exc:
            log.info("rebuild: %s", exc)
            continue
        verdict = validate_dataset(name, run_id, summary, settings)
        out["datasets"][name] = {"rows_in": summary["rows_in"], "rows_staged": summary["rows_staged"],
                                 "rows_quarantined": summary["rows_quarantined"], "gate_passed": verdict["gate_passed"],
                                 "staged_path": verdict.get("staged_path") or summary["staged_path"]}
    if reconcile and out["datasets"]:
        from lienthong.reconcile.run import reconcile as do_reconcile

        try:
            # relinked from scratch with the persisted models (the entity IDs come from the registry)
            out["reconcile"] = {k: v for k, v in do_reconcile(run_id, settings, relink=True).items()
                                if k in ("outputs", "findings", "link_state")}
        except LookupError as exc:  # a source never staged
            log.info("rebuild: no reconciliation: %s", exc)
    return out


def compare(a: str | Path, b: str | Path, *, exclude: tuple[str, ...] = (), key: str = "_merge_key") -> dict[str, Any]:
    """Row-for-row comparison of two table versions on every column but `exclude`: rows only in a, only in
    b (by full content), and the keys involved (up to 20)."""
    with session(purpose="rebuild-check") as con:
        zones.register(con, "a", a)
        zones.register(con, "b", b)
        cols = [r[0] for r in con.execute("DESCRIBE a").fetchall() if r[0] not in exclude]
        other = {r[0] for r in con.execute("DESCRIBE b").fetchall()}
        if set(cols) - other:
            return {"equal": False, "columns_missing_in_b": sorted(set(cols) - other)}
        listed = ", ".join(f'"{c}"' for c in cols)
        only_a = con.execute(f"SELECT {listed} FROM a EXCEPT ALL SELECT {listed} FROM b").fetch_arrow_table()
        only_b = con.execute(f"SELECT {listed} FROM b EXCEPT ALL SELECT {listed} FROM a").fetch_arrow_table()
        rows = con.execute("SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)").fetchone() or (0, 0)
    keys = sorted({str(k) for t in (only_a, only_b) for k in t.column(key).to_pylist()})
    return {"equal": only_a.num_rows == 0 and only_b.num_rows == 0, "rows_a": rows[0], "rows_b": rows[1],
            "only_in_a": only_a.num_rows, "only_in_b": only_b.num_rows, "keys": keys[:20]}


def check(settings: Settings, datasets: list[str] | None = None) -> dict[str, Any]:
    """Rebuild each dataset's staged and quarantine tables from raw into a scratch folder (staging, then the
    suite on every row and the same moves to quarantine; nothing recorded) and compare them with the
    current tables. Returns per dataset and table the comparison, and `equal` overall."""
    from lienthong.contracts import contract
    from lienthong.quality import validate
    from lienthong.staging import (
        StagePlan,
        quarantine_by_rule,
        stage_json_source,
        table_paths,
    )
    from lienthong.validatestep import apply_verdict

    scratch = settings.data_dir / "tmp" / f"rebuild-check-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"datasets": {}}
    try:
        for name in datasets or list(STAGED):
            c = contract(name)
            files = StagePlan.from_contract(c).raw_files(settings.raw_dir)
            current_staged, current_quarantine = table_paths(name, settings.staged_dir, settings.quarantine_dir)
            if not files or not zones.is_table(current_staged):
                continue
            run_id = "rebuild-check"
            staged = stage_json_source(c, files, run_id=run_id, staged_dir=scratch / "staged",
                                       quarantine_dir=scratch / "quarantine", full=True)
            q_ref = staged.quarantine_path
            result = validate(c, staged.staged_path, run_id=run_id, since_version=-1,
                              rows_in=staged.rows_staged + staged.rows_quarantined,
                              quarantine_by_rule=quarantine_by_rule(q_ref), store=False)
            moved = apply_verdict(c, run_id, result, staged.staged_path, raw_dir=settings.raw_dir,
                                  quarantine_dir=scratch / "quarantine")
            s_ref, q_ref = moved.staged_path, moved.quarantine_path
            out["datasets"][name] = {
                "staged": compare(current_staged, s_ref, exclude=NOT_COMPARED["staged"]),
                "quarantine": compare(current_quarantine, q_ref, exclude=NOT_COMPARED["quarantine"]),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out["equal"] = all(t["equal"] for d in out["datasets"].values() for t in d.values())
    return out


def check_reconcile(settings: Settings) -> dict[str, Any]:
    """Relink and reconcile the staged versions the last reconciliation read, from scratch (every person
    record linked again with the persisted models, into a scratch folder), assign entity IDs against the
    registry as it was before that run, and compare with what the incremental run left: the link state,
    every integrated table (entity IDs included), the entity registry's members (no event: the same
    clustering keeps every ID) and the open findings. Changes nothing. Returns per part the comparison and
    `equal` overall; `{"equal": True, "reconcile": None}` when nothing was reconciled yet."""
    import json

    from lienthong import entities, runs
    from lienthong.contracts import contract
    from lienthong.db import connect, warehouse_url
    from lienthong.findings import open_findings
    from lienthong.reconcile import linkstate, models
    from lienthong.reconcile.people import LinkBands
    from lienthong.reconcile.run import _person_links, reconcile_tables, with_entity_ids

    url = warehouse_url(settings)
    with connect(url) as conn:
        last = runs.latest_reconcile_run(conn)
        persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
        findings_now = {f["finding_id"]: f["evidence"] for f in open_findings(conn)}
    if last is None or not (last.metrics or {}).get("link_state"):
        return {"equal": True, "reconcile": None}
    inputs = {name: info["staged_path"] for name, info in (last.metrics or {})["inputs"].items()}
    scratch = settings.data_dir / "tmp" / f"rebuild-check-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}
    try:
        bands = LinkBands(accept=settings.match_accept, review=settings.match_review)
        update = linkstate.update(scratch, linkstate.link_inputs(inputs), None,
                                  {t: (p[1] if p else None) for t, p in persisted.items()}, run_id="rebuild-check",
                                  settings=settings, bands=bands)
        if update.trained:
            return {"equal": False, "error": f"no persisted model for {sorted(update.trained)}"}
        held = (last.metrics or {})["link_state"]["refs"]
        out["link_state"] = {name: compare(held[name], update.refs[name], key="_key")
                             for name in (linkstate.REGISTRY, linkstate.LEFT, linkstate.LINKS)}
        tables, found, metrics = reconcile_tables(inputs, settings, person_links=_person_links(update.refs[linkstate.LINKS]))
        clusters = metrics.pop("clusters")
        members, ents = entities.load(entities.registry_dir(settings), before_run=last.run_id)
        assignment = entities.assign(members, ents, clusters, last.run_id, settings=settings)
        tables = with_entity_ids(tables, clusters, assignment.members, settings)
        out["integrated"] = {}
        for name, table in tables.items():
            ref = zones.ref(scratch / "integrated" / name,
                            zones.create(scratch / "integrated" / name, table, run_id="rebuild-check").version or 0)
            out["integrated"][name] = compare((last.outputs or {})[name]["path"], ref,
                                              key=contract(name).primary_key[0])
        current, _ = entities.load(entities.registry_dir(settings))
        stored = zones.ref(scratch / "members_now", zones.create(scratch / "members_now", current, run_id="rebuild-check").version or 0)
        rebuilt = zones.ref(scratch / "members_rebuilt", zones.create(scratch / "members_rebuilt", assignment.members,
                                                                      run_id="rebuild-check").version or 0)
        out["entities"] = compare(stored, rebuilt, key="record_key")
        recomputed = {f.finding_id: f.evidence for f in found}
        differing = sorted(k for k in set(recomputed) | set(findings_now)
                           if json.dumps(recomputed.get(k), sort_keys=True, default=str)
                           != json.dumps(findings_now.get(k), sort_keys=True, default=str))
        out["findings"] = {"equal": not differing, "open": len(findings_now), "recomputed": len(recomputed),
                           "differing": differing[:20]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    equal = (all(c["equal"] for c in out["link_state"].values()) and all(c["equal"] for c in out["integrated"].values())
             and out["entities"]["equal"] and out["findings"]["equal"])
    return {"equal": equal, "reconcile": last.run_id, **out}
