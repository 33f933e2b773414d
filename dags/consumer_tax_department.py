"""
### consumer_tax_department (example)

How a consuming agency schedules on a published dataset: the tax department's refresh runs whenever a new
version of `enterprise_profile` is published (and the round's access task has run) and keeps its own copy of the dataset current from the change
feed (`lienthong.feedcopy.follow`): the first run reads its view `agency_tax_department.enterprise_profile`;
each later run applies `agency_tax_department.enterprise_profile_changes(<its version>)`, version by version,
to the copy, a DuckDB file (`<LIENTHONG_DATA_DIR>/consumers/tax_department.duckdb`; an agency's own
deployment keeps it wherever it likes).
A copy older than the feed keeps is read again from the view. Logged in as the agency's own role.

Needs the connection `tax_department_warehouse` (postgres; login = the agency's role, password = its
password): the platform's own credentials are never used by a consumer. Paused and manual by default — it
is an example to copy.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import PUBLICATION_ROUND, published
from lienthong.dagconfig import START_DATE

DAG_ID = "consumer_tax_department"
ENTERPRISE_PROFILE = published("enterprise_profile")


@dag(
    dag_id=DAG_ID,
    # a new version, once the round's access task has rebuilt the agencies' views (and feed functions) over it
    schedule=(ENTERPRISE_PROFILE & PUBLICATION_ROUND),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    doc_md=__doc__,
    tags=["lienthong", "example", "consumer"],
)
def consumer_tax_department():
    @task
    def refresh(*, triggering_asset_events=None) -> dict:
        import psycopg2

        from lienthong.connections import get_connection
        from lienthong.feedcopy import follow
        from lienthong.settings import load_settings

        versions = [e.extra.get("version") for e in (triggering_asset_events or {}).get(ENTERPRISE_PROFILE, [])]
        store = load_settings().data_dir / "consumers" / "tax_department.duckdb"
        pg = psycopg2.connect(get_connection("tax_department_warehouse").postgres_dsn())
        try:
            pull = follow(pg, "agency_tax_department", "enterprise_profile", store, key=["enterprise_code"])
        finally:
            pg.close()
        return {"versions": versions, **pull.as_dict()}

    refresh()


consumer_tax_department()
