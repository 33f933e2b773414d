"""The land registry connector against real PostgreSQL databases that follow agency-systems.md §3.

Two backends run the same keyset, boundary, tombstone, snapshot and read-only tests (after Splink's
per-dialect runs): the sandbox's province databases (generated data, loaded by sandbox/land_db.py), and a
minimal database this module creates itself from the spec's DDL with a handful of rows, so the connector
is shown to depend on the spec's text and nothing else of the sandbox.

Each test reaches its database through its own connection id (`land_registry_<alias>`), so watermarks and
landings of one test never leak into another; rows a test changes in the sandbox are put back afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow.parquet as pq
import pytest

from connectors.base.errors import SchemaDriftError
from connectors.land import ingest as land_ingest
from connectors.land.extract import SOURCE, SPEC_COLUMNS, TABLES, Keyset, LandRegistryExtractor
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.runs import Ledger
from lienthong.runs.schema import OPS_SCHEMA
from lienthong.settings import Settings, load_settings
from sandbox.runner import SandboxEndpoints

pytestmark = pytest.mark.integration
# After every generated (as of 2026-11-20) and inserted row, yet not after the source's clock: the
# connector holds the watermark back to the source's clock, so edits must be dated in the past.
LATER = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

# The spec's DDL (agency-systems.md §3), comments dropped; no index, as the spec gives none.
SPEC_DDL = """
CREATE TABLE thua_dat (
  id bigint PRIMARY KEY, ma_xa text NOT NULL, so_to_ban_do integer NOT NULL, so_thua integer NOT NULL,
  dien_tich numeric(12,1) NOT NULL, muc_dich_su_dung text NOT NULL, dia_chi text,
  cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false,
  UNIQUE (ma_xa, so_to_ban_do, so_thua));
CREATE TABLE chu_su_dung (
  id bigint PRIMARY KEY, loai text NOT NULL, ho_ten text NOT NULL, loai_giay_to text, so_giay_to text,
  nam_sinh integer, dia_chi text, cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false);
CREATE TABLE giay_chung_nhan (
  id bigint PRIMARY KEY, so_phat_hanh text NOT NULL, so_vao_so text,
  thua_dat_id bigint NOT NULL REFERENCES thua_dat(id), chu_su_dung_id bigint NOT NULL REFERENCES chu_su_dung(id),
  ty_le_so_huu numeric(5,2) NOT NULL DEFAULT 100, ngay_cap date NOT NULL, trang_thai text NOT NULL,
  cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false);
