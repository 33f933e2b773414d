"""The scope of a profile build from the change (`profiles.AFFECTS`, `profiles.scope_sql`): every table a
dataset's query reads has its mapping to the driving keys, and the mappings reach the keys they should on a
small example in DuckDB."""

from __future__ import annotations

import re

import duckdb
import pytest

from lienthong import profiles
from lienthong.assets import INTEGRATED_DATASETS, STAGED_DATASETS
from lienthong.contracts import contract


@pytest.mark.parametrize("dataset", sorted(profiles.SQL_FROM_INTEGRATED))
def test_every_table_the_query_reads_has_a_mapping(dataset):
    sql = profiles.SQL_FROM_INTEGRATED[dataset](contract(dataset), (1, 3), True)
    read = {t for t in (*STAGED_DATASETS, *INTEGRATED_DATASETS) if re.search(rf"\b(FROM|JOIN)\s+{t}\b", sql)}
    assert read == set(profiles.AFFECTS[dataset]), dataset
    assert set(profiles.DRIVING_KEY[dataset]) <= set(contract(dataset).primary_key)


def test_a_scoped_query_is_restricted_to_the_scope():
    sql = profiles.parcel_register_sql(contract("parcel_register"), (0, 1), True)
    assert f"hash(province_code, parcel_id) IN (SELECT h FROM {profiles.SCOPE})" in sql
    assert "IN (SELECT h FROM" not in profiles.parcel_register_sql(contract("parcel_register"), (0, 1), False)


def test_changes_reach_the_driving_keys_through_the_tables_now():
    """An enterprise renamed reaches the citizens of the person who represents it; a parcel changed reaches
    the citizens holding it; nothing else."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE person_master AS SELECT * FROM (VALUES
                     ('P1', ['001', '002']), ('P2', ['003']), ('P3', ['004'])) t(person_key, citizen_ids)""")
    con.execute("""CREATE TABLE enterprise_representative_link AS SELECT * FROM (VALUES
                     ('E1', 'P1'), ('E2', 'P3')) t(master_enterprise_code, person_key)""")
    con.execute("""CREATE TABLE parcel_holder_link AS SELECT * FROM (VALUES
                     ('01', 'A', 'P2', NULL), ('01', 'B', NULL, 'E2')) t(province_code, parcel_id, person_key, enterprise_code)""")
    con.execute("CREATE TABLE d_enterprise_master AS SELECT 'E1' AS enterprise_code")
    con.execute("CREATE TABLE d_parcel_master AS SELECT '01' AS province_code, 'A' AS parcel_id")
    con.execute(f"CREATE TABLE {profiles.SCOPE} AS "
                + profiles.scope_sql("citizen_profile", ["enterprise_master", "parcel_master"]))
    want = {h for (h,) in con.execute("SELECT hash(c) FROM (VALUES ('001'), ('002'), ('003')) t(c)").fetchall()}
    assert {h for (h,) in con.execute(f"SELECT h FROM {profiles.SCOPE}").fetchall()} == want
    # the same changes for the enterprise and parcel datasets
    for dataset, key_sql in (("enterprise_profile", "SELECT hash('E1')"),
                             ("parcel_register", "SELECT hash('01', 'A')")):
        got = {h for (h,) in con.execute(profiles.scope_sql(dataset, ["enterprise_master", "parcel_master"])).fetchall()}
        assert {h for (h,) in con.execute(key_sql).fetchall()} <= got, dataset
    assert con.execute(profiles.scope_sql("citizen_profile", [])).fetchall() == []


@pytest.mark.parametrize("dataset", sorted(profiles.AFFECTS))
def test_the_scope_queries_read_only_the_link_columns_of_the_changed_rows(dataset):
    """`d_<table>` holds only `LINK_COLUMNS[table]`: every scope query binds against that."""
    con = duckdb.connect()
    for table, cols in profiles.LINK_COLUMNS.items():
        listed = ", ".join(f"{c} {'VARCHAR[]' if c == 'citizen_ids' else 'VARCHAR'}" for c in cols)
        con.execute(f"CREATE TABLE d_{table} ({listed})")
        extra = ", holder_id VARCHAR" if table == "parcel_holder_link" else ""  # the tables now: what the joins read
        con.execute(f"CREATE TABLE {table} ({listed}{extra})")
    assert con.execute(profiles.scope_sql(dataset, list(profiles.AFFECTS[dataset]))).fetchall() == []
