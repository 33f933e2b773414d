"""The linkage engine switch without a JVM: the setting and its error, where the Spark master comes from, the
model's SQL translated to Spark's, and the engine comparison's difference list. Spark itself runs in
tests/integration/lienthong/test_spark_engine.py."""

from __future__ import annotations

import dataclasses
import re

import pyarrow as pa
import pytest
import sqlglot

from lienthong.reconcile import enginecompare, sparkengine
from lienthong.reconcile.people import BLOCKING_KEYS, LINK_SCHEMA
from lienthong.settings import load_settings


def test_the_engine_defaults_to_duckdb_and_reads_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIENTHONG_LINKAGE_ENGINE", raising=False)
    assert load_settings().linkage_engine == "duckdb"
    monkeypatch.setenv("LIENTHONG_LINKAGE_ENGINE", " Spark ")
    assert load_settings().linkage_engine == "spark"


def test_an_unknown_engine_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIENTHONG_LINKAGE_ENGINE", "sparkk")
    with pytest.raises(ValueError, match=r"LIENTHONG_LINKAGE_ENGINE='sparkk': one of duckdb, spark"):
        load_settings()
    monkeypatch.delenv("LIENTHONG_LINKAGE_ENGINE")
    with pytest.raises(ValueError, match="LIENTHONG_LINKAGE_ENGINE='polars'"):
        dataclasses.replace(load_settings(), linkage_engine="polars")


def test_the_master_setting_wins_over_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LIENTHONG_SPARK", "spark://spark-master:7077")
    monkeypatch.setenv("LIENTHONG_SPARK_MASTER", "local[3]")
    assert sparkengine.resolve_master(load_settings()) == ("local[3]", {})


def test_the_master_comes_from_the_connection_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIENTHONG_SPARK_MASTER", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_LIENTHONG_SPARK", "spark://spark-master:7077")
    assert sparkengine.resolve_master(load_settings()) == ("spark://spark-master:7077", {})
    # JSON form: a master URL or local[N] as the host, Spark settings as `spark.*` extras (others ignored)
    monkeypatch.setenv("AIRFLOW_CONN_LIENTHONG_SPARK", '{"conn_type": "spark", "host": "local[4]", "extra": '
                                                        '{"spark.driver.memory": "3g", "deploy-mode": "client"}}')
    assert sparkengine.resolve_master(load_settings()) == ("local[4]", {"spark.driver.memory": "3g"})
    monkeypatch.setenv("AIRFLOW_CONN_LIENTHONG_SPARK", '{"conn_type": "spark", "host": "spark://m.example", "port": 7078}')
    assert sparkengine.resolve_master(load_settings())[0] == "spark://m.example:7078"
    monkeypatch.setenv("AIRFLOW_CONN_LIENTHONG_SPARK", '{"conn_type": "spark", "port": 7078}')
    with pytest.raises(sparkengine.SparkEngineError, match="'lienthong_spark': no host"):
        sparkengine.resolve_master(load_settings())


def test_a_missing_connection_means_in_process_unless_named_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIENTHONG_SPARK_MASTER", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_LIENTHONG_SPARK", raising=False)
    assert sparkengine.resolve_master(load_settings()) == ("local[2]", {})
    monkeypatch.setenv("LIENTHONG_SPARK_CONN_ID", "spark_cluster_missing")
    with pytest.raises(LookupError, match="connection 'spark_cluster_missing' is not defined"):
        sparkengine.resolve_master(load_settings())


def _model() -> dict:
    from lienthong.reconcile.people import _settings

    model = _settings().create_settings_dict("duckdb")
    model["comparisons"][0]["comparison_levels"][1]["m_probability"] = 0.9  # parameters travel untouched
    return model


