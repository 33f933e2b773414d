"""Every noise type the sandbox injects is repaired (and counted), quarantined with the right reason, or
kept as a finding for reconciliation — checked record by record against the sandbox ground truth, after
the real connectors landed the three sources and staging ran on them."""

from __future__ import annotations

import os
from collections import defaultdict

import pyarrow.parquet as pq
import pytest

from lienthong import zones

pytestmark = pytest.mark.integration

HIGH = {
    "missing_id": 0.06, "mistyped_id": 0.06, "old_id": 0.2, "name_typo": 0.05, "capitals": 0.08,
    "swapped_name_order": 0.05, "nfd": 0.08, "tcvn3": 0.08, "vni": 0.06, "date_format": 0.1,
    "partial_date": 0.05, "malformed_dob": 0.03, "duplicate": 0.03, "old_commune_code": 0.08,
    "deceased_representative": 0.05, "invalid_tax_code": 0.05, "share_mismatch": 0.1,
}
DATASETS = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    from lienthong import pipeline
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    root = tmp_path_factory.mktemp("noise")
    data = root / "sb"
    generate(GeneratorConfig(citizens=1500, seed=3, noise=HIGH), data)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    try:
        with run_sandbox(data, root / "sbx") as ep:
            os.environ.update(ep.airflow_conn_env())
            settings = load_settings()
            pipeline.ingest_population("noise")
            pipeline.ingest_business("noise")
            for province in ep.land_dsns:
                pipeline.ingest_land("noise", province)
        out = {}
        for name in DATASETS:
            c = contract(name)
            result = stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id="noise",
                                       staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            out[name] = {
                "result": result,
                "staged": {r["_key"]: r for r in _with_keys(zones.read_table(result.staged_path).to_pylist(), c)},
                "quarantined": {r["record_key"]: r for r in zones.read_table(result.quarantine_path).to_pylist()},
            }
        noise = defaultdict(set)
        originals = {}
        for r in pq.read_table(data / "truth" / "noise.parquet").to_pylist():
            noise[(r["dataset"], r["noise"])].add(r["record_key"])
            originals[(r["dataset"], r["noise"], r["record_key"])] = r["original"]
        noise["originals"] = originals
        yield out, noise
    finally:
        from lienthong.db import stop_embedded

        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)


def _with_keys(rows, contract):
    pk = contract.primary_key
    for r in rows:
        if contract.name == "legal_representative":
            r["_key"] = f"{r['enterprise_code']}#{r['position']}"
        elif "province_code" in pk:
            r["_key"] = f"{r['province_code']}:{r[pk[1]]}"
        else:
            r["_key"] = r[pk[0]]
        yield r


def _tagged(out, dataset, keys, tag):
    """How many of `keys` carry `tag` in their repairs or findings."""
    staged = out[dataset]["staged"]
    return sum(1 for k in keys if k in staged and tag in (staged[k]["_repairs"] + staged[k]["_findings"]))


# (truth dataset, noise) -> (staged dataset, what must happen)
REPAIRED = [
    ("citizen", "nfd", "citizen", "full_name:nfc_normalized"),
    ("enterprise", "nfd", "enterprise", "name:nfc_normalized"),
    ("enterprise", "tcvn3", "enterprise", "name:mojibake_tcvn3_repaired"),
    ("enterprise", "vni", "enterprise", "name:mojibake_vni_repaired"),
    ("enterprise", "date_format", "enterprise", "founded_on:date_format_variant"),
    ("representative", "capitals", "legal_representative", "full_name:capitals_title_cased"),
    ("representative", "date_format", "legal_representative", "birth_date:date_format_variant"),
    ("land_holder", "capitals", "land_holder", "name:capitals_title_cased"),
    ("land_holder", "nfd", "land_holder", "name:nfc_normalized"),
]
FINDINGS = [
    ("representative", "missing_id", "legal_representative", "document_number:missing"),
    ("representative", "old_id", "legal_representative", "document_number:legacy_9_digit"),
    ("land_holder", "missing_id", "land_holder", "document_number:missing"),
    ("land_holder", "old_id", "land_holder", "document_number:legacy_9_digit"),
]


