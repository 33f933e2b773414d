"""A generated province landed in the raw zone by the real connectors, for the tests that run the pipeline
after ingestion (reconcile, audit report): generate, serve with the sandbox, ingest the three agency systems,
stop the sandbox; the environment points the pipeline at a data dir of its own until the block ends, when the
embedded warehouse is stopped and the environment restored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def ingested_province(root: Path, *, citizens: int, seed: int, run_id: str = "r1",
                      extra_env: dict[str, str] | None = None,
                      noise: dict[str, float] | None = None, config: Any = None) -> Iterator[dict[str, Path]]:
    """`config`: a generator config to use instead (e.g. a `CountryConfig`); `citizens`, `seed` and `noise`
    are then not used."""
    from lienthong import pipeline
    from lienthong.db import stop_embedded
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.generator.config import NOISE_DEFAULTS
    from sandbox.runner import run_sandbox

    data = root / "sb"
    generate(config or GeneratorConfig(citizens=citizens, seed=seed, noise={**NOISE_DEFAULTS, **(noise or {})}), data)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    os.environ.update(extra_env or {})
    try:
        with run_sandbox(data, root / "sbx") as ep:
            os.environ.update(ep.airflow_conn_env())
            pipeline.ingest_population(run_id)
            pipeline.ingest_business(run_id)
            for province in ep.land_dsns:
                pipeline.ingest_land(run_id, province)
        yield {"root": root, "sandbox": data, "truth": data / "truth", "data_dir": root / "data"}
    finally:
        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def reconciled_province(root: Path, *, citizens: int, seed: int, run_id: str = "r1", config: Any = None) -> Iterator[dict]:
    """`ingested_province`, then every dataset staged and validated and one reconciliation, as the integrate
    DAG runs them; yields what `ingested_province` yields plus the `settings`, the reconciliation's summary
    (`first`) and the `stages`."""
    from lienthong import pipeline
    from lienthong.reconcile.sources import INPUT_DATASETS
    from lienthong.settings import load_settings

    with ingested_province(root, citizens=citizens, seed=seed, run_id=run_id, config=config) as prov:
        stages = {}
        for name in INPUT_DATASETS:
            stages[name] = pipeline.stage(name, run_id)
            pipeline.validate(name, run_id, stages[name])
        yield {**prov, "settings": load_settings(), "first": pipeline.reconcile(run_id), "stages": stages}


def three_provinces(*, citizens: int, seed: int, representatives_outside: float) -> Any:
    """A generator config for a country of three provinces (Hải Phòng, Hồ Chí Minh City, Hà Nội) with raised
    cross-province rates: 30 % of land held and `representatives_outside` of enterprises represented outside
    one's home province, 20 % of people moved."""
    from sandbox.generator.country import CountryConfig

    return CountryConfig(provinces=("31", "79", "01"), citizens=citizens, seed=seed,
                         rates={"land_other_province": 0.3, "representative_other_province": representatives_outside,
                                "moved_province": 0.2})


def staged_tables(datasets: tuple[str, ...], run_id: str) -> dict[str, Any]:
    """Each of `datasets` staged from all its landings (inside `ingested_province`), as an Arrow table in
    primary-key order."""
    from lienthong import zones
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source

    settings = load_settings()
    staged = {}
    for name in datasets:
        c = contract(name)
        res = stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id=run_id,
                                staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
        staged[name] = zones.read_table(str(res.staged_path)).sort_by([(k, "ascending") for k in c.primary_key])
    return staged


def stage_landed(run_id: str) -> None:
    """Stage every input dataset (inside `ingested_province`), and validate each one staging changed, as the
    integrate DAG does (it skips validation when staging changed nothing)."""
    from lienthong import pipeline
    from lienthong.reconcile.sources import INPUT_DATASETS

    for name in INPUT_DATASETS:
        summary = pipeline.stage(name, run_id)
        if summary.get("mode") not in ("none", "unchanged"):
            pipeline.validate(name, run_id, summary)
