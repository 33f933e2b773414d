"""Golden records, link tables and findings of a change run, recomputed only for the keys the change touches.

Owns the snapshot a reconciliation leaves for the next one (`<integrated>/_state/golden/<attempt>/`: the
integrated tables as `integrate.OUTPUT_SQL` built them, before their entity IDs, the clustering for the entity
registry (`integrate.CLUSTERS_SQL`), the findings, and the derived relations
they were built from: `person_link`, `holder_organisation_links`, `idless_candidates`, `citizen_duplicates`,
`enterprise_duplicates`), and the change path that uses it. The rules themselves stay in `integrate`: its
queries are run unchanged, over restricted copies of their input tables (schema `touched`, first on DuckDB's
search path), so there is one statement of each rule and the whole computation is what this must equal.

How a change run works, per output (`SPECS`):
1. The change: per staged input, the keys whose row may differ between the version the last successful
   reconciliation read and the new one (`stagedchange.changed_keys`), as tables
   `dx_<dataset>` holding the key columns of both the old and the new rows; per derived relation, the rows of
   the snapshot and of this run that differ (`dd_<relation>`, both sides, whole rows compared).
2. The touched keys of the output: every key any changed row, old or new, contributes to (`touched` SQL).
3. Restricted inputs: each table the output's query reads, cut to the rows that contribute to a touched key
   (`restrict` SQL; a table not cut is read whole, which is always correct).
4. The output's query over them, kept for the touched keys; the previous output's rows for the other keys
   carried over; the union ordered as the query orders it and written as the whole computation writes it
   (the previous rows cast to the recomputed types).

Why this equals the whole computation: an output row is a function of the input rows that contribute to its
key. A key no changed row contributes to has, by construction, the same contributing rows as in the last run,
so its row (or its absence) stands. A touched key's contributing rows all pass the restriction, so the query
builds its row as the whole query would. The mapping row -> key is stated once per (output, table) and used
for both steps. Findings work the same way per family of rules with one subject shape; the rules that
aggregate over a whole source (outdated commune codes, duplicate clusters, shares per parcel) are recomputed
whole: they cost a group-by each.

When the change path is not taken (mode `full`, with the reason in the metrics): no successful reconciliation
before, a relink, a caller outside the ledger (no basis), a snapshot or input version that is gone, or a
fingerprint that differs (the source of `integrate` or of this module, DuckDB's version).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from lienthong import zones
from lienthong.reconcile import integrate, stagedchange

log = logging.getLogger(__name__)

STATE = ("_state", "golden")
FINDINGS_FILE = "findings.parquet"
TOUCHED_SUFFIX = ".touched.parquet"  # + an output's name: the keys a change run recomputed (`touched_file`)
# The derived relations kept in the snapshot and compared with the run's own (whole rows).
RELATIONS = ("person_link", "holder_organisation_links", "idless_candidates", "citizen_duplicates",
             "enterprise_duplicates")
# The staged inputs compared with the version the last run read, and the key columns each change names.
STAGED_KEYS: dict[str, tuple[str, ...]] = {
    "citizen": ("citizen_id",),
    "enterprise": ("enterprise_code",),
    "legal_representative": ("enterprise_code", "position"),
    "land_holder": ("province_code", "holder_id"),
    "parcel": ("province_code", "parcel_id"),
    "certificate": ("province_code", "certificate_id", "parcel_id", "holder_id"),
}

# A person's key in `person_master` that a person link contributes to (its role): the linked person, or the
# person outside the registry its 12-digit ID names.
_ROLE_KEY = ("CASE WHEN band = 'accept' THEN person_key "
             "WHEN length(document_number) = 12 THEN 'NR:' || document_number END")
# The land holder records whose certificates a change touches: their own row, their links, their citizen.
_CHANGED_HOLDERS = """
    SELECT province_code || ':' || holder_id AS record_key FROM dx_land_holder
    UNION SELECT record_key FROM dd_person_link WHERE dataset = 'land_holder'
    UNION SELECT left_id FROM dd_holder_organisation_links"""


# The rows behind a certificate's key (`tk`: '<province>:<certificate id>'): the certificate, its holder, and
# the holder's person and organisation links.
_BY_CERTIFICATE = {
    "certificate": """SELECT * FROM main.certificate
                      SEMI JOIN tk ON province_code || ':' || CAST(certificate_id AS VARCHAR) = k""",
    "holder": """SELECT * FROM main.holder h SEMI JOIN touched.certificate c
                 ON h.province_code = c.province_code AND h.holder_id = c.holder_id""",
    "person_link": """SELECT * FROM main.person_link l SEMI JOIN touched.holder h
                      ON l.dataset = 'land_holder' AND l.record_key = h.record_key""",
    "holder_organisation_links": """SELECT * FROM main.holder_organisation_links o
                                    SEMI JOIN touched.holder h ON o.left_id = h.record_key""",
}


@dataclass(frozen=True)
class Spec:
    """One output (or family of finding rules): its key as an SQL expression over its rows, the SQL filling
    table `tk` (column `k`) with the touched keys, and per input table the SQL of its restricted rows
    (reading `tk`; `main.<table>` is the whole table)."""

    key: str
    touched: str
    restrict: dict[str, str]
    order: str = ""  # the output query's ORDER BY, over the output's columns


SPECS: dict[str, Spec] = {
    "person_master": Spec(
        order="person_key",
        key="person_key",
        touched=f"""
            SELECT citizen_id AS k FROM dx_citizen
            UNION SELECT p.person_key FROM main.person_of_citizen p SEMI JOIN dx_citizen d USING (citizen_id)
            UNION SELECT record_key FROM dd_citizen_duplicates UNION SELECT survivor_key FROM dd_citizen_duplicates
            UNION SELECT {_ROLE_KEY} FROM dd_person_link""",
        restrict={
            "citizen": "SELECT * FROM main.citizen SEMI JOIN tk ON citizen_id = k",
            "person_of_citizen": "SELECT * FROM main.person_of_citizen SEMI JOIN tk ON person_key = k",
            "citizen_duplicates": "SELECT * FROM main.citizen_duplicates SEMI JOIN tk ON record_key = k",
            "person_link": f"SELECT * FROM main.person_link SEMI JOIN tk ON ({_ROLE_KEY}) = k",
            "rep": """SELECT * FROM main.rep r SEMI JOIN touched.person_link l
                      ON l.dataset = 'legal_representative' AND l.record_key = r.record_key""",
            "holder": """SELECT * FROM main.holder h SEMI JOIN touched.person_link l
                         ON l.dataset = 'land_holder' AND l.record_key = h.record_key""",
        }),
    "enterprise_master": Spec(
        order="enterprise_code",
        key="enterprise_code",
        touched="""
            SELECT enterprise_code AS k FROM dx_enterprise
            UNION SELECT m.master_code FROM main.master_of_enterprise m SEMI JOIN dx_enterprise USING (enterprise_code)
            UNION SELECT record_key FROM dd_enterprise_duplicates UNION SELECT survivor_key FROM dd_enterprise_duplicates
            UNION SELECT enterprise_code FROM dx_legal_representative
            UNION SELECT m.master_code FROM main.master_of_enterprise m
                  SEMI JOIN dx_legal_representative USING (enterprise_code)
            UNION SELECT right_id FROM dd_holder_organisation_links""",
        restrict={
            "enterprise": "SELECT * FROM main.enterprise SEMI JOIN tk ON enterprise_code = k",
            "master_of_enterprise": "SELECT * FROM main.master_of_enterprise SEMI JOIN tk ON master_code = k",
            "rep": "SELECT * FROM main.rep SEMI JOIN touched.master_of_enterprise USING (enterprise_code)",
            "holder_organisation_links": "SELECT * FROM main.holder_organisation_links SEMI JOIN tk ON right_id = k",
        }),
    "parcel_master": Spec(
        order="province_code, commune_code_original, map_sheet, parcel_number, parcel_id",
        key="province_code || ':' || CAST(parcel_id AS VARCHAR)",
        touched="""
            SELECT province_code || ':' || CAST(parcel_id AS VARCHAR) AS k FROM dx_parcel
            UNION SELECT province_code || ':' || CAST(parcel_id AS VARCHAR) FROM dx_certificate""",
        restrict={
            "parcel": "SELECT * FROM main.parcel SEMI JOIN tk ON province_code || ':' || CAST(parcel_id AS VARCHAR) = k",
            "certificate": """SELECT * FROM main.certificate
                              SEMI JOIN tk ON province_code || ':' || CAST(parcel_id AS VARCHAR) = k""",
        }),
    "enterprise_representative_link": Spec(
        order="enterprise_code, position",
        key="enterprise_code || '#' || position",
        touched="""
            SELECT enterprise_code || '#' || position AS k FROM dx_legal_representative
            UNION SELECT record_key FROM dd_person_link WHERE dataset = 'legal_representative'
            UNION SELECT r.record_key FROM main.rep r WHERE r.enterprise_code IN (
                  SELECT enterprise_code FROM dx_enterprise UNION SELECT record_key FROM dd_enterprise_duplicates)""",
        restrict={
            "rep": "SELECT * FROM main.rep SEMI JOIN tk ON record_key = k",
            "person_link": """SELECT * FROM main.person_link l SEMI JOIN tk
                              ON l.dataset = 'legal_representative' AND l.record_key = k""",
            "master_of_enterprise": "SELECT * FROM main.master_of_enterprise SEMI JOIN touched.rep USING (enterprise_code)",
        }),
    "parcel_holder_link": Spec(
        order="province_code, certificate_id",
        key="province_code || ':' || CAST(certificate_id AS VARCHAR)",
        touched=f"""
            SELECT province_code || ':' || CAST(certificate_id AS VARCHAR) AS k FROM dx_certificate
            UNION SELECT c.province_code || ':' || CAST(c.certificate_id AS VARCHAR) FROM main.certificate c
                  WHERE c.province_code || ':' || c.holder_id IN ({_CHANGED_HOLDERS})""",
        restrict=_BY_CERTIFICATE),
    "clusters": Spec(
        order="kind, dataset, record_key",
        key="kind || '|' || dataset || '|' || record_key",
        touched="""
            SELECT 'person|citizen|' || citizen_id AS k FROM dx_citizen
            UNION SELECT 'person|citizen|' || record_key FROM dd_citizen_duplicates
            UNION SELECT 'person|' || dataset || '|' || record_key FROM dd_person_link
            UNION SELECT 'enterprise|enterprise|' || enterprise_code FROM dx_enterprise
            UNION SELECT 'enterprise|enterprise|' || record_key FROM dd_enterprise_duplicates
            UNION SELECT 'enterprise|land_holder|' || left_id FROM dd_holder_organisation_links
            UNION SELECT 'parcel|parcel|' || province_code || ':' || CAST(parcel_id AS VARCHAR) FROM dx_parcel""",
        restrict={
            "citizen": "SELECT * FROM main.citizen SEMI JOIN tk ON 'person|citizen|' || citizen_id = k",
            "person_of_citizen": """SELECT * FROM main.person_of_citizen
                                    SEMI JOIN tk ON 'person|citizen|' || citizen_id = k""",
            "person_link": "SELECT * FROM main.person_link SEMI JOIN tk ON 'person|' || dataset || '|' || record_key = k",
            "master_of_enterprise": """SELECT * FROM main.master_of_enterprise
                                       SEMI JOIN tk ON 'enterprise|enterprise|' || enterprise_code = k""",
            "enterprise": "SELECT * FROM main.enterprise SEMI JOIN tk ON 'enterprise|enterprise|' || enterprise_code = k",
            "holder_organisation_links": """SELECT * FROM main.holder_organisation_links
                                            SEMI JOIN tk ON 'enterprise|land_holder|' || left_id = k""",
            "parcel": """SELECT * FROM main.parcel
                         SEMI JOIN tk ON 'parcel|parcel|' || province_code || ':' || CAST(parcel_id AS VARCHAR) = k""",
        }),
}
# Each output's query: the integrated tables' and the clustering for the entity registry.
QUERIES = {**integrate.OUTPUT_SQL, "clusters": integrate.CLUSTERS_SQL}

# Findings: the families of rules with one subject shape, their rules (`integrate._FINDING_RULES` names) and
# how a finding's subject text is made from the key (the rules' own json_object, so equal keys are equal text).
_PERSON_LINK_KEY = "dataset || '|' || record_key"
FINDING_SPECS: dict[str, tuple[tuple[str, ...], str, Spec]] = {
    "person_link": (
        ("id_not_in_population_registry", "same_id_different_name", "same_id_different_birth_date",
         "legacy_id_resolved", "match_needs_review"),
        "json_object('dataset', split_part(k, '|', 1), 'record_key', substr(k, length(split_part(k, '|', 1)) + 2))",
        Spec(
            key=_PERSON_LINK_KEY,
            touched=f"""
                SELECT {_PERSON_LINK_KEY} AS k FROM dd_person_link
                UNION SELECT {_PERSON_LINK_KEY} FROM main.person_link SEMI JOIN dx_citizen USING (citizen_id)
                UNION SELECT 'land_holder|' || left_id FROM dd_holder_organisation_links
                UNION SELECT 'land_holder|' || left_id FROM dd_idless_candidates""",
            restrict={
                "person_link": f"SELECT * FROM main.person_link SEMI JOIN tk ON {_PERSON_LINK_KEY} = k",
                "citizen": "SELECT * FROM main.citizen SEMI JOIN touched.person_link USING (citizen_id)",
                "holder_organisation_links": """SELECT * FROM main.holder_organisation_links
                                                SEMI JOIN tk ON 'land_holder|' || left_id = k""",
                "idless_candidates": "SELECT * FROM main.idless_candidates SEMI JOIN tk ON 'land_holder|' || left_id = k",
            })),
    "representative": (
        ("deceased_legal_representative",),
        "json_object('enterprise_code', split_part(k, '#', 1), 'position', split_part(k, '#', 2))",
        Spec(
            key="enterprise_code || '#' || position",
            touched="""
                SELECT enterprise_code || '#' || position AS k FROM dx_legal_representative
                UNION SELECT record_key FROM dd_person_link WHERE dataset = 'legal_representative'
                UNION SELECT record_key FROM main.person_link
                      WHERE dataset = 'legal_representative' AND citizen_id IN (SELECT citizen_id FROM dx_citizen)
                UNION SELECT record_key FROM main.rep WHERE enterprise_code IN (SELECT enterprise_code FROM dx_enterprise)""",
            restrict={
                "rep": "SELECT * FROM main.rep SEMI JOIN tk ON record_key = k",
                "person_link": """SELECT * FROM main.person_link l SEMI JOIN tk
                                  ON l.dataset = 'legal_representative' AND l.record_key = k""",
                "citizen": "SELECT * FROM main.citizen SEMI JOIN touched.person_link USING (citizen_id)",
                "enterprise": "SELECT * FROM main.enterprise SEMI JOIN touched.rep USING (enterprise_code)",
            })),
    "certificate": (
        ("deceased_certificate_holder", "dissolved_enterprise_holds_land"),
        "json_object('province_code', split_part(k, ':', 1), 'certificate_id', split_part(k, ':', 2))",
        Spec(
            key="province_code || ':' || CAST(certificate_id AS VARCHAR)",
            touched=f"""
                SELECT province_code || ':' || CAST(certificate_id AS VARCHAR) AS k FROM dx_certificate
                UNION SELECT c.province_code || ':' || CAST(c.certificate_id AS VARCHAR) FROM main.certificate c
                      WHERE c.province_code || ':' || c.holder_id IN (
                        {_CHANGED_HOLDERS}
                        UNION SELECT record_key FROM main.person_link
                              WHERE dataset = 'land_holder' AND citizen_id IN (SELECT citizen_id FROM dx_citizen)
                        UNION SELECT left_id FROM main.holder_organisation_links
                              WHERE right_id IN (SELECT enterprise_code FROM dx_enterprise))""",
            restrict={
                **_BY_CERTIFICATE,
                "citizen": "SELECT * FROM main.citizen SEMI JOIN touched.person_link USING (citizen_id)",
                "enterprise": """SELECT * FROM main.enterprise e SEMI JOIN touched.holder_organisation_links o
                                 ON o.right_id = e.enterprise_code""",
            })),
}


def fingerprint() -> str:
    """What the snapshot's rows depend on besides the inputs: the rules (`integrate`'s source and this
    module's) and DuckDB's version."""
    import sys

    h = hashlib.sha256()
    for module in (integrate, sys.modules[__name__]):
        h.update(inspect.getsource(module).encode())
    h.update(duckdb.__version__.encode())
    return h.hexdigest()[:16]


def state_dir(integrated_dir: Path) -> Path:
    """Where the snapshots live: one folder per reconciliation attempt."""
    return Path(integrated_dir).joinpath(*STATE)


def new_snapshot(integrated_dir: Path, run_id: str) -> Path:
    """A fresh folder for this attempt's snapshot (a rerun of a run must not overwrite the one its first
    attempt left, which a later run may be reading as its basis)."""
    folder = state_dir(integrated_dir) / f"{hashlib.sha256(run_id.encode()).hexdigest()[:16]}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def drop_other_snapshots(integrated_dir: Path, kept: Path) -> None:
    """After a successful run: the snapshots of earlier runs and of attempts that did not finish go."""
    root = state_dir(integrated_dir)
    if root.is_dir():
        for path in root.iterdir():
            if path != kept:
                shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Basis:
    """What a change run brings the outputs up to date from: the staged refs the last successful
    reconciliation read, its snapshot folder and the fingerprint it was made under."""

    inputs: dict[str, str]
    snapshot: Path
    fingerprint: str


def basis_of(last: Any) -> Basis | None:
    """The basis a reconciliation's ledger record names (None: it names none)."""
    if last is None:
        return None
    metrics = last.metrics or {}
    state = metrics.get("golden_state") or {}
    inputs = {name: (info or {}).get("staged_path") for name, info in (metrics.get("inputs") or {}).items()}
    if not state.get("snapshot") or not all(inputs.values()):
        return None
    return Basis(inputs={k: str(v) for k, v in inputs.items()}, snapshot=Path(state["snapshot"]),
                 fingerprint=str(state.get("fingerprint")))


