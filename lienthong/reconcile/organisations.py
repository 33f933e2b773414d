"""Organisation linkage: land holders of type organisation -> enterprises of the business registry.

Owns the two passes: the tax code (the holder's document number, an enterprise code; a code the business
registry lists as a duplicate resolves to its surviving record), then, for holders whose code is missing,
invalid or unknown, the folded name together with the street part of the address. A unique name match
whose address agrees is accepted; a name match whose address disagrees, or several enterprises with the
name, go to review; no name match is rejected.
"""

from __future__ import annotations

import pyarrow as pa

from lienthong.duck import session
from lienthong.reconcile.people import LINK_SCHEMA
from lienthong.reconcile.sources import holder_key
from lienthong.standardize.text import fold_key


def _street(addresses: pa.ChunkedArray | pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    parts = pc.split_pattern(addresses, ", ")
    first = pc.list_element(pc.if_else(pc.is_null(parts), pa.scalar([None], pa.list_(pa.string())), parts), 0)
    return fold_key(first)


# the columns `link_holder_organisations` reads of each input
ORGANISATION_HOLDER_COLUMNS = ("province_code", "holder_id", "document_number", "name", "address")
ORGANISATION_ENTERPRISE_COLUMNS = ("enterprise_code", "name", "head_office_address")


def link_holder_organisations(holders: pa.Table, enterprises: pa.Table, duplicates: pa.Table) -> pa.Table:
    """One row per organisation holder (LINK_SCHEMA): right_id is the surviving enterprise code."""
    with session(purpose="link-organisations") as con:
        con.register("h0", pa.table({
            "left_id": holder_key(holders),
            "code": holders["document_number"],
            "name_fold": fold_key(holders["name"].combine_chunks()),
            "street": _street(holders["address"].combine_chunks()),
        }))
        con.register("e0", pa.table({
            "code": enterprises["enterprise_code"],
            "name_fold": fold_key(enterprises["name"].combine_chunks()),
            "street": fold_key(enterprises["head_office_address"].combine_chunks()),
        }))
        con.register("dup", duplicates)
        return con.execute("""
            WITH e AS (
              SELECT e0.*, coalesce(dup.survivor_key, e0.code) AS master FROM e0 LEFT JOIN dup ON dup.record_key = e0.code
            ), by_code AS (
              SELECT h0.left_id, e.master AS right_id FROM h0 JOIN e ON e.code = h0.code
            ), by_name AS (
              SELECT h0.left_id, e.master AS right_id, (h0.street = e.street) AS street_agrees,
                     count(DISTINCT e.master) OVER (PARTITION BY h0.left_id) AS n_candidates
              FROM h0 JOIN e ON e.name_fold = h0.name_fold
              WHERE h0.left_id NOT IN (SELECT left_id FROM by_code)
            ), named AS (
              SELECT left_id, right_id,
                     CASE WHEN n_candidates = 1 AND street_agrees THEN 'accept' ELSE 'review' END AS band,
                     CASE WHEN n_candidates = 1 AND street_agrees THEN 0.99 WHEN n_candidates = 1 THEN 0.9
                          ELSE 1.0 / n_candidates END AS score
              FROM by_name
              QUALIFY row_number() OVER (PARTITION BY left_id ORDER BY street_agrees DESC, right_id) = 1
            )
            SELECT left_id, right_id, 'exact_id' AS method, 1.0::DOUBLE AS score, 'accept' AS band,
                   NULL::VARCHAR AS runner_up_id, NULL::DOUBLE AS runner_up_score
            FROM by_code QUALIFY row_number() OVER (PARTITION BY left_id ORDER BY right_id) = 1
            UNION ALL
            SELECT left_id, right_id, 'name_address', score, band, NULL, NULL FROM named
            UNION ALL
            SELECT left_id, NULL, 'name_address', NULL, 'reject', NULL, NULL FROM h0
            WHERE left_id NOT IN (SELECT left_id FROM by_code) AND left_id NOT IN (SELECT left_id FROM by_name)
            ORDER BY left_id
        """).fetch_arrow_table().cast(LINK_SCHEMA)
