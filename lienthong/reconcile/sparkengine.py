"""The Spark engine of the probabilistic person linkage (`LIENTHONG_LINKAGE_ENGINE=spark`): Splink's SparkAPI.

Owns three things, and nothing else of the linkage:

- the SparkSession the scoring runs on (`spark_session`): its master is `LIENTHONG_SPARK_MASTER` when set,
  else the host of the Airflow connection `LIENTHONG_SPARK_CONN_ID` (default `lienthong_spark`; `spark://`
  added to a bare host, its port appended; extras named `spark.*` become Spark settings), else `local[2]`.
  Splink's similarity jar (jaro-winkler, Damerau-Levenshtein, ...) is on its class path (`spark.jars`), and
  `SparkAPI` registers its functions in each scoring's own session. One session per process, made on first
  use and kept (starting the JVM costs seconds);
- the translation of a persisted model into Spark SQL (`spark_model`): the model's SQL is written in DuckDB's
  dialect (`people._settings`) and Splink parses a loaded model's conditions in the backend's dialect, where
  `"name_fold_l"` would be a string literal, not a column; every condition and blocking rule is parsed as
  DuckDB's and written as Spark's, with DuckDB's similarity functions renamed to the jar's;
- the scoring (`score_rest`): the session's `l_rest` (the left records the exact passes left over) against
  the whole registry `r`, with the SAME model JSON and frozen name frequencies the DuckDB path uses, giving
  the same candidate pairs (`PAIR_SCHEMA`) that `people._probabilistic_links` ranks and bands for both
  engines. The two tables go from DuckDB to Parquet in a scratch folder under `<data>/tmp/spark/` (mode 0700,
  removed after the scoring), where Spark reads them and Splink writes the tables it materialises
  (`break_lineage_method="parquet"`): the registry never passes through Python (only the pairs come back,
  as Arrow), and the memory held is Spark's.
  Executors of a remote master must see the data folder at the same path, as the same user (a shared
  volume): the folders are private to the platform's user.

Training is not here: it stays on DuckDB, because the model is persisted and does not depend on the engine
that scores with it (`lienthong.reconcile.models`).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lienthong.settings import Settings, load_settings, passed_env

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "lienthong_spark"
DEFAULT_MASTER = "local[2]"
APP_NAME = "lienthong-linkage"
# The candidate pairs a scoring gives, whichever engine (`people._probabilistic_links` ranks and bands them).
PAIR_SCHEMA = pa.schema([("left_id", pa.string()), ("right_id", pa.string()), ("score", pa.float64()),
                         ("weight", pa.float64())])
# The names Splink gives the two scored tables: `source_dataset` tells which side a pair's record is from.
LEFT_NAME, RIGHT_NAME = "left_rest", "right_all"

_lock = threading.RLock()  # one session per process; one scoring at a time (the checkpoint folder is global)
_session: tuple[tuple[str, tuple[tuple[str, str], ...]], SparkSession] | None = None


class SparkEngineError(RuntimeError):
    """The Spark engine cannot run: no Java, no usable master, a connection without a host."""


# --- the session ---------------------------------------------------------------------------------------------


def master_from_connection(conn: Any) -> str:
    """The master URL an Airflow connection names: its host as given when it is a URL or `local[...]`/`yarn`,
    else `spark://<host>`; its port appended to a `spark://` URL that has none."""
    host = (conn.host or "").strip()
    if not host:
        raise SparkEngineError(f"connection {conn.conn_id!r}: no host; give the Spark master as its host "
                               "(spark://spark-master:7077, local[4])")
    url = host if ("://" in host or host.startswith("local") or host == "yarn") else f"spark://{host}"
    if conn.port and url.startswith("spark://") and ":" not in url.removeprefix("spark://"):
        url = f"{url}:{conn.port}"
    return url


def resolve_master(settings: Settings) -> tuple[str, dict[str, str]]:
    """(master URL, Spark settings from the connection's `spark.*` extras): `settings.spark_master` when set,
    else the connection `settings.spark_conn_id` (default `lienthong_spark`), else `local[2]`. A connection id
    set explicitly must resolve; the default one may be missing."""
    if settings.spark_master:
        return settings.spark_master, {}
    from lienthong.connections import get_connection

    conn_id = settings.spark_conn_id or DEFAULT_CONN_ID
    try:
        conn = get_connection(conn_id)
    except LookupError:
        if settings.spark_conn_id:
            raise
        log.debug("no Spark connection %r and no LIENTHONG_SPARK_MASTER: Spark runs in-process (%s)", conn_id,
                  DEFAULT_MASTER)
        return DEFAULT_MASTER, {}
    conf = {k: str(v) for k, v in conn.extra.items() if k.startswith("spark.")}
    return master_from_connection(conn), conf


def _local_threads(master: str) -> int | None:
    """N of `local[N]` (`local[*]`: the CPUs), 1 for `local`; None for a cluster's master."""
    if master == "local":
        return 1
    m = re.fullmatch(r"local\[(\*|[0-9]+)(?:,\s*[0-9]+)?\]", master)
    if m is None:
        return None
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))


