"""OpenLineage events from the DAGs: which datasets each task read and wrote, with their schema, row counts
and quality assertions.

Airflow's OpenLineage provider (its listener, configured with a file transport: one JSON line per event, no
lineage server) emits a START and a COMPLETE/FAIL event for every task. What an event says about data comes
from an extractor chosen by the operator's class name (`ExtractorManager.get_extractor_class` in
`airflow/providers/openlineage/extractors/manager.py`); the provider has none for TaskFlow's
`_PythonDecoratedOperator`, so without ours the events would carry no datasets. `LienthongExtractor` is
registered through `[openlineage] extractors` (see `openlineage_env`):

* at START it names the task's declared outlets (`lienthong://<zone>/<name>` Assets) as output datasets,
  with the schema from the dataset's contract;
* at COMPLETE it reads what the pipeline function reported (below) and names inputs and outputs with their
  facets: `schema` (from the contract in schemas/, or from the Parquet file for raw and quarantine),
  `outputStatistics` (rows, bytes, files), `dataQualityAssertions` + `dataQualityMetrics` on the dataset a
  validate task checked (one assertion per expectation), `version` on a published dataset.

The pipeline functions report through `reports_lineage`, a decorator that keeps the function's arguments
and its JSON summary in a process-local collector, keyed by the Airflow task instance it ran in (the
listener runs in that same task process, in a fork of it by default, so it sees the collector). Outside a
task (tests, benchmarks, the CLI) the decorator records nothing. The return value is not read back through
XCom: the provider forks to emit, and a forked child should not talk to the task supervisor.

Dataset names follow the Asset URIs: namespace `lienthong`, name `<zone>/<dataset>` (`staged/citizen`);
the agency systems read by the ingestion tasks are in the namespace `agency://<source system>`. No event
carries a record's values: schemas, counts, run ids and rule outcomes only.

This module imports only the standard library at import time (the pipeline imports it); the extractor class,
which subclasses the provider's `BaseExtractor`, is built on first access (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from openlineage.client.event_v2 import Dataset, InputDataset, OutputDataset

    from lienthong.contracts import Contract

log = logging.getLogger(__name__)

NAMESPACE = "lienthong"
EXTRACTOR = "lienthong.openlineage.LienthongExtractor"
EVENTS_FILE = Path("lineage") / "openlineage.jsonl"
OPERATOR_CLASSNAMES = ["_PythonDecoratedOperator"]  # every @task of the DAGs

F = TypeVar("F", bound=Callable[..., Any])
TaskKey = tuple[str, str, str, int]  # dag_id, task_id, run_id, map_index

# What each pipeline function reported, per task instance (in `airflow dags test` every task of a run shares
# one process, so the key matters). Small summaries only: bulky per-row parts are dropped when recorded.
_COLLECTED: dict[TaskKey, list[dict[str, Any]]] = {}
_BULKY = ("failed_rows", "failed_keys")


# ---------------------------------------------------------------- configuration


def events_file(data_dir: Path) -> Path:
    """Where the events of a data dir go: `<data_dir>/lineage/openlineage.jsonl`."""
    return Path(data_dir) / EVENTS_FILE


def openlineage_env(data_dir: Path) -> dict[str, str]:
    """The `[openlineage]` settings every Airflow process needs: job namespace, the file transport (keys as
    `openlineage.client.transport.file.FileConfig.from_dict` reads them; `append` writes one file, one
    event per line, instead of a file per event) and this module's extractor. Events are sent from a thread
    of the task process, not a forked child: a child forked from a process that has used delta-rs (its Rust
    thread pool) can crash reading a Delta table, and the integrate tasks' completion events were lost so."""
    transport = {"type": "file", "log_file_path": str(events_file(data_dir)), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": EXTRACTOR,
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }


