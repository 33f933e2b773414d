"""Build the rows of the published datasets from the integrated zone (and the findings / quality stores).

Owns one builder per published dataset; each returns an Arrow table in its contract's schema (nested
lists as list<struct>), ordered by the primary key:

- `citizen_profile`: every staged citizen record with its person's entity ID, the enterprises the person
  represents and the parcels they hold through a valid certificate (links in the `accept` band only);
- `enterprise_profile`: the enterprise golden record with its representatives and land;
- `parcel_register`: the parcel golden record with its holders and certificates;
- `reconciliation_findings`: the findings store as it stands (every status, with its lifecycle);
- `quality_summary`: the current outcome of every quality rule per staged dataset (its latest validation).

All joins are DuckDB SQL over the zones' tables; the two store-backed datasets are read from PostgreSQL. They
describe the state of the stores, never which run last looked at them (no run ids, no "last seen" or
"evaluated at" times): a run that finds the same findings and the same quality outcomes builds the same rows,
so publication (by content fingerprint) writes no new version; a finding opened, resolved or reopened, or a
rule whose outcome or counts changed, does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from lienthong.contracts import Contract
from lienthong.duck import session

log = logging.getLogger(__name__)


def register(con: Any, paths: dict[str, str]) -> None:
    """The given zone tables (a Delta table version or a Parquet file, `lienthong.zones` references) as views
    of session `con`, under the names the builders' queries use."""
    from lienthong import zones

    for name, path in paths.items():
        zones.register(con, name, path)


def shaped(table: pa.Table, contract: Contract) -> pa.Table:
    """A builder query's rows in the contract's schema (its columns, in order, cast to their types)."""
    schema = contract.arrow_schema()
    return table.select(schema.names).cast(schema)


# Rows of a dataset's driving table per bucket of its build (`parts`): the nested lists are DuckDB aggregates
# ordered inside the list, held in memory per group; at 2M citizens one bucket ran out of DuckDB's 2 GB (and
# parcel_register out of 6 GB), measured.
ROWS_PER_PART = 200_000
DRIVING = {"citizen_profile": "citizen", "enterprise_profile": "enterprise_master", "parcel_register": "parcel_master"}


# The columns of the driving table that make a row of the dataset (a subset of its primary key): the hash of
# them puts a row in a bucket, and in the scope of a build from the change (`SCOPE`).
DRIVING_KEY = {"citizen_profile": ("citizen_id",), "enterprise_profile": ("enterprise_code",),
               "parcel_register": ("province_code", "parcel_id")}
# The session table a scoped build is restricted to: one column `h`, the hash of each driving key to build.
SCOPE = "_scope"