def _check_java() -> None:
    java_home = passed_env("JAVA_HOME")
    if (java_home and (Path(java_home) / "bin" / "java").exists()) or shutil.which("java"):
        return
    raise SparkEngineError("LIENTHONG_LINKAGE_ENGINE=spark needs Java 17 (`java` on PATH or JAVA_HOME): install "
                           "Debian's openjdk-17-jre-headless (`make venv` does so as root)")


def scratch_root(settings: Settings) -> Path:
    return settings.data_dir / "tmp" / "spark"


def spark_session(settings: Settings | None = None) -> SparkSession:
    """The process's SparkSession for the linkage, made on first use (a new master or connection stops the old
    one and makes another)."""
    global _session
    s = settings or load_settings()
    master, conf = resolve_master(s)
    key = (master, tuple(sorted(conf.items())))
    with _lock:
        if _session is not None and _session[0] == key:
            return _session[1]
        if _session is not None:
            _session[1].stop()
            _session = None
        _check_java()
        from pyspark.sql import SparkSession
        from splink.backends.spark import similarity_jar_location

        settings_: dict[str, str] = {
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.showConsoleProgress": "false",
            "spark.ui.enabled": "false",
        }
        threads = _local_threads(master)
        if threads is not None:
            # Spark's 200 shuffle partitions are for a cluster: in-process, a few per thread
            settings_["spark.sql.shuffle.partitions"] = str(max(2, 2 * threads))
            # Spark's own spill and shuffle files beside DuckDB's, not in /tmp (a cluster's workers set theirs)
            scratch_root(s).mkdir(mode=0o700, parents=True, exist_ok=True)
            local_dir = scratch_root(s) / "local"
            local_dir.mkdir(mode=0o700, exist_ok=True)
            settings_["spark.local.dir"] = str(local_dir)
        settings_.update(conf)
        # the similarity jar is always on the class path, beside any jar the connection adds
        settings_["spark.jars"] = ",".join(j for j in (conf.get("spark.jars"), similarity_jar_location()) if j)
        builder = SparkSession.builder.master(master).appName(APP_NAME)
        for k, v in settings_.items():
            builder = builder.config(k, v)
        t0 = time.monotonic()
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            raise SparkEngineError(f"cannot start a Spark session on master {master!r}: {exc}") from exc
        session.sparkContext.setLogLevel("ERROR")
        # py4j logs every connection it closes at INFO (also from finalizers at exit): not the platform's news
        logging.getLogger("py4j").setLevel(logging.WARNING)
        log.info("Spark %s session on %s started in %.1f s (the linkage engine's)", session.version, master,
                 time.monotonic() - t0)
        _session = (key, session)
        return session


def stop() -> None:
    """Stop the process's Spark session (tests; a process ending stops it anyway)."""
    global _session
    with _lock:
        if _session is not None:
            _session[1].stop()
            _session = None


# --- the model in Spark SQL ----------------------------------------------------------------------------------


def to_spark_sql(sql: str) -> str:
    """One SQL expression of the model, from DuckDB's dialect to Spark's (sqlglot), DuckDB's similarity
    functions named as Splink's Spark jar registers them."""
    import sqlglot
    from splink.backends.spark import SparkAPI
    from sqlglot import exp

    dialect = SparkAPI.sql_dialect

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.JarowinklerSimilarity):
            return exp.Anonymous(this=dialect.jaro_winkler_function_name, expressions=[node.this, node.expression])
        if isinstance(node, exp.Anonymous) and node.name.lower() == "damerau_levenshtein":
            return exp.Anonymous(this=dialect.damerau_levenshtein_function_name, expressions=node.expressions)
        if isinstance(node, exp.ArrayOverlaps):
            # sqlglot writes Spark's as the `&&` operator, which Spark SQL does not parse
            return exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
        return node

    return sqlglot.parse_one(sql, read="duckdb").transform(rename).sql(dialect="spark")


