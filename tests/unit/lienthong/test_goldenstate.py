"""The change path of golden records and findings: its specs against the rules they restate, and when it is
refused (the equality with the whole computation is tested over change sequences in
tests/integration/lienthong/test_incremental_reconcile.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lienthong.reconcile import goldenstate, integrate


def _order_columns(sql: str) -> list[str]:
    tail = sql.rpartition("ORDER BY")[2]
    return [re.sub(r"^\w+\.", "", c.strip()) for c in tail.split(",")]


def test_every_output_has_a_spec_ordered_as_its_query():
    assert set(goldenstate.SPECS) == set(integrate.OUTPUT_SQL) | {"clusters"} == set(goldenstate.QUERIES)
    assert goldenstate.QUERIES["clusters"] is integrate.CLUSTERS_SQL
    for name, spec in goldenstate.SPECS.items():
        assert [c.strip() for c in spec.order.split(",")] == _order_columns(goldenstate.QUERIES[name]), name


def test_finding_families_name_existing_rules_once():
    rules = set(integrate._FINDING_RULES)
    named = [r for names, _, _ in goldenstate.FINDING_SPECS.values() for r in names]
    assert len(named) == len(set(named))
    assert set(named) <= rules
    # the rules left to the whole computation are the ones that aggregate over a source
    assert rules - set(named) == {"commune_code_outdated_citizen", "commune_code_outdated_parcel",
                                  "duplicate_records", "shares_do_not_sum_to_100"}


def test_a_finding_subject_made_from_a_key_is_the_rule_s_own_text():
    import duckdb

    con = duckdb.connect()
    cases = {
        "person_link": ("legal_representative|0101234567#1",
                        "json_object('dataset', 'legal_representative', 'record_key', '0101234567#1')"),
        "representative": ("0101234567#2", "json_object('enterprise_code', '0101234567', 'position', CAST(2 AS VARCHAR))"),
        "certificate": ("01:604", "json_object('province_code', '01', 'certificate_id', CAST(604 AS VARCHAR))"),
    }
    for family, (key, rule_text) in cases.items():
        subject = goldenstate.FINDING_SPECS[family][1]
        made = con.execute(f"SELECT {subject} FROM (SELECT ? AS k)", [key]).fetchone()[0]
        assert made == con.execute(f"SELECT {rule_text}").fetchone()[0], family


def _snapshot(folder: Path, skip: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*goldenstate.QUERIES, *goldenstate.RELATIONS, "findings"):
        if name != skip:
            (folder / f"{name}.parquet").write_bytes(b"")
    return folder


def test_the_change_path_is_refused_with_a_reason(tmp_path):
    staged = {name: f"/zone/{name}@v2" for name in goldenstate.STAGED_KEYS}
    assert "no basis" in goldenstate.full_reason(None, staged)
    basis = goldenstate.Basis(inputs={n: f"/zone/{n}@v1" for n in goldenstate.STAGED_KEYS},
                              snapshot=_snapshot(tmp_path / "a"), fingerprint="old")
    assert "changed since the snapshot" in goldenstate.full_reason(basis, staged)
    basis = goldenstate.Basis(inputs=basis.inputs, snapshot=_snapshot(tmp_path / "b", skip="person_link"),
                              fingerprint=goldenstate.fingerprint())
    assert "lacks person_link" in goldenstate.full_reason(basis, staged)
    basis = goldenstate.Basis(inputs=basis.inputs, snapshot=_snapshot(tmp_path / "c"),
                              fingerprint=goldenstate.fingerprint())
    assert "is gone" in goldenstate.full_reason(basis, staged)  # /zone/... is no table


def test_the_basis_is_what_the_last_run_recorded(tmp_path):
    assert goldenstate.basis_of(None) is None
    inputs = {n: {"staged_path": f"/zone/{n}@v1"} for n in goldenstate.STAGED_KEYS}
    last = SimpleNamespace(metrics={"inputs": inputs, "golden_state": {"snapshot": str(tmp_path), "fingerprint": "f"}})
    basis = goldenstate.basis_of(last)
    assert basis is not None and basis.snapshot == tmp_path and basis.fingerprint == "f"
    assert basis.inputs["citizen"] == "/zone/citizen@v1"
    # a run of code before the snapshots recorded none
    assert goldenstate.basis_of(SimpleNamespace(metrics={"inputs": inputs})) is None


def test_old_snapshots_go_after_a_successful_run(tmp_path):
    kept = goldenstate.new_snapshot(tmp_path, "r2")
    other = goldenstate.new_snapshot(tmp_path, "r1")
    assert kept != other and kept.parent == goldenstate.state_dir(tmp_path)
    goldenstate.drop_other_snapshots(tmp_path, kept)
    assert kept.is_dir() and not other.exists()


@pytest.mark.parametrize("name", list(goldenstate.SPECS))
def test_restricted_tables_are_tables_the_query_reads(name):
    sql = goldenstate.QUERIES[name]
    for table in goldenstate.SPECS[name].restrict:
        assert re.search(rf"\b{table}\b", sql), (name, table)
