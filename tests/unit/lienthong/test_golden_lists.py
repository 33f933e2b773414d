"""The golden records' member lists built for duplicate clusters only, the outside person's record chosen by a
window, and the outdated-commune examples as the three smallest keys (`integrate`: none of them an ordered
aggregate over every group, which cannot spill) give exactly the rows of the queries they replaced.

The replaced queries are kept here, frozen, as the reference: random sessions with duplicate clusters, people
outside the registry known from several records, and outdated commune codes, are run through both."""

from __future__ import annotations

import random
from datetime import date

import pyarrow as pa
import pytest

from lienthong.contracts import contract
from lienthong.duck import session
from lienthong.reconcile import integrate
from lienthong.reconcile.dedupe import DUPLICATE_SCHEMA
from lienthong.reconcile.people import LINK_SCHEMA

# --- the queries as they were before (frozen reference) ------------------------------------------------------

_OLD_MEMBERS = """
        WITH members AS (
          SELECT person_key, list(citizen_id ORDER BY citizen_id) AS citizen_ids FROM person_of_citizen GROUP BY 1
        ), registry AS (
          SELECT c.citizen_id AS person_key, true AS in_population_registry, c.citizen_id, c.legacy_id,
                 m.citizen_ids, c.full_name, 'population_registry' AS full_name_source,
                 c.birth_date::DATE AS birth_date, c.birth_date_precision, 'population_registry' AS birth_date_source,
                 c.sex, c.residence_commune_code, c.residence_commune_code_2025, c.status, c.death_date::DATE AS death_date
          FROM citizen c JOIN members m ON m.person_key = c.citizen_id
        ), outside AS (
          SELECT 'NR:' || r.id_given AS person_key, r.full_name, 'business_registry' AS src,
                 r.birth_date::DATE AS birth_date, 'day' AS precision, 1 AS rank, r.record_key
          FROM rep r JOIN person_link l ON l.record_key = r.record_key AND l.dataset = 'legal_representative'
          WHERE l.band <> 'accept' AND r.id_given IS NOT NULL AND length(r.id_given) = 12
          UNION ALL
          SELECT 'NR:' || h.document_number, h.name, 'land_registry',
                 make_date(h.birth_year, 1, 1), CASE WHEN h.birth_year IS NULL THEN NULL ELSE 'year' END, 2,
                 h.record_key
          FROM holder h JOIN person_link l ON l.record_key = h.record_key AND l.dataset = 'land_holder'
          WHERE l.band <> 'accept' AND h.holder_type = 'CA_NHAN' AND length(h.document_number) = 12
        ), outside_golden AS (
          SELECT person_key, false, NULL::VARCHAR, NULL::VARCHAR, []::VARCHAR[],
                 first(full_name ORDER BY rank, record_key) AS full_name,
                 first(src ORDER BY rank, record_key) AS full_name_source,
                 first(birth_date ORDER BY rank, record_key) AS birth_date,
                 first(precision ORDER BY rank, record_key),
                 first(CASE WHEN birth_date IS NULL THEN NULL ELSE src END ORDER BY rank, record_key),
                 NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::DATE
          FROM outside GROUP BY person_key
        ), golden AS (
          SELECT * FROM registry UNION ALL SELECT * FROM outside_golden
        ), roles AS (
          SELECT CASE WHEN band = 'accept' THEN person_key
                      WHEN length(document_number) = 12 THEN 'NR:' || document_number END AS person_key,
                 count(*) FILTER (WHERE dataset = 'legal_representative') AS representative_roles,
                 count(*) FILTER (WHERE dataset = 'land_holder') AS land_holder_records
          FROM person_link GROUP BY 1
        )
        SELECT g.*, coalesce(roles.representative_roles, 0) AS representative_roles,
               coalesce(roles.land_holder_records, 0) AS land_holder_records
        FROM golden g LEFT JOIN roles USING (person_key)
        WHERE g.person_key NOT IN (SELECT record_key FROM citizen_duplicates WHERE record_key <> survivor_key)
        ORDER BY g.person_key
"""

