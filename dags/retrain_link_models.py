"""
### retrain_link_models

Retrains the person-link models (legal representative -> citizen, land holder -> citizen) and compares them
with the active ones; the daily reconciliation never retrains (it scores with the active models).

One task, **retrain** (`lienthong.reconcile.retrain`):

1. trains new models on the staged versions the last successful reconciliation read, relinking every person
   record with them in a scratch folder (the zones are not touched);
2. compares with the active models' links, per link type: links per method and band, accepted links gained,
   lost and moved to another citizen, review counts, the Splink m/u parameters that moved most, and with a
   ground truth (`LIENTHONG_GROUND_TRUTH_DIR`) precision / recall / F1 before and after;
3. saves the new models as **candidates** and writes the comparison to
   `<LIENTHONG_DATA_DIR>/reports/retrain/<run>.json` (counts and parameters only, no personal values).

A data engineer reviews the comparison and activates a candidate with
`lienthong link-models --activate <link type> <model id>` (`lienthong link-models` lists them). Triggered with
the param `activate` true, the new models become active at once: the next reconciliation relinks every person
record with them.

- Schedule: `LIENTHONG_RETRAIN_SCHEDULE` (default `@monthly`; `none` for manual only); one run at a time.
- Skipped when no reconciliation has finished yet.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE
from lienthong.settings import retrain_schedule

DAG_ID = "retrain_link_models"
SCHEDULE = retrain_schedule()


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "reconcile", "models"],
    default_args=PIPELINE_DEFAULT_ARGS,
    params={"activate": Param(False, type="boolean",
                              description="Activate the new models at once (default: save them as candidates "
                                          "for a data engineer to review and activate)")},
)
def retrain_link_models():
    @task
    def retrain(*, run_id=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from lienthong.reconcile.retrain import NoReconciliation
        from lienthong.reconcile.retrain import retrain as do_retrain
        from lienthong.settings import load_settings

        settings = load_settings()
        try:
            report = do_retrain(settings, run_id=run_id, activate=bool((params or {}).get("activate", False)),
                                truth_dir=settings.ground_truth_dir)
        except NoReconciliation as exc:
            raise AirflowSkipException(str(exc)) from exc
        return {"report": report["report"], "next": report["next"],
                "link_types": {t: {"model_before": e["model_before"], "model_after": e["model_after"],
                                   "status": e["status"], "accepted": e.get("accepted")}
                               for t, e in report["link_types"].items()}}

    retrain()


retrain_link_models()
