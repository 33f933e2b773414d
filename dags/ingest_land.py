"""
### ingest_land

Extracts each province's **land registry** (PostgreSQL, one database per province: `thua_dat`,
`chu_su_dung`, `giay_chung_nhan`) incrementally and lands the rows unchanged in the raw zone.

- Connections: `land_registry_<province>` (postgres; read-only login). Extras: `overlap_seconds` (re-read
  window before the watermark, default 900), `batch_size` (rows per fetch and per raw part, default 5000).
- Provinces: `LIENTHONG_LAND_PROVINCES`, read when the run starts (not when the file is parsed); one mapped
  task per province, all in the pool `land_registry` (its slots bound the load on the agencies' servers).
- Each province's three tables come from one read-only REPEATABLE READ snapshot; the (cap_nhat_luc, id)
  watermarks of the three tables advance together, only after all three have landed.
- Schedule: `LIENTHONG_INGEST_SCHEDULE` (default `@daily`).
- Produces the Asset `raw_land`: one event per province, whose extra carries rows per table, the
  watermarks and the run id.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import RAW_LAND
from lienthong.dagconfig import INGEST_DEFAULT_ARGS, START_DATE, ingest_schedule

DAG_ID = "ingest_land"
LAND_CONN_ID_PREFIX = "land_registry_"  # + province code, resolved inside the task
LAND_POOL = "land_registry"


@dag(
    dag_id=DAG_ID,
    schedule=ingest_schedule(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "ingest", "land"],
    default_args=INGEST_DEFAULT_ARGS,
)
def ingest_land():
    @task
    def land_provinces() -> list[str]:
        from lienthong.settings import load_settings

        return list(load_settings().land_provinces)

    @task(outlets=[RAW_LAND], pool=LAND_POOL, retries=3, map_index_template="{{ land_province }}")
    def extract_and_land(province: str, *, run_id=None, outlet_events=None) -> dict:
        from airflow.sdk import get_current_context

        from lienthong.pipeline import ingest_land as run

        get_current_context()["land_province"] = province  # names the mapped instance in the UI
        summary = run(run_id, province)
        # Each mapped task instance emits its own event on raw_land, so the extra is per province.
        outlet_events[RAW_LAND].extra = {
            "province": province,
            "run_id": run_id,
            "snapshot_at": summary["snapshot_at"],
            "rows": {t: s["rows"] for t, s in summary["tables"].items()},
            "tombstones": {t: s["tombstones"] for t, s in summary["tables"].items()},
            "watermarks": {t: s["watermark_to"] for t, s in summary["tables"].items()},
        }
        return summary

    extract_and_land.expand(province=land_provinces())


ingest_land()