_OLD_ENTERPRISE = """
        WITH members AS (
          SELECT master_code, list(enterprise_code ORDER BY enterprise_code) AS codes
          FROM master_of_enterprise GROUP BY 1
        ), reps AS (
          SELECT m.master_code, count(*) AS n FROM rep r JOIN master_of_enterprise m USING (enterprise_code) GROUP BY 1
        ), land AS (
          SELECT right_id AS master_code, count(*) AS n FROM holder_organisation_links WHERE band = 'accept' GROUP BY 1
        )
        SELECT e.enterprise_code, list_filter(mem.codes, x -> x <> e.enterprise_code) AS duplicate_codes,
               e.name, e.english_name, e.legal_form, e.status, e.founded_on::DATE AS founded_on,
               e.charter_capital_vnd, e.head_office_address, e.head_office_commune_code,
               e.head_office_commune_code_2025, 'business_registry' AS source,
               coalesce(reps.n, 0) AS representatives, coalesce(land.n, 0) AS land_holder_records
        FROM enterprise e JOIN members mem ON mem.master_code = e.enterprise_code
        LEFT JOIN reps ON reps.master_code = e.enterprise_code
        LEFT JOIN land ON land.master_code = e.enterprise_code
        ORDER BY e.enterprise_code
"""

_OLD_COMMUNE_RULES = {
    "commune_code_outdated_citizen": """
SELECT 'commune_code_outdated', 'citizen',
       json_object('dataset', 'citizen', 'commune_code', residence_commune_code),
       json_object('commune_code_2025', min(residence_commune_code_2025), 'records', count(*),
                   'examples', list(citizen_id ORDER BY citizen_id)[1:3])
FROM citizen WHERE residence_commune_code <> residence_commune_code_2025 GROUP BY residence_commune_code
""",
    "commune_code_outdated_parcel": """
SELECT 'commune_code_outdated', 'parcel',
       json_object('dataset', 'parcel', 'province_code', province_code, 'commune_code', commune_code_original),
       json_object('commune_code_2025', min(commune_code_2025), 'records', count(*),
                   'examples', list(CAST(parcel_id AS VARCHAR) ORDER BY parcel_id)[1:3])
FROM parcel WHERE commune_code_original <> commune_code_2025 AND NOT coalesce(deleted, false)
GROUP BY province_code, commune_code_original
""",
}

# --- random sessions ------------------------------------------------------------------------------------------


def _staged(name: str, rows: list[dict]) -> pa.Table:
    schema = contract(name).arrow_schema()
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in schema]))


def _clusters(rng: random.Random, keys: list[str], n: int) -> list[dict]:
    """`n` disjoint duplicate clusters of 2-4 of `keys` (every member a row, the survivor too)."""
    pool = rng.sample(keys, len(keys))
    rows = []
    for _ in range(n):
        size = rng.randint(2, 4)
        members, pool = pool[:size], pool[size:]
        survivor = rng.choice(members)  # not always the smallest key: the lists must still be sorted
        rows += [{"record_key": k, "survivor_key": survivor, "cluster_size": len(members)} for k in members]
    return rows


def _link(left: str, right: str | None, band: str) -> dict:
    return {"left_id": left, "right_id": right, "method": "exact_id" if band == "accept" else "probabilistic",
            "score": None if band == "accept" else 0.5, "band": band, "runner_up_id": None, "runner_up_score": None}