def ensure_events_dir() -> None:
    """Create the file transport's folder: the transport opens the file for appending and does not create
    its folder, so without this the first event of a fresh data dir would be lost."""
    try:
        from airflow.providers.openlineage import conf

        transport = conf.transport()
        path = str(transport.get("log_file_path") or "") if transport.get("type") == "file" else ""
        if path.startswith("file://"):
            path = path[len("file://"):]
        if path and "://" not in path:
            from lienthong.private_files import private_umask

            # created here, 0700/0600, because the listener appends to the file after the task's own
            # umask window has closed (lienthong.private_files)
            with private_umask():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except Exception as exc:  # lineage must never stop Airflow from starting
        log.warning("OpenLineage: could not prepare the events folder: %s", exc)


# ---------------------------------------------------------------- the collector


def _current_task() -> TaskKey | None:
    """The Airflow task instance this code runs in, or None outside a task (no Airflow import then)."""
    if "airflow.sdk" not in sys.modules:
        return None
    try:
        from airflow.sdk import get_current_context

        return task_key(get_current_context()["ti"])
    except Exception:
        return None


def task_key(task_instance: Any) -> TaskKey:
    """dag id, task id, run id and map index (-1 unless mapped) of a task instance."""
    map_index = getattr(task_instance, "map_index", None)
    return (task_instance.dag_id, task_instance.task_id, task_instance.run_id, -1 if map_index is None else int(map_index))


def record(key: TaskKey, kind: str, arguments: dict[str, Any], result: Any) -> None:
    """Keep what a pipeline function did for the task `key` (replacing an earlier try's report)."""
    summary = {k: v for k, v in result.items() if k not in _BULKY} if isinstance(result, dict) else result
    _COLLECTED.setdefault(key, [])
    _COLLECTED[key] = [r for r in _COLLECTED[key] if r["kind"] != kind] + [
        {"kind": kind, "arguments": arguments, "result": summary}
    ]


def collected(key: TaskKey) -> list[dict[str, Any]]:
    return list(_COLLECTED.get(key, []))


