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


def reconcile_tables(staged: dict[str, pa.Table], settings: Settings,
                     person_links: dict[str, pa.Table] | None = None) -> tuple[dict[str, pa.Table], list, dict]:
    """The pure part: staged tables in, integrated tables + findings + metrics out (no I/O).

    `person_links` (link type -> `people.LINK_SCHEMA` table) are the person links of the link state
    (`linkstate.update`); without them the persons are linked here, with a model trained on these tables."""
    from lienthong.reconcile import dedupe, idless, integrate, people, sources
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
    registry: pa.Table | None = None
    if person_links is None:
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
        rep_links, holder_links = rep_result.links, holder_result.links
        metrics["links"] = {"representative_citizen": rep_result.counts, "holder_citizen": holder_result.counts,
                            "model_seconds": {"representative_citizen": rep_result.seconds,
                                              "holder_citizen": holder_result.seconds}}
    else:
        rep_links, holder_links = person_links["representative_citizen"], person_links["holder_citizen"]
        metrics["links"] = {"representative_citizen": people.link_counts(rep_links, cit.num_rows),
                            "holder_citizen": people.link_counts(holder_links, cit.num_rows)}
    # ID-less person holders: the name unique in the province (or at the holder's address) where the model
    # ranks the same citizen first (`idless`); re-run whole each time from the staged tables and the model's
    # links, so the result is the same however those links were made
    idless_left = idless.idless_inputs(person_holders, staged["certificate"], staged["parcel"], settings=settings)
    idless_links, _ = idless.link_idless(
        idless_left, idless.registry_with_places(cit, registry if person_links is None else None), bands,
        model_links=holder_links, duplicates=cdup, settings=settings)
    holder_links = idless.combine(idless_links, holder_links, settings=settings)
    metrics["links"]["holder_citizen_idless"] = idless.counts(idless_links, idless_left)
    step("link_idless_holders")
    org_links = link_holder_organisations(org_holders, ent, edup)
    step("link_organisations")
    metrics["links"]["holder_enterprise"] = people.method_band_counts(org_links)

    with session(settings, purpose="integrate") as con:
        integrate.load(con, integrate.Inputs(
            citizen=cit, enterprise=ent, legal_representative=reps, land_holder=staged["land_holder"],
            parcel=staged["parcel"], certificate=staged["certificate"], citizen_duplicates=cdup,
            enterprise_duplicates=edup, holder_duplicates=hdup, representative_links=rep_links,
            holder_person_links=holder_links, holder_organisation_links=org_links,
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
        # the clustering for the entity registry (popped by `reconcile`: not a ledger metric)
        metrics["clusters"] = integrate.clusters(con)
    return tables, found, metrics


def _event_counts(events: pa.Table) -> dict[str, dict[str, int]]:
    """{kind: {event: count}} of a run's entity events."""
    out: dict[str, dict[str, int]] = {}
    for row in pa.TableGroupBy(events, ["kind", "event"]).aggregate([("entity_id", "count")]).to_pylist():
        out.setdefault(row["kind"], {})[row["event"]] = row["entity_id_count"]
    return out


def _read_staged(dataset: str, reference: str) -> pa.Table:
    """A staged table version in primary-key order (a merged table's files hold rows in commit order; the
    linkage's sampling and tie-breaks must see the same order whatever the history of merges)."""
    from lienthong import zones
    from lienthong.contracts import contract

    table = zones.read_table(reference)
    return table.sort_by([(k, "ascending") for k in contract(dataset).primary_key])


def _bases(last: Any, unfinished: list[Any], names: tuple[str, ...]) -> dict[str, list[str]] | None:
    """Per person input, the staged refs the link state may reflect: the last successful reconciliation's and
    those of every run started after it that did not finish (it may have written part of the state)."""
    if last is None:
        return None
    out: dict[str, list[str]] = {}
    for name in names:
        refs = []
        for rec in (last, *unfinished):
            ref = (((rec.metrics or {}).get("inputs") or {}).get(name) or {}).get("staged_path")
            if ref and ref not in refs:
                refs.append(ref)
        out[name] = refs
    return out


def with_entity_ids(tables: dict[str, pa.Table], clusters: pa.Table, members: pa.Table,
                    settings: Settings) -> dict[str, pa.Table]:
    """The masters with their `entity_id` (the entity of their cluster in the registry's members), placed
    where their contracts put it."""
    from lienthong.contracts import contract
    from lienthong.reconcile.integrate import MASTER_CLUSTER

    out = dict(tables)
    with session(settings, purpose="entity-ids") as con:
        con.register("clusters", clusters.select(["kind", "cluster_key", "dataset", "record_key"]))
        con.register("members", members.select(["kind", "dataset", "record_key", "entity_id"]))
        con.execute("""CREATE TABLE cluster_entity AS
                       SELECT DISTINCT c.kind, c.cluster_key, m.entity_id FROM clusters c
                       JOIN members m USING (kind, dataset, record_key)""")
        for name, (kind, key_sql) in MASTER_CLUSTER.items():
            con.register("master", tables[name])
            order = contract(name).field_names
            select = ", ".join("ce.entity_id" if c == "entity_id" else f'm."{c}"' for c in order)
            out[name] = con.execute(f"""
                SELECT {select}
                FROM (SELECT *, {key_sql} AS _cluster, row_number() OVER () AS _rn FROM master) m
                LEFT JOIN cluster_entity ce ON ce.kind = '{kind}' AND ce.cluster_key = m._cluster
                ORDER BY m._rn""").fetch_arrow_table()
            con.unregister("master")
            missing = pa.compute.sum(pa.compute.is_null(out[name]["entity_id"]).cast(pa.int64())).as_py() or 0
            if missing:
                raise RuntimeError(f"{name}: {missing} rows have no entity in the registry")
    return out


def _person_links(link_state_ref: str) -> dict[str, pa.Table]:
    """The person links of the link state, per link type, in the shape `people.link_people` returns."""
    from lienthong.reconcile.linkstate import LEFT_DATASETS
    from lienthong.reconcile.people import LINK_SCHEMA

    table = zones.read_table(link_state_ref)
    return {link_type: table.filter(pc.equal(table["dataset"], dataset)).select(LINK_SCHEMA.names).cast(LINK_SCHEMA)
            for dataset, link_type in LEFT_DATASETS.items()}


def reconcile(run_id: str, settings: Settings | None = None, *, relink: bool = False) -> dict[str, Any]:
    """Reconcile the newest staged run of every source; write the integrated zone; sync the findings.

    The person links come from the link state (`linkstate.update`): only the records a change touches are
    relinked, with the persisted models (`models.active`); a link type with no model yet gets one trained on
    the whole data and persisted. `relink` relinks everything with the persisted models (`lienthong
    rebuild`)."""
    from lienthong import entities, runs
    from lienthong.db import connect, warehouse_url
    from lienthong.findings import ensure_findings_schema, sync_findings
    from lienthong.reconcile import linkstate, models
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
        unfinished = runs.unfinished_reconcile_runs(conn, last.started_at if last else None)
        active_ids = {t: r.model_id for t in models.LINK_TYPES if (r := runs.active_link_model(conn, t)) is not None}
    held = {name: i.get("staged_path") for name, i in ((last.metrics or {}).get("inputs") or {}).items()} if last else {}
    linked_with = (((last.metrics or {}).get("link_state") or {}).get("models") or {}) if last else {}
    if (not relink and last is not None and held == {name: info["staged_path"] for name, info in inputs.items()}
            and linked_with == active_ids):
        # The same staged versions and models as the last reconciliation: its outputs stand; nothing is written.
        # (A model activated since, by `lienthong link-models --activate` or a retraining, relinks everything.)
        log.info("reconcile: no staged dataset changed since reconciliation %s; nothing to do", last.run_id)
        return {"run_id": run_id, "unchanged": True, "since": last.run_id, "outputs": last.outputs or {},
                "findings": {}, "links": {}, "seconds": {}, "model_paths": last.model_paths or {}}
    input_metrics = {name: {"integrate_run_id": info["run_id"], "staged_path": info["staged_path"]}
                     for name, info in inputs.items()}
    with connect(url) as conn:
        # The start is recorded with the inputs: should this run die after writing part of the link state, the
        # next run compares against these versions too (`_bases`).
        runs.record_reconcile_run(conn, runs.ReconcileRun(run_id, started_at=started, finished_at=None,
                                                          status="running", metrics={"inputs": input_metrics}))
        persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    state_models = ((last.metrics or {}).get("link_state") or {}).get("models") if last else None
    update = linkstate.update(
        s.integrated_dir, {n: inputs[n]["staged_path"] for n in linkstate.PERSON_INPUTS},
        None if relink else _bases(last, unfinished, linkstate.PERSON_INPUTS),
        {t: (p[1] if p else None) for t, p in persisted.items()}, run_id=run_id, settings=s, bands=bands,
        state_models=state_models)
    if update.trained:
        with connect(url) as conn:
            for link_type, model in update.trained.items():
                models.save(conn, s.integrated_dir, link_type, model, run_id=run_id,
                            summary={"trained_on": {n: inputs[n]["staged_path"] for n in linkstate.PERSON_INPUTS}})
    with connect(url) as conn:
        records = {t: runs.active_link_model(conn, t) for t in models.LINK_TYPES}
    staged = {name: _read_staged(name, info["staged_path"]) for name, info in inputs.items()}
    log.info("reconciling %s", {name: t.num_rows for name, t in staged.items()})
    tables, found, metrics = reconcile_tables(staged, s, person_links=_person_links(update.refs[linkstate.LINKS]))
    metrics["link_state"] = {"mode": update.mode, "refs": update.refs, "models": update.models,
                             "counts": update.counts, "seconds": update.seconds}
    # the entity registry: stable IDs for the clustering (committed before the outputs that carry them; a
    # rerun of this run starts from the registry as it was before this run, so it assigns the same IDs)
    t0 = time.monotonic()
    clusters = metrics.pop("clusters")
    # whatever a run that did not finish (this run's earlier attempt included) wrote into the registry is
    # undone first, so the assignment starts from the registry the last successful run left
    entities.rollback(entities.registry_dir(s), [u.run_id for u in unfinished] + [run_id])
    assignment, registry_refs = entities.update(entities.registry_dir(s), clusters, run_id, settings=s)
    tables = with_entity_ids(tables, clusters, assignment.members, s)
    metrics["entities"] = {"refs": registry_refs, "events": _event_counts(assignment.events),
                           "members_changed": assignment.changed_members.num_rows,
                           "seconds": round(time.monotonic() - t0, 3)}
    log.info("entity registry: %s", metrics["entities"]["events"] or "no entity created, merged, split or retired")

    outputs: dict[str, Any] = {}
    for name, table in tables.items():
        # One commit per dataset replacing its rows: readers pin the version (`<table>@v<N>`) the ledger names.
        commit = zones.create(integrated_table(s.integrated_dir, name), table, run_id=run_id,
                              metadata={"lienthong.mode": "reconcile"})
        path = zones.ref(integrated_table(s.integrated_dir, name), commit.version or 0)
        outputs[name] = {"path": path, "rows": table.num_rows, "content_hash": _hash(table)}
        zones.maintain(integrated_table(s.integrated_dir, name), retention_hours=s.zone_retention_hours, run_id=run_id)
    for name in (linkstate.REGISTRY, linkstate.LEFT, linkstate.LINKS):
        zones.maintain(linkstate.table_path(s.integrated_dir, name), retention_hours=s.zone_retention_hours,
                       run_id=run_id)
    metrics["inputs"] = {name: {**input_metrics[name], "rows": staged[name].num_rows} for name in inputs}
    model_paths = save_models(
        s.integrated_dir, run_id, {t: r for t, r in records.items() if r is not None},
        inputs={name: info["staged_path"] for name, info in inputs.items()},
        outputs={name: o["path"] for name, o in outputs.items()},
        bands=asdict(bands))
    with connect(url) as conn:
        ensure_findings_schema(conn)
        conn.commit()  # the DDL locks are not held through the sync
        # the findings' sync and the run's record: one transaction, committed together (or neither)
        changes = sync_findings(conn, run_id, found, commit=False)
        runs.record_reconcile_run(conn, runs.ReconcileRun(
            run_id, started_at=started, finished_at=datetime.now(UTC), status="success",
            counts={name: o["rows"] for name, o in outputs.items()} | {"findings": changes},
            metrics=metrics, outputs=outputs, model_paths=model_paths))
    log.info("integrated zone written: %s; findings %s; link state %s (%s relinked)",
             {n: o["rows"] for n, o in outputs.items()}, changes, update.mode, update.counts.get("relinked"))
    return {"run_id": run_id, "outputs": outputs, "findings": changes, "links": metrics["links"],
            "seconds": metrics["seconds"], "model_paths": model_paths, "link_state": metrics["link_state"],
            "entities": metrics["entities"]}
