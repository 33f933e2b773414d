"""
### consumer_tax_department (example)

How a consuming agency schedules on a published dataset: the tax department's refresh runs whenever a new
version of `enterprise_profile` is published, reads the version from the Asset event, and reads the rows
through its own agency view (`agency_tax_department.enterprise_profile`), logged in as its own role.

Needs the connection `tax_department_warehouse` (postgres; login = the agency's role, password = its
password): the platform's own credentials are never used by a consumer. Paused and manual by default — it
is an example to copy.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import published
from lienthong.dagconfig import START_DATE

DAG_ID = "consumer_tax_department"
ENTERPRISE_PROFILE = published("enterprise_profile")


@dag(
    dag_id=DAG_ID,
    schedule=[ENTERPRISE_PROFILE],
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

        versions = [e.extra.get("version") for e in (triggering_asset_events or {}).get(ENTERPRISE_PROFILE, [])]
        with psycopg2.connect(get_connection("tax_department_warehouse").postgres_dsn()) as pg, pg.cursor() as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'DANG_HOAT_DONG') "
                        "FROM agency_tax_department.enterprise_profile")
            total, active = cur.fetchone()
        return {"versions": versions, "enterprises": total, "active": active}

    refresh()


consumer_tax_department()
