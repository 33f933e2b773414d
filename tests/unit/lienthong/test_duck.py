"""DuckDB sessions (lienthong.duck): the bounds come from the settings, the spill folder is private and goes
away with the session, a query larger than the memory limit spills, and no other module opens DuckDB."""

from __future__ import annotations

import ast
import os
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from lienthong import duck
from lienthong.settings import DUCKDB_THREADS_CAP, Settings, default_duckdb_threads, load_settings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=None, land_provinces=(), duckdb_memory="256MiB",
                    duckdb_threads=3)


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> object:
    row = con.execute("SELECT current_setting(?)", [name]).fetchone()
    assert row is not None
    return row[0]


def test_a_session_has_the_configured_memory_limit_threads_spill_folder_and_time_zone(settings):
    with duck.session(settings, purpose="test") as con:
        assert _setting(con, "memory_limit") == "256.0 MiB"
        assert _setting(con, "threads") == 3
        assert _setting(con, "TimeZone") == "UTC"
        assert _setting(con, "preserve_insertion_order") is True
        spill = Path(str(_setting(con, "temp_directory")))
        assert spill.parent == settings.data_dir / "tmp" / "duckdb"
        assert spill.name.startswith(f"test-{os.getpid()}-")
        assert spill.is_dir()
        assert stat.S_IMODE(spill.stat().st_mode) == 0o700


def test_a_caller_that_does_not_need_insertion_order_can_turn_it_off(settings):
    with duck.session(settings, purpose="test", preserve_insertion_order=False) as con:
        assert _setting(con, "preserve_insertion_order") is False


def test_two_sessions_of_one_process_spill_to_different_folders(settings):
    with duck.session(settings, purpose="test") as a, duck.session(settings, purpose="test") as b:
        assert _setting(a, "temp_directory") != _setting(b, "temp_directory")


def test_the_spill_folder_is_removed_when_the_session_ends(settings):
    with duck.session(settings, purpose="test") as con:
        spill = Path(str(_setting(con, "temp_directory")))
        (spill / "leftover").write_text("x")
    assert not spill.exists()
    assert list((settings.data_dir / "tmp" / "duckdb").iterdir()) == []


def test_the_spill_folder_is_removed_and_the_connection_closed_after_an_error(settings):
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        with duck.session(settings, purpose="test") as con:
            spill = Path(str(_setting(con, "temp_directory")))
            con.execute("SELECT * FROM no_such_table")
    assert not spill.exists()
    with pytest.raises(duckdb.ConnectionException, match="closed"):
        con.execute("SELECT 1")


def test_a_purpose_must_be_a_folder_name_slug(settings):
    with pytest.raises(ValueError, match="purpose '../x'"):
        with duck.session(settings, purpose="../x"):
            pass


def test_without_settings_the_session_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIENTHONG_DUCKDB_MEMORY", "128MiB")
    monkeypatch.setenv("LIENTHONG_DUCKDB_THREADS", "2")
    with duck.session(purpose="test") as con:
        assert _setting(con, "memory_limit") == "128.0 MiB"
        assert _setting(con, "threads") == 2
        assert Path(str(_setting(con, "temp_directory"))).parent == tmp_path / "tmp" / "duckdb"


def test_the_threads_setting_defaults_to_the_available_cpus_capped(monkeypatch):
    monkeypatch.delenv("LIENTHONG_DUCKDB_THREADS", raising=False)
    expected = min(len(os.sched_getaffinity(0)), DUCKDB_THREADS_CAP)
    assert default_duckdb_threads() == expected
    assert load_settings().duckdb_threads == expected
    monkeypatch.setenv("LIENTHONG_DUCKDB_THREADS", "5")
    assert load_settings().duckdb_threads == 5
    monkeypatch.setenv("LIENTHONG_DUCKDB_THREADS", "0")
    with pytest.raises(ValueError, match="LIENTHONG_DUCKDB_THREADS=0: at least 1"):
        load_settings()
    monkeypatch.setenv("LIENTHONG_DUCKDB_THREADS", "many")
    with pytest.raises(ValueError, match="LIENTHONG_DUCKDB_THREADS='many': an integer"):
        load_settings()


