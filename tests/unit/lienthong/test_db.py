"""Which warehouse `warehouse_url` picks: the configured server, the embedded one for local runs, or an error
naming the setting under an executor that runs tasks elsewhere. No server is started (the embedded start is
replaced by a stub)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lienthong import db
from lienthong.settings import Settings, load_settings


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    started: list[Path] = []

    def fake_embedded_uri(pgdata: Path, database: str | None = None) -> str:
        started.append(pgdata)
        return "postgresql://embedded/postgres"

    monkeypatch.setattr(db, "embedded_uri", fake_embedded_uri)
    monkeypatch.setattr(db, "private_data_dir", lambda settings: None)
    db._announce_embedded.cache_clear()
    return started


def _settings(tmp_path: Path, *, url: str | None = None, executor: str | None = None) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, land_provinces=(), airflow_executor=executor)


@pytest.mark.parametrize(
    "executor",
    ["CeleryExecutor", "KubernetesExecutor", "LocalExecutor,CeleryExecutor",
     "airflow.providers.celery.executors.celery_executor.CeleryExecutor", "edge:my.module.EdgeExecutor"],
)
def test_a_distributed_executor_without_a_warehouse_url_is_an_error_naming_the_setting(
    tmp_path: Path, embedded: list[Path], executor: str
) -> None:
    with pytest.raises(RuntimeError, match=r"LIENTHONG_DATABASE_URL is not set.*AIRFLOW__CORE__EXECUTOR"):
        db.warehouse_url(_settings(tmp_path, executor=executor))
    assert embedded == [], "no embedded server is started on a worker"


def test_a_distributed_executor_with_a_warehouse_url_uses_that_server(tmp_path: Path, embedded: list[Path]) -> None:
    url = "postgresql://warehouse.example/warehouse"
    assert db.warehouse_url(_settings(tmp_path, url=url, executor="CeleryExecutor")) == url
    assert embedded == []


@pytest.mark.parametrize("executor", [None, "LocalExecutor", "SequentialExecutor",
                                      "airflow.executors.local_executor.LocalExecutor"])
def test_local_runs_fall_back_to_the_embedded_server_and_say_so_once_with_its_data_dir(
    tmp_path: Path, embedded: list[Path], executor: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, executor=executor)
    with caplog.at_level(logging.INFO, logger="lienthong.db"):
        assert db.warehouse_url(settings) == "postgresql://embedded/postgres"
        assert db.warehouse_url(settings) == "postgresql://embedded/postgres"
    assert embedded == [settings.embedded_pgdata] * 2
    lines = [r for r in caplog.records if r.name == "lienthong.db" and "embedded PostgreSQL" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert str(settings.embedded_pgdata) in lines[0].getMessage()


def test_the_executor_is_read_from_airflows_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert load_settings().airflow_executor == "CeleryExecutor"
    monkeypatch.delenv("AIRFLOW__CORE__EXECUTOR")
    assert load_settings().airflow_executor is None
