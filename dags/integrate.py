"""
### integrate

Turns raw landings into the staged zone and validates them, whenever fresh raw data lands from any agency.

For each staged dataset (citizen; enterprise and legal_representative; parcel, land_holder, certificate):

1. **stage_<dataset>** — merges the raw landings not staged yet into the dataset's staged and quarantine
   Delta tables (newest version per source key; fields, types and text normalisation from the dataset's
   contract; unusable records go to quarantine with a reason naming record and field); checks
   `rows_in == rows_staged + rows_quarantined + rows_unchanged` on the change. Skipped when the source has
   not landed anything yet; does nothing (one log line) when nothing new landed.
   Staging runs in parts: **plan_stage_<dataset>** lists the parts and pins the table versions (a dataset
   landed by province, parcel, land_holder and certificate, by province: those with new landings or records
   held back for a duplicated value; a national source by hash shares of the record identity when its new
   landings hold more than `LIENTHONG_STAGE_CHUNK_ROWS` raw rows, else no part); **stage_part_<dataset>**
   stages one part (one mapped task per part, pool `stage_partitions`), reading only; **stage_<dataset>**
   commits the parts (a change in one MERGE per table), or stages whole itself when no part was planned or
   the plan no longer holds. The result is the same.
2. **validate_<dataset>** — the Great Expectations suite generated from the contract on the changed rows
   (uniqueness on the whole table), the gate on the dataset's state; results stored in the warehouse; the
   quality-gate verdict is recorded for the publish DAG; emits `staged_<dataset>`. Skipped when staging
   changed nothing. Validation runs in parts too: **plan_validate_<dataset>** pins the staged version and
   lists the parts of the change (a per-province dataset's provinces with changed rows, each above
   `LIENTHONG_STAGE_CHUNK_ROWS` rows in hash buckets; a national source's change above that size in hash
   shares, else no part); **validate_part_<dataset>** runs the row-level rules on one part (mapped, pool
   `stage_partitions`), reading only; **validate_<dataset>** runs the uniqueness rules on the whole version and
   combines, or validates whole when no part was planned or the plan no longer holds. The verdict is the same.

Then the person linkage, province by province: **plan_person_links** (when at least one dataset changed)
brings the link state's registry and left records to the staged versions and writes the left records a change
touches, by province, into the run's work folder; **link_province** links one province's records (one mapped
task per province, pool `reconcile_partitions`: the unit a Celery worker takes) against the registry rows
sharing a candidate key with them, from any province (a province reaching more than
`LIENTHONG_LINK_CANDIDATE_ROWS` registry rows in parts, one at a time). A first run, a new model or a
vacuumed base relinks everything the same way, every left record planned by province; on a first run the plan
trains the link models on the whole data and persists them before any province task starts.

Then **reconcile** (when at least one dataset changed, skipped when every staged version is the one the last
reconciliation used): duplicates inside each source; legal
representatives and land holders linked to citizens (exact ID, legacy ID, then a Splink model; bands
accept / review / reject from `LIENTHONG_MATCH_ACCEPT` / `LIENTHONG_MATCH_REVIEW`); organisation holders
linked to enterprises; golden records with provenance; findings synced with their lifecycle. Emits the
`integrated_<dataset>` Assets (person_master, enterprise_master, parcel_master,
enterprise_representative_link, parcel_holder_link) with row counts and content hashes.

Scheduled on any of the Assets `raw_population_citizens`, `raw_business_enterprises`, `raw_land`.
"""

from __future__ import annotations

from airflow.sdk import dag, task, task_group

from lienthong.assets import (
    INTEGRATED_DATASETS,
    RAW_BUSINESS_ENTERPRISES,
    RAW_LAND,
    RAW_POPULATION_CITIZENS,
    STAGED_DATASETS,
    integrated,
    staged,
)
from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE

DAG_ID = "integrate"
RECONCILE_POOL = "reconcile_partitions"
STAGE_POOL = "stage_partitions"