def full_reason(basis: Basis | None, staged: dict[str, str]) -> str | None:
    """Why the outputs are built whole (None: the change path can be taken)."""
    if basis is None:
        return "no basis (a first run, a relink, or a caller outside the ledger)"
    if basis.fingerprint != fingerprint():
        return "the rules or DuckDB changed since the snapshot was made"
    missing = [f for f in (*QUERIES, *RELATIONS, "findings")
               if not (basis.snapshot / f"{f}.parquet").is_file()]
    if missing:
        return f"the snapshot {basis.snapshot.name} lacks {', '.join(missing)}"
    for name in STAGED_KEYS:
        if name not in basis.inputs or name not in staged:
            return f"no staged version of {name} to compare"
        if not zones.readable(basis.inputs[name]):
            return f"staged version {basis.inputs[name]} is gone"
    return None


def write_snapshot(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """The derived relations of session `con` into the snapshot folder (the outputs and the findings are
    written there by `build`)."""
    for name in RELATIONS:
        con.execute(f"COPY {name} TO {zones.sql_text(folder / f'{name}.parquet')} (FORMAT parquet)")


def _changed_keys(con: duckdb.DuckDBPyConnection, name: str, new: str, old: str) -> tuple[int, str]:
    """Table `dx_<name>`: the key columns (`STAGED_KEYS`) of the old and new rows of staged input `name` whose
    row may differ between versions `old` and `new` (`stagedchange.changed_keys`); returns how many keys and
    how they were found."""
    zones.register(con, f"n_{name}", new)
    zones.register(con, f"b_{name}", old)
    how = stagedchange.changed_keys(con, new, old, new_view=f"n_{name}", old_view=f"b_{name}", target=f"keys_{name}")
    cols = ", ".join(f'"{c}"' for c in STAGED_KEYS[name])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE dx_{name} AS
                    SELECT {cols} FROM n_{name} SEMI JOIN keys_{name} USING (_merge_key)
                    UNION SELECT {cols} FROM b_{name} SEMI JOIN keys_{name} USING (_merge_key)""")
    for view in (f"n_{name}", f"b_{name}"):
        con.execute(f"DROP VIEW {view}")
    n = int((con.execute(f"SELECT count(*) FROM keys_{name}").fetchone() or (0,))[0])
    con.execute(f"DROP TABLE keys_{name}")
    return n, how


def _changed_rows(con: duckdb.DuckDBPyConnection, name: str, snapshot: Path) -> int:
    """Table `dd_<name>`: the rows of derived relation `name` in the snapshot or in the session, not both."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW old_{name} AS SELECT * FROM read_parquet({zones.sql_text(snapshot / f'{name}.parquet')})")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE dd_{name} AS
                    (SELECT * FROM old_{name} EXCEPT ALL SELECT * FROM main.{name})
                    UNION ALL (SELECT * FROM main.{name} EXCEPT ALL SELECT * FROM old_{name})""")
    con.execute(f"DROP VIEW old_{name}")
    return int((con.execute(f"SELECT count(*) FROM dd_{name}").fetchone() or (0,))[0])


def _restricted(con: duckdb.DuckDBPyConnection, spec: Spec) -> int:
    """Table `tk` of touched keys and schema `touched` with the spec's restricted tables; returns how many
    keys."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE tk AS SELECT k FROM ({spec.touched}) WHERE k IS NOT NULL")
    con.execute("DROP SCHEMA IF EXISTS touched CASCADE")
    con.execute("CREATE SCHEMA touched")
    for table, sql in spec.restrict.items():
        con.execute(f"CREATE TABLE touched.{table} AS {sql}")
    return int((con.execute("SELECT count(*) FROM tk").fetchone() or (0,))[0])


