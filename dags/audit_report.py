"""
### audit_report

Writes the auditors' report of the pipeline run that was just published, whenever the `publish` DAG has
finished a round (`publication_round`, emitted even when a quality gate refused a dataset):

- one self-contained HTML page (opens offline: styles and plots embedded) with the expectations per
  dataset, conservation, quarantine by reason with masked examples, findings by type / severity /
  responsible agency with what is new and resolved, link counts (and accuracy where a ground truth is
  configured: `LIENTHONG_GROUND_TRUTH_DIR`), the published versions, trend plots across runs and links to
  the Great Expectations Data Docs of the run;
- the same figures as `figures.json` and one CSV per table;
- under `<LIENTHONG_DATA_DIR>/reports/audit/<run>/`, listed in `lienthong_ops.audit_report` and shown in
  the Airflow UI by the plugin (menu "Audit reports").

Personal values are masked everywhere in the report. Emits the Asset `audit_report` (extra: report id and
headline figures).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import AUDIT_REPORT, PUBLICATION_ROUND
from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE

DAG_ID = "audit_report"


@dag(
    dag_id=DAG_ID,
    schedule=[PUBLICATION_ROUND],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "audit"],
    default_args=PIPELINE_DEFAULT_ARGS,
)
def audit_report():
    @task(outlets=[AUDIT_REPORT])
    def build_report(*, run_id=None, triggering_asset_events=None, outlet_events=None) -> dict:
        from lienthong.audit.render import build_report as build

        events = (triggering_asset_events or {}).get(PUBLICATION_ROUND, [])
        publish_run_id = events[-1].extra.get("publish_run_id") if events else None
        result = build(publish_run_id=publish_run_id, audit_run_id=run_id)
        outlet_events[AUDIT_REPORT].extra = {"report_id": result["report_id"], "run_id": result["run_id"],
                                             "headline": result["headline"]}
        return result

    build_report()


audit_report()
