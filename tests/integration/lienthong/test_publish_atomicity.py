"""Publication is atomic for readers, with a real warehouse (the session's embedded PostgreSQL):

- a publisher killed (SIGKILL) in the middle of its COPY leaves the previous version served, recorded and
  pointed to, and the next publish cleans up and succeeds;
- a reader querying the stable view in a tight loop while versions are switched always sees exactly one
  whole version, never an error;
- the same content again publishes nothing.

Rows are synthetic `citizen_profile` rows built in DuckDB (no per-row Python), valid for the contract
(12-digit IDs per Circular 59/2021, Vietnamese names, dates, some non-empty `enterprises` / `parcels`); the
`nationality` column carries a per-version marker so a reader can tell versions apart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lienthong.contracts import contract
from lienthong.db import ensure_database, warehouse_url
from lienthong.publish import COPY_BATCH_ROWS, current_version, publish
from lienthong.releases import sha256_file, verify
from sandbox.profiles import synthetic_profiles

pytestmark = pytest.mark.integration

DATASET = "citizen_profile"
MARKER = "nationality"  # the column that tells versions apart

# --- helpers -------------------------------------------------------------------------------------------


def _db(tmp_path: Path, prefix: str) -> str:
    return ensure_database(warehouse_url(), prefix + tmp_path.name.replace("-", "_")[-20:].lower())


def _publish(url: str, published_dir: Path, rows: pa.Table, run_id: str, retention: int = 5):
    return publish(contract(DATASET), {}, run_id=run_id, gate_passed=True, published_dir=published_dir,
                   lineage={"test": run_id}, quality={}, retention=retention, url=url, rows=rows)


def _query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _view_state(url: str) -> tuple[int, int, str | None]:
    ((n, markers, marker),) = _query(
        url, f"SELECT count(*), count(DISTINCT {MARKER}), min({MARKER}) FROM published.{DATASET}")
    return n, markers, marker


def _publications(url: str) -> list[tuple]:
    return _query(url, """SELECT version, table_name, status, row_count FROM lienthong_ops.publication
                          WHERE dataset = %s ORDER BY version""", (DATASET,))


def _version_tables(url: str) -> set[str]:
    rows = _query(url, """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = 'published' AND c.relkind IN ('r', 'v') AND c.relname LIKE %s""",
                  (DATASET + "\\_\\_v%",))
    return {r[0] for r in rows}


def _assert_manifest_verifies(folder: Path, rows: int, content_hash: str) -> None:
    manifest = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    assert manifest["row_count"] == rows and manifest["content_hash"] == content_hash
    assert sum(f["rows"] for f in manifest["files"]) == rows
    for f in manifest["files"]:
        part = folder / f["path"]
        assert sha256_file(part) == f["sha256"] and part.stat().st_size == f["bytes"]
        assert pq.ParquetFile(part).metadata.num_rows == f["rows"]
    # signed with the session's key, whose public half the publish put in the keyring beside the datasets
    checked = verify(folder)
    assert checked.ok, checked.problems
    assert checked.key_id == manifest["signature"]["key_id"] and checked.rows == rows


# --- killed during COPY --------------------------------------------------------------------------------

KILLED_ROWS = 350_000  # one COPY of ~1-2 s here: the kill lands after the first 100k rows
CHILD = """
import sys
from pathlib import Path
import pyarrow.parquet as pq
from lienthong.contracts import contract
from lienthong.publish import publish
rows_path, published_dir, url = sys.argv[1:4]
c = contract("citizen_profile")
rows = pq.read_table(rows_path).cast(c.arrow_schema())
publish(c, {}, run_id="killed", gate_passed=True, published_dir=Path(published_dir), lineage={}, quality={},
        url=url, rows=rows)
