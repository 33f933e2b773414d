"""What each pipeline task does, as plain functions: DAG tasks call these and nothing else.

Every function reads the settings at call time (never at DAG parse time), takes the Airflow run id for
lineage and idempotency, and returns a small JSON-able summary (it becomes the task's XCom and the Asset
event's extra).
"""

from __future__ import annotations

import logging
from typing import Any

from lienthong import runs
from lienthong.db import warehouse_url
from lienthong.openlineage import reports_lineage
from lienthong.private_files import writes_data_dir
from lienthong.runs.latest import latest_integration, latest_reconciliation
from lienthong.settings import Settings, load_settings
from lienthong.stagestep import NothingToStage as NothingToStage  # the DAGs catch it from here

log = logging.getLogger(__name__)


@reports_lineage
@writes_data_dir
def ingest_population(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Walk the population registry (JSON, cursor paging) from the watermark and land every page in raw."""
    from connectors.population.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, s, store=runs.Ledger(warehouse_url(s)))


@reports_lineage
@writes_data_dir
def ingest_business(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Walk the business registry (XML, offset paging) from the watermark and land every record in raw."""
    from connectors.business.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, s, store=runs.Ledger(warehouse_url(s)))


@reports_lineage
@writes_data_dir
def ingest_land(run_id: str, province: str, settings: Settings | None = None) -> dict[str, Any]:
    """Extract one province's land registry (three tables, one snapshot) incrementally into raw."""
    from connectors.land.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, province, s, store=runs.Ledger(warehouse_url(s)))




@reports_lineage
@writes_data_dir
def stage(dataset: str, run_id: str, settings: Settings | None = None, *, rebuild: bool = False) -> dict[str, Any]:
    """Merge the raw landings a dataset has not staged yet into its staged and quarantine tables
    (`lienthong.stagestep.stage_dataset`)."""
    from lienthong.stagestep import stage_dataset

    return stage_dataset(dataset, run_id, settings or load_settings(), rebuild=rebuild)


@writes_data_dir
def plan_stage(dataset: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Plan staging a dataset as one task per part: a province of a per-province source, or a share of a
    national source's large change (`lienthong.stagestep.plan_stage`); returns the parts (none: `stage`
    stages it whole)."""
    from lienthong.stagestep import plan_stage as plan

    return plan(dataset, run_id, settings or load_settings())


@writes_data_dir
def stage_part(dataset: str, run_id: str, part: str, settings: Settings | None = None) -> dict[str, Any]:
    """Stage one part of the run's plan; `stage` then commits the parts."""
    from lienthong.stagestep import stage_part as one

    return one(dataset, run_id, part, settings or load_settings())