def spark_model(splink_model: dict[str, Any]) -> dict[str, Any]:
    """The persisted model (Splink's JSON, its SQL in DuckDB's dialect) with every comparison level's
    condition and every blocking rule in Spark's; the parameters are untouched."""
    out = copy.deepcopy(splink_model)
    out["sql_dialect"] = "spark"
    for comparison in out.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            if level["sql_condition"].strip().upper() != "ELSE":
                level["sql_condition"] = to_spark_sql(level["sql_condition"])
    rules: list[Any] = []
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, dict):
            rules.append({**rule, "blocking_rule": to_spark_sql(rule["blocking_rule"]), "sql_dialect": "spark"})
        else:
            rules.append(to_spark_sql(rule))
    out["blocking_rules_to_generate_predictions"] = rules
    return out


# --- the scoring ---------------------------------------------------------------------------------------------


@contextmanager
def _scratch(settings: Settings) -> Iterator[Path]:
    root = scratch_root(settings)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"score-{os.getpid()}-", dir=root))  # 0700, unique
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def score_rest(con: duckdb.DuckDBPyConnection, splink_model: dict[str, Any], tf: pa.Table, *,
               settings: Settings | None = None, threshold: float) -> pa.Table:
    """Score the DuckDB session's `l_rest` against its `r` on Spark with a persisted model (Splink's JSON,
    DuckDB dialect, and its frozen name frequencies `tf`): the pairs scoring at least `threshold`, one row
    per pair in `PAIR_SCHEMA` (left_id from `l_rest`, right_id from `r`, score = match probability,
    weight = match weight), as `people._probabilistic_links` reads them from the DuckDB path."""
    import pyarrow.parquet as pq
    from splink import Linker
    from splink.backends.spark import SparkAPI

    s = settings or load_settings()
    spark = spark_session(s)
    model = spark_model(splink_model)
    with _lock, _scratch(s) as scratch:
        t0 = time.monotonic()
        paths = {name: scratch / f"{name}.parquet" for name in ("l_rest", "r", "tf_name")}
        for name in ("l_rest", "r"):
            con.execute(f"COPY {name} TO '{paths[name]}' (FORMAT parquet)")
        pq.write_table(tf, paths["tf_name"])
        # A session of its own (same SparkContext): its temporary views and Splink's functions go with it.
        session = spark.newSession()
        session.sparkContext.setCheckpointDir(str(scratch / "checkpoints"))
        try:
            db = SparkAPI(spark_session=session, break_lineage_method="parquet")
            rest = db.register(session.read.parquet(str(paths["l_rest"])), dataset_display_name=LEFT_NAME)
            registry = db.register(session.read.parquet(str(paths["r"])), dataset_display_name=RIGHT_NAME)
            linker = Linker([rest, registry], model, log_level=logging.WARNING)
            linker.table_management.register_term_frequency_lookup(
                db.register(session.read.parquet(str(paths["tf_name"])), table_name="tf_name"), "name_fold")
            pred = linker.inference.predict_between(rest, registry, threshold_match_probability=threshold,
                                                    warning_mode="never")
            # unique_id_l / _r: which side is the left table depends on Splink's ordering; normalise
            pairs = session.sql(f"""
                SELECT CASE WHEN source_dataset_l = '{LEFT_NAME}' THEN unique_id_l ELSE unique_id_r END AS left_id,
                       CASE WHEN source_dataset_l = '{LEFT_NAME}' THEN unique_id_r ELSE unique_id_l END AS right_id,
                       CAST(match_probability AS DOUBLE) AS score, CAST(match_weight AS DOUBLE) AS weight
                FROM {pred.physical_name}""").toArrow()
        finally:
            for table in session.catalog.listTables():
                if table.isTemporary:
                    session.catalog.dropTempView(table.name)
        log.info("Spark scored %d candidate pairs in %.1f s", pairs.num_rows, time.monotonic() - t0)
    return pairs.cast(PAIR_SCHEMA)