@dag(
    dag_id=DAG_ID,
    schedule=(RAW_POPULATION_CITIZENS | RAW_BUSINESS_ENTERPRISES | RAW_LAND),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "integrate"],
    default_args=PIPELINE_DEFAULT_ARGS,
)
def integrate():
    validated = []
    for name in STAGED_DATASETS:

        @task_group(group_id=name)
        def stage_and_validate(dataset: str = name):
            @task(task_id=f"stage_{dataset}")
            def stage_one(*, run_id=None) -> dict:
                from airflow.sdk.exceptions import AirflowSkipException

                from lienthong.pipeline import NothingToStage, stage

                try:
                    return stage(dataset, run_id)
                except NothingToStage as exc:
                    raise AirflowSkipException(str(exc)) from exc

            @task(task_id=f"validate_{dataset}", outlets=[staged(dataset)])
            def validate_one(stage_summary: dict, *, run_id=None, outlet_events=None) -> dict:
                from airflow.sdk.exceptions import AirflowSkipException

                from lienthong.pipeline import validate

                if stage_summary["mode"] in ("none", "unchanged"):
                    raise AirflowSkipException(f"{dataset}: nothing new landed ({stage_summary['rows_in']} records "
                                               "landed again, all already staged): the staged table is unchanged")
                verdict = validate(dataset, run_id, stage_summary)
                outlet_events[staged(dataset)].extra = {
                    "rows_in": stage_summary["rows_in"],
                    "rows_staged": stage_summary["rows_staged"],
                    "rows_quarantined": stage_summary["rows_quarantined"],
                    "gate_passed": verdict["gate_passed"],
                    "run_id": run_id,
                }
                return verdict

            @task(task_id=f"plan_stage_{dataset}")
            def plan_one(*, run_id=None) -> list[str]:
                from airflow.sdk.exceptions import AirflowSkipException

                from lienthong.pipeline import NothingToStage, plan_stage

                try:
                    summary = plan_stage(dataset, run_id)
                except NothingToStage as exc:
                    raise AirflowSkipException(str(exc)) from exc
                print(f"{dataset} in parts: {summary}")
                return summary["partitions"]

            @task(task_id=f"stage_part_{dataset}", pool=STAGE_POOL, map_index_template="{{ stage_part }}")
            def part_one(part: str, *, run_id=None) -> dict:
                from airflow.sdk import get_current_context

                from lienthong.pipeline import stage_part

                get_current_context()["stage_part"] = part  # names the mapped instance in the UI
                return stage_part(dataset, run_id, part)

            @task(task_id=f"plan_validate_{dataset}")
            def plan_validation(stage_summary: dict, *, run_id=None) -> list[str]:
                from lienthong.pipeline import plan_validate

                summary = plan_validate(dataset, run_id, stage_summary)
                print(f"{dataset} validated in parts: {summary}")
                return summary["partitions"]

            @task(task_id=f"validate_part_{dataset}", pool=STAGE_POOL, map_index_template="{{ validate_part }}")
            def validate_part(part: str, *, run_id=None) -> dict:
                from airflow.sdk import get_current_context

                from lienthong.pipeline import validate_part as one

                get_current_context()["validate_part"] = part  # names the mapped instance in the UI
                return one(dataset, run_id, part)

            # commits the parts (or, with no part planned or no usable plan, stages whole); skipped with the plan
            stage_all = stage_one.override(trigger_rule="none_failed")()
            planned = plan_one()
            planned >> part_one.expand(part=planned) >> stage_all
            # combines the parts' row-level checks with the dataset-level ones (no part planned: validates
            # whole); runs when the stage succeeded, skipped with it
            to_validate = plan_validation(stage_all)
            checked = validate_part.expand(part=to_validate)
            validate_all = validate_one.override(trigger_rule="none_failed_min_one_success")(stage_all)
            [to_validate, checked] >> validate_all

        validated.append(stage_and_validate())

    # Runs when at least one dataset changed (the others' validation is skipped when nothing landed).
    @task(trigger_rule="none_failed_min_one_success")
    def plan_person_links(*, run_id=None) -> list[str]:
        from lienthong.pipeline import plan_person_links as plan

        try:
            summary = plan(run_id)
        except LookupError as exc:  # a source has not been staged yet: reconcile skips too
            print(f"no person links to plan: {exc}")
            return []
        print(f"person links: {summary}")
        return summary["partitions"]

    @task(pool=RECONCILE_POOL, map_index_template="{{ link_province }}")
    def link_province(province: str, *, run_id=None) -> dict:
        from airflow.sdk import get_current_context

        from lienthong.pipeline import link_person_partition

        get_current_context()["link_province"] = province  # names the mapped instance in the UI
        return link_person_partition(run_id, province)

    @task(outlets=[integrated(d) for d in INTEGRATED_DATASETS], trigger_rule="none_failed_min_one_success")
    def reconcile(*, run_id=None, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from lienthong.pipeline import reconcile as do_reconcile

        try:
            summary = do_reconcile(run_id)
        except LookupError as exc:  # a source has not been staged yet: nothing to reconcile with
            raise AirflowSkipException(str(exc)) from exc
        if summary.get("unchanged"):
            raise AirflowSkipException(f"no staged dataset changed since reconciliation {summary['since']}")
        for dataset, out in summary["outputs"].items():
            outlet_events[integrated(dataset)].extra = {"rows": out["rows"], "content_hash": out["content_hash"],
                                                         "run_id": run_id}
        return {"findings": summary["findings"], "links": summary["links"], "seconds": summary["seconds"],
                "rows": {d: o["rows"] for d, o in summary["outputs"].items()}}

    plan = plan_person_links()
    linked = link_province.expand(province=plan)
    # reconcile waits for every province (none failed); with no province to link it runs after the plan
    validated >> plan
    [plan, linked] >> reconcile()


integrate()