"""
T0 = datetime(2025, 6, 1, 1, 0, tzinfo=UTC)
SHARED = datetime(2025, 6, 2, 3, 4, 5, 678901, tzinfo=UTC)  # five parcels share this instant
MINIMAL_ROWS: dict[str, list[tuple]] = {
    "thua_dat": [
        (1, "00001", 1, 1, Decimal("120.5"), "ODT", "Số 1 Phố Huế", T0, False),
        (2, "00001", 1, 2, Decimal("99999999999.9"), "LUC+CLN", None, SHARED, False),
        (3, "00001", 1, 3, Decimal("0.1"), "ONT", "Thôn Đông", SHARED, True),
        (4, "26734", 5, 1, Decimal("300.0"), "CLN", "Xã Mới", SHARED, False),
        (5, "26734", 5, 2, Decimal("45.0"), "ODT", None, SHARED, False),
        (6, "26734", 5, 3, Decimal("77.7"), "ODT", "Ngõ 5", SHARED, False),
        (7, "26734", 6, 1, Decimal("12.3"), "ONT", None, SHARED + timedelta(microseconds=1), False),
    ],
    "chu_su_dung": [
        (10, "CA_NHAN", "Nguyễn Văn An", "CCCD", "001090012345", 1990, "Hà Nội", T0, False),
        (11, "CA_NHAN", "Trần Thị Bình", None, None, None, None, SHARED, False),
        (12, "TO_CHUC", "Công ty TNHH Đất Việt", "MST", "0101234567", None, "Hải Phòng", SHARED, True),
    ],
    "giay_chung_nhan": [
        (20, "AA 01695788", "CS00123", 1, 10, Decimal("100.00"), date(2020, 1, 2), "HIEU_LUC", T0, False),
        (21, "BK 143443", None, 2, 10, Decimal("33.33"), date(2009, 5, 6), "HIEU_LUC", SHARED, False),
        (22, "BK 143443", None, 2, 11, Decimal("66.67"), date(2009, 5, 6), "HIEU_LUC", SHARED, False),
        (23, "AA 00000001", "CS00001", 4, 11, Decimal("100.00"), date(2015, 7, 8), "DA_CHUYEN_NHUONG", SHARED, True),
    ],
}


# --- backends --------------------------------------------------------------------------------------------
@dataclass
class LandDb:
    """One spec-following database: a DSN to read through, one that can write (to simulate edits)."""

    kind: str
    reader_dsn: str
    admin_dsn: str
    province: str  # the real province (sandbox) or a label
    saved: dict[tuple[str, int], tuple[datetime, bool]] = field(default_factory=dict)

    def query(self, text: str, params: Any = None) -> list[tuple]:
        conn = psycopg2.connect(self.admin_dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(text, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def current(self, table: str) -> dict[int, tuple[datetime, bool]]:
        return {i: (ts, d) for i, ts, d in self.query(f"SELECT id, cap_nhat_luc, da_xoa FROM {table}")}

    def ids(self, table: str) -> list[int]:
        return sorted(self.current(table))

    def save(self, table: str, ids: list[int]) -> None:
        """Keep the rows' update time and tombstone flag, to be put back after the test."""
        now = self.current(table)
        for i in ids:
            self.saved.setdefault((table, i), now[i])

    def touch(self, table: str, ids: list[int], at: datetime, deleted: bool | None = None) -> None:
        """An edit in the cadastral system (old values saved)."""
        self.save(table, ids)
        sets = "cap_nhat_luc = %s" + ("" if deleted is None else ", da_xoa = %s")
        params = (at,) + (() if deleted is None else (deleted,)) + (list(ids),)
        self.query(f"UPDATE {table} SET {sets} WHERE id = ANY(%s)", params)

    def restore(self) -> None:
        for (table, i), (ts, deleted) in self.saved.items():
            self.query(f"UPDATE {table} SET cap_nhat_luc = %s, da_xoa = %s WHERE id = %s", (ts, deleted, i))
        self.saved.clear()


def _server_dsn(admin_dsn: str, dbname: str) -> str:
    params = psycopg2.extensions.parse_dsn(admin_dsn)
    params["dbname"] = dbname
    return psycopg2.extensions.make_dsn(**params)


def create_minimal_db(any_admin_dsn: str, name: str) -> str:
    """A fresh database on the same server with only the spec's DDL and MINIMAL_ROWS."""
    dsn = ensure_database(_server_dsn(any_admin_dsn, "postgres"), name)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS giay_chung_nhan, chu_su_dung, thua_dat CASCADE")
            cur.execute(SPEC_DDL)
            for table, rows in MINIMAL_ROWS.items():
                cols = SPEC_COLUMNS[table]
                cur.executemany(
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})", rows
                )
    finally:
        conn.close()
    return dsn


@pytest.fixture(params=["sandbox", "spec_minimal"])
def land(request, sandbox: SandboxEndpoints) -> Iterator[LandDb]:
    if request.param == "sandbox":
        db = LandDb("sandbox", sandbox.land_dsns["31"], sandbox.land_admin_dsns["31"], "31")
    else:
        dsn = create_minimal_db(sandbox.land_admin_dsns["31"], "land_spec_minimal")
        db = LandDb("spec_minimal", dsn, dsn, "spec")
    yield db
    db.restore()


@pytest.fixture
def minimal(sandbox: SandboxEndpoints) -> Iterator[LandDb]:
    dsn = create_minimal_db(sandbox.land_admin_dsns["31"], "land_spec_minimal")
    yield LandDb("spec_minimal", dsn, dsn, "spec")


@pytest.fixture(scope="session")
def warehouse() -> str:
    return warehouse_url(load_settings())


