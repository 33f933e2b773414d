"""One reconciliation run: staged zone -> links -> integrated zone + findings (the `integrate` DAG's last task).

Owns the order of the steps, where the integrated tables go (`<data>/integrated/<dataset>/`, a Delta table
each, one commit per reconciliation replacing its rows; the version is what the ledger names), the run's record in
`lienthong_ops.reconcile_run`, and the findings sync. Logs one line per step with counts and rates. The run's
trained link models are saved beside its outputs (`lienthong.reconcile.explain.save_models`); their paths are
returned as `model_paths`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lienthong import zones
from lienthong.duck import session
from lienthong.settings import Settings, load_settings

log = logging.getLogger(__name__)



def integrated_table(integrated_dir: Path, dataset: str) -> Path:
    """Where an integrated dataset's Delta table lives; each reconciliation commits one version of it."""
    return Path(integrated_dir) / dataset


def _hash(table: pa.Table) -> str:
    h = hashlib.sha256()
    for batch in table.to_batches(max_chunksize=200_000):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def reconcile_tables(staged: dict[str, pa.Table], settings: Settings) -> tuple[dict[str, pa.Table], list, dict]:
    """The pure part: staged tables in, integrated tables + findings + metrics out (no I/O)."""
    from lienthong.reconcile import dedupe, integrate, people, sources
    from lienthong.reconcile.organisations import link_holder_organisations

    bands = people.LinkBands(accept=settings.match_accept, review=settings.match_review)
    metrics: dict[str, Any] = {"seconds": {}, "links": {}}
    t = time.monotonic()

    def step(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        metrics["seconds"][name] = round(now - t, 3)
        t = now

    cit, ent = staged["citizen"], staged["enterprise"]
    reps, holders = staged["legal_representative"], staged["land_holder"]
    holders = holders.filter(pc.invert(pc.fill_null(holders["deleted"], False)))
    person_holders = holders.filter(pc.equal(holders["holder_type"], "CA_NHAN"))
    org_holders = holders.filter(pc.equal(holders["holder_type"], "TO_CHUC"))

    cdup, edup, hdup = (dedupe.citizen_duplicates(cit), dedupe.enterprise_duplicates(ent),
                        dedupe.holder_duplicates(holders))
    step("dedupe")
    log.info("duplicates: %d citizen, %d enterprise, %d land-holder records in clusters",
             cdup.num_rows, edup.num_rows, hdup.num_rows)
    registry = sources.citizens_as_people(cit)
    step("prepare_registry")
    rep_result = people.link_people(sources.representatives_as_people(reps), registry, bands, settings=settings)
    step("link_representatives")
    log.info("representatives -> citizens: %s (%.0f records/s)", rep_result.counts,
             reps.num_rows / max(metrics["seconds"]["link_representatives"], 1e-9))
    holder_result = people.link_people(sources.holders_as_people(person_holders), registry, bands,
                                       settings=settings)
    step("link_land_holders")
    log.info("land holders -> citizens: %s (%.0f records/s)", holder_result.counts,
             person_holders.num_rows / max(metrics["seconds"]["link_land_holders"], 1e-9))
    org_links = link_holder_organisations(org_holders, ent, edup)
    step("link_organisations")
    # the trained models, for `reconcile` to save beside the outputs (popped there: not ledger metrics)
    metrics["models"] = {"representative_citizen": rep_result.model, "holder_citizen": holder_result.model}
    metrics["links"] = {
        "representative_citizen": rep_result.counts,
        "holder_citizen": holder_result.counts,
        "holder_enterprise": _count(org_links),
        "model_seconds": {"representative_citizen": rep_result.seconds, "holder_citizen": holder_result.seconds},
    }

    with session(settings, purpose="integrate") as con:
        integrate.load(con, integrate.Inputs(
            citizen=cit, enterprise=ent, legal_representative=reps, land_holder=staged["land_holder"],
            parcel=staged["parcel"], certificate=staged["certificate"], citizen_duplicates=cdup,
            enterprise_duplicates=edup, holder_duplicates=hdup, representative_links=rep_result.links,
            holder_person_links=holder_result.links, holder_organisation_links=org_links,
        ))
        tables = {
            "person_master": integrate.person_master(con),
            "enterprise_master": integrate.enterprise_master(con),
            "parcel_master": integrate.parcel_master(con),
            "enterprise_representative_link": integrate.representative_link(con),
            "parcel_holder_link": integrate.holder_link(con),
        }
        step("golden_records")
        found = integrate.findings(con)
        step("findings")
    return tables, found, metrics


def _count(links: pa.Table) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in pa.TableGroupBy(links, ["method", "band"]).aggregate([("left_id", "count")]).to_pylist():
        out[f"{row['method']}_{row['band']}"] = row["left_id_count"]
    return out


def _read_staged(dataset: str, reference: str) -> pa.Table:
    """A staged table version in primary-key order (a merged table's files hold rows in commit order; the
    linkage's sampling and tie-breaks must see the same order whatever the history of merges)."""
    from lienthong import zones
    from lienthong.contracts import contract

    table = zones.read_table(reference)
    return table.sort_by([(k, "ascending") for k in contract(dataset).primary_key])


def reconcile(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Reconcile the newest staged run of every source; write the integrated zone; sync the findings."""
    from lienthong import runs
    from lienthong.db import connect, warehouse_url
    from lienthong.findings import ensure_findings_schema, sync_findings
    from lienthong.reconcile.explain import save_models
    from lienthong.reconcile.people import LinkBands
    from lienthong.reconcile.sources import INPUT_DATASETS
    from lienthong.runs.latest import latest_integration

    s = settings or load_settings()
    url = warehouse_url(s)
    started = datetime.now(UTC)
    inputs = {name: latest_integration(name, url) for name in INPUT_DATASETS}
    with connect(url) as conn:
        last = runs.latest_reconcile_run(conn)
    held = {name: i.get("staged_path") for name, i in ((last.metrics or {}).get("inputs") or {}).items()} if last else {}
    if last is not None and held == {name: info["staged_path"] for name, info in inputs.items()}:
        # The same staged versions as the last reconciliation: its outputs stand; nothing is written.
        log.info("reconcile: no staged dataset changed since reconciliation %s; nothing to do", last.run_id)
        return {"run_id": run_id, "unchanged": True, "since": last.run_id, "outputs": last.outputs or {},
                "findings": {}, "links": {}, "seconds": {}, "model_paths": last.model_paths or {}}
    staged = {name: _read_staged(name, info["staged_path"]) for name, info in inputs.items()}
    log.info("reconciling %s", {name: t.num_rows for name, t in staged.items()})
    tables, found, metrics = reconcile_tables(staged, s)

    outputs: dict[str, Any] = {}
    for name, table in tables.items():
        # One commit per dataset replacing its rows: readers pin the version (`<table>@v<N>`) the ledger names.
        commit = zones.create(integrated_table(s.integrated_dir, name), table, run_id=run_id,
                              metadata={"lienthong.mode": "reconcile"})
        path = zones.ref(integrated_table(s.integrated_dir, name), commit.version or 0)
        outputs[name] = {"path": path, "rows": table.num_rows, "content_hash": _hash(table)}
        zones.maintain(integrated_table(s.integrated_dir, name), retention_hours=s.zone_retention_hours, run_id=run_id)
    metrics["inputs"] = {name: {"integrate_run_id": info["run_id"], "staged_path": info["staged_path"],
                                "rows": staged[name].num_rows} for name, info in inputs.items()}
    model_paths = save_models(
        s.integrated_dir, run_id, metrics.pop("models"),
        inputs={name: info["staged_path"] for name, info in inputs.items()},
        outputs={name: o["path"] for name, o in outputs.items()},
        bands=asdict(LinkBands(accept=s.match_accept, review=s.match_review)))
    with connect(url) as conn:
        ensure_findings_schema(conn)
        conn.commit()  # the DDL locks are not held through the sync
        # the findings' sync and the run's record: one transaction, committed together (or neither)
        changes = sync_findings(conn, run_id, found, commit=False)
        runs.record_reconcile_run(conn, runs.ReconcileRun(
            run_id, started_at=started, finished_at=datetime.now(UTC), status="success",
            counts={name: o["rows"] for name, o in outputs.items()} | {"findings": changes},
            metrics=metrics, outputs=outputs, model_paths=model_paths))
    log.info("integrated zone written: %s; findings %s", {n: o["rows"] for n, o in outputs.items()}, changes)
    return {"run_id": run_id, "outputs": outputs, "findings": changes, "links": metrics["links"],
            "seconds": metrics["seconds"], "model_paths": model_paths}