def reports_lineage(func: F) -> F:
    """Decorate a pipeline function so that, inside an Airflow task, its arguments and summary reach the
    task's OpenLineage events. Never changes what the function does or returns; a failure to record is
    logged and ignored."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        key = _current_task()
        if key is not None:
            try:
                bound = signature.bind(*args, **kwargs)
                record(key, func.__name__, dict(bound.arguments), result)
            except Exception as exc:
                log.warning("OpenLineage: could not record %s: %s", func.__name__, exc)
        return result

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- facets


def _contract(name: str, settings: Any = None) -> Contract | None:
    from lienthong.contracts import contract

    try:
        return contract(name, getattr(settings, "contracts_dir", None))
    except KeyError:
        return None


def _field_type(f: Any) -> str:
    if f.logical_type == "array":
        return f"array<{f.item_type or 'string'}>"
    return f.physical_type or f.logical_type


def _schema_fields(fields: Any) -> list[Any]:
    from openlineage.client.generated.schema_dataset import SchemaDatasetFacetFields

    return [
        SchemaDatasetFacetFields(
            name=f.name,
            type=_field_type(f),
            # the classification tells a reader of the lineage which columns hold personal data
            description=f"[{f.classification}] {f.description}".strip(),
            ordinal_position=i,
            fields=_schema_fields(f.children) if f.children else [],
        )
        for i, f in enumerate(fields, start=1)
    ]


def schema_facet(contract: Contract) -> Any:
    """SchemaDatasetFacet of a dataset from its contract: names, types, classification + description, nested
    members of structs and lists of structs."""
    from openlineage.client.generated.schema_dataset import SchemaDatasetFacet

    return SchemaDatasetFacet(fields=_schema_fields(contract.fields))


def arrow_schema_facet(schema: Any) -> Any:
    """SchemaDatasetFacet from an Arrow schema (raw landings and quarantine, which have no contract)."""
    from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

    return SchemaDatasetFacet(fields=[SchemaDatasetFacetFields(name=f.name, type=str(f.type), ordinal_position=i)
                                      for i, f in enumerate(schema, start=1)])


def documentation_facet(contract: Contract) -> Any:
    from openlineage.client.generated.documentation_dataset import DocumentationDatasetFacet

    return DocumentationDatasetFacet(description=f"{contract.id} v{contract.version}: {contract.purpose}".strip())


def assertions_facet(verdict: dict[str, Any]) -> Any:
    """DataQualityAssertionsDatasetFacet from a validate verdict: one assertion per expectation (the
    contract rule's name, its GX expectation type, column, severity, tolerance and what was found)."""
    from openlineage.client.generated.data_quality_assertions_dataset import (
        Assertion,
        DataQualityAssertionsDatasetFacet,
    )

    assertions = []
    for rule, o in (verdict.get("rules") or {}).items():
        unexpected = int(o.get("unexpected_staged") or 0) + int(o.get("unexpected_quarantined") or 0)
        assertions.append(Assertion(
            assertion=str(o["expectation"]),
            success=bool(o["success"]),
            column=o.get("column"),
            severity="error" if o.get("severity") == "critical" else "warn",
            name=str(rule),
            expected=o.get("tolerance"),
            actual=f"{unexpected} of {o.get('element_count')} rows",
        ))
    return DataQualityAssertionsDatasetFacet(assertions=assertions)


def quality_metrics_facet(verdict: dict[str, Any], rows: int | None) -> Any:
    from openlineage.client.generated.data_quality_metrics_input_dataset import (
        DataQualityMetricsInputDatasetFacet,
    )

    return DataQualityMetricsInputDatasetFacet(columnMetrics={}, rowCount=rows)


def _files(path: str | Path | None) -> list[Path]:
    from lienthong import zones

    if not path:
        return []
    p = Path(zones.split_ref(path)[0])
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*.parquet") if f.is_file())
    return []


def output_statistics(rows: int | None, path: str | Path | None = None) -> Any:
    """OutputStatisticsOutputDatasetFacet: rows written, and bytes and files when `path` (a file or a folder
    of Parquet parts) exists."""
    from openlineage.client.generated.output_statistics_output_dataset import (
        OutputStatisticsOutputDatasetFacet,
    )

    files = _files(path)
    return OutputStatisticsOutputDatasetFacet(
        rowCount=None if rows is None else int(rows),
        size=sum(f.stat().st_size for f in files) if files else None,
        fileCount=len(files) if files else None,
    )


def _parquet_schema(path: str | Path | None) -> Any:
    import pyarrow.parquet as pq

    from lienthong import zones

    if path and zones.is_table(path):  # a Delta table version (staged, quarantine)
        return arrow_schema_facet(zones.schema(path))
    files = _files(path)
    return arrow_schema_facet(pq.read_schema(files[0])) if files else None


def _parquet_rows(path: str | Path | None) -> int | None:
    import pyarrow.parquet as pq

    from lienthong import zones

    if path and zones.is_table(path):
        return int(zones.dataset(path).count_rows())
    files = _files(path)
    return sum(pq.read_metadata(f).num_rows for f in files) if files else None


# ---------------------------------------------------------------- datasets


def _facets(contract_name: str | None = None, settings: Any = None, **extra: Any) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    c = _contract(contract_name, settings) if contract_name else None
    if c is not None:
        facets["schema"] = schema_facet(c)
        facets["documentation"] = documentation_facet(c)
    facets.update({k: v for k, v in extra.items() if v is not None})
    return facets


def output(zone: str, name: str, *, contract_name: str | None = None, settings: Any = None,
           rows: int | None = None, path: str | Path | None = None, schema: Any = None,
           facets: dict[str, Any] | None = None) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset

    ds_facets = _facets(contract_name, settings, schema=schema, **(facets or {}))
    out_facets = {"outputStatistics": output_statistics(rows, path)} if rows is not None else {}
    return OutputDataset(namespace=NAMESPACE, name=f"{zone}/{name}", facets=ds_facets, outputFacets=out_facets)


def input_(zone: str, name: str, *, contract_name: str | None = None, settings: Any = None,
           namespace: str = NAMESPACE, input_facets: dict[str, Any] | None = None) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    return InputDataset(namespace=namespace, name=f"{zone}/{name}" if zone else name,
                        facets=_facets(contract_name, settings), inputFacets=input_facets or {})


def _settings(arguments: dict[str, Any]) -> Any:
    from lienthong.settings import load_settings

    return arguments.get("settings") or load_settings()


def _ingest_single(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    source, entity, path = result["source"], result["entity"], result.get("landing_path")
    agency = input_("", entity, namespace=f"agency://{source}")
    raw = output("raw", f"{source}/{entity}", rows=result.get("rows"), path=path, schema=_parquet_schema(path))
    return [agency], [raw]


def _ingest_land(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    source, province = result.get("source", "land_registry"), result["province"]
    inputs, outputs = [], []
    for table, t in (result.get("tables") or {}).items():
        inputs.append(input_("", f"{province}/{table}", namespace=f"agency://{source}"))
        path = t.get("landing_path")
        outputs.append(output("raw", f"{source}/{province}/{table}", rows=t.get("rows"), path=path,
                              schema=_parquet_schema(path)))
    return inputs, outputs


def raw_inputs(contract: Contract, raw_dir: Path) -> list[InputDataset]:
    """The raw datasets a staged dataset is built from (per province for a provincial registry)."""
    source, entity = contract.custom.get("sourceSystem"), contract.custom.get("sourceEntity")
    if not source or not entity:
        return []
    if contract.custom.get("partitionedBy") == "province":
        provinces = sorted(p.parent.name for p in (Path(raw_dir) / source).glob(f"*/{entity}") if p.is_dir())
        return [input_("raw", f"{source}/{p}/{entity}") for p in provinces]
    return [input_("raw", f"{source}/{entity}")]


def _stage(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    s = _settings(arguments)
    dataset = arguments["dataset"]
    c = _contract(dataset, s)
    inputs = raw_inputs(c, s.raw_dir) if c is not None else []
    outputs = [
        output("staged", dataset, contract_name=dataset, settings=s, rows=result.get("rows_staged"),
               path=result.get("staged_path")),
        output("quarantine", dataset, rows=result.get("rows_quarantined"), path=result.get("quarantine_path"),
               schema=_parquet_schema(result.get("quarantine_path"))),
    ]
    return inputs, outputs


def _validate(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    s = _settings(arguments)
    dataset = arguments["dataset"]
    stage_summary = arguments.get("stage_summary") or {}
    path = result.get("staged_path") or stage_summary.get("staged_path")
    evaluated = max((int(o.get("element_count") or 0) for o in (result.get("rules") or {}).values()), default=None)
    checked = input_("staged", dataset, contract_name=dataset, settings=s, input_facets={
        "dataQualityAssertions": assertions_facet(result),
        "dataQualityMetrics": quality_metrics_facet(result, evaluated),
    })
    # validate may move rows failing a critical rule to quarantine: the file says what stays staged
    rows = _parquet_rows(path)
    staged = output("staged", dataset, contract_name=dataset, settings=s,
                    rows=rows if rows is not None else stage_summary.get("rows_staged"), path=path)
    return [checked], [staged]


def _reconcile(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    from lienthong.reconcile.sources import INPUT_DATASETS

    s = _settings(arguments)
    inputs = [input_("staged", name, contract_name=name, settings=s) for name in INPUT_DATASETS]
    outputs = [output("integrated", name, contract_name=name, settings=s, rows=out.get("rows"), path=out.get("path"))
               for name, out in (result.get("outputs") or {}).items()]
    return inputs, outputs


def _publish(arguments: dict[str, Any], result: dict[str, Any]) -> tuple[list, list]:
    from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

    s = _settings(arguments)
    dataset = arguments["dataset"]
    folder = Path(result.get("parquet_path") or "")
    manifest_file = folder / "_manifest.json"
    lineage = json.loads(manifest_file.read_text(encoding="utf-8")).get("lineage", {}) if manifest_file.is_file() else {}
    inputs = [input_("integrated", name, contract_name=name, settings=s)
              for name in (lineage.get("reconcile") or {}).get("outputs", {})]
    inputs += [input_("staged", name, contract_name=name, settings=s) for name in lineage if name != "reconcile"]
    version = DatasetVersionDatasetFacet(datasetVersion=f"v{int(result['version']):06d}")
    written = result.get("status") == "published"  # "unchanged": nothing written, the version stays
    published = output("published", dataset, contract_name=dataset, settings=s,
                       rows=result.get("rows") if written else None, path=folder if written else None,
                       facets={"version": version})
    return inputs, [published]


_BUILDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], tuple[list, list]]] = {
    "ingest_population": _ingest_single,
    "ingest_business": _ingest_single,
    "ingest_land": _ingest_land,
    "stage": _stage,
    "validate": _validate,
    "reconcile": _reconcile,
    "publish": _publish,
}


def datasets_of(report: dict[str, Any]) -> tuple[list[InputDataset], list[OutputDataset]]:
    """Input and output datasets (with facets) of one recorded pipeline call."""
    builder = _BUILDERS.get(report["kind"])
    if builder is None or not isinstance(report.get("result"), dict):
        return [], []
    return builder(report.get("arguments") or {}, report["result"])


def outlet_datasets(outlets: list[Any]) -> list[Dataset]:
    """The task's declared `lienthong://<zone>/<name>` outlets as output datasets (schema from the contract)."""
    out: list[Dataset] = []
    for asset in outlets or []:
        uri = str(getattr(asset, "uri", "") or "")
        if not uri.startswith(f"{NAMESPACE}://"):
            continue
        zone, _, name = uri[len(NAMESPACE) + 3:].partition("/")
        contract_name = name if zone in ("staged", "integrated", "published") else None
        out.append(output(zone, name, contract_name=contract_name))
    return out


# ---------------------------------------------------------------- the extractor


def _build_extractor() -> type:
    from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage

    class LienthongExtractor(BaseExtractor):
        """Datasets and facets of the platform's TaskFlow tasks (see the module docstring). Never raises: on
        any error it logs and returns no datasets, and the task's events are emitted without them."""

        @classmethod
        def get_operator_classnames(cls) -> list[str]:
            return list(OPERATOR_CLASSNAMES)

        def _execute_extraction(self) -> OperatorLineage | None:
            try:
                return OperatorLineage(outputs=outlet_datasets(getattr(self.operator, "outlets", None) or []))
            except Exception as exc:
                log.warning("OpenLineage: no datasets for the start of %s: %s",
                            getattr(self.operator, "task_id", "?"), exc, exc_info=True)
                return OperatorLineage()

        def extract_on_complete(self, task_instance: Any) -> OperatorLineage | None:
            try:
                reports = collected(task_key(task_instance))
                if not reports:
                    return self.extract()
                inputs: list = []
                outputs: list = []
                for report in reports:
                    i, o = datasets_of(report)
                    inputs += i
                    outputs += o
                return OperatorLineage(inputs=inputs, outputs=outputs)
            except Exception as exc:
                log.warning("OpenLineage: no datasets for %s: %s", getattr(task_instance, "task_id", "?"), exc,
                            exc_info=True)
                return OperatorLineage()

    LienthongExtractor.__module__ = __name__
    ensure_events_dir()
    return LienthongExtractor


def __getattr__(name: str) -> Any:
    # PEP 562: `LienthongExtractor` subclasses the provider's BaseExtractor, whose import costs seconds, so it
    # is built when Airflow's ExtractorManager asks for it, not when the pipeline imports this module.
    if name == "LienthongExtractor":
        cls = _build_extractor()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
