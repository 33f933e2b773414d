"""Platform settings: one place that reads the `LIENTHONG_*` environment.

Secrets never live here: agency credentials come from Airflow connections (or, outside Airflow, from the
environment the caller passes in). Every setting is documented in the README.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

ENV_PREFIX = "LIENTHONG_"


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r}: an integer") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r}: a number") from exc


# A DuckDB session's threads by default: the CPUs this process may run on, at most this many, so one task's
# query does not take every core of a worker that runs other tasks beside it.
DUCKDB_THREADS_CAP = 8


def default_duckdb_threads() -> int:
    """The CPUs available to this process (its affinity mask, which containers and taskset narrow), capped."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, DUCKDB_THREADS_CAP))


# The probabilistic linkage's engines (`linkage_engine`): the first is the default.
LINKAGE_ENGINES = ("duckdb", "spark")
# How the person linkage splits the left records (`linkage_partitions`): the first is the default.
LINKAGE_PARTITIONS = ("province", "none")


def _default_data_dir() -> Path:
    return Path.cwd() / "var" / "data"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None
    land_provinces: tuple[str, ...]
    population_conn_id: str = "population_registry"
    business_conn_id: str = "business_registry"
    land_conn_id_prefix: str = "land_registry_"
    ingest_schedule: str | None = "@daily"
    page_size: int = 500
    http_timeout: float = 30.0
    retry_attempts: int = 6
    retry_max_wait: float = 30.0
    published_retention: int = 5
    # A published dataset's row versions are rewritten into one base table once the versions since its last
    # rewrite hold more than this share of its rows (lienthong.pubtables.compact).
    published_compact_share: float = 0.5
    # The staged, quarantine and integrated Delta tables: the hours an old version stays readable (time travel)
    # before `vacuum` removes the files only it needed; each run compacts the small files its change wrote.
    zone_retention_hours: int = 168
    # A full stage (first load, rebuild) of a source with more raw rows than this runs in parts of about this
    # many rows (hash buckets of the record identity), so its memory follows the part, not the source.
    stage_chunk_rows: int = 500_000
    # Probabilistic linkage bands (Splink match probability): >= accept is linked, >= review goes to a
    # reviewer as a finding, below review is rejected.
    match_accept: float = 0.95
    match_review: float = 0.80
    # A sandbox's truth folder (links.parquet): the audit report then scores the run's links against it.
    ground_truth_dir: Path | None = None
    # How many past runs the audit report's trend plots show.
    audit_trend_runs: int = 30
    # Every DuckDB session (lienthong.duck): its memory limit (it spills to disk beyond it), as DuckDB writes
    # it ('2GB', '512MB'), and its threads.
    duckdb_memory: str = "2GB"
    duckdb_threads: int = field(default_factory=default_duckdb_threads)
    contracts_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "schemas")
    # The single-window lookup service (lienthong/singlewindow), per worker process: connections are opened on
    # first use, up to these sizes; at start the service refuses a configuration that does not fit the server.
    singlewindow_pool_size: int = 4  # reader connections per agency
    singlewindow_log_pool_size: int = 4  # access-log connections
    singlewindow_db_headroom: int = 5  # server connections left free beyond those in use at start
    singlewindow_read_timeout: float = 5.0  # seconds a read may take (statement_timeout)
    singlewindow_log_timeout: float = 2.0  # seconds an access-log write may wait or take (lock/statement timeout)
    # Failed API keys: after this many from one client address (counted until it has been quiet for the
    # window), the client waits backoff seconds (429 + Retry-After), doubled per further failure up to the max.
    singlewindow_auth_failures: int = 10
    singlewindow_auth_window: float = 600.0
    singlewindow_auth_backoff: float = 1.0
    singlewindow_auth_backoff_max: float = 900.0
    # Discrepancy cases (lienthong.cases): days a finding may stay open before it is overdue, per finding type
    # or severity (LIENTHONG_FINDING_DEADLINES, JSON {"<type or severity>": days}); a type's wins over its
    # severity's, unset ones default by severity (cases.DEFAULT_DEADLINES).
    finding_deadlines: tuple[tuple[str, int], ...] = ()
    # Airflow's executor (AIRFLOW__CORE__EXECUTOR, Airflow's own variable): under one that runs tasks on other
    # machines the warehouse must be a shared server, not the embedded one (lienthong.db.warehouse_url).
    airflow_executor: str | None = None
    # The engine that scores the probabilistic person linkage (LIENTHONG_LINKAGE_ENGINE): `duckdb`, embedded
    # in the worker (the default), or `spark`, Splink on a Spark master (`lienthong.reconcile.sparkengine`). Both
    # score with the same persisted model; training and everything else stay on DuckDB.
    linkage_engine: str = "duckdb"
    # The Spark engine's master: LIENTHONG_SPARK_MASTER (spark://host:7077, local[4], ...) when set; else the
    # host of the Airflow connection LIENTHONG_SPARK_CONN_ID (default `lienthong_spark`); else local[2].
    spark_master: str | None = None
    spark_conn_id: str | None = None
    # How the person link state links its left records (LIENTHONG_LINKAGE_PARTITIONS): `province`, one
    # province at a time against the registry records that share a candidate key with it
    # (`lienthong.reconcile.partitions`: the same links, memory bounded by the partition's candidates), or
    # `none`, everything at once against the whole registry read into memory.
    linkage_partitions: str = LINKAGE_PARTITIONS[0]
    # A partition whose records reach more candidate registry rows than this (or hold more records) is linked
    # in parts of its records (buckets of the folded name), each against its own candidates
    # (`partitions.candidate_parts`): the same links, memory bounded by the part, not by the country.
    link_candidate_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if self.linkage_engine not in LINKAGE_ENGINES:
            raise ValueError(f"{ENV_PREFIX}LINKAGE_ENGINE={self.linkage_engine!r}: one of "
                             f"{', '.join(LINKAGE_ENGINES)} (duckdb is the default)")
        if self.link_candidate_rows < 1:
            raise ValueError(f"{ENV_PREFIX}LINK_CANDIDATE_ROWS={self.link_candidate_rows}: at least 1")
        if self.linkage_partitions not in LINKAGE_PARTITIONS:
            raise ValueError(f"{ENV_PREFIX}LINKAGE_PARTITIONS={self.linkage_partitions!r}: one of "
                             f"{', '.join(LINKAGE_PARTITIONS)} ({LINKAGE_PARTITIONS[0]} is the default)")

    # zones on disk
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def staged_dir(self) -> Path:
        return self.data_dir / "staged"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def integrated_dir(self) -> Path:
        return self.data_dir / "integrated"

    @property
    def published_dir(self) -> Path:
        return self.data_dir / "published"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "warehouse-pg"

    def land_conn_id(self, province: str) -> str:
        return f"{self.land_conn_id_prefix}{province}"