def _inputs(seed: int) -> integrate.Inputs:
    rng = random.Random(seed)
    citizen_ids = sorted({f"{rng.randrange(10**11, 10**12):012d}" for _ in range(120)})
    outside_ids = [f"{rng.randrange(10**11, 10**12):012d}" for _ in range(8)]
    names = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Long", "Phạm Thị Hoa", "Vũ Đức Minh"]
    old_to_new = {"00001": "00001", "00004": "00007", "00010": "00010", "00013": "00019", "00016": "00019"}
    citizens = [{"citizen_id": c, "legacy_id": rng.choice([None, f"{rng.randrange(10**8, 10**9)}"]),
                 "full_name": rng.choice(names), "birth_date": date(rng.randint(1940, 2005), rng.randint(1, 12), 1),
                 "birth_date_precision": rng.choice(["day", "month", "year"]), "sex": rng.choice(["NAM", "NU"]),
                 "residence_commune_code": (old := rng.choice(sorted(old_to_new))),
                 "residence_commune_code_2025": old_to_new[old], "status": rng.choice(["DANG_SONG", "DA_CHET"])}
                for c in citizen_ids]
    codes = sorted({f"{rng.randrange(10**9, 10**10)}" for _ in range(40)})
    enterprises = [{"enterprise_code": e, "name": f"Công ty {e}", "status": "DANG_HOAT_DONG",
                    "founded_on": date(2000 + rng.randint(0, 20), 1, 1)} for e in codes]
    reps, rep_links = [], []
    for e in codes:
        for position in range(rng.randint(0, 3)):
            kind = rng.random()
            doc = (rng.choice(citizen_ids) if kind < 0.5 else rng.choice(outside_ids) if kind < 0.9
                   else f"{rng.randrange(10**8, 10**9)}")
            reps.append({"enterprise_code": e, "position": position, "full_name": rng.choice(names),
                         "document_type": "CCCD", "document_number": doc,
                         "birth_date": rng.choice([None, date(rng.randint(1950, 2000), 5, 5)]), "title": "Giám đốc"})
            band = "accept" if doc in citizen_ids and rng.random() < 0.9 else rng.choice(["review", "reject"])
            rep_links.append(_link(f"{e}#{position}", doc if band == "accept" else rng.choice([None, doc]), band))
    holders, holder_links, org_links = [], [], []
    for holder_id in range(60):
        person = rng.random() < 0.8
        doc = rng.choice(citizen_ids) if rng.random() < 0.4 else rng.choice(outside_ids)
        holders.append({"province_code": rng.choice(["01", "79"]), "holder_id": holder_id,
                        "holder_type": "CA_NHAN" if person else "TO_CHUC", "name": rng.choice(names),
                        "document_type": "CCCD", "document_number": doc if person else rng.choice(codes),
                        "birth_year": rng.choice([None, rng.randint(1940, 2000)]), "deleted": False})
        key = f"{holders[-1]['province_code']}:{holder_id}"
        if person:
            band = "accept" if doc in citizen_ids else rng.choice(["review", "reject"])
            holder_links.append(_link(key, doc if band == "accept" else None, band))
        else:
            org_links.append(_link(key, holders[-1]["document_number"], "accept"))
    parcels = [{"province_code": rng.choice(["01", "79"]), "parcel_id": p,
                "commune_code_original": (old := rng.choice(sorted(old_to_new))),
                "commune_code_2025": old_to_new[old], "deleted": rng.random() < 0.1} for p in range(90)]
    return integrate.Inputs(
        citizen=_staged("citizen", citizens), enterprise=_staged("enterprise", enterprises),
        legal_representative=_staged("legal_representative", reps), land_holder=_staged("land_holder", holders),
        parcel=_staged("parcel", parcels), certificate=_staged("certificate", []),
        citizen_duplicates=pa.Table.from_pylist(_clusters(rng, citizen_ids, 12), schema=DUPLICATE_SCHEMA),
        enterprise_duplicates=pa.Table.from_pylist(_clusters(rng, codes, 5), schema=DUPLICATE_SCHEMA),
        holder_duplicates=DUPLICATE_SCHEMA.empty_table(),
        representative_links=pa.Table.from_pylist(rep_links, schema=LINK_SCHEMA),
        holder_person_links=pa.Table.from_pylist(holder_links, schema=LINK_SCHEMA),
        holder_organisation_links=pa.Table.from_pylist(org_links, schema=LINK_SCHEMA))


@pytest.mark.parametrize("seed", range(6))
def test_the_masters_and_the_commune_findings_equal_the_ordered_aggregates_they_replace(seed):
    with session(purpose="test") as con:
        integrate.load(con, _inputs(seed))
        person = con.execute(integrate.OUTPUT_SQL["person_master"]).fetch_arrow_table()
        assert person.to_pylist() == con.execute(_OLD_MEMBERS).fetch_arrow_table().to_pylist()
        enterprise = con.execute(integrate.OUTPUT_SQL["enterprise_master"]).fetch_arrow_table()
        assert enterprise.to_pylist() == con.execute(_OLD_ENTERPRISE).fetch_arrow_table().to_pylist()
        for rule, old in _OLD_COMMUNE_RULES.items():
            new_rows = con.execute(integrate._FINDING_RULES[rule]).fetchall()
            assert sorted(new_rows) == sorted(con.execute(old).fetchall()), rule
            assert new_rows, rule  # outdated codes were drawn: the rule has something to say
        # what the equality is about was there: clusters with their lists, a person outside the registry
        # known from more than one record, an enterprise cluster, examples cut to three
        assert any(len(r["citizen_ids"]) > 1 for r in person.to_pylist())
        outside = con.execute("""SELECT count(*) FROM (SELECT r.id_given FROM rep r JOIN person_link l
                                   ON l.record_key = r.record_key WHERE l.band <> 'accept' AND length(r.id_given) = 12
                                   GROUP BY 1 HAVING count(*) > 1)""").fetchone()[0]
        assert outside > 0
        assert any(r["duplicate_codes"] for r in enterprise.to_pylist())
        assert any(len(_examples(row[3])) == 3 for row in new_rows)


def _examples(evidence: str) -> list:
    import json

    return json.loads(evidence)["examples"]
