"""The sandbox land registries follow agency-systems.md §3: one database per province, the spec's
tables and constraints, every generated row loaded, and a login that can only read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
import pyarrow.parquet as pq
import pytest

from sandbox.land_db import COLUMNS, TABLES, provinces_in, touch_land
from sandbox.runner import SandboxEndpoints

pytestmark = pytest.mark.integration


def _rows(dsn: str, query: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_there_is_one_database_per_province_with_land_files(
    sandbox: SandboxEndpoints, sandbox_data: Path
) -> None:
    assert sorted(sandbox.land_dsns) == provinces_in(sandbox_data)
    for code, dsn in sandbox.land_dsns.items():
        assert _rows(dsn, "SELECT current_database(), current_user") == [(f"land_{code}", "land_reader")]


def test_every_parquet_row_is_loaded_with_its_values(sandbox: SandboxEndpoints, sandbox_data: Path) -> None:
    for code, dsn in sandbox.land_dsns.items():
        for table in TABLES:
            columns = COLUMNS[table]
            expected = pq.read_table(sandbox_data / "land" / code / f"{table}.parquet", columns=list(columns))
            got = _rows(dsn, f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
            want = sorted((tuple(r[c] for c in columns) for r in expected.to_pylist()), key=lambda r: r[0])
            assert got == want, (code, table)


def test_tables_have_the_spec_constraints(sandbox: SandboxEndpoints) -> None:
    dsn = next(iter(sandbox.land_dsns.values()))
    constraints = set(
        _rows(
            dsn,
            """SELECT rel.relname, con.contype, array_to_string(array_agg(att.attname ORDER BY att.attname), ',')
               FROM pg_constraint con
               JOIN pg_class rel ON rel.oid = con.conrelid
               JOIN pg_attribute att ON att.attrelid = rel.oid AND att.attnum = ANY(con.conkey)
               WHERE rel.relnamespace = 'public'::regnamespace AND con.contype IN ('p', 'u', 'f')
               GROUP BY rel.relname, con.conname, con.contype""",
        )
    )
    assert constraints == {
        ("thua_dat", "p", "id"),
        ("thua_dat", "u", "ma_xa,so_thua,so_to_ban_do"),
        ("chu_su_dung", "p", "id"),
        ("giay_chung_nhan", "p", "id"),
        ("giay_chung_nhan", "f", "thua_dat_id"),
        ("giay_chung_nhan", "f", "chu_su_dung_id"),
    }
    types = dict(
        _rows(
            dsn,
            """SELECT table_name || '.' || column_name, data_type || coalesce('(' || numeric_precision || ','
                      || numeric_scale || ')', '') || CASE is_nullable WHEN 'NO' THEN ' not null' ELSE '' END
               FROM information_schema.columns WHERE table_schema = 'public'""",
        )
    )
    assert types["thua_dat.dien_tich"] == "numeric(12,1) not null"
    assert types["thua_dat.cap_nhat_luc"] == "timestamp with time zone not null"
    assert types["giay_chung_nhan.ty_le_so_huu"] == "numeric(5,2) not null"
    assert types["chu_su_dung.nam_sinh"].startswith("integer(32,0)")
    assert types["giay_chung_nhan.ngay_cap"] == "date not null"


def test_cap_nhat_luc_is_indexed_on_every_table(sandbox: SandboxEndpoints) -> None:
    dsn = next(iter(sandbox.land_dsns.values()))
    indexed = {
        table
        for table, definition in _rows(
            dsn, "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
        if "(cap_nhat_luc)" in definition
    }
    assert indexed == set(TABLES)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO chu_su_dung (id, loai, ho_ten, cap_nhat_luc) VALUES (999999, 'CA_NHAN', 'X', now())",
        "UPDATE thua_dat SET da_xoa = true",
        "DELETE FROM giay_chung_nhan",
        "CREATE TABLE stolen (x int)",
    ],
)
def test_reader_role_cannot_write(sandbox: SandboxEndpoints, statement: str) -> None:
    conn = psycopg2.connect(next(iter(sandbox.land_dsns.values())))
    try:
        with pytest.raises((psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ReadOnlySqlTransaction)):
            with conn.cursor() as cur:
                cur.execute(statement)
    finally:
        conn.close()


def test_reader_role_cannot_write_even_outside_read_only_transactions(sandbox: SandboxEndpoints) -> None:
    conn = psycopg2.connect(next(iter(sandbox.land_dsns.values())))
    conn.autocommit = True
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            with conn.cursor() as cur:
                cur.execute("SET default_transaction_read_only = off")
                cur.execute("UPDATE thua_dat SET da_xoa = true")
    finally:
        conn.close()


def test_touch_land_changes_update_time_and_reader_sees_it(sandbox: SandboxEndpoints) -> None:
    code, dsn = next(iter(sandbox.land_dsns.items()))
    admin = sandbox.land_admin_dsns[code]
    (first_id, old_time, old_deleted), (second_id, *_) = _rows(
        dsn, "SELECT id, cap_nhat_luc, da_xoa FROM thua_dat ORDER BY id LIMIT 2"
    )
    at = datetime(2031, 1, 1, tzinfo=UTC)
    try:
        assert touch_land(admin, "thua_dat", [first_id, 987654321], at, deleted=True) == 1
        assert _rows(dsn, "SELECT id, da_xoa FROM thua_dat WHERE cap_nhat_luc >= %s", (at,)) == [
            (first_id, True)
        ]
    finally:
        touch_land(admin, "thua_dat", [first_id], old_time, deleted=old_deleted)
    with pytest.raises(ValueError, match="unknown land table"):
        touch_land(admin, "pg_authid", [1], at)
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        touch_land(dsn, "thua_dat", [second_id], at)
