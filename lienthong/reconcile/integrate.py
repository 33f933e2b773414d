"""Build the integrated zone from the staged zone and the links: golden records, link tables, findings.

Owns the survivorship rules (which source each golden value comes from) and the finding rules. Everything
here is set-based SQL in one DuckDB connection over Arrow tables; nothing loops over rows in Python.

Survivorship (written here, and in each integrated contract's description):
- a person in the population registry: every attribute from the registry (it is the authority for
  identity); the duplicate records of one citizen collapse into the surviving record;
- a person known only from other sources (not in the registry, ID given): name and birth date from the
  business registry (a full date), else from the land registry (a birth year);
- an enterprise: the business registry's surviving record (its duplicates listed);
- a parcel: the land registry's record with its 2025 commune; the original commune code stays in the key.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from lienthong.datasets import STAGED
from lienthong.reconcile.idless import CANDIDATE_SCHEMA

log = logging.getLogger(__name__)

AGENCY = {
    "citizen": "population_registry",
    "enterprise": "business_registry",
    "legal_representative": "business_registry",
    "land_holder": "land_registry",
    "parcel": "land_registry",
    "certificate": "land_registry",
}
ACTIVE_ENTERPRISE = "DANG_HOAT_DONG"
CLOSED_ENTERPRISE = ("GIAI_THE", "PHA_SAN")
DECEASED = "DA_MAT"
VALID_CERTIFICATE = "HIEU_LUC"
SHARE_TOLERANCE = 0.1  # percentage points: 33.33 x 3 = 99.99 sums to 100


_BOOKKEEPING = ("_source_run_id", "_record_hash", "_ingested_at", "_repairs", "_findings", "run")


def _plain(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in _BOOKKEEPING if c in table.column_names and c not in ("_repairs",)])


@dataclass
class Links:
    """What the reconciliation derived from the staged tables: the duplicate clusters and the links."""

    citizen_duplicates: pa.Table
    enterprise_duplicates: pa.Table
    holder_duplicates: pa.Table
    representative_links: pa.Table  # left_id '<code>#<pos>' -> right_id citizen_id
    holder_person_links: pa.Table  # left_id '<prov>:<id>' -> right_id citizen_id
    holder_organisation_links: pa.Table  # left_id '<prov>:<id>' -> right_id surviving enterprise code
    # ID-less person holders left to review: left_id -> the sorted candidate citizen IDs (`idless.link_idless`)
    idless_candidates: pa.Table | None = None


@dataclass(kw_only=True)
class Inputs(Links):
    """The staged tables and the links one reconciliation works from (tests and tools that hold them all as
    Arrow tables; the run reads the staged versions into its session and hands over `Links` only)."""

    citizen: pa.Table
    enterprise: pa.Table
    legal_representative: pa.Table
    land_holder: pa.Table
    parcel: pa.Table
    certificate: pa.Table


def load(con: duckdb.DuckDBPyConnection, inputs: Inputs) -> None:
    """The inputs as tables of the session `con` (a `lienthong.duck` session), with the shared macro and
    the person tables every builder below reads."""
    for name in STAGED:
        load_staged_table(con, name, getattr(inputs, name))
    load_links(con, inputs)


def load_staged_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Staged Arrow table `table` as table `name` of `con`, without the ingestion bookkeeping columns."""
    con.register(f"{name}_in", _plain(table))
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_in")
    con.unregister(f"{name}_in")