def test_the_model_sql_is_translated_to_spark_with_the_jar_functions() -> None:
    duck = _model()
    spark = sparkengine.spark_model(duck)
    conditions = [lv["sql_condition"] for c in spark["comparisons"] for lv in c["comparison_levels"]]
    text = "\n".join(conditions).lower()  # Spark's function names are case-insensitive
    # DuckDB's double-quoted identifiers would be string literals in Spark: none is left
    assert '"' not in text and "`name_fold_l` = `name_fold_r`" in text
    assert "jaro_winkler(`name_fold_l`, `name_fold_r`) >= 0.95" in text and "jaro_winkler_similarity" not in text
    assert "damerau_levenshtein(`id_number_l`, `id_number_r`) <= 2" in text
    assert "array_contains(`communes_r`, `commune_l`)" in text
    assert "arrays_overlap(`communes_l`, `communes_r`)" in text and "&&" not in text
    for condition in conditions:
        if condition != "ELSE":
            sqlglot.parse_one(condition, read="spark")  # Spark SQL that parses
    rules = [r["blocking_rule"] for r in spark["blocking_rules_to_generate_predictions"]]
    assert len(rules) == len(BLOCKING_KEYS) and not any('"' in r for r in rules)
    assert all(r["sql_dialect"] == "spark" for r in spark["blocking_rules_to_generate_predictions"])
    assert spark["comparisons"][0]["comparison_levels"][1]["m_probability"] == 0.9
    assert duck["comparisons"][0]["comparison_levels"][3]["sql_condition"].startswith("jaro_winkler_similarity(")


def _links(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_pylist([{"left_id": left, "right_id": right, "method": "probabilistic", "band": band,
                                  "score": score} for left, right, band, score in rows], schema=LINK_SCHEMA)


def test_every_difference_in_accepted_links_is_listed() -> None:
    duck = _links([("a", "A", "accept", 0.99), ("b", "B", "accept", 0.97), ("c", "C", "accept", 0.99),
                   ("d", "D", "review", 0.9), ("e", None, "reject", None), ("f", "F", "accept", 0.99)])
    spark = _links([("a", "A", "accept", 0.99), ("b", "B", "review", 0.94), ("c", "X", "accept", 0.98),
                    ("d", "D", "accept", 0.95), ("e", "E", "reject", 0.1), ("f", "F", "accept", 0.99)])
    diffs, other = enginecompare.differences(duck, spark)
    assert [d["left_id"] for d in diffs] == ["b", "c", "d"]
    assert diffs[0] == {"left_id": "b", "duckdb": {"right_id": "B", "band": "accept", "score": 0.97},
                        "spark": {"right_id": "B", "band": "review", "score": 0.94}}
    assert diffs[1]["spark"]["right_id"] == "X"
    assert other == 1  # e: a candidate on one side only, rejected on both
    ratio, counts = enginecompare.agreement(duck, spark)
    assert counts == {"a": 4, "b": 4, "both": 2} and ratio == pytest.approx(2 / 6)
    assert enginecompare.agreement(duck, duck)[0] == 1.0
    assert enginecompare.agreement(_links([]), _links([]))[0] == 1.0


def test_the_rendered_comparison_masks_citizen_ids_when_asked() -> None:
    duck = _links([("rep#1", "001080012345", "accept", 0.99)])
    spark = _links([("rep#1", "001080012399", "accept", 0.98)])
    diffs, other = enginecompare.differences(duck, spark)
    comparison = enginecompare.EngineComparison(
        name="representative_citizen", left=1, registry=2, model_id="m1", links={"duckdb": duck, "spark": spark},
        accepted={"duckdb": 1, "spark": 1, "both": 0}, agreement=0.0, differences=diffs, other_differences=other)
    text = enginecompare.render([comparison], mask=True)
    assert "agreement 0.0000% (BELOW 99.9%)" in text
    assert re.search(r"rep#1: duckdb \*{9}345 \(accept, 0\.9900\) \| spark \*{9}399 \(accept, 0\.9800\)", text)
    assert "001080012345" not in text
    assert "001080012345" in enginecompare.render([comparison])