def _query_restricted(con: duckdb.DuckDBPyConnection, target: str, sql: str) -> None:
    """Table `target` (in main) from `sql` run with the restricted tables first on the search path."""
    con.execute("SET search_path = 'touched,main'")
    try:
        con.execute(f"CREATE TEMP TABLE {target}_q AS {sql}")
    finally:
        con.execute("SET search_path = 'main'")


def _merge_output(con: duckdb.DuckDBPyConnection, name: str, spec: Spec, previous: Path, target: Path) -> dict[str, int]:
    """Output `name`: the previous file's rows for the untouched keys and the query's rows for the touched
    ones, ordered as the query orders them, written to `target`."""
    sql = QUERIES[name]
    _query_restricted(con, name, sql)
    described = con.execute(f"DESCRIBE {name}_q").fetchall()
    cast = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t, *_ in described)
    cols = ", ".join(f'"{c}"' for c, *_ in described)
    con.execute(f"""COPY (
        SELECT * FROM (
          SELECT {cast} FROM read_parquet({zones.sql_text(previous)}) ANTI JOIN tk ON ({spec.key}) = k
          UNION ALL
          SELECT {cols} FROM {name}_q SEMI JOIN tk ON ({spec.key}) = k)
        ORDER BY {spec.order}) TO {zones.sql_text(target)} (FORMAT parquet)""")
    recomputed = int((con.execute(f"SELECT count(*) FROM {name}_q SEMI JOIN tk ON ({spec.key}) = k").fetchone() or (0,))[0])
    con.execute(f"DROP TABLE {name}_q")
    return {"recomputed": recomputed}