def load_links(con: duckdb.DuckDBPyConnection, links: Links) -> None:
    """The duplicates and links as tables of `con`, whose staged tables are already there (`load`, or
    `reconcile.run` reading the staged versions straight into the session), and the derived person tables."""
    candidates = links.idless_candidates if links.idless_candidates is not None \
        else CANDIDATE_SCHEMA.empty_table()
    for name in ("citizen_duplicates", "enterprise_duplicates", "holder_duplicates", "representative_links",
                 "holder_person_links", "holder_organisation_links"):
        # Materialised, not left as views over Python objects: a query that scans registered Arrow
        # tables from several DuckDB threads can stall waiting for the GIL.
        con.register(f"{name}_in", getattr(links, name))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_in")
        con.unregister(f"{name}_in")
    con.register("idless_candidates_in", candidates.select(CANDIDATE_SCHEMA.names))
    con.execute("CREATE TABLE idless_candidates AS SELECT * FROM idless_candidates_in")
    con.unregister("idless_candidates_in")
    con.execute("""
        CREATE MACRO fold(s) AS regexp_replace(replace(replace(strip_accents(lower(s)), 'đ', 'd'), 'ð', 'd'), '\\s+', ' ', 'g');
        CREATE TABLE person_of_citizen AS
          SELECT c.citizen_id, coalesce(d.survivor_key, c.citizen_id) AS person_key
          FROM citizen c LEFT JOIN citizen_duplicates d ON d.record_key = c.citizen_id;
        CREATE TABLE master_of_enterprise AS
          SELECT e.enterprise_code, coalesce(d.survivor_key, e.enterprise_code) AS master_code
          FROM enterprise e LEFT JOIN enterprise_duplicates d ON d.record_key = e.enterprise_code;
        CREATE TABLE rep AS
          SELECT r.*, r.enterprise_code || '#' || r.position AS record_key,
                 CASE WHEN length(r.document_number) = 9 THEN NULL ELSE r.document_number END AS id_given
          FROM legal_representative r;
        CREATE TABLE holder AS
          SELECT h.*, h.province_code || ':' || h.holder_id AS record_key
          FROM land_holder h WHERE NOT coalesce(h.deleted, false);
        -- the person records of the two person sources, in one shape, then one row per link
        CREATE TABLE person_record AS
          SELECT 'legal_representative' AS dataset, record_key, full_name AS name, document_number,
                 birth_date::DATE AS birth_date, year(birth_date)::INTEGER AS birth_year FROM rep
          UNION ALL
          SELECT 'land_holder', record_key, name, document_number, NULL::DATE, birth_year::INTEGER
          FROM holder WHERE holder_type = 'CA_NHAN';
        CREATE TABLE person_link AS
          WITH l AS (
            SELECT 'legal_representative' AS dataset, * FROM representative_links
            UNION ALL SELECT 'land_holder', * FROM holder_person_links
          )
          SELECT l.dataset, l.left_id AS record_key, l.right_id AS citizen_id, p.person_key, l.method, l.score,
                 l.band, l.runner_up_id, l.runner_up_score, r.name, r.document_number, r.birth_date, r.birth_year
          FROM l JOIN person_record r ON r.dataset = l.dataset AND r.record_key = l.left_id
          LEFT JOIN person_of_citizen p ON p.citizen_id = l.right_id;
    """)


# A list aggregate, ordered or not (and `first ... ORDER BY`), keeps each group's values in memory outside
# DuckDB's buffer manager: it cannot spill, so over one group per citizen it needs memory that grows with the country
# whatever the session's limit (measured: a relink at 1M citizens ran out of a 512 MB limit here). So the
# lists are built for the groups that have more than one member (duplicate clusters, a few per cent) and every
# other row is its own one-element list; a choice of one row per group is a window (`QUALIFY`), which spills.
# (The notes "lists for clusters only" below point here.)