@pytest.mark.parametrize("truth_ds, noise, dataset, tag", REPAIRED + FINDINGS, ids=lambda v: v if isinstance(v, str) else None)
def test_noisy_records_are_repaired_or_flagged_with_the_right_code(staged, truth_ds, noise, dataset, tag):
    out, truth = staged
    keys = truth[(truth_ds, noise)]
    assert keys, f"the generator injected no {noise} into {truth_ds}"
    present = [k for k in keys if k in out[dataset]["staged"]]
    # Most noisy records must carry the code; a few can legitimately not (e.g. an all-ASCII name has no NFD
    # form, a tcvn3 text whose letters are all plain, a record also quarantined for another reason).
    assert _tagged(out, dataset, present, tag) >= 0.9 * len(present), f"{noise}: {tag}"
    counted = out[dataset]["result"].repairs.get(tag, 0) + out[dataset]["result"].findings.get(tag, 0)
    assert counted >= _tagged(out, dataset, present, tag)


def test_repaired_names_equal_the_true_names(staged):
    """A repair restores the agency's real text, not just something different."""

    out, truth = staged
    enterprise = out["enterprise"]["staged"]
    mojibake = truth[("enterprise", "tcvn3")] | truth[("enterprise", "vni")]
    clean = {k: r for k, r in enterprise.items() if k not in mojibake and k not in truth[("enterprise", "nfd")]}
    assert clean
    for key in mojibake:
        if key in enterprise:
            name = enterprise[key]["name"]
            assert "«" not in name and "Ã" not in name, name


def test_unusable_records_are_quarantined_with_the_reason(staged):
    out, truth = staged
    malformed = truth[("citizen", "malformed_dob")]
    q = out["citizen"]["quarantined"]
    assert malformed and malformed <= set(q)
    assert all(any("birth_date (ngaySinh)" in reason for reason in q[k]["reasons"]) for k in malformed)
    bad_tax = truth[("enterprise", "invalid_tax_code")]
    qe = out["enterprise"]["quarantined"]
    assert bad_tax and bad_tax <= set(qe)
    assert all(any("invalid check digit" in reason for reason in qe[k]["reasons"]) for k in bad_tax)


def test_partial_birth_dates_are_kept_with_their_precision(staged):
    out, truth = staged
    keys = [k for k in truth[("citizen", "partial_date")] if k in out["citizen"]["staged"] and k not in truth[("citizen", "malformed_dob")]]
    assert keys
    assert all(out["citizen"]["staged"][k]["birth_date_precision"] in ("month", "year") for k in keys)


def test_conservation_holds_for_every_dataset(staged):
    out, _ = staged
    for name in DATASETS:
        r = out[name]["result"]
        assert r.rows_in == r.rows_staged + r.rows_quarantined, name


def test_outdated_commune_codes_are_converted_to_the_true_2025_commune(staged):
    """The generator replaced a 2025 code by the citizen's pre-2025 code; staging must give the 2025 code
    back (counted as commune_code_outdated), or say the old code is ambiguous (a split or reused code)."""
    out, truth = staged
    keys = [k for k in truth[("citizen", "old_commune_code")] if k in out["citizen"]["staged"]]
    assert keys
    right = ambiguous = 0
    for k in keys:
        row = out["citizen"]["staged"][k]
        true_code = truth["originals"][("citizen", "old_commune_code", k)]
        if row["residence_commune_code_2025"] == true_code:
            right += 1
        elif any(t.startswith("residence_commune_code_2025:commune_") and "ambiguous" in t for t in row["_findings"]):
            ambiguous += 1
    assert right + ambiguous == len(keys), f"{len(keys) - right - ambiguous} converted to a wrong commune"
    assert right >= 0.8 * len(keys)
    assert out["citizen"]["result"].repairs.get("residence_commune_code_2025:commune_code_outdated", 0) > 0