@pytest.fixture
def runner(tmp_path: Path, warehouse: str, monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(tmp_path, warehouse, monkeypatch)


class Runner:
    """Runs `connectors.land.ingest.ingest` against a database under a fresh connection id."""

    def __init__(self, tmp_path: Path, warehouse: str, monkeypatch: pytest.MonkeyPatch):
        self.settings = Settings(data_dir=tmp_path, database_url=warehouse, land_provinces=())
        self.monkeypatch = monkeypatch
        self.runs = 0

    def register(self, dsn: str, extra: dict[str, Any] | None = None) -> str:
        alias = "t" + uuid.uuid4().hex[:10]
        p = psycopg2.extensions.parse_dsn(dsn)
        conn = {"conn_type": "postgres", "host": p.get("host"), "port": int(p["port"]) if p.get("port") else None,
                "schema": p.get("dbname"), "login": p.get("user"), "password": p.get("password"), "extra": extra}
        conn_id = self.settings.land_conn_id(alias)
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({k: v for k, v in conn.items() if v}))
        return alias

    def run(self, alias: str, **kw: Any) -> dict[str, Any]:
        self.runs += 1
        summary = land_ingest.ingest(f"run-{self.runs}", alias, self.settings, store=Ledger(self.settings.database_url), **kw)
        assert json.loads(json.dumps(summary)) == summary, "the summary is JSON-able"
        return summary

    def watermarks(self, alias: str) -> dict[str, str | None]:
        store = Ledger(self.settings.database_url)
        return {t: store.watermark(SOURCE, f"{alias}/{t}") for t in TABLES}


def landed(summary: dict[str, Any], table: str) -> list[dict[str, Any]]:
    path = summary["tables"][table]["landing_path"]
    return pq.read_table(path).to_pylist()


def landed_ids(summary: dict[str, Any], table: str) -> list[int]:
    return [int(r["_key"]) for r in landed(summary, table)]


def decode_payload(text: str) -> dict[str, Any]:
    row = json.loads(text, parse_float=Decimal)
    row["cap_nhat_luc"] = datetime.fromisoformat(row["cap_nhat_luc"].replace("Z", "+00:00"))
    if "ngay_cap" in row:
        row["ngay_cap"] = date.fromisoformat(row["ngay_cap"])
    return row


# --- full extract -------------------------------------------------------------------------------------------
def test_full_extract_lands_every_row_of_both_provinces_with_its_values(
    sandbox: SandboxEndpoints, sandbox_data: Path, runner: Runner
) -> None:
    assert sorted(sandbox.land_dsns) == ["01", "31"]
    for code, dsn in sandbox.land_dsns.items():
        alias = runner.register(dsn)
        summary = runner.run(alias, batch_size=40)
        for table in TABLES:
            expected = {r["id"]: r for r in pq.read_table(
                sandbox_data / "land" / code / f"{table}.parquet", columns=list(SPEC_COLUMNS[table])).to_pylist()}
            rows = landed(summary, table)
            got = {int(r["_key"]): decode_payload(r["payload"]) for r in rows}
            assert len(rows) == len(expected) == summary["tables"][table]["rows"], (code, table)
            assert got == expected, (code, table)
            assert all(r["_updated_at"] == json.loads(r["payload"])["cap_nhat_luc"] for r in rows)
            assert {r["_entity"] for r in rows} == {f"{alias}/{table}"}
            assert summary["tables"][table]["tombstones"] == sum(r["da_xoa"] for r in expected.values())
            assert summary["tables"][table]["pages"] >= math.ceil(len(expected) / 40)
            last = max(expected.values(), key=lambda r: (r["cap_nhat_luc"], r["id"]))
            assert Keyset.decode(summary["tables"][table]["watermark_to"]) == Keyset(last["cap_nhat_luc"], last["id"])
        assert Path(summary["tables"]["thua_dat"]["landing_path"]).is_relative_to(
            runner.settings.raw_dir / SOURCE / alias / "thua_dat")


def test_ingest_run_is_recorded_per_table_with_rows_and_watermarks(land: LandDb, runner: Runner) -> None:
    alias = runner.register(land.reader_dsn)
    summary = runner.run(alias)
    with connect(runner.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT scope, status, rows_landed, watermark_to, landing_path FROM {OPS_SCHEMA}.ingest_run"
                    " WHERE run_id = %s AND source = %s AND scope LIKE %s ORDER BY scope", ("run-1", SOURCE, alias + "/%"))
        recorded = cur.fetchall()
    assert recorded == sorted(
        (f"{alias}/{t}", "success", s["rows"], s["watermark_to"], s["landing_path"]) for t, s in summary["tables"].items()
    )


