"""A person outside the population registry known from two records of one source takes name and birth date
from one record, the same whatever order the rows come in (a rebuild must equal the incremental state)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from lienthong.contracts import contract
from lienthong.duck import session
from lienthong.reconcile import integrate
from lienthong.reconcile.dedupe import DUPLICATE_SCHEMA
from lienthong.reconcile.people import LINK_SCHEMA

NR_ID = "001092838340"


def _staged(name: str, rows: list[dict]) -> pa.Table:
    schema = contract(name).arrow_schema()
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in schema]))


def _outside_person(reps: list[dict]) -> dict:
    links = pa.Table.from_pylist([
        {"left_id": f"{r['enterprise_code']}#{r['position']}", "right_id": None, "method": "probabilistic",
         "score": None, "band": "reject", "runner_up_id": None, "runner_up_score": None} for r in reps],
        schema=LINK_SCHEMA)
    empty = {name: _staged(name, []) for name in ("citizen", "enterprise", "land_holder", "parcel", "certificate")}
    with session(purpose="test") as con:
        integrate.load(con, integrate.Inputs(
            citizen=empty["citizen"], enterprise=empty["enterprise"],
            legal_representative=_staged("legal_representative", reps), land_holder=empty["land_holder"],
            parcel=empty["parcel"], certificate=empty["certificate"],
            citizen_duplicates=DUPLICATE_SCHEMA.empty_table(), enterprise_duplicates=DUPLICATE_SCHEMA.empty_table(),
            holder_duplicates=DUPLICATE_SCHEMA.empty_table(), representative_links=links,
            holder_person_links=links.slice(0, 0), holder_organisation_links=links.slice(0, 0)))
        rows = integrate.person_master(con).to_pylist()
    (row,) = [r for r in rows if r["person_key"] == "NR:" + NR_ID]
    return row


def test_two_records_of_one_source_give_the_name_and_birth_of_the_first_by_key_in_any_order():
    reps = [dict(enterprise_code="0100000002", position=0, full_name="Long Lê Văn", document_type="CCCD",
                 document_number=NR_ID, birth_date=date(1992, 3, 4), title="Giám đốc"),
            dict(enterprise_code="0100000001", position=0, full_name="Lê Văn Long", document_type="CCCD",
                 document_number=NR_ID, birth_date=date(1992, 4, 3), title="Giám đốc")]
    for order in (reps, reps[::-1]):
        row = _outside_person(order)
        # 0100000001#0 sorts first: its name and its birth date, together
        assert (row["full_name"], row["birth_date"], row["full_name_source"]) == (
            "Lê Văn Long", date(1992, 4, 3), "business_registry"), order