def parse_schedule(value: str | None) -> str | None:
    """An ingestion schedule as written in LIENTHONG_INGEST_SCHEDULE: a cron expression or preset (default
    `@daily`); `none`, `manual` or empty -> None (triggered by hand only)."""
    if value is None:
        return "@daily"
    return None if value.strip() in ("", "none", "None", "manual") else value.strip()


def retrain_schedule() -> str | None:
    """The `retrain_link_models` DAG's schedule (LIENTHONG_RETRAIN_SCHEDULE, default `@monthly`; `none` for
    manual runs only), read alone at DAG parse time like `ingest_schedule`."""
    return parse_schedule(os.environ.get(ENV_PREFIX + "RETRAIN_SCHEDULE", "@monthly"))


def ingest_schedule() -> str | None:
    """The ingestion schedule alone (DAG files read it at parse time, without the rest of the settings)."""
    return parse_schedule(os.environ.get(ENV_PREFIX + "INGEST_SCHEDULE"))


def passed_env(name: str) -> str | None:
    """A value passed to this process through the environment that is not a platform setting: a secret (an
    agency password, a key, an AIRFLOW_CONN_* URI) or a hand-over from a parent process. Read here like every
    other setting, but never stored in Settings, so it cannot end up in a repr or a log."""
    value = os.environ.get(name)
    return value if value else None