# --- keyset, boundaries, tombstones: both backends ----------------------------------------------------------
def test_rows_sharing_one_timestamp_across_batch_boundaries_are_all_landed(land: LandDb, runner: Runner) -> None:
    alias = runner.register(land.reader_dsn)
    runner.run(alias, overlap=timedelta(0))
    shared = land.ids("thua_dat")[:7]
    land.touch("thua_dat", shared, LATER)
    summary = runner.run(alias, batch_size=3, overlap=timedelta(0))
    assert sorted(landed_ids(summary, "thua_dat")) == shared
    assert summary["tables"]["thua_dat"]["pages"] == 3, "7 rows of one instant in batches of 3 span three batches"
    assert Keyset.decode(summary["tables"]["thua_dat"]["watermark_to"]) == Keyset(LATER, shared[-1])


def test_extractor_batches_split_one_instant_without_loss_or_repeat(land: LandDb) -> None:
    land.touch("chu_su_dung", land.ids("chu_su_dung")[:3], LATER)
    with LandRegistryExtractor(land.reader_dsn, batch_size=2) as ex:
        batches = list(ex.batches("chu_su_dung", Keyset(LATER - timedelta(seconds=1), 0)))
    keys = [int(k) for b in batches for k in b.keys.to_pylist()]
    assert keys == land.ids("chu_su_dung")[:3] and [len(b) for b in batches] == [2, 1]
    assert batches[0].last == Keyset(LATER, keys[1])


def test_fetched_answers_are_held_apart_and_turned_into_rows_later_in_any_thread(land: LandDb) -> None:
    # What the land ingest relies on: the next FETCH runs while an earlier answer is still being turned into
    # tuples (another thread); every answer keeps its own rows, and its length and last row are known at once.
    with LandRegistryExtractor(land.reader_dsn, batch_size=2) as ex:
        ex.check_schema()
        answers = list(ex.row_batches("thua_dat"))
        assert [len(a) for a in answers[:-1]] == [2] * (len(answers) - 1)
        lasts = [a[-1] for a in answers]  # known before rows()
        with ThreadPoolExecutor(max_workers=2) as pool:  # the last answer first, from other threads
            chunks = list(pool.map(lambda a: a.rows(), reversed(answers)))[::-1]
    rows = [r for chunk in chunks for r in chunk]
    assert [int(r[0]) for r in rows] == [int(i) for (i,) in land.query(
        "SELECT id FROM thua_dat ORDER BY cap_nhat_luc, id")], "every row once, in keyset order"
    assert lasts == [chunk[-1] for chunk in chunks], "each answer's last row, known before rows(), is its last"


def test_a_row_later_stamped_with_the_watermarks_own_instant_is_fetched_next_run_and_only_it(
    land: LandDb, runner: Runner
) -> None:
    alias = runner.register(land.reader_dsn)
    ids = land.ids("giay_chung_nhan")
    land.touch("giay_chung_nhan", ids[:2], LATER)
    first = runner.run(alias, overlap=timedelta(0))
    assert Keyset.decode(first["tables"]["giay_chung_nhan"]["watermark_to"]) == Keyset(LATER, ids[1])
    land.touch("giay_chung_nhan", [ids[2]], LATER)  # same instant, higher id: after the keyset
    second = runner.run(alias, overlap=timedelta(0))
    assert landed_ids(second, "giay_chung_nhan") == [ids[2]]
    assert second["tables"]["thua_dat"]["rows"] == second["tables"]["chu_su_dung"]["rows"] == 0


def test_overlap_catches_a_row_committed_late_with_an_older_timestamp_that_a_bare_keyset_misses(
    land: LandDb, runner: Runner
) -> None:
    alias = runner.register(land.reader_dsn)
    ids = land.ids("thua_dat")
    land.touch("thua_dat", [ids[-1]], LATER)
    runner.run(alias, overlap=timedelta(0))
    # a long transaction that started 5 minutes before the watermark commits only now
    land.touch("thua_dat", [ids[0]], LATER - timedelta(minutes=5))
    bare = runner.run(alias, overlap=timedelta(0))
    assert landed_ids(bare, "thua_dat") == [], "the documented pitfall: a bare keyset never sees it"
    safe = runner.run(alias, overlap=timedelta(minutes=10))
    assert sorted(landed_ids(safe, "thua_dat")) == sorted([ids[0], ids[-1]]), "the late row and the window"
    assert safe["tables"]["thua_dat"]["watermark_to"] == bare["tables"]["thua_dat"]["watermark_from"], \
        "re-reading the window never moves the watermark back"