def parts(con: Any, dataset: str, *, scoped: bool = False) -> int:
    """How many buckets `dataset` is built in: one per `ROWS_PER_PART` rows of its driving table (of the
    scope's keys, `scoped`)."""
    row = con.execute(f"SELECT count(*) FROM {SCOPE if scoped else DRIVING[dataset]}").fetchone()
    return max(1, -(-int(row[0] if row else 0) // ROWS_PER_PART))


def stream(con: Any, dataset: str, contract: Contract, wrap: Callable[[str], str] = lambda body: body,
           *, scoped: bool = False) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The rows of `dataset`'s query (each bucket's query passed through `wrap`), bucket after bucket, in
    batches, in no particular order: (their schema, the batches). `scoped`: only the rows of the driving keys
    whose hash is in session table `SCOPE`, which is then the query's rows for those keys."""
    n = parts(con, dataset, scoped=scoped)
    con.execute("SET preserve_insertion_order = false")
    build = SQL_FROM_INTEGRATED[dataset]
    schema = con.execute(f"SELECT * FROM ({wrap(build(contract, (0, n), scoped))}) LIMIT 0").fetch_arrow_table().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for b in range(n):
            yield from con.execute(wrap(build(contract, (b, n), scoped))).to_arrow_reader(100_000)
            log.info("%s: bucket %d of %d built", dataset, b + 1, n)

    return schema, batches()


def in_order(table: pa.Table, dataset: str) -> pa.Table:
    """`table` sorted in `dataset`'s published order (`ORDER`), in Arrow."""
    return table.sort_by([(c.strip(), "ascending") for c in ORDER[dataset].split(",")])


def _build(paths: dict[str, str], dataset: str, contract: Contract) -> pa.Table:
    """Every row of `dataset` from views over the given zone tables, built bucket by bucket (`stream`), in the
    contract's schema and the dataset's order."""
    with session(purpose="profiles") as con:
        register(con, paths)
        schema, batches = stream(con, dataset, contract)
        table = pa.Table.from_batches(list(batches), schema=schema)
    return shaped(in_order(table, dataset), contract)


def _in_part(columns: str, part: tuple[int, int], scoped: bool = False) -> str:
    """SQL: the row's `columns` hash into bucket `part` = (b, n) (`true` for one bucket), and into the scope
    (`SCOPE`) when `scoped`."""
    b, n = part
    where = [] if n == 1 else [f"hash({columns}) % {n} = {b}"]
    if scoped:
        where.append(f"hash({columns}) IN (SELECT h FROM {SCOPE})")
    return " AND ".join(where) or "true"


def citizen_profile_sql(contract: Contract, part: tuple[int, int] = (0, 1), scoped: bool = False) -> str:
    flat = [f.name for f in contract.fields if f.name not in ("enterprises", "parcels", "entity_id")]
    cols = ", ".join(f'c."{n}"' for n in flat)
    # a bucket of citizens, and the lists of the persons they are (a person's lists are in each bucket that
    # holds one of its citizen IDs)
    of_part = "" if part[1] == 1 and not scoped else " AND {0}.person_key IN (SELECT person_key FROM person_of)"
    return f"""
        WITH person_of AS (
          SELECT * FROM (SELECT unnest(citizen_ids) AS citizen_id, person_key, entity_id FROM person_master
                         WHERE in_population_registry)
          WHERE {_in_part("citizen_id", part, scoped)}
        ), ents AS (
          SELECT l.person_key, list({{'enterprise_code': e.enterprise_code, 'enterprise_name': e.name,
                                     'enterprise_status': e.status, 'title': l.title}}
                                    ORDER BY e.enterprise_code) AS enterprises
          FROM enterprise_representative_link l JOIN enterprise_master e ON e.enterprise_code = l.master_enterprise_code
          WHERE l.band = 'accept' AND l.person_key IS NOT NULL{of_part.format("l")} GROUP BY l.person_key
        ), lands AS (
          SELECT h.person_key, list({{'province_code': p.province_code, 'commune_code_2025': p.commune_code_2025,
                                     'map_sheet': p.map_sheet, 'parcel_number': p.parcel_number, 'area_m2': p.area_m2,
                                     'land_use': p.land_use, 'certificate_serial': h.serial,
                                     'share_percent': h.share_percent}}
                                    ORDER BY p.province_code, p.parcel_id, h.serial) AS parcels
          FROM parcel_holder_link h
          JOIN parcel_master p ON p.province_code = h.province_code AND p.parcel_id = h.parcel_id
          WHERE h.band = 'accept' AND h.person_key IS NOT NULL AND h.certificate_status = 'HIEU_LUC'{of_part.format("h")}
          GROUP BY h.person_key
        )
        SELECT {cols}, person_of.entity_id, ents.enterprises, lands.parcels
        FROM (SELECT * FROM citizen WHERE {_in_part("citizen_id", part, scoped)}) c LEFT JOIN person_of USING (citizen_id)
        LEFT JOIN ents ON ents.person_key = person_of.person_key
        LEFT JOIN lands ON lands.person_key = person_of.person_key
    """


def enterprise_profile_sql(contract: Contract, part: tuple[int, int] = (0, 1), scoped: bool = False) -> str:
    return f"""
        WITH reps AS (
          SELECT l.master_enterprise_code AS enterprise_code,
                 list({{'position': l.position, 'full_name': coalesce(pm.full_name, r.full_name),
                       'citizen_id': CASE WHEN l.band = 'accept' THEN l.citizen_id END, 'title': l.title,
                       'link_method': l.method, 'link_band': l.band}} ORDER BY l.enterprise_code, l.position) AS representatives
          FROM enterprise_representative_link l
          LEFT JOIN person_master pm ON pm.person_key = l.person_key
          LEFT JOIN legal_representative r ON r.enterprise_code = l.enterprise_code AND r.position = l.position
          WHERE {_in_part("l.master_enterprise_code", part, scoped)}
          GROUP BY 1
        ), lands AS (
          SELECT h.enterprise_code,
                 list({{'province_code': p.province_code, 'parcel_id': p.parcel_id,
                       'commune_code_2025': p.commune_code_2025, 'map_sheet': p.map_sheet,
                       'parcel_number': p.parcel_number, 'certificate_serial': h.serial,
                       'share_percent': h.share_percent}} ORDER BY p.province_code, p.parcel_id) AS land
          FROM parcel_holder_link h
          JOIN parcel_master p ON p.province_code = h.province_code AND p.parcel_id = h.parcel_id
          WHERE h.band = 'accept' AND h.enterprise_code IS NOT NULL AND h.certificate_status = 'HIEU_LUC'
            AND {_in_part("h.enterprise_code", part, scoped)}
          GROUP BY 1
        )
        SELECT e.* EXCLUDE (representatives, land_holder_records), reps.representatives, lands.land
        FROM (SELECT * FROM enterprise_master WHERE {_in_part("enterprise_code", part, scoped)}) e
        LEFT JOIN reps USING (enterprise_code) LEFT JOIN lands USING (enterprise_code)
    """


def parcel_register_sql(contract: Contract, part: tuple[int, int] = (0, 1), scoped: bool = False) -> str:
    return f"""
        WITH holders AS (
          SELECT h.province_code, h.parcel_id,
                 list({{'holder_type': h.holder_type, 'person_key': h.person_key,
                       'full_name': CASE WHEN h.holder_type = 'CA_NHAN' THEN coalesce(pm.full_name, lh.name) END,
                       'enterprise_code': h.enterprise_code,
                       'enterprise_name': CASE WHEN h.holder_type <> 'CA_NHAN' THEN coalesce(em.name, lh.name) END,
                       'share_percent': h.share_percent, 'certificate_serial': h.serial,
                       'certificate_status': h.certificate_status, 'link_method': h.method, 'link_band': h.band}}
                      ORDER BY h.certificate_id) AS holders
          FROM parcel_holder_link h
          LEFT JOIN person_master pm ON pm.person_key = h.person_key
          LEFT JOIN enterprise_master em ON em.enterprise_code = h.enterprise_code
          LEFT JOIN land_holder lh ON lh.province_code = h.province_code AND lh.holder_id = h.holder_id
          WHERE {_in_part("h.province_code, h.parcel_id", part, scoped)}
          GROUP BY 1, 2
        )
        SELECT p.*, holders.holders
        FROM (SELECT * FROM parcel_master WHERE {_in_part("province_code, parcel_id", part, scoped)}) p
        LEFT JOIN holders USING (province_code, parcel_id)
    """


def citizen_profile(contract: Contract, paths: dict[str, str]) -> pa.Table:
    return _build(paths, "citizen_profile", contract)


def enterprise_profile(contract: Contract, paths: dict[str, str]) -> pa.Table:
    return _build(paths, "enterprise_profile", contract)


def parcel_register(contract: Contract, paths: dict[str, str]) -> pa.Table:
    return _build(paths, "parcel_register", contract)


def _from_postgres(url: str, sql: str, contract: Contract) -> pa.Table:
    from lienthong.db import connect

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    columns: dict[str, list[Any]] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    schema = contract.arrow_schema()
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def reconciliation_findings(contract: Contract, url: str) -> pa.Table:
    """Every finding (open or resolved) with its lifecycle. `status_since` is when it took its current status:
    resolved -> `resolved_at`; open -> its latest 'opened' or 'reopened' event (`first_seen_at` for a finding
    without events). A run that merely sees an open finding again changes no column here (its `last_seen_*`,
    which every run moves, is bookkeeping and not published)."""
    from lienthong.db import connect
    from lienthong.findings import TAXONOMY, ensure_findings_schema

    with connect(url) as conn:
        ensure_findings_schema(conn)
    table = _from_postgres(url, """
        SELECT f.finding_id, f.type, '' AS title, f.severity, f.agency, f.status, f.subject::text AS subject,
               f.evidence::text AS evidence, f.first_seen_at,
               CASE WHEN f.status = 'resolved' THEN f.resolved_at ELSE coalesce(e.opened_at, f.first_seen_at) END
                 AS status_since,
               f.resolved_at, f.times_reopened
        FROM lienthong_ops.finding f
        LEFT JOIN (SELECT finding_id, max(at) AS opened_at FROM lienthong_ops.finding_event
                   WHERE event IN ('opened', 'reopened') GROUP BY finding_id) e USING (finding_id)
        ORDER BY f.finding_id
    """, contract)
    titles = pa.array([TAXONOMY[t].title for t in table["type"].to_pylist()], pa.string())
    return table.set_column(table.schema.get_field_index("title"), table.schema.field("title"), titles)


def quality_summary(contract: Contract, url: str) -> pa.Table:
    """The current outcome of every quality rule, by dataset and rule: the rule results of each staged dataset's
    latest validation (from the run ledger), with `outcome_since`, when the dataset's unbroken series of
    validations ending with the latest one started giving the rule this outcome (pass or fail). Which run
    validated last, and when, is not a column: validating unchanged data again changes no row."""
    from lienthong import runs
    from lienthong.db import connect

    with connect(url) as conn:
        quality = runs.quality_runs(conn)
    history: dict[str, list[runs.QualityRun]] = {}
    for q in sorted(quality, key=lambda q: (q.created_at, q.run_id)):
        history.setdefault(q.dataset, []).append(q)
    rows = []
    for dataset in sorted(history):
        *earlier, latest = history[dataset]
        outcomes = [{r.rule: r.success for r in q.results} for q in earlier]
        for r in sorted(latest.results, key=lambda r: r.rule):
            since = latest.created_at
            for q, outcome in zip(reversed(earlier), reversed(outcomes), strict=True):
                if outcome.get(r.rule) != r.success:  # the other outcome, or not evaluated then
                    break
                since = q.created_at
            rows.append({"dataset": dataset, "rule": r.rule, "expectation": r.expectation,
                         "column_name": r.column_name, "severity": r.severity, "success": r.success,
                         "element_count": r.element_count, "unexpected_count": r.unexpected_count,
                         "unexpected_percent": r.unexpected_percent, "tolerance": r.tolerance,
                         "outcome_since": since})
    schema = contract.arrow_schema()
    return pa.table({f.name: pa.array([row[f.name] for row in rows], f.type) for f in schema}, schema=schema)


# Which builder makes each published dataset: from the integrated zone's files (the query over the zone's
# tables, unordered, its published order, and the rows it selects), or from the warehouse stores.
ORDER: dict[str, str] = {
    "citizen_profile": "citizen_id", "enterprise_profile": "enterprise_code",
    "parcel_register": "province_code, commune_code_original, map_sheet, parcel_number, parcel_id"}
SQL_FROM_INTEGRATED: dict[str, Callable[[Contract, tuple[int, int], bool], str]] = {
    "citizen_profile": citizen_profile_sql, "enterprise_profile": enterprise_profile_sql,
    "parcel_register": parcel_register_sql}
FROM_INTEGRATED: dict[str, Callable[[Contract, dict[str, str]], pa.Table]] = {
    "citizen_profile": citizen_profile, "enterprise_profile": enterprise_profile, "parcel_register": parcel_register}
FROM_STORES: dict[str, Callable[[Contract, str], pa.Table]] = {
    "reconciliation_findings": reconciliation_findings, "quality_summary": quality_summary}

# For each table a dataset's query reads: the driving keys (`DRIVING_KEY`, as those columns) whose row a
# changed row of it may alter, a changed row being an old or a new one (session view `d_<table>`). Through the
# tables as they are now: a row between the changed one and the driving key that did not change is the same
# in both versions, and one that did is in its own `d_` view. Every table the query reads is listed (a unit
# test checks it against the query's text); the conditions the query adds (bands, certificate status) are
# left out, which only widens the scope.
AFFECTS: dict[str, dict[str, str]] = {
    "citizen_profile": {
        "citizen": "SELECT citizen_id FROM d_citizen",
        "person_master": "SELECT unnest(citizen_ids) AS citizen_id FROM d_person_master",
        "enterprise_representative_link": """
            SELECT unnest(pm.citizen_ids) AS citizen_id
            FROM d_enterprise_representative_link d JOIN person_master pm ON pm.person_key = d.person_key""",
        "enterprise_master": """
            SELECT unnest(pm.citizen_ids) AS citizen_id
            FROM d_enterprise_master d JOIN enterprise_representative_link l ON l.master_enterprise_code = d.enterprise_code
            JOIN person_master pm ON pm.person_key = l.person_key""",
        "parcel_holder_link": """
            SELECT unnest(pm.citizen_ids) AS citizen_id
            FROM d_parcel_holder_link d JOIN person_master pm ON pm.person_key = d.person_key""",
        "parcel_master": """
            SELECT unnest(pm.citizen_ids) AS citizen_id
            FROM d_parcel_master d
            JOIN parcel_holder_link h ON h.province_code = d.province_code AND h.parcel_id = d.parcel_id
            JOIN person_master pm ON pm.person_key = h.person_key""",
    },
    "enterprise_profile": {
        "enterprise_master": "SELECT enterprise_code FROM d_enterprise_master",
        "enterprise_representative_link":
            "SELECT master_enterprise_code AS enterprise_code FROM d_enterprise_representative_link",
        "person_master": """
            SELECT l.master_enterprise_code AS enterprise_code
            FROM d_person_master d JOIN enterprise_representative_link l ON l.person_key = d.person_key""",
        "legal_representative": """
            SELECT l.master_enterprise_code AS enterprise_code
            FROM d_legal_representative d JOIN enterprise_representative_link l ON l.enterprise_code = d.enterprise_code""",
        "parcel_holder_link": "SELECT enterprise_code FROM d_parcel_holder_link",
        "parcel_master": """
            SELECT h.enterprise_code
            FROM d_parcel_master d
            JOIN parcel_holder_link h ON h.province_code = d.province_code AND h.parcel_id = d.parcel_id""",
    },
    "parcel_register": {
        "parcel_master": "SELECT province_code, parcel_id FROM d_parcel_master",
        "parcel_holder_link": "SELECT province_code, parcel_id FROM d_parcel_holder_link",
        "person_master": """
            SELECT h.province_code, h.parcel_id
            FROM d_person_master d JOIN parcel_holder_link h ON h.person_key = d.person_key""",
        "enterprise_master": """
            SELECT h.province_code, h.parcel_id
            FROM d_enterprise_master d JOIN parcel_holder_link h ON h.enterprise_code = d.enterprise_code""",
        "land_holder": """
            SELECT h.province_code, h.parcel_id
            FROM d_land_holder d JOIN parcel_holder_link h ON h.province_code = d.province_code AND h.holder_id = d.holder_id""",
    },
}


# The columns of each table the `AFFECTS` queries read from its changed rows (`d_<table>` holds these only).
LINK_COLUMNS: dict[str, tuple[str, ...]] = {
    "citizen": ("citizen_id",),
    "person_master": ("person_key", "citizen_ids"),
    "enterprise_representative_link": ("person_key", "master_enterprise_code", "enterprise_code"),
    "enterprise_master": ("enterprise_code",),
    "parcel_holder_link": ("province_code", "parcel_id", "person_key", "enterprise_code"),
    "parcel_master": ("province_code", "parcel_id"),
    "legal_representative": ("enterprise_code",),
    "land_holder": ("province_code", "holder_id"),
}


def scope_sql(dataset: str, changed: list[str]) -> str:
    """SQL: the distinct hashes (`h`) of the driving keys whose rows the changed rows of tables `changed` (each
    as view `d_<table>`) may alter; the content of session table `SCOPE` for a scoped build."""
    cols = ", ".join(f'"{c}"' for c in DRIVING_KEY[dataset])
    union = " UNION ALL ".join(f"SELECT {cols} FROM ({AFFECTS[dataset][t]})" for t in changed)
    return f"SELECT DISTINCT hash({cols}) AS h FROM ({union})" if changed else "SELECT 0::UBIGINT AS h WHERE false"