def _merge_findings(con: duckdb.DuckDBPyConnection, previous: Path) -> dict[str, Any]:
    """Table `found`: the previous findings of the untouched subjects of each family, the families' rules
    over their restricted tables, and the whole-source rules recomputed whole."""
    rules = integrate._FINDING_RULES
    con.execute("CREATE OR REPLACE TABLE found (type VARCHAR, dataset VARCHAR, subject VARCHAR, evidence VARCHAR)")
    counts: dict[str, Any] = {}
    by_family = {rule: family for family, (names, _, _) in FINDING_SPECS.items() for rule in names}
    types = {rule: rule for rule in rules}
    types.update({"commune_code_outdated_citizen": "commune_code_outdated",
                  "commune_code_outdated_parcel": "commune_code_outdated"})
    whole = [rule for rule in rules if rule not in by_family]
    for family, (names, subject, spec) in FINDING_SPECS.items():
        counts[f"touched_{family}"] = _restricted(con, spec)
        con.execute(f"CREATE OR REPLACE TEMP TABLE ts AS SELECT DISTINCT {subject} AS subject FROM tk")
        kinds = ", ".join(zones.sql_text(types[n]) for n in names)
        con.execute(f"""INSERT INTO found SELECT type, dataset, subject, evidence FROM read_parquet({zones.sql_text(previous)})
                        WHERE type IN ({kinds}) AND subject NOT IN (SELECT subject FROM ts)""")
        con.execute("SET search_path = 'touched,main'")
        try:
            for rule in names:
                con.execute(f"INSERT INTO found SELECT * FROM ({rules[rule]}) AS f(type, dataset, subject, evidence) "
                            "WHERE f.subject IN (SELECT subject FROM ts)")
        finally:
            con.execute("SET search_path = 'main'")
    for rule in whole:
        t0 = time.monotonic()
        n = int((con.execute(f"INSERT INTO found {rules[rule]}").fetchone() or (0,))[0])
        log.info("finding rule %s (whole): %d in %.1f s", rule, n, time.monotonic() - t0)
    con.execute("DROP SCHEMA IF EXISTS touched CASCADE")
    counts["found"] = int((con.execute("SELECT count(*) FROM found").fetchone() or (0,))[0])
    return counts