def test_tombstones_are_landed_as_delete_markers(land: LandDb, runner: Runner) -> None:
    alias = runner.register(land.reader_dsn)
    runner.run(alias, overlap=timedelta(0))
    gone = land.ids("chu_su_dung")[:2]
    land.touch("chu_su_dung", gone, LATER, deleted=True)
    summary = runner.run(alias, overlap=timedelta(0))
    rows = landed(summary, "chu_su_dung")
    assert sorted(int(r["_key"]) for r in rows) == gone
    assert all(json.loads(r["payload"])["da_xoa"] is True for r in rows)
    assert summary["tables"]["chu_su_dung"]["tombstones"] == 2


def test_a_full_extract_keeps_existing_tombstones(land: LandDb, runner: Runner) -> None:
    land.touch("giay_chung_nhan", land.ids("giay_chung_nhan")[:1], LATER, deleted=True)
    alias = runner.register(land.reader_dsn)
    summary = runner.run(alias)
    expected = {i for i, (_, deleted) in land.current("giay_chung_nhan").items() if deleted}
    got = {int(r["_key"]) for r in landed(summary, "giay_chung_nhan") if json.loads(r["payload"])["da_xoa"]}
    assert got == expected and len(expected) >= 1
    assert summary["tables"]["giay_chung_nhan"]["rows"] == len(land.ids("giay_chung_nhan"))


def test_a_parcel_and_its_certificate_changed_together_mid_extract_are_seen_both_or_neither(
    land: LandDb, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cert_id, parcel_id), = land.query("SELECT id, thua_dat_id FROM giay_chung_nhan ORDER BY id LIMIT 1")
    land.save("thua_dat", [parcel_id])
    land.save("giay_chung_nhan", [cert_id])
    changed = []
    real_write = land_ingest.RawLanding.write_columns

    def write_then_edit(self, **kw):
        if not changed:  # the first batch of thua_dat has been read: the cadastral system edits now
            conn = psycopg2.connect(land.admin_dsn)
            try:
                with conn, conn.cursor() as cur:
                    # one business change: the parcel is removed and its certificate with it
                    cur.execute("UPDATE thua_dat SET cap_nhat_luc = %s, da_xoa = true WHERE id = %s",
                                (LATER, parcel_id))
                    cur.execute("UPDATE giay_chung_nhan SET cap_nhat_luc = %s, da_xoa = true WHERE id = %s",
                                (LATER, cert_id))
            finally:
                conn.close()
            changed.append(True)
        return real_write(self, **kw)

    alias = runner.register(land.reader_dsn)
    with monkeypatch.context() as patch:
        patch.setattr(land_ingest.RawLanding, "write_columns", write_then_edit)
        during = runner.run(alias, batch_size=2, overlap=timedelta(0))
    assert changed, "the edit happened while the extract was running"
    parcel = [decode_payload(r["payload"]) for r in landed(during, "thua_dat") if int(r["_key"]) == parcel_id]
    cert = [decode_payload(r["payload"]) for r in landed(during, "giay_chung_nhan") if int(r["_key"]) == cert_id]
    assert parcel[0]["cap_nhat_luc"] < LATER and parcel[0]["da_xoa"] is False
    assert cert[0]["cap_nhat_luc"] < LATER and cert[0]["da_xoa"] is False, \
        "the certificate, read after the edit committed, still comes from the run's snapshot"
    after = runner.run(alias, overlap=timedelta(0))
    assert landed_ids(after, "thua_dat") == [parcel_id] and landed_ids(after, "giay_chung_nhan") == [cert_id]
    assert after["tables"]["thua_dat"]["tombstones"] == after["tables"]["giay_chung_nhan"]["tombstones"] == 1


