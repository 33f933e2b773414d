"""End-to-end set-up shared by the tests that run DAGs through Airflow against the sandbox."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class AirflowWorld:
    runner: Any  # devstack.demo.AirflowRunner
    endpoints: Any  # sandbox.runner.SandboxEndpoints
    data: Path  # the generated sandbox files (and ground truth)
    settings: Any  # lienthong.settings.Settings of this world
    url: str  # its warehouse
    root: Path


@contextlib.contextmanager
def airflow_world(root: Path, *, citizens: int, seed: int = 20261120, extra_env: dict[str, str] | None = None) -> Iterator[AirflowWorld]:
    """A generated province, its running sandbox, a private warehouse and a migrated Airflow home; the data
    dir is this world's for the duration, and everything started is stopped on exit."""
    from devstack.demo import AirflowRunner
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    old = os.environ.get("LIENTHONG_DATA_DIR")
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    settings = load_settings()
    data = root / "sandbox-data"
    generate(GeneratorConfig(citizens=citizens, seed=seed), data)
    url = warehouse_url(settings)
    try:
        with run_sandbox(data, root / "sbx") as endpoints:
            runner = AirflowRunner(home=root / "airflow", extra_env=endpoints.airflow_conn_env(), log_dir=root / "logs")
            runner.extra_env.update({"LIENTHONG_DATA_DIR": str(settings.data_dir), "LIENTHONG_DATABASE_URL": url,
                                     **(extra_env or {})})
            runner.migrate()
            yield AirflowWorld(runner, endpoints, data, settings, url, root)
    finally:
        stop_embedded(settings.embedded_pgdata)
        if old is None:
            os.environ.pop("LIENTHONG_DATA_DIR", None)
        else:
            os.environ["LIENTHONG_DATA_DIR"] = old