def prepare_change(con: duckdb.DuckDBPyConnection, staged: dict[str, str], basis: Basis) -> dict[str, Any]:
    """The change since the basis, as tables of `con`: `dx_<input>` (staged keys, old and new rows) and
    `dd_<relation>` (derived rows in the snapshot or the session, not both); returns the counts (the caller
    checked `full_reason`)."""
    t0 = time.monotonic()
    metrics: dict[str, Any] = {"staged": {}, "relations": {}}
    for name in STAGED_KEYS:
        n, how = _changed_keys(con, name, staged[name], basis.inputs[name])
        metrics["staged"][name] = {"keys": n, "found_by": how}
    for name in RELATIONS:
        metrics["relations"][name] = _changed_rows(con, name, basis.snapshot)
    metrics["seconds"] = round(time.monotonic() - t0, 3)
    return metrics


def touched_file(folder: Path, name: str) -> Path:
    """Where a change run keeps the keys it recomputed of output `name` (column `k`)."""
    return Path(folder) / f"{name}{TOUCHED_SUFFIX}"


def build_outputs(con: duckdb.DuckDBPyConnection, folder: Path, basis: Basis) -> dict[str, Any]:
    """Every output file into `folder`, its touched keys recomputed and the others carried over from the
    basis's snapshot (after `prepare_change`), and each output's touched keys beside it (`touched_file`);
    returns per output the keys touched and rows recomputed."""
    metrics: dict[str, Any] = {}
    for name, spec in SPECS.items():
        t1 = time.monotonic()
        touched = _restricted(con, spec)
        # the touched keys, for the record of what the output's new version may differ in (`outputchange`)
        con.execute(f"COPY (SELECT CAST(k AS VARCHAR) AS k FROM tk) TO {zones.sql_text(touched_file(folder, name))} "
                    "(FORMAT parquet)")
        if touched == 0:  # no key touched: the output is the snapshot's, as the same query wrote it
            shutil.copyfile(basis.snapshot / f"{name}.parquet", folder / f"{name}.parquet")
            metrics[name] = {"touched": 0, "recomputed": 0, "seconds": round(time.monotonic() - t1, 3)}
            continue
        out = _merge_output(con, name, spec, basis.snapshot / f"{name}.parquet", folder / f"{name}.parquet")
        metrics[name] = {"touched": touched, **out, "seconds": round(time.monotonic() - t1, 3)}
    con.execute("DROP SCHEMA IF EXISTS touched CASCADE")
    return metrics


def build_findings(con: duckdb.DuckDBPyConnection, basis: Basis) -> dict[str, Any]:
    """Table `found` of `con`: the findings, the touched subjects' recomputed and the others carried over from
    the basis's snapshot (after `prepare_change`); then the change tables are dropped."""
    t1 = time.monotonic()
    metrics = _merge_findings(con, basis.snapshot / FINDINGS_FILE)
    metrics["seconds"] = round(time.monotonic() - t1, 3)
    for name in (*(f"dx_{n}" for n in STAGED_KEYS), *(f"dd_{n}" for n in RELATIONS), "tk", "ts"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    return metrics