print("PUBLISHED", flush=True)
"""


def _wait_for_copy(url: str, child: subprocess.Popen, app: str, timeout: float = 120.0) -> int:
    """Poll pg_stat_activity until the child's COPY of v000002 has loaded at least one batch of rows into an
    uncommitted table (pg_stat_progress_copy) and is still running; return the backend pid. Version 2 is
    published from its change: the COPY is of its new rows into the dataset's generation table, after its
    changed keys went into the feed, all in the one transaction the kill interrupts."""
    target = f'COPY "published"."{DATASET}__r%'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"the publishing child ended (rc {child.returncode}) before it could be killed in its COPY; "
                        f"raise KILLED_ROWS.\n{out}\n{err[-3000:]}")
        rows = _query(url, """SELECT a.pid, a.query_start, coalesce(p.tuples_processed, 0)
                               FROM pg_stat_activity a LEFT JOIN pg_stat_progress_copy p ON p.pid = a.pid
                               WHERE a.application_name = %s AND a.state = 'active' AND a.query LIKE %s""",
                      (app, target))
        for backend, _started, tuples in rows:
            if tuples >= 100_000:
                return backend
        time.sleep(0.005)
    pytest.fail("no COPY of v000002 seen in pg_stat_activity")


def _wait_backend_gone(url: str, backend: int) -> None:
    """The killed client's server backend ends when PostgreSQL reads EOF on its socket (at once over a local
    socket, as the kernel closes it with the process); over a network it could linger until TCP keepalive
    notices. Wait a little, then terminate it ourselves: its open transaction is rolled back either way."""
    for attempt in range(200):
        if not _query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)):
            return
        if attempt == 100:
            _query(url, "SELECT pg_terminate_backend(%s)", (backend,))
        time.sleep(0.05)
    pytest.fail(f"backend {backend} of the killed publisher is still there")


def test_publisher_killed_during_copy_leaves_the_previous_version_served(tmp_path: Path):
    url = _db(tmp_path, "pub_kill_")
    published_dir = tmp_path / "published"
    ds_dir = published_dir / DATASET

    v1_rows = synthetic_profiles(2_000, "G01")
    first = _publish(url, published_dir, v1_rows, "v1")
    assert (first.status, first.version) == ("published", 1)
    assert _view_state(url) == (2_000, 1, "G01")

    big = synthetic_profiles(KILLED_ROWS, "G02", seed=2)
    assert big.num_rows > 2 * COPY_BATCH_ROWS
    rows_path = tmp_path / "big.parquet"
    pq.write_table(big, rows_path)
    app = f"publish-kill-test-{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(rows_path), str(published_dir), url],
                             env={**os.environ, "PGAPPNAME": app}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        backend = _wait_for_copy(url, child, app)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    _wait_backend_gone(url, backend)

    # Readers still get version 1, whole; nothing recorded or pointed to for the killed attempt.
    assert _view_state(url) == (2_000, 1, "G01")
    assert _query(url, f"SELECT obj_description('published.{DATASET}'::regclass)")[0][0].split()[1] == "v000001"
    assert current_version(published_dir, DATASET) == "v000001"
    assert [(v, s, n) for v, _, s, n in _publications(url)] == [(1, "published", 2_000)]
    # The CREATE TABLE was in the rolled-back transaction: no half-loaded table survives the kill.
    assert _version_tables(url) == {f"{DATASET}__v000001"}
    # Nor any change of the killed version in the feed, which was written in that transaction too.
    assert _query(url, f'SELECT version FROM published."{DATASET}__feed"') == [(1,)]
    assert _query(url, f'SELECT count(*) FROM published."{DATASET}__changes"') == [(0,)]
    # On disk the killed attempt's folder `v000002/` (Parquet + manifest, written on a thread while the
    # database loads, renamed into place before the commit: complete, or still its temporary folder when the
    # kill came first) is left unreferenced; the next run's cleanup removes it, even when that run has nothing
    # new to publish.
    from lienthong.publish import cleanup_orphans

    removed = cleanup_orphans(DATASET, published_dir, url)
    assert any(r.startswith(str(ds_dir / "v000002")) for r in removed) and not (ds_dir / "v000002").exists()
    assert sorted(p.name for p in ds_dir.iterdir()) == ["CURRENT", "_rowhash", "v000001"]
    assert [p.name for p in (ds_dir / "_rowhash").iterdir()] == ["v000001.arrow"]  # the killed v2's hashes went too

    # The next publish (new content) cleans up and becomes version 2.
    v2_rows = synthetic_profiles(3_000, "G03", seed=3)
    second = _publish(url, published_dir, v2_rows, "after-kill")
    assert (second.status, second.version, second.rows) == ("published", 2, 3_000)
    assert _view_state(url) == (3_000, 1, "G03")
    assert current_version(published_dir, DATASET) == "v000002"
    assert [(v, s, n) for v, _, s, n in _publications(url)] == [(1, "published", 2_000), (2, "published", 3_000)]
    assert _version_tables(url) == {t for _, t, _, _ in _publications(url)}
    assert not list(ds_dir.glob("*.tmp-*"))
    folder = ds_dir / "v000002"
    _assert_manifest_verifies(folder, 3_000, second.content_hash)
    manifest = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    assert manifest["run_id"] == "after-kill"  # not the killed attempt's folder, which was left at v000002
    # the feed from version 1 to 2 is the change from the 2,000 rows of version 1 to the 3,000 of version 2
    assert _query(url, f"""SELECT _change_type, count(*) FROM published."{DATASET}__changes"
                           WHERE _commit_version = 2 GROUP BY 1 ORDER BY 1""") == sorted(
        (t, n) for t, n in second.changes.items() if n)  # type: ignore[union-attr]
    assert second.changes["insert"] - second.changes["delete"] == 1_000  # type: ignore[index]
    assert pq.read_table(folder)[MARKER].unique().to_pylist() == ["G03"]


# --- a reader during switches --------------------------------------------------------------------------


def test_reader_sees_one_whole_version_at_every_switch(tmp_path: Path):
    url = _db(tmp_path, "pub_read_")
    published_dir = tmp_path / "published"
    sizes = {"G01": 20_000, "G02": 26_000, "G03": 17_000, "G04": 32_000, "G05": 23_000, "G06": 29_000}
    versions = {m: synthetic_profiles(n, m, seed=i) for i, (m, n) in enumerate(sizes.items(), start=1)}
    assert _publish(url, published_dir, versions["G01"], "G01").version == 1

    seen: list[tuple[int, int, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(f"SELECT count(*), count(DISTINCT {MARKER}), min({MARKER}) FROM published.{DATASET}")
                    seen.append(cur.fetchone())
        except BaseException as exc:  # any failure of a read is the finding
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while len(seen) < 5 and thread.is_alive():
            time.sleep(0.01)
        # retention=2: the version the view left behind two switches ago is dropped while reads go on
        for version, marker in enumerate(list(sizes)[1:], start=2):
            result = _publish(url, published_dir, versions[marker], marker, retention=2)
            assert (result.status, result.version) == ("published", version)
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()

    assert not errors, f"the reader failed: {errors[0]!r}"
    assert len(seen) >= 50, f"only {len(seen)} reads"
    published_pairs = {(n, 1, m) for m, n in sizes.items()}
    assert set(seen) <= published_pairs, f"reads of no published version: {set(seen) - published_pairs}"
    markers_seen = [m for _, _, m in seen]
    assert len(set(markers_seen)) > 1
    # versions only move forward
    assert markers_seen == sorted(markers_seen)
    assert _view_state(url) == (sizes["G06"], 1, "G06")
    assert current_version(published_dir, DATASET) == "v000006"
    assert _version_tables(url) == {f"{DATASET}__v000005", f"{DATASET}__v000006"}


# --- unchanged content ---------------------------------------------------------------------------------


def test_unchanged_content_publishes_nothing(tmp_path: Path):
    url = _db(tmp_path, "pub_same_")
    published_dir = tmp_path / "published"
    rows = synthetic_profiles(1_500, "G01")
    first = _publish(url, published_dir, rows, "first")
    again = _publish(url, published_dir, synthetic_profiles(1_500, "G01"), "again")
    assert (first.status, again.status) == ("published", "unchanged")
    assert again.version == first.version == 1 and again.content_hash == first.content_hash
    assert again.table == first.table and again.rows == 1_500
    assert [v for v, *_ in _publications(url)] == [1]
    assert current_version(published_dir, DATASET) == "v000001"
    assert sorted(p.name for p in (published_dir / DATASET).iterdir()) == ["CURRENT", "_rowhash", "v000001"]
    assert [p.name for p in (published_dir / DATASET / "_rowhash").iterdir()] == ["v000001.arrow"]
    assert _view_state(url) == (1_500, 1, "G01")


def test_retention_waits_for_a_reader_of_an_expired_version(tmp_path: Path, monkeypatch, caplog):
    """A reader in a long transaction on a version's view that retention would drop: retention gives up after
    its lock timeout (logged) and keeps that version whole (its view, its publication record, its folder), the
    new version is served, the reader keeps reading; the next publish after the reader ends expires it."""
    from lienthong import pubtables

    monkeypatch.setattr(pubtables, "MAINTENANCE_LOCK_TIMEOUT", "300ms")
    url = _db(tmp_path, "pub_keep_")
    published_dir = tmp_path / "published"
    versions = {m: synthetic_profiles(1_000 + i * 100, m, seed=i) for i, m in enumerate(("G01", "G02", "G03"), start=1)}
    _publish(url, published_dir, versions["G01"], "G01", retention=1)
    reader = psycopg2.connect(url)
    try:
        with reader.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM published."{DATASET}__v000001"')
            assert cur.fetchone()[0] == versions["G01"].num_rows
        with caplog.at_level("WARNING", logger="lienthong.publish"):
            second = _publish(url, published_dir, versions["G02"], "G02", retention=1)
        assert (second.status, second.version) == ("published", 2)
        assert any("retention deferred" in r.getMessage() for r in caplog.records)
        assert _version_tables(url) == {f"{DATASET}__v000001", f"{DATASET}__v000002"}
        assert [(v, status) for v, _, status, _ in _publications(url)] == [(1, "published"), (2, "published")]
        assert (published_dir / DATASET / "v000001").is_dir()
        with reader.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM published."{DATASET}__v000001"')
            assert cur.fetchone()[0] == versions["G01"].num_rows
        assert _view_state(url)[0] == versions["G02"].num_rows
    finally:
        reader.rollback()
        reader.close()
    third = _publish(url, published_dir, versions["G03"], "G03", retention=1)
    assert third.version == 3
    assert _version_tables(url) == {f"{DATASET}__v000003"}
    assert [(v, status) for v, _, status, _ in _publications(url)] == [(1, "expired"), (2, "expired"), (3, "published")]
    assert not (published_dir / DATASET / "v000001").exists()
