"""Reconciliation on a real province: the three agency systems served by the sandbox, landed by the real
connectors, staged, then linked. Link accuracy is checked against the sandbox ground truth; every finding
type is planted on a clean record and found; a second run on unchanged data opens nothing new; fixing the
planted records resolves exactly their findings."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lienthong import zones

pytestmark = pytest.mark.integration

CITIZENS = 4000
SEED = 11


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """Generate, serve, ingest, stage and reconcile one province; yield what the tests need."""
    from province import ingested_province

    from lienthong import pipeline
    from lienthong.reconcile.sources import INPUT_DATASETS

    with ingested_province(tmp_path_factory.mktemp("reconcile"), citizens=CITIZENS, seed=SEED) as prov:
        stages = {name: pipeline.stage(name, "r1") for name in INPUT_DATASETS}
        summary = pipeline.reconcile("r1")
        yield {"root": prov["root"], "truth": prov["truth"], "stages": stages, "summary": summary}


def _tables(summary) -> dict[str, pa.Table]:
    return {name: zones.read_table(out["path"]) for name, out in summary["outputs"].items()}


def test_links_meet_the_accuracy_targets_against_ground_truth(province):
    from lienthong.linkscore import link_accuracy

    stages = province["stages"]
    acc = link_accuracy(_tables(province["summary"]), zones.read_table(stages["citizen"]["staged_path"]),
                        zones.read_table(stages["enterprise"]["staged_path"]), province["truth"],
                        staged_holders=zones.read_table(stages["land_holder"]["staged_path"]))
    assert acc["representative_citizen"]["linkable"] > 200
    assert acc["holder_citizen"]["linkable"] > 1500
    assert acc["representative_citizen"]["f1"] >= 0.99, acc["representative_citizen"]
    assert acc["holder_citizen"]["f1"] >= 0.99, acc["holder_citizen"]
    assert acc["all_auto_accepted_precision"] >= 0.995, acc
    assert acc["holder_enterprise"]["precision"] >= 0.995, acc["holder_enterprise"]
    # ID-less person holders are reported as their own row (a subset of holder_citizen)
    idless = acc["holder_citizen_idless"]
    assert 0 < idless["records"] < acc["holder_citizen"]["records"], idless
    assert idless["precision"] >= 0.99, idless


def test_integrated_zone_is_written_with_one_row_per_key_and_every_link_method(province):
    tables = _tables(province["summary"])
    assert set(tables) == {"person_master", "enterprise_master", "parcel_master", "enterprise_representative_link",
                           "parcel_holder_link"}
    pm = tables["person_master"]
    assert pm.num_rows > CITIZENS * 0.9
    assert len(pc.unique(pm["person_key"])) == pm.num_rows
    assert set(pc.unique(pm["full_name_source"]).to_pylist()) >= {"population_registry"}
    reps = tables["enterprise_representative_link"]
    methods = set(pc.unique(reps["method"]).to_pylist())
    assert {"exact_id", "legacy_id", "probabilistic"} <= methods
    assert set(pc.unique(reps["band"]).to_pylist()) <= {"accept", "review", "reject"}
    # an accepted link always names its person; exact links score 1
    accepted = reps.filter(pc.equal(reps["band"], "accept"))
    assert accepted["person_key"].null_count == 0
    exact = reps.filter(pc.equal(reps["method"], "exact_id"))
    assert pc.all(pc.equal(exact["score"], 1.0)).as_py()
    holders = tables["parcel_holder_link"]
    assert len(pc.unique(pc.binary_join_element_wise(holders["province_code"], pc.cast(holders["certificate_id"], pa.string()), ":"))) == holders.num_rows


def test_the_run_is_recorded_with_counts_and_findings(province):
    from lienthong.db import connect, warehouse_url
    from lienthong.findings import findings_summary

    with connect(warehouse_url()) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT status, counts, outputs FROM lienthong_ops.reconcile_run WHERE run_id = 'r1'")
            status, counts, outputs = cur.fetchone()
        summary = findings_summary(conn)
    assert status == "success"
    assert counts["person_master"] == province["summary"]["outputs"]["person_master"]["rows"]
    assert set(outputs) == set(province["summary"]["outputs"])
    types = {r["type"] for r in summary}
    # at default noise the sandbox plants these on its own
    assert {"duplicate_records", "legacy_id_resolved", "id_not_in_population_registry",
            "shares_do_not_sum_to_100"} <= types


# --- planted findings -------------------------------------------------------------------------------------


def _set(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    field = table.schema.field(column)
    return table.set_column(table.schema.get_field_index(column), field, pa.array(values, field.type))


def _row(table: pa.Table, column: str, value) -> int:
    idx = table[column].to_pylist().index(value)
    return idx


def _plant(staged: dict[str, pa.Table], base: dict[str, pa.Table]) -> tuple[dict[str, pa.Table], dict[str, dict]]:
    """Plant one instance of every finding type on clean records; return the tables and the expected
    subject of each planted finding."""
    from lienthong.reconcile.run import reconcile_tables
    from lienthong.settings import load_settings

    tables, _, _ = reconcile_tables(base, load_settings())
    reps_link = tables["enterprise_representative_link"].to_pylist()
    holder_link = tables["parcel_holder_link"].to_pylist()
    cit = {r["citizen_id"]: r for r in base["citizen"].to_pylist()}
    ent = {r["enterprise_code"]: r for r in base["enterprise"].to_pylist()}
    used: set[str] = set()
    out = dict(staged)
    expect: dict[str, dict] = {}

    def clean_rep(pred):
        for r in reps_link:
            c = cit.get(r["citizen_id"])
            if r["method"] == "exact_id" and c and c["citizen_id"] not in used and c["status"] == "CON_SONG" \
                    and c["birth_date_precision"] == "day" and pred(r, c):
                used.add(c["citizen_id"])
                used.add(f"{r['enterprise_code']}#{r['position']}")
                return r, c
        raise AssertionError("no clean representative to plant on")

    reps = out["legal_representative"]
    rep_keys = [f"{e}#{p}" for e, p in zip(reps["enterprise_code"].to_pylist(), reps["position"].to_pylist(), strict=True)]

    # same ID, different name
    r, _ = clean_rep(lambda r, c: True)
    i = rep_keys.index(f"{r['enterprise_code']}#{r['position']}")
    out["legal_representative"] = reps = _set(reps, "full_name", i, "Trương Thị Planted")
    expect["same_id_different_name"] = {"dataset": "legal_representative", "record_key": rep_keys[i]}
    # same ID, different birth date (a few days off, same year)
    r, c = clean_rep(lambda r, c: c["birth_date"].day < 20)
    i = rep_keys.index(f"{r['enterprise_code']}#{r['position']}")
    out["legal_representative"] = reps = _set(reps, "birth_date", i, c["birth_date"] + dt.timedelta(days=5))
    expect["same_id_different_birth_date"] = {"dataset": "legal_representative", "record_key": rep_keys[i]}
    # ID not in the registry: a well-formed ID nobody holds; the model still finds the person
    r, c = clean_rep(lambda r, c: True)
    i = rep_keys.index(f"{r['enterprise_code']}#{r['position']}")
    out["legal_representative"] = reps = _set(reps, "document_number", i, "099" + c["citizen_id"][3:])
    expect["id_not_in_population_registry"] = {"dataset": "legal_representative", "record_key": rep_keys[i]}
    # deceased legal representative of an active enterprise
    r, c = clean_rep(lambda r, c: ent.get(r["enterprise_code"], {}).get("status") == "DANG_HOAT_DONG")
    ci = _row(out["citizen"], "citizen_id", c["citizen_id"])
    out["citizen"] = _set(out["citizen"], "status", ci, "DA_MAT")
    expect["deceased_legal_representative"] = {"enterprise_code": r["enterprise_code"], "position": str(r["position"])}

    # deceased certificate holder / legacy ID resolved (land holders linked by exact ID, valid certificate)
    holders = out["land_holder"]
    hkeys = [f"{p}:{h}" for p, h in zip(holders["province_code"].to_pylist(), holders["holder_id"].to_pylist(), strict=True)]
    person_certs = [h for h in holder_link if h["holder_type"] == "CA_NHAN" and h["method"] == "exact_id"
                    and h["certificate_status"] == "HIEU_LUC" and h["person_key"] in cit
                    and cit[h["person_key"]]["status"] == "CON_SONG"]
    h = next(x for x in person_certs if x["person_key"] not in used)
    used.add(h["person_key"])
    ci = _row(out["citizen"], "citizen_id", h["person_key"])
    out["citizen"] = _set(out["citizen"], "status", ci, "DA_MAT")
    expect["deceased_certificate_holder"] = {"province_code": h["province_code"], "certificate_id": str(h["certificate_id"])}
    h = next(x for x in person_certs if x["person_key"] not in used and cit[x["person_key"]]["legacy_id"])
    used.add(h["person_key"])
    hi = hkeys.index(f"{h['province_code']}:{h['holder_id']}")
    out["land_holder"] = holders = _set(holders, "document_number", hi, cit[h["person_key"]]["legacy_id"])
    out["land_holder"] = holders = _set(holders, "document_type", hi, "CMND")
    expect["legacy_id_resolved"] = {"dataset": "land_holder", "record_key": hkeys[hi]}

    # dissolved enterprise holds land
    org = next(x for x in holder_link if x["holder_type"] == "TO_CHUC" and x["band"] == "accept"
               and x["certificate_status"] == "HIEU_LUC" and ent.get(x["enterprise_code"], {}).get("status") == "DANG_HOAT_DONG")
    ei = _row(out["enterprise"], "enterprise_code", org["enterprise_code"])
    out["enterprise"] = _set(out["enterprise"], "status", ei, "GIAI_THE")
    expect["dissolved_enterprise_holds_land"] = {"province_code": org["province_code"], "certificate_id": str(org["certificate_id"])}

    # co-holders' shares
    certs = out["certificate"]
    valid = certs.filter(pc.and_(pc.equal(certs["status"], "HIEU_LUC"), pc.invert(certs["deleted"])))
    counts = pa.TableGroupBy(valid, ["province_code", "parcel_id"]).aggregate([("share_percent", "sum"), ("certificate_id", "count")])
    co = counts.filter(pc.and_(pc.greater_equal(counts["certificate_id_count"], 2),
                               pc.less(pc.abs(pc.subtract(counts["share_percent_sum"], 100.0)), 0.05))).to_pylist()[0]
    ids = certs["certificate_id"].to_pylist()
    provs = certs["province_code"].to_pylist()
    parcels = certs["parcel_id"].to_pylist()
    k = next(j for j in range(len(ids)) if provs[j] == co["province_code"] and parcels[j] == co["parcel_id"])
    out["certificate"] = _set(certs, "share_percent", k, float(certs["share_percent"][k].as_py()) + 7.0)
    expect["shares_do_not_sum_to_100"] = {"province_code": co["province_code"], "parcel_id": str(co["parcel_id"])}

    # duplicate citizen record (new ID, everything else the same); outdated commune code on one citizen
    c = next(x for x in cit.values() if x["citizen_id"] not in used and x["birth_date_precision"] == "day")
    used.add(c["citizen_id"])
    ci = _row(out["citizen"], "citizen_id", c["citizen_id"])
    dup = out["citizen"].slice(ci, 1)
    new_id = c["citizen_id"][:6] + "999999"
    dup = _set(dup, "citizen_id", 0, new_id)
    dup = _set(dup, "legacy_id", 0, None)
    out["citizen"] = pa.concat_tables([out["citizen"], dup])
    expect["duplicate_records"] = {"dataset": "citizen", "survivor_key": c["citizen_id"]}

    from lienthong import adminunits

    present = set(out["citizen"]["residence_commune_code"].to_pylist())
    c = next(x for x in cit.values() if x["citizen_id"] not in used and x["residence_commune_code_2025"])
    old = next(o for o, conv in adminunits.conversions().items()
               if conv.default == c["residence_commune_code_2025"] and o not in present)
    ci = _row(out["citizen"], "citizen_id", c["citizen_id"])
    out["citizen"] = _set(out["citizen"], "residence_commune_code", ci, old)
    expect["commune_code_outdated"] = {"dataset": "citizen", "commune_code": old}

    # a match to review: the representative's ID is dropped and a namesake born the same day appears
    r, c = clean_rep(lambda r, c: True)
    i = rep_keys.index(f"{r['enterprise_code']}#{r['position']}")
    out["legal_representative"] = reps = _set(reps, "document_number", i, None)
    out["legal_representative"] = reps = _set(reps, "document_type", i, None)
    ci = _row(out["citizen"], "citizen_id", c["citizen_id"])
    twin = out["citizen"].slice(ci, 1)
    twin = _set(twin, "citizen_id", 0, c["citizen_id"][:6] + "888888")
    twin = _set(twin, "legacy_id", 0, None)
    twin = _set(twin, "household_id", 0, "HK-PLANTED-TWIN")
    out["citizen"] = pa.concat_tables([out["citizen"], twin])
    expect["match_needs_review"] = {"dataset": "legal_representative", "record_key": rep_keys[i]}
    return out, expect


@pytest.fixture(scope="module")
def planted(province):
    from lienthong.db import ensure_database, warehouse_url
    from lienthong.findings import Finding

    stages = province["stages"]
    base = {name: zones.read_table(s["staged_path"]) for name, s in stages.items()}
    tables, expect = _plant(base, base)
    url = ensure_database(warehouse_url(), "reconcile_planted")
    ids = {t: Finding(type=t, subject=subj).finding_id for t, subj in expect.items()}
    return {"base": base, "planted": tables, "expect": expect, "ids": ids, "url": url}


def _run(tables, run_id, url):
    from lienthong.db import connect
    from lienthong.findings import sync_findings
    from lienthong.reconcile.run import reconcile_tables
    from lienthong.settings import load_settings

    _, found, _ = reconcile_tables(tables, load_settings())
    with connect(url) as conn:
        return {f.finding_id for f in found}, sync_findings(conn, run_id, found)


def test_every_planted_finding_is_found_then_resolved_when_fixed(planted):
    from lienthong.db import connect
    from lienthong.findings import run_changes

    url, ids = planted["url"], planted["ids"]
    assert len(ids) == 11
    base_ids, _ = _run(planted["base"], "base", url)
    assert not set(ids.values()) & base_ids, "a planted finding exists before planting"

    found1, c1 = _run(planted["planted"], "planted-1", url)
    missing = {t: i for t, i in ids.items() if i not in found1}
    assert not missing, f"planted findings not found: {missing}"
    with connect(url) as conn:
        opened = set(run_changes(conn, "planted-1")["opened"])
    assert set(ids.values()) <= opened

    # the same data again: nothing new
    found2, c2 = _run(planted["planted"], "planted-2", url)
    assert c2["new"] == 0 and c2["reopened"] == 0, c2
    assert found2 == found1

    # What planting caused: the planted findings, plus the other certificates of the person marked deceased
    # and of the enterprise marked dissolved (one finding per valid certificate). Nothing else moved.
    caused = found1 - base_ids
    extra = {i.split(":")[0] for i in caused - set(ids.values())}
    assert extra <= {"deceased_certificate_holder", "dissolved_enterprise_holds_land"}, caused - set(ids.values())
    assert not (base_ids - found1), "planting made an unrelated finding disappear"

    # fixed: exactly what planting caused is resolved
    _, c3 = _run(planted["base"], "fixed", url)
    with connect(url) as conn:
        changes = run_changes(conn, "fixed")
    assert set(changes["resolved"]) == caused, set(changes["resolved"]) ^ caused
    assert c3["new"] == 0 and c3["reopened"] == 0


# --- publication of the integrated picture ---------------------------------------------------------------


@pytest.fixture(scope="module")
def published_all(province):
    from lienthong import pipeline
    from lienthong.assets import PUBLISHED_DATASETS

    for name in ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate"):
        pipeline.validate(name, "r1", province["stages"][name])
    return {name: pipeline.publish(name, "p1") for name in PUBLISHED_DATASETS}


def test_every_shared_dataset_is_published_with_nested_lists(province, published_all):
    from lienthong.db import connect, warehouse_url

    assert {r["status"] for r in published_all.values()} == {"published"}
    tables = _tables(province["summary"])
    reps = tables["enterprise_representative_link"].filter(pc.equal(tables["enterprise_representative_link"]["band"], "accept"))
    rep = reps.to_pylist()[0]
    with connect(warehouse_url()) as conn, conn.cursor() as cur:
        # the citizen's profile lists the enterprise they represent (jsonb in PostgreSQL)
        cur.execute("""SELECT e->>'enterprise_code' FROM published.citizen_profile p,
                       jsonb_array_elements(p.enterprises) e WHERE p.citizen_id = %s""", (rep["citizen_id"],))
        assert rep["master_enterprise_code"] in {r[0] for r in cur.fetchall()}
        cur.execute("""SELECT count(*) FROM published.enterprise_profile p, jsonb_array_elements(p.representatives) r
                       WHERE p.enterprise_code = %s AND r->>'citizen_id' = %s""",
                    (rep["master_enterprise_code"], rep["citizen_id"]))
        assert cur.fetchone()[0] == 1
        for name, result in published_all.items():
            cur.execute(f"SELECT count(*) FROM published.{name}")
            assert cur.fetchone()[0] == result["rows"] > 0, name
    again = __import__("lienthong.pipeline", fromlist=["publish"]).publish("parcel_register", "p2")
    assert again["status"] == "unchanged"


def test_manifest_checksums_verify_and_a_consumer_follows_the_pointer(province, published_all):
    import hashlib
    import json

    import duckdb

    from lienthong.settings import load_settings

    root = load_settings().published_dir / "citizen_profile"
    version = (root / "CURRENT").read_text().strip()
    manifest = json.loads((root / version / "_manifest.json").read_text())
    assert manifest["row_count"] == published_all["citizen_profile"]["rows"]
    for f in manifest["files"]:
        assert hashlib.sha256((root / version / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert "reconcile" in manifest["lineage"] and manifest["lineage"]["citizen"]["ingest_runs"]
    rows = duckdb.sql(f"SELECT count(*), count(enterprises) FROM read_parquet('{root / version}/*.parquet')").fetchone()
    assert rows[0] == manifest["row_count"] and rows[1] > 0
    schema = pq.read_schema(next((root / version).glob("*.parquet")))
    assert pa.types.is_list(schema.field("parcels").type) and pa.types.is_struct(schema.field("parcels").type.value_type)