def test_extractor_session_refuses_writes_even_for_a_login_that_may_write(land: LandDb) -> None:
    before = land.query("SELECT count(*) FROM thua_dat WHERE da_xoa")
    with LandRegistryExtractor(land.admin_dsn) as ex:
        assert ex.conn is not None
        with ex.conn.cursor() as cur:
            cur.execute("SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')")
            assert cur.fetchone() == ("repeatable read", "on")
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction, match="read-only transaction"):
                cur.execute("UPDATE thua_dat SET da_xoa = true")
    assert land.query("SELECT count(*) FROM thua_dat WHERE da_xoa") == before


# --- incremental at scale, failures (sandbox) -------------------------------------------------------------
def test_incremental_run_after_touching_one_percent_fetches_only_those_and_the_overlap_window(
    sandbox: SandboxEndpoints, runner: Runner
) -> None:
    db = LandDb("sandbox", sandbox.land_dsns["31"], sandbox.land_admin_dsns["31"], "31")
    try:
        alias = runner.register(db.reader_dsn)
        first = runner.run(alias)
        overlap = land_ingest.DEFAULT_OVERLAP
        touched: dict[str, list[int]] = {}
        window: dict[str, set[int]] = {}
        for table in TABLES:
            ids = db.ids(table)
            touched[table] = ids[:: 100][: max(1, len(ids) // 100)]
            wm = Keyset.decode(first["tables"][table]["watermark_to"])
            window[table] = {i for i, (ts, _) in db.current(table).items() if ts >= wm.ts - overlap}
            db.touch(table, touched[table], LATER)
        second = runner.run(alias)
        for table in TABLES:
            assert set(landed_ids(second, table)) == set(touched[table]) | window[table], table
            assert len(window[table]) < first["tables"][table]["rows"] / 10, "the window is a small re-read"
    finally:
        db.restore()


@pytest.mark.parametrize("fail_at", ["landing the last table", "committing the last table"])
def test_watermark_does_not_advance_when_landing_fails(
    land: LandDb, runner: Runner, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    alias = runner.register(land.reader_dsn)
    runner.run(alias, overlap=timedelta(0))
    before = runner.watermarks(alias)
    for table in TABLES:
        land.touch(table, land.ids(table)[:1], LATER)
    method = "write_columns" if fail_at.startswith("landing") else "commit"
    real = getattr(land_ingest.RawLanding, method)

    def failing(self, *args, **kw):
        if self.entity.endswith("/giay_chung_nhan"):
            raise OSError(f"disk full while {fail_at}")
        return real(self, *args, **kw)

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(land_ingest.RawLanding, method, failing)
        runner.run(alias, overlap=timedelta(0))
    assert runner.watermarks(alias) == before, "no table's watermark moved"
    with connect(runner.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT scope, status, error FROM {OPS_SCHEMA}.ingest_run WHERE run_id = 'run-2' AND scope LIKE %s",
                    (alias + "/%",))
        statuses = cur.fetchall()
    assert {s for _, s, _ in statuses} == {"failed"} and len(statuses) == 3
    assert all("disk full" in e for *_, e in statuses)
    assert not list(runner.settings.raw_dir.rglob("*.tmp-*")), "aborted parts are removed"
    retry = runner.run(alias, overlap=timedelta(0))
    for table in TABLES:
        assert landed_ids(retry, table) == land.ids(table)[:1], "nothing was lost: the retry lands the change"


# --- the connection's extras ------------------------------------------------------------------------------
def test_the_connections_extras_are_in_effect_on_the_connectors_session(
    minimal: LandDb, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = runner.register(minimal.reader_dsn, extra={
        "application_name": "lienthong-land-extras-test", "options": "-c statement_timeout=4321 -c work_mem=8MB",
        "connect_timeout": 9, "keepalives": True, "target_session_attrs": "any",
        # not libpq's: Airflow's own and the land connector's, which read them itself
        "cursor": "dictcursor", "sqlalchemy_scheme": "postgresql+psycopg2", "batch_size": 2, "overlap_seconds": 0,
    })
    seen: dict[str, Any] = {}
    real = LandRegistryExtractor.check_schema

    def look(self: LandRegistryExtractor, tables: Any = TABLES) -> Any:
        with self.conn.cursor() as cur:  # the connector's own session, inside its snapshot
            cur.execute("SELECT application_name, current_setting('statement_timeout'), current_setting('work_mem'),"
                        " current_setting('transaction_read_only'), current_setting('transaction_isolation')"
                        " FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            seen["session"] = cur.fetchone()
        seen["connect_timeout"] = self.connect_timeout
        return real(self, tables)

    monkeypatch.setattr(LandRegistryExtractor, "check_schema", look)
    summary = runner.run(alias)
    assert seen["session"] == ("lienthong-land-extras-test", "4321ms", "8MB", "on", "repeatable read"), \
        "the extras are in effect and the connector's read-only snapshot still holds"
    assert seen["connect_timeout"] == 9
    assert summary["batch_size"] == 2 and summary["overlap_seconds"] == 0
    assert summary["tables"]["thua_dat"]["pages"] == math.ceil(len(MINIMAL_ROWS["thua_dat"]) / 2)


# --- spec-following but not the sandbox: drift and clock ---------------------------------------------------
def test_a_column_the_spec_does_not_name_is_landed_and_reported(minimal: LandDb, runner: Runner) -> None:
    minimal.query("ALTER TABLE thua_dat ADD COLUMN ghi_chu text DEFAULT 'đo lại 2024'")
    alias = runner.register(minimal.reader_dsn)
    summary = runner.run(alias)
    assert summary["tables"]["thua_dat"]["extra_columns"] == ["ghi_chu"]
    assert all(decode_payload(r["payload"])["ghi_chu"] == "đo lại 2024" for r in landed(summary, "thua_dat"))


def server_json(db: LandDb, table: str) -> dict[int, str]:
    """PostgreSQL's own rendering of every row (`row_to_json`, cap_nhat_luc as the connector's fixed UTC
    text): what the connector's client-side rendering must equal, byte for byte."""
    cols = [c for (c,) in db.query("SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                                   " AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]
    select = ", ".join(
        """to_char(cap_nhat_luc AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cap_nhat_luc"""
        if c == "cap_nhat_luc" else f'"{c}"' for c in cols
    )
    return dict(db.query(f"SET TIME ZONE 'UTC'; SELECT r.id, row_to_json(r)::text FROM (SELECT {select} FROM {table}) r"))


def test_payloads_are_byte_for_byte_what_row_to_json_gives(land: LandDb, runner: Runner) -> None:
    alias = runner.register(land.reader_dsn)
    summary = runner.run(alias, batch_size=500)
    for table in TABLES:
        got = {int(r["_key"]): r["payload"] for r in landed(summary, table)}
        assert got == server_json(land, table), table


def test_columns_of_any_type_the_spec_does_not_name_render_as_row_to_json_does(minimal: LandDb, runner: Runner) -> None:
    minimal.query("""
        DROP TYPE IF EXISTS hang_dat CASCADE;
        CREATE TYPE hang_dat AS ENUM ('I', 'II', 'III');
        ALTER TABLE thua_dat ADD COLUMN ghi_chu text, ADD COLUMN ky_hieu varchar(20), ADD COLUMN ma char(4),
          ADD COLUMN he_so float8, ADD COLUMN gia numeric, ADD COLUMN so_lan smallint, ADD COLUMN da_do boolean,
          ADD COLUMN do_luc timestamptz, ADD COLUMN ngay date, ADD COLUMN thoi_han interval, ADD COLUMN hang hang_dat,
          ADD COLUMN the text[], ADD COLUMN thuoc_tinh jsonb, ADD COLUMN ma_uuid uuid;
        UPDATE thua_dat SET ghi_chu = E'Số "7"\\\\A\nB\tC\x01 / </ \u00e9', ky_hieu = 'LUC', ma = 'ab', he_so = 'NaN',
          gia = 'Infinity', so_lan = -3, da_do = true, do_luc = '2024-02-29 23:59:59.5+07', ngay = '2024-02-29',
          thoi_han = '50 years', hang = 'II', the = ARRAY['a', 'b"c', NULL], thuoc_tinh = '{"z": 1, "a": [true, null]}',
          ma_uuid = '6f1c1c5e-8f6f-4b54-9d1c-0f0e1a2b3c4d' WHERE id = 1;
        UPDATE thua_dat SET he_so = 1e-300, gia = '-0.000100', ghi_chu = '' WHERE id = 2;
        UPDATE thua_dat SET he_so = '-Infinity', gia = 'NaN' WHERE id = 3;
    """)
    alias = runner.register(minimal.reader_dsn)
    summary = runner.run(alias)
    got = {int(r["_key"]): r["payload"] for r in landed(summary, "thua_dat")}
    assert got == server_json(minimal, "thua_dat")
    first = json.loads(got[1])
    assert first["ghi_chu"] == 'Số "7"\\A\nB\tC\x01 / </ é' and first["he_so"] == "NaN" and first["gia"] == "Infinity"
    assert first["the"] == ["a", 'b"c', None] and first["thuoc_tinh"] == {"a": [True, None], "z": 1}
    assert json.loads(got[2])["ghi_chu"] == "" and '"gia":-0.000100' in got[2], "numerics keep every digit"


def test_a_spec_column_vanishing_fails_the_run_and_keeps_the_watermarks(minimal: LandDb, runner: Runner) -> None:
    alias = runner.register(minimal.reader_dsn)
    runner.run(alias)
    before = runner.watermarks(alias)
    minimal.query("ALTER TABLE chu_su_dung DROP COLUMN so_giay_to")
    with pytest.raises(SchemaDriftError, match=r"'chu_su_dung' lacks the spec's columns \['so_giay_to'\]"):
        runner.run(alias)
    assert runner.watermarks(alias) == before


def test_a_key_that_is_not_an_integer_fails_the_run_naming_table_and_type(minimal: LandDb, runner: Runner) -> None:
    minimal.query("ALTER TABLE giay_chung_nhan DROP CONSTRAINT giay_chung_nhan_chu_su_dung_id_fkey;"
                  " ALTER TABLE chu_su_dung ALTER COLUMN id TYPE text")
    alias = runner.register(minimal.reader_dsn)
    with pytest.raises(SchemaDriftError, match=r"'chu_su_dung' has id of type 'text'.*the spec's key is a bigint"):
        runner.run(alias)
    assert runner.watermarks(alias) == dict.fromkeys(TABLES), "nothing moved"


def test_minimal_database_values_arrive_exactly(minimal: LandDb, runner: Runner) -> None:
    alias = runner.register(minimal.reader_dsn)
    summary = runner.run(alias, batch_size=2)
    for table, rows in MINIMAL_ROWS.items():
        expected = {r[0]: dict(zip(SPEC_COLUMNS[table], r, strict=True)) for r in rows}
        got = {int(r["_key"]): decode_payload(r["payload"]) for r in landed(summary, table)}
        assert got == expected, table
    assert '"dien_tich":99999999999.9' in landed(summary, "thua_dat")[1]["payload"], "numerics keep every digit"
    for table in MINIMAL_ROWS:
        for r in landed(summary, table):
            assert r["_record_hash"] == hashlib.sha256(r["payload"].encode("utf-8")).hexdigest()


def test_a_row_dated_in_the_future_does_not_push_the_watermark_past_the_source_clock(
    minimal: LandDb, runner: Runner
) -> None:
    alias = runner.register(minimal.reader_dsn)
    minimal.query("UPDATE thua_dat SET cap_nhat_luc = '2099-01-01T00:00:00Z' WHERE id = 1")  # a mistyped year
    first = runner.run(alias, overlap=timedelta(0))
    mark = Keyset.decode(first["tables"]["thua_dat"]["watermark_to"])
    assert mark.ts <= datetime.fromisoformat(first["snapshot_at"]) and mark.id is None
    minimal.query("UPDATE thua_dat SET cap_nhat_luc = now() WHERE id = 4")  # a real edit after the run
    second = runner.run(alias, overlap=timedelta(0))
    assert sorted(landed_ids(second, "thua_dat")) == [1, 4], "the real edit is seen (and the odd row again)"


def test_a_fetched_answer_is_not_mistaken_for_its_rows(land: LandDb) -> None:
    with LandRegistryExtractor(land.reader_dsn, batch_size=3) as ex:
        ex.check_schema()
        answer = next(iter(ex.row_batches("chu_su_dung")))
        assert len(answer) == 3
        with pytest.raises(TypeError, match="call rows"):
            list(answer)
        with pytest.raises(IndexError, match="last row only"):
            answer[0]
        rows = answer.rows()
    assert len(rows) == 3 and rows[-1] == answer[-1]