_PERSON_MASTER_SQL = """
        WITH members AS (   -- the citizen IDs of a duplicate cluster's person (lists for clusters only)
          SELECT person_key, list(citizen_id ORDER BY citizen_id) AS citizen_ids FROM person_of_citizen
          WHERE person_key IN (SELECT person_key FROM person_of_citizen WHERE person_key <> citizen_id) GROUP BY 1
        ), registry AS (   -- the citizens that are their own person: a cluster's survivor, or alone
          SELECT c.citizen_id AS person_key, true AS in_population_registry, c.citizen_id, c.legacy_id,
                 coalesce(m.citizen_ids, [c.citizen_id]) AS citizen_ids, c.full_name,
                 'population_registry' AS full_name_source,
                 c.birth_date::DATE AS birth_date, c.birth_date_precision, 'population_registry' AS birth_date_source,
                 c.sex, c.residence_commune_code, c.residence_commune_code_2025, c.status, c.death_date::DATE AS death_date
          FROM citizen c JOIN person_of_citizen p ON p.citizen_id = c.citizen_id AND p.person_key = c.citizen_id
          LEFT JOIN members m ON m.person_key = c.citizen_id
        ), outside AS (   -- ID given, not in the registry, not linked to a citizen
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
        ), outside_golden AS (   -- name and birth date together from one record: the first by source rank,
                                 -- then record key (two records of one source must not leave it to row order);
                                 -- a window, not ordered aggregates (lists for clusters only)
          SELECT person_key, false, NULL::VARCHAR, NULL::VARCHAR, []::VARCHAR[], full_name, src AS full_name_source,
                 birth_date, precision, CASE WHEN birth_date IS NULL THEN NULL ELSE src END,
                 NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::DATE
          FROM outside QUALIFY row_number() OVER (PARTITION BY person_key ORDER BY rank, record_key) = 1
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


def person_master(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.execute(_PERSON_MASTER_SQL).fetch_arrow_table()


_ENTERPRISE_MASTER_SQL = """
        WITH members AS (   -- the codes of a duplicate cluster's enterprise (lists for clusters only)
          SELECT master_code, list(enterprise_code ORDER BY enterprise_code) AS codes
          FROM master_of_enterprise
          WHERE master_code IN (SELECT master_code FROM master_of_enterprise WHERE master_code <> enterprise_code)
          GROUP BY 1
        ), reps AS (
          SELECT m.master_code, count(*) AS n FROM rep r JOIN master_of_enterprise m USING (enterprise_code) GROUP BY 1
        ), land AS (
          SELECT right_id AS master_code, count(*) AS n FROM holder_organisation_links WHERE band = 'accept' GROUP BY 1
        )
        SELECT e.enterprise_code,
               coalesce(list_filter(mem.codes, x -> x <> e.enterprise_code), []::VARCHAR[]) AS duplicate_codes,
               e.name, e.english_name, e.legal_form, e.status, e.founded_on::DATE AS founded_on,
               e.charter_capital_vnd, e.head_office_address, e.head_office_commune_code,
               e.head_office_commune_code_2025, 'business_registry' AS source,
               coalesce(reps.n, 0) AS representatives, coalesce(land.n, 0) AS land_holder_records
        FROM enterprise e   -- the enterprises that are their own master: a cluster's survivor, or alone
        JOIN master_of_enterprise me ON me.enterprise_code = e.enterprise_code AND me.master_code = e.enterprise_code
        LEFT JOIN members mem ON mem.master_code = e.enterprise_code
        LEFT JOIN reps ON reps.master_code = e.enterprise_code
        LEFT JOIN land ON land.master_code = e.enterprise_code
        ORDER BY e.enterprise_code
    """


def enterprise_master(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.execute(_ENTERPRISE_MASTER_SQL).fetch_arrow_table()


_PARCEL_MASTER_SQL = f"""
        WITH certs AS (
          SELECT province_code, parcel_id, count(*) AS n, sum(share_percent) AS share_total
          FROM certificate WHERE NOT coalesce(deleted, false) AND status = '{VALID_CERTIFICATE}' GROUP BY 1, 2
        )
        SELECT p.province_code, p.commune_code_original, p.map_sheet, p.parcel_number, p.parcel_id,
               p.commune_code_2025, p.area_m2, p.land_use, p.land_use_catalogue_version, p.address,
               coalesce(c.n, 0) AS valid_certificates, c.share_total
        FROM parcel p LEFT JOIN certs c USING (province_code, parcel_id)
        WHERE NOT coalesce(p.deleted, false)
        ORDER BY p.province_code, p.commune_code_original, p.map_sheet, p.parcel_number, p.parcel_id
    """


def parcel_master(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.execute(_PARCEL_MASTER_SQL).fetch_arrow_table()


_ENTERPRISE_REPRESENTATIVE_LINK_SQL = """
        SELECT r.enterprise_code, coalesce(m.master_code, r.enterprise_code) AS master_enterprise_code, r.position,
               r.title, l.citizen_id, CASE WHEN l.band = 'accept' THEN l.person_key END AS person_key,
               l.method, l.score, l.band
        FROM rep r JOIN person_link l ON l.dataset = 'legal_representative' AND l.record_key = r.record_key
        LEFT JOIN master_of_enterprise m ON m.enterprise_code = r.enterprise_code
        ORDER BY r.enterprise_code, r.position
    """


def representative_link(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.execute(_ENTERPRISE_REPRESENTATIVE_LINK_SQL).fetch_arrow_table()


_PARCEL_HOLDER_LINK_SQL = """
        WITH links AS (
          SELECT record_key, citizen_id, person_key, NULL::VARCHAR AS enterprise_code, method, score, band
          FROM person_link WHERE dataset = 'land_holder'
          UNION ALL
          SELECT left_id, NULL, NULL, right_id, method, score, band FROM holder_organisation_links
        )
        SELECT c.province_code, c.certificate_id, c.serial, c.parcel_id, c.holder_id, h.holder_type,
               CASE WHEN l.band = 'accept' THEN l.person_key END AS person_key,
               CASE WHEN l.band = 'accept' THEN l.enterprise_code END AS enterprise_code,
               l.method, l.score, l.band, c.share_percent, c.status AS certificate_status
        FROM certificate c
        JOIN holder h ON h.province_code = c.province_code AND h.holder_id = c.holder_id
        LEFT JOIN links l ON l.record_key = h.record_key
        WHERE NOT coalesce(c.deleted, false)
        ORDER BY c.province_code, c.certificate_id
    """


def holder_link(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.execute(_PARCEL_HOLDER_LINK_SQL).fetch_arrow_table()


# The integrated tables, each the query that builds it from the session `load` filled.
OUTPUT_SQL = {
    "person_master": _PERSON_MASTER_SQL,
    "enterprise_master": _ENTERPRISE_MASTER_SQL,
    "parcel_master": _PARCEL_MASTER_SQL,
    "enterprise_representative_link": _ENTERPRISE_REPRESENTATIVE_LINK_SQL,
    "parcel_holder_link": _PARCEL_HOLDER_LINK_SQL,
}


# --- the clustering for the entity registry -----------------------------------------------------------------


CLUSTER_ROWS_SQL = """
        SELECT 'person' AS kind, p.person_key AS cluster_key, 'citizen' AS dataset, c.citizen_id AS record_key,
               list_filter([CASE WHEN c.legacy_id IS NOT NULL THEN 'legacy:' || c.legacy_id END,
                            'nbd:' || fold(c.full_name) || '|' || coalesce(CAST(c.birth_date::DATE AS VARCHAR), '')
                              || '|' || coalesce(c.household_id, '')], x -> x IS NOT NULL) AS continuity
        FROM citizen c JOIN person_of_citizen p USING (citizen_id)
        UNION ALL
        SELECT * FROM (
          SELECT 'person', CASE WHEN band = 'accept' THEN person_key
                                WHEN length(document_number) = 12 THEN 'NR:' || document_number END AS cluster_key,
                 dataset, record_key, []::VARCHAR[]
          FROM person_link) WHERE cluster_key IS NOT NULL
        UNION ALL
        SELECT 'enterprise', m.master_code, 'enterprise', m.enterprise_code,
               ['nf:' || fold(e.name) || '|' || coalesce(CAST(e.founded_on::DATE AS VARCHAR), '')]
        FROM master_of_enterprise m JOIN enterprise e USING (enterprise_code)
        UNION ALL
        SELECT 'enterprise', right_id, 'land_holder', left_id, []::VARCHAR[]
        FROM holder_organisation_links WHERE band = 'accept' AND right_id IS NOT NULL
        UNION ALL
        SELECT 'parcel', province_code || ':' || CAST(parcel_id AS VARCHAR), 'parcel',
               province_code || ':' || CAST(parcel_id AS VARCHAR),
               ['sheet:' || province_code || '|' || coalesce(commune_code_2025, '') || '|' || coalesce(map_sheet, '')
                 || '|' || coalesce(CAST(parcel_number AS VARCHAR), '')]
        FROM parcel WHERE NOT coalesce(deleted, false)
    """
CLUSTER_ORDER = "kind, dataset, record_key"
# The clustering in its order. Run whole, the five sources with their joins feed one sort over all of them,
# which ran out of a 512 MB limit at 1M citizens; the reconciliation writes the rows to a table first
# (`CLUSTER_ROWS_SQL`) and sorts that, which does not (measured). The change path runs it on a few keys.
CLUSTERS_SQL = f"{CLUSTER_ROWS_SQL}        ORDER BY {CLUSTER_ORDER}\n"


def clusters(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The current clustering (`lienthong.entities.CLUSTER_SCHEMA`): which source records are one entity.

    - a person: the citizens of one surviving registry record (cluster = its `person_key`), with the
      representatives and person land holders linked to it (band accept); a person outside the registry is
      the records giving one 12-digit ID no citizen was linked to (cluster 'NR:' + the ID), as
      `person_master` has them. Citizens carry their continuity keys: the old 9-digit ID (`legacy:`) and
      folded name, birth date and household (`nbd:`), so an ID correction keeps the entity;
    - an enterprise: the business-registry records of one surviving enterprise (cluster = its code) and the
      organisation land holders linked to it; continuity key: folded name and founding date (`nf:`);
    - a parcel: its record (cluster = '<province>:<parcel id>'); continuity key: province, 2025 commune, map
      sheet and parcel number (`sheet:`)."""
    return con.execute(CLUSTERS_SQL).fetch_arrow_table()