@reports_lineage
@writes_data_dir
def validate(dataset: str, run_id: str, stage_summary: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Validate the change a staging run made and gate the dataset's state (`lienthong.validatestep.validate_dataset`)."""
    from lienthong.validatestep import validate_dataset

    return validate_dataset(dataset, run_id, stage_summary, settings or load_settings())


@writes_data_dir
def plan_validate(dataset: str, run_id: str, stage_summary: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Plan validating the stage's change as one task per province (or hash share of a national source's large
    change) (`lienthong.validatestep.plan_validate`); returns the parts (none: `validate` validates whole)."""
    from lienthong.validatestep import plan_validate as plan

    return plan(dataset, run_id, stage_summary, settings or load_settings())


@writes_data_dir
def validate_part(dataset: str, run_id: str, part: str, settings: Settings | None = None) -> dict[str, Any]:
    """Run the row-level rules on one part of the run's validation plan; `validate` then combines the parts."""
    from lienthong.validatestep import validate_part as one

    return one(dataset, run_id, part, settings or load_settings())


@writes_data_dir
def plan_person_links(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Bring the link state's registry and left records to the staged versions and write, by province, the
    left records this reconciliation relinks (`lienthong.reconcile.linkwork`); returns the provinces to link
    (none when the run links everything itself, or nothing changed)."""
    from lienthong.reconcile.run import plan_person_links as plan

    return plan(run_id, settings or load_settings())


@writes_data_dir
def link_person_partition(run_id: str, province: str, settings: Settings | None = None) -> dict[str, Any]:
    """Link one province's planned left records against the registry rows sharing a candidate key with them."""
    from lienthong.reconcile.linkwork import link_partition

    return link_partition(run_id, province, settings or load_settings())


@reports_lineage
@writes_data_dir
def reconcile(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Link the staged sources across agencies; write golden records and links; sync the findings."""
    from lienthong.reconcile.run import reconcile as do_reconcile

    return do_reconcile(run_id, settings or load_settings())


@reports_lineage
@writes_data_dir
def publish(dataset: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Publish a dataset from the latest reconciliation (or store), if its quality gate passed and its
    content changed."""
    from lienthong import profilechange, profiles
    from lienthong.access import load_agencies, masking_policy
    from lienthong.contracts import contract
    from lienthong.datasets import from_integrated, staged_inputs
    from lienthong.publish import last_publication
    from lienthong.publish import publish as do_publish

    s = settings or load_settings()
    url = warehouse_url(s)
    c = contract(dataset)
    # The quality gates of every staged dataset it derives from (the store-backed datasets publish whatever the
    # stores hold: they are the record of quality and reconciliation themselves).
    sources = {name: latest_integration(name, url) for name in staged_inputs(dataset)}
    gate = all(info["gate_passed"] for info in sources.values())
    failed = [f"{name}: quality not run" for name, info in sources.items() if info["gate_passed"] is None]
    failed += [f"{name}: {info['failed_critical']} critical rule(s) failed" for name, info in sources.items() if info["failed_critical"]]
    lineage: dict[str, Any] = {
        name: {"integrate_run_id": info["run_id"], "staged_path": info["staged_path"], "ingest_runs": info["ingest_runs"]}
        for name, info in sources.items()
    }
    built = None
    touched = None
    if from_integrated(dataset):
        rec = latest_reconciliation(url)
        paths = {name: out["path"] for name, out in rec["outputs"].items()}
        paths.update({name: sources[name]["staged_path"] for name in ("citizen", "legal_representative", "land_holder")
                      if name in sources})
        # the rows that changed since the last version when its row digests are kept, else every row
        built = profilechange.build(dataset, c, paths, s.published_dir / dataset, last_publication(dataset, url))
        rows, touched = built.rows, built.touched
        lineage["reconcile"] = {"run_id": rec["run_id"], "outputs": rec["outputs"]}
        models = _link_models_of(s, rec["run_id"])
    else:
        rows = profiles.FROM_STORES[dataset](c, url)
        models = {}
    result = do_publish(
        c,
        {},
        run_id=run_id,
        gate_passed=bool(gate),
        published_dir=s.published_dir,
        lineage=lineage,
        quality={"gate_passed": bool(gate), "failed_critical": failed},
        retention=s.published_retention,
        compact_share=s.published_compact_share,
        url=url,
        rows=rows,
        touched=touched,
        provenance={"model_versions": models, "masking_policy": masking_policy(load_agencies(), dataset)},
    )
    out = result.as_dict()
    if built is not None:
        profilechange.keep(built, s.published_dir / dataset, result.version, result.content_hash)
        out["built"] = built.summary()
    return out


def _link_models_of(s: Settings, reconcile_run_id: str) -> dict[str, Any]:
    """{link type: {model_id, sha256}} of the link models a reconciliation used (none saved: empty)."""
    from lienthong.reconcile.explain import ExplainError, run_manifest

    try:
        manifest = run_manifest(s.integrated_dir, reconcile_run_id)
    except ExplainError:
        return {}
    return {name: {"model_id": m["model_id"], "sha256": m["sha256"]} for name, m in manifest["models"].items()}


def apply_agency_access(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Rebuild every agency's role, schema and views over the published datasets from schemas/agencies.yaml."""
    from lienthong.access import apply_access

    s = settings or load_settings()
    report = apply_access(warehouse_url(s)).as_dict()
    report["run_id"] = run_id
    return report