def load_settings() -> Settings:
    """Read the settings from the environment (called at task run time, never at DAG parse time)."""
    provinces = tuple(p.strip() for p in (_env("LAND_PROVINCES", "31,01") or "").split(",") if p.strip())
    return Settings(
        data_dir=Path(_env("DATA_DIR") or _default_data_dir()).expanduser().resolve(),
        database_url=_env("DATABASE_URL"),
        land_provinces=provinces,
        ingest_schedule=ingest_schedule(),
        page_size=_env_int("PAGE_SIZE", 500),
        http_timeout=_env_float("HTTP_TIMEOUT", 30.0),
        retry_attempts=_env_int("RETRY_ATTEMPTS", 6),
        retry_max_wait=_env_float("RETRY_MAX_WAIT", 30.0),
        published_retention=_env_int("PUBLISHED_RETENTION", 5),
        published_compact_share=_env_float("PUBLISHED_COMPACT_SHARE", 0.5),
        zone_retention_hours=_env_int("ZONE_RETENTION_HOURS", 168),
        stage_chunk_rows=_env_int("STAGE_CHUNK_ROWS", 500_000),
        match_accept=_probability("MATCH_ACCEPT", "0.95"),
        match_review=_probability("MATCH_REVIEW", "0.80"),
        ground_truth_dir=Path(truth).expanduser().resolve() if (truth := _env("GROUND_TRUTH_DIR")) else None,
        audit_trend_runs=_env_int("AUDIT_TREND_RUNS", 30),
        duckdb_memory=_duckdb_memory(_env("DUCKDB_MEMORY", "2GB") or "2GB"),
        duckdb_threads=_duckdb_threads(),
        singlewindow_pool_size=_env_int("SINGLEWINDOW_POOL_SIZE", 4),
        singlewindow_log_pool_size=_env_int("SINGLEWINDOW_LOG_POOL_SIZE", 4),
        singlewindow_db_headroom=_env_int("SINGLEWINDOW_DB_HEADROOM", 5),
        singlewindow_read_timeout=_env_float("SINGLEWINDOW_READ_TIMEOUT", 5.0),
        singlewindow_log_timeout=_env_float("SINGLEWINDOW_LOG_TIMEOUT", 2.0),
        singlewindow_auth_failures=_env_int("SINGLEWINDOW_AUTH_FAILURES", 10),
        singlewindow_auth_window=_env_float("SINGLEWINDOW_AUTH_WINDOW", 600.0),
        singlewindow_auth_backoff=_env_float("SINGLEWINDOW_AUTH_BACKOFF", 1.0),
        singlewindow_auth_backoff_max=_env_float("SINGLEWINDOW_AUTH_BACKOFF_MAX", 900.0),
        finding_deadlines=_finding_deadlines(),
        airflow_executor=os.environ.get("AIRFLOW__CORE__EXECUTOR") or None,
        linkage_engine=(_env("LINKAGE_ENGINE") or LINKAGE_ENGINES[0]).strip().lower(),
        spark_master=_env("SPARK_MASTER"),
        spark_conn_id=_env("SPARK_CONN_ID"),
        linkage_partitions=(_env("LINKAGE_PARTITIONS") or LINKAGE_PARTITIONS[0]).strip().lower(),
        link_candidate_rows=_env_int("LINK_CANDIDATE_ROWS", 1_000_000),
    )


def _finding_deadlines() -> tuple[tuple[str, int], ...]:
    """LIENTHONG_FINDING_DEADLINES, its shape checked here (settings import nothing of the platform); its keys
    are checked against the finding types and severities by `lienthong.cases.check_deadlines` where used."""
    return tuple(sorted(parse_day_counts(_env("FINDING_DEADLINES"), f"{ENV_PREFIX}FINDING_DEADLINES").items()))


def parse_day_counts(raw: str | None, variable: str) -> dict[str, int]:
    """JSON `{"<name>": days}` (None or blank: empty), every value a whole number of days, at least 1;
    ValueError naming `variable` (and the key) otherwise."""
    import json

    if raw is None or not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError(f'{variable} is not valid JSON (expected {{"<finding type or severity>": days}})') from None
    if not isinstance(doc, dict):
        raise ValueError(f'{variable}: expected a JSON object {{"<finding type or severity>": days}}')
    for key, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{variable}: {key!r} must be a whole number of days, at least 1 (got {value!r})")
    return dict(doc)


def _probability(name: str, default: str) -> float:
    raw = _env(name, default) or default
    value = float(raw)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r}: a match probability must be in (0, 1]")
    return value


def _duckdb_threads() -> int:
    threads = _env_int("DUCKDB_THREADS", default_duckdb_threads())
    if threads < 1:
        raise ValueError(f"{ENV_PREFIX}DUCKDB_THREADS={threads!r}: at least 1")
    return threads


def _duckdb_memory(raw: str) -> str:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", raw.strip(), re.IGNORECASE):
        raise ValueError(f"{ENV_PREFIX}DUCKDB_MEMORY={raw!r}: a size such as 2GB or 512MB")
    return raw.strip()
