"""DAG integrity: every file in dags/ loads in a DagBag without error, serializes, and does no I/O or heavy
import at parse time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
EXPECTED = {"ingest_population", "ingest_business", "ingest_land", "integrate", "publish", "audit_report",
            "retrain_link_models"}
HEAVY_MODULES = ("great_expectations", "pandas", "duckdb", "pyarrow", "psycopg2", "requests", "lienthong.pipeline",
                 "lienthong.quality", "lienthong.publish", "lienthong.staging", "connectors", "matplotlib",
                 "lienthong.audit")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_file_imports_without_error(dagbag):
    assert dagbag.import_errors == {}


def test_the_expected_dags_are_defined(dagbag):
    assert EXPECTED <= set(dagbag.dag_ids)


def test_every_dag_serializes(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dagbag.dags.items():
        data = DagSerialization.to_dict(dag)
        assert data["dag"]["dag_id"] == dag_id


def test_every_dag_has_docs_and_tags(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.tags, dag.dag_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_does_not_import_heavy_modules_at_parse_time(path):
    """Import the DAG file in a fresh interpreter and list what got imported."""
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r} or m in {HEAVY_MODULES!r}];"
        "print('\\n'.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, check=True)
    heavy = out.stdout.split()
    assert heavy == [], f"{path.name} imports at parse time: {heavy}"


IO_CALLS = {"open", "read_text", "read_bytes", "connect", "get", "post", "urlopen", "read_parquet", "get_connection"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_has_no_top_level_io_calls(path):
    """Module-level statements (outside functions) call nothing that reads files, sockets or databases."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                name = sub.func.attr if isinstance(sub.func, ast.Attribute) else getattr(sub.func, "id", "")
                assert name not in IO_CALLS or name == "get" and _is_environ_get(sub), f"{path.name}: top-level {name}()"


def _is_environ_get(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value) == "os.environ"


def test_integrate_links_persons_in_one_mapped_task_per_province_before_reconcile(dagbag):
    """plan_person_links -> link_province (mapped over the plan's provinces, in the pool that caps them) ->
    reconcile, which runs once every province is linked, or right after the plan when it names none."""
    dag = dagbag.dags["integrate"]
    plan, link, reconcile = (dag.get_task(t) for t in ("plan_person_links", "link_province", "reconcile"))
    assert type(link).__name__.endswith("MappedOperator"), type(link)
    assert link.partial_kwargs.get("pool") == "reconcile_partitions"
    assert plan.task_id in link.upstream_task_ids
    assert {plan.task_id, link.task_id} <= reconcile.upstream_task_ids
    assert reconcile.trigger_rule == plan.trigger_rule == "none_failed_min_one_success"
    validations = {t for t in dag.task_ids if t.split(".")[-1].startswith("validate_")
                   and not t.split(".")[-1].startswith("validate_part_")}
    assert validations and validations <= plan.upstream_task_ids


def test_integrate_stages_each_dataset_in_one_mapped_task_per_part(dagbag):
    """plan_stage_<d> -> stage_part_<d> (mapped over the plan's parts, in its pool) -> stage_<d>, which commits
    the parts and runs when the plan names none (a skipped mapped task) -> plan_validate_<d> ->
    validate_part_<d> (mapped, same pool) -> validate_<d>, which combines the parts and runs when the plan names
    none, but not when staging was skipped (it needs one upstream success)."""
    from lienthong.datasets import STAGED

    dag = dagbag.dags["integrate"]
    for d in STAGED:
        stage = dag.get_task(f"{d}.stage_{d}")
        assert f"{d}.validate_{d}" in stage.downstream_task_ids
        plan, part = dag.get_task(f"{d}.plan_stage_{d}"), dag.get_task(f"{d}.stage_part_{d}")
        assert type(part).__name__.endswith("MappedOperator"), type(part)
        assert part.partial_kwargs.get("pool") == "stage_partitions"
        assert plan.task_id in part.upstream_task_ids
        assert part.task_id in stage.upstream_task_ids
        assert stage.trigger_rule == "none_failed"
        vplan, vpart = dag.get_task(f"{d}.plan_validate_{d}"), dag.get_task(f"{d}.validate_part_{d}")
        validate = dag.get_task(f"{d}.validate_{d}")
        assert type(vpart).__name__.endswith("MappedOperator"), type(vpart)
        assert vpart.partial_kwargs.get("pool") == "stage_partitions"
        assert stage.task_id in vplan.upstream_task_ids and vplan.task_id in vpart.upstream_task_ids
        assert {stage.task_id, vplan.task_id, vpart.task_id} <= validate.upstream_task_ids
        assert validate.trigger_rule == "none_failed_min_one_success"