# Each master's cluster key, as a DuckDB expression over its columns (the entity ID joins on it).
MASTER_CLUSTER = {
    "person_master": ("person", "person_key"),
    "enterprise_master": ("enterprise", "enterprise_code"),
    "parcel_master": ("parcel", "province_code || ':' || CAST(parcel_id AS VARCHAR)"),
}


# --- findings --------------------------------------------------------------------------------------------

# One query per rule: (type, dataset, subject, evidence). Rules are independent and timed one by one.
_FINDING_RULES: dict[str, str] = {
    # 1. an ID given that the registry does not hold (the record was linked, if at all, by the model)
    "id_not_in_population_registry": """
SELECT 'id_not_in_population_registry' AS type, l.dataset,
       json_object('dataset', l.dataset, 'record_key', l.record_key) AS subject,
       json_object('document_number', l.document_number, 'band', l.band,
                   'matched_citizen_id', CASE WHEN l.band = 'accept' THEN l.citizen_id END) AS evidence
FROM person_link l
WHERE l.method = 'probabilistic' AND l.document_number IS NOT NULL
""",
    # 2. / 3. same ID, different name or birth date
    "same_id_different_name": """
SELECT 'same_id_different_name', l.dataset, json_object('dataset', l.dataset, 'record_key', l.record_key),
       json_object('citizen_id', l.citizen_id, 'name_in_source', l.name, 'name_in_registry', c.full_name)
FROM person_link l JOIN citizen c ON c.citizen_id = l.citizen_id
WHERE l.method IN ('exact_id', 'legacy_id') AND fold(l.name) <> fold(c.full_name)
""",
    "same_id_different_birth_date": """
SELECT 'same_id_different_birth_date', l.dataset, json_object('dataset', l.dataset, 'record_key', l.record_key),
       json_object('citizen_id', l.citizen_id,
                   'birth_in_source', coalesce(CAST(l.birth_date AS VARCHAR), CAST(l.birth_year AS VARCHAR)),
                   'birth_in_registry', CAST(c.birth_date::DATE AS VARCHAR), 'registry_precision', c.birth_date_precision)
FROM person_link l JOIN citizen c ON c.citizen_id = l.citizen_id
WHERE l.method IN ('exact_id', 'legacy_id') AND (
      (l.birth_date IS NOT NULL AND c.birth_date_precision = 'day' AND l.birth_date <> c.birth_date::DATE)
   OR (l.birth_year IS NOT NULL AND l.birth_year <> year(c.birth_date)))
""",
    # 4. deceased legal representative of an active enterprise
    "deceased_legal_representative": f"""
SELECT 'deceased_legal_representative', 'legal_representative',
       json_object('enterprise_code', r.enterprise_code, 'position', CAST(r.position AS VARCHAR)),
       json_object('citizen_id', c.citizen_id, 'death_date', CAST(c.death_date::DATE AS VARCHAR),
                   'enterprise_status', e.status)
FROM rep r JOIN person_link l ON l.dataset = 'legal_representative' AND l.record_key = r.record_key AND l.band = 'accept'
JOIN citizen c ON c.citizen_id = l.citizen_id JOIN enterprise e ON e.enterprise_code = r.enterprise_code
WHERE c.status = '{DECEASED}' AND e.status = '{ACTIVE_ENTERPRISE}'
""",
    # 5. deceased person holds a valid certificate
    "deceased_certificate_holder": f"""
SELECT 'deceased_certificate_holder', 'certificate',
       json_object('province_code', ce.province_code, 'certificate_id', CAST(ce.certificate_id AS VARCHAR)),
       json_object('citizen_id', c.citizen_id, 'death_date', CAST(c.death_date::DATE AS VARCHAR),
                   'holder_id', CAST(h.holder_id AS VARCHAR), 'serial', ce.serial)
FROM certificate ce JOIN holder h ON h.province_code = ce.province_code AND h.holder_id = ce.holder_id
JOIN person_link l ON l.dataset = 'land_holder' AND l.record_key = h.record_key AND l.band = 'accept'
JOIN citizen c ON c.citizen_id = l.citizen_id
WHERE c.status = '{DECEASED}' AND ce.status = '{VALID_CERTIFICATE}' AND NOT coalesce(ce.deleted, false)
""",
    # 6. dissolved (or bankrupt) enterprise holds land
    "dissolved_enterprise_holds_land": f"""
SELECT 'dissolved_enterprise_holds_land', 'certificate',
       json_object('province_code', ce.province_code, 'certificate_id', CAST(ce.certificate_id AS VARCHAR)),
       json_object('enterprise_code', e.enterprise_code, 'enterprise_status', e.status, 'serial', ce.serial)
FROM certificate ce JOIN holder h ON h.province_code = ce.province_code AND h.holder_id = ce.holder_id
JOIN holder_organisation_links l ON l.left_id = h.record_key AND l.band = 'accept'
JOIN enterprise e ON e.enterprise_code = l.right_id
WHERE e.status IN {CLOSED_ENTERPRISE} AND ce.status = '{VALID_CERTIFICATE}' AND NOT coalesce(ce.deleted, false)
""",
    # 7. an old 9-digit ID resolved through the registry's old-ID field
    "legacy_id_resolved": """
SELECT 'legacy_id_resolved', l.dataset, json_object('dataset', l.dataset, 'record_key', l.record_key),
       json_object('legacy_id', c.legacy_id, 'citizen_id', l.citizen_id)
FROM person_link l JOIN citizen c ON c.citizen_id = l.citizen_id WHERE l.method = 'legacy_id'
""",
    # 8. a pre-2025 commune code still in use: one finding per source and old code, with the record count
    "commune_code_outdated_citizen": """
SELECT 'commune_code_outdated', 'citizen',
       json_object('dataset', 'citizen', 'commune_code', residence_commune_code),
       json_object('commune_code_2025', min(residence_commune_code_2025), 'records', count(*),
                   'examples', min(citizen_id, 3))
FROM citizen WHERE residence_commune_code <> residence_commune_code_2025 GROUP BY residence_commune_code
""",
    "commune_code_outdated_parcel": """
SELECT 'commune_code_outdated', 'parcel',
       json_object('dataset', 'parcel', 'province_code', province_code, 'commune_code', commune_code_original),
       json_object('commune_code_2025', min(commune_code_2025), 'records', count(*),
                   'examples', CAST(min(parcel_id, 3) AS VARCHAR[]))
FROM parcel WHERE commune_code_original <> commune_code_2025 AND NOT coalesce(deleted, false)
GROUP BY province_code, commune_code_original
""",
    # 9. duplicate records inside one source (one finding per cluster)
    "duplicate_records": """
SELECT 'duplicate_records', ds, json_object('dataset', ds, 'survivor_key', survivor_key),
       json_object('record_keys', list(record_key ORDER BY record_key))
FROM (SELECT 'citizen' AS ds, * FROM citizen_duplicates UNION ALL SELECT 'enterprise', * FROM enterprise_duplicates
      UNION ALL SELECT 'land_holder', * FROM holder_duplicates) GROUP BY ds, survivor_key
""",
    # 10. a probable match a person must confirm; an ID-less holder the registry does not single out lists
    # every candidate citizen (`idless.link_idless`)
    "match_needs_review": """
SELECT 'match_needs_review', dataset, json_object('dataset', dataset, 'record_key', record_key),
       CASE WHEN ic.candidates IS NULL
            THEN json_object('candidate', candidate, 'score', round(score, 4), 'runner_up', runner_up_id,
                             'runner_up_score', round(runner_up_score, 4), 'method', method)
            ELSE json_object('candidate', candidate, 'score', round(score, 4), 'runner_up', runner_up_id,
                             'runner_up_score', round(runner_up_score, 4), 'method', method,
                             'candidates', ic.candidates) END
FROM (SELECT dataset, record_key, citizen_id AS candidate, score, runner_up_id, runner_up_score, method
      FROM person_link WHERE band = 'review'
      UNION ALL
      SELECT 'land_holder', left_id, right_id, score, runner_up_id, runner_up_score, method
      FROM holder_organisation_links WHERE band = 'review') r
LEFT JOIN idless_candidates ic ON r.dataset = 'land_holder' AND ic.left_id = r.record_key
""",
    # 11. co-holders' shares of a parcel do not sum to 100
    "shares_do_not_sum_to_100": f"""
WITH valid AS (
  SELECT province_code, parcel_id, certificate_id, share_percent FROM certificate
  WHERE status = '{VALID_CERTIFICATE}' AND NOT coalesce(deleted, false)
), off AS (   -- the parcels first, by plain sums: the lists are built for those only (ordered list
              -- aggregates over every parcel cost twenty times more)
  SELECT province_code, parcel_id FROM valid GROUP BY province_code, parcel_id
  HAVING count(*) >= 2 AND abs(sum(share_percent) - 100) > {SHARE_TOLERANCE}
)
SELECT 'shares_do_not_sum_to_100', 'certificate',
       json_object('province_code', province_code, 'parcel_id', CAST(parcel_id AS VARCHAR)),
       json_object('shares', list(share_percent ORDER BY certificate_id), 'total', round(sum(share_percent), 2),
                   'certificates', list(CAST(certificate_id AS VARCHAR) ORDER BY certificate_id))
FROM valid SEMI JOIN off USING (province_code, parcel_id)
GROUP BY province_code, parcel_id
""",
}