# Sorting 10M generated BIGINTs needs well over 64 MB of working memory.
BIG_SORT = "SELECT count(*) FROM (SELECT i FROM range(10000000) t(i) ORDER BY hash(i) OFFSET 1)"


def test_a_query_larger_than_the_memory_limit_spills_instead_of_failing(settings):
    small = replace(settings, duckdb_memory="64MB", duckdb_threads=2)
    spilled = 0
    with duck.session(small, purpose="test") as con:
        spill = Path(str(_setting(con, "temp_directory")))
        done = threading.Event()

        def watch() -> None:
            nonlocal spilled
            while not done.is_set():
                try:
                    spilled = max(spilled, sum(p.stat().st_size for p in spill.iterdir()))
                except OSError:  # a file DuckDB removed between the listing and the stat
                    pass
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            assert con.execute(BIG_SORT).fetchone() == (9_999_999,)
        finally:
            done.set()
            watcher.join()
    assert spilled > 64_000_000
    # The same query with the same limit and nowhere to spill fails: the limit, not luck, made it spill.
    bare = duckdb.connect(config={"memory_limit": "64MB", "threads": 2, "temp_directory": ""})
    try:
        with pytest.raises(duckdb.OutOfMemoryException, match="Out of Memory"):
            bare.execute(BIG_SORT).fetchone()
    finally:
        bare.close()


def test_no_module_but_duck_opens_a_duckdb_connection():
    """Every DuckDB connection in the platform is bounded: lienthong.duck is the only caller of
    duckdb.connect (also as `from duckdb import connect`) under lienthong/ and connectors/."""
    offenders = []
    for folder in ("lienthong", "connectors"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "lienthong" / "duck.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                calls_connect = (isinstance(node, ast.Attribute) and node.attr == "connect"
                                 and isinstance(node.value, ast.Name) and node.value.id == "duckdb")
                imports_connect = (isinstance(node, ast.ImportFrom) and node.module == "duckdb"
                                   and any(a.name == "connect" for a in node.names))
                if calls_connect or imports_connect:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_nested_sessions_of_one_thread_share_the_memory_limit(settings):
    # the settings' limit is 256 MiB: two sessions open at once in one thread get half each, three a third
    with duck.session(settings, purpose="outer") as outer:
        outer.execute("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(300000)")
        with duck.session(settings, purpose="inner") as inner:
            assert _setting(outer, "memory_limit") == _setting(inner, "memory_limit") == "128.0 MiB"
            with duck.session(settings, purpose="third") as third:
                assert {_setting(c, "memory_limit") for c in (outer, inner, third)} == {"85.3 MiB"}
            assert _setting(outer, "memory_limit") == "128.0 MiB"
            # what the outer session holds is still there, whatever had to move to its spill folder
            assert outer.execute("SELECT count(*), max(s) FROM t").fetchone() == (
                300000, inner.execute("SELECT max(md5(range::VARCHAR)) FROM range(300000)").fetchone()[0])
        assert _setting(outer, "memory_limit") == "256.0 MiB"


def test_sessions_of_another_thread_keep_their_limit(settings):
    import threading

    seen: dict[str, str] = {}
    opened, release = threading.Event(), threading.Event()

    def other() -> None:
        with duck.session(settings, purpose="other") as con:
            opened.set()
            release.wait(10)
            seen["other"] = _setting(con, "memory_limit")

    worker = threading.Thread(target=other)
    worker.start()
    opened.wait(10)
    with duck.session(settings, purpose="mine") as con:
        seen["mine"] = _setting(con, "memory_limit")
    release.set()
    worker.join(10)
    assert seen == {"other": "256.0 MiB", "mine": "256.0 MiB"}


def test_memory_sizes_are_read_in_bytes():
    assert duck.memory_bytes("2GB") == 2 * 1000**3
    assert duck.memory_bytes("512 MiB") == 512 * 1024**2
    assert duck.memory_bytes("1.5gib") == int(1.5 * 1024**3)
    with pytest.raises(ValueError, match="a size such as"):
        duck.memory_bytes("lots")