# The agency that must act on a finding: the source of the record it names (the population registry is
# the identity authority, so a disagreement with it is for the other registry to fix).
_AGENCY_OF_DATASET = {**AGENCY}


def collect_findings(con: duckdb.DuckDBPyConnection) -> int:
    """Every rule's findings into table `found` of `con` (type, dataset, subject and evidence as JSON text),
    rule by rule (each timed); returns how many."""
    con.execute("CREATE OR REPLACE TABLE found (type VARCHAR, dataset VARCHAR, subject VARCHAR, evidence VARCHAR)")
    total = 0
    for rule, sql in _FINDING_RULES.items():
        t0 = time.monotonic()
        n = int((con.execute(f"INSERT INTO found {sql}").fetchone() or (0,))[0])
        log.info("finding rule %s: %d in %.1f s", rule, n, time.monotonic() - t0)
        total += n
    return total


def findings(con: duckdb.DuckDBPyConnection) -> list[Any]:
    """Every finding of this reconciliation, as `lienthong.findings.Finding` objects."""
    collect_findings(con)
    return as_findings(con.execute("SELECT * FROM found").fetchall())


def as_findings(rows: list[tuple]) -> list[Any]:
    """(type, dataset, subject JSON text, evidence JSON text) rows as `lienthong.findings.Finding` objects."""
    from lienthong.findings import Finding

    out = []
    for type_, dataset, subject, evidence in rows:
        subj = {k: str(v) for k, v in json.loads(subject).items()}
        out.append(Finding(type=type_, subject=subj, evidence=json.loads(evidence),
                           agency=_AGENCY_OF_DATASET.get(dataset)))
    return out
