"""Read the staged zone for reconciliation and map each source into the person shape of `people`.

Owns: which staged run reconciliation works from (the newest per dataset, as recorded in `stage_run`), and
the mapping of citizens, legal representatives and land holders (persons) into `PERSON_SCHEMA`, with the
unique ids links are keyed by:

- citizen: `citizen_id`;
- legal representative: `<enterprise_code>#<position>`;
- land holder: `<province_code>:<holder_id>`.
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa
import pyarrow.compute as pc

from lienthong import adminunits
from lienthong.datasets import STAGED
from lienthong.reconcile.people import fold_commune, person_table, with_names
from lienthong.standardize.text import fold_key

INPUT_DATASETS = STAGED  # the reconciliation reads every staged dataset


def representative_key(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(table["enterprise_code"], pc.cast(table["position"], pa.string()), "#")


def holder_key(table: pa.Table, id_column: str = "holder_id") -> pa.Array:
    return pc.binary_join_element_wise(table["province_code"], pc.cast(table[id_column], pa.string()), ":")


@cache
def _commune_names() -> tuple[dict[str, str], dict[str, list[str]]]:
    """2025 code -> its folded name; 2025 code -> folded names of the old communes merged into it."""
    new = {code: c.name for code, c in adminunits.new_communes().items()}
    old = adminunits.old_communes()
    codes = list(new)
    new_folded = dict(zip(codes, fold_commune(pa.array([new[c] for c in codes])).to_pylist(), strict=True))
    olds: dict[str, list[str]] = {}
    old_codes = list(old)
    old_folded = dict(zip(old_codes, fold_commune(pa.array([old[c].name for c in old_codes])).to_pylist(), strict=True))
    for old_code, conv in adminunits.conversions().items():
        for target in conv.targets:
            if old_code in old_folded:
                olds.setdefault(target, []).append(old_folded[old_code])
    return new_folded, olds


def _id_columns(doc_type: pa.Array, doc_number: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(current ID, legacy ID) from a document type and number: 9 digits is a legacy CMND."""
    is_legacy = pc.fill_null(pc.equal(pc.utf8_length(doc_number), 9), False)
    is_org = pc.fill_null(pc.equal(doc_type, "MST"), False)
    current = pc.if_else(pc.or_(is_legacy, is_org), pa.scalar(None, pa.string()), doc_number)
    legacy = pc.if_else(is_legacy, doc_number, pa.scalar(None, pa.string()))
    return current, legacy


def citizens_as_people(citizens: pa.Table) -> pa.Table:
    """The registry side: every citizen with its current and legacy IDs, names, birth and commune names."""
    new_folded, olds = _commune_names()
    code = citizens["residence_commune_code_2025"].to_pylist()
    original = citizens["residence_commune_code"].to_pylist()
    old_folded = {c: n for c, n in zip(adminunits.old_communes(), fold_commune(pa.array(
        [o.name for o in adminunits.old_communes().values()])).to_pylist(), strict=True)}
    communes = []
    for c, o in zip(code, original, strict=True):
        names = list(olds.get(c, [])) if c else []
        if o and o in old_folded and old_folded[o] not in names:
            names.append(old_folded[o])
        communes.append(names or None)
    precision = citizens["birth_date_precision"]
    birth = pc.cast(citizens["birth_date"], pa.date32())
    exact_day = pc.fill_null(pc.equal(precision, "day"), False)
    return person_table(with_names({
        "unique_id": citizens["citizen_id"],
        "id_number": citizens["citizen_id"],
        "legacy_id": citizens["legacy_id"],
        "birth_date": pc.if_else(exact_day, birth, pa.scalar(None, pa.date32())),
        "birth_year": pc.cast(pc.year(birth), pa.int32()),
        "commune": pa.array([new_folded.get(c) if c else None for c in code], pa.string()),
        "communes": pa.array(communes, pa.list_(pa.string())),
        "street": fold_key(citizens["residence_address"]),
    }, citizens["full_name"]), citizens.num_rows)


def representatives_as_people(reps: pa.Table) -> pa.Table:
    current, legacy = _id_columns(reps["document_type"].combine_chunks(), reps["document_number"].combine_chunks())
    birth = pc.cast(reps["birth_date"], pa.date32())
    return person_table(with_names({
        "unique_id": representative_key(reps),
        "id_number": current,
        "legacy_id": legacy,
        "birth_date": birth,
        "birth_year": pc.cast(pc.year(birth), pa.int32()),
    }, reps["full_name"]), reps.num_rows)


def _split_address(addresses: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(street, commune) of a land-registry address "Thôn Phú, Xã Đoàn Tùng[, Huyện ...]"."""
    parts = pc.split_pattern(addresses, ", ")
    street = pc.list_element(pc.if_else(pc.is_null(parts), pa.scalar([None], pa.list_(pa.string())), parts), 0)
    commune = pc.list_element(pc.if_else(
        pc.fill_null(pc.greater_equal(pc.list_value_length(parts), 2), False), parts,
        pa.scalar([None, None], pa.list_(pa.string()))), 1)
    return fold_key(street), fold_commune(commune)


def holders_as_people(holders: pa.Table) -> pa.Table:
    """Land holders of type person (the caller filters), in the person shape."""
    doc_type = holders["document_type"].combine_chunks()
    current, legacy = _id_columns(doc_type, holders["document_number"].combine_chunks())
    street, commune = _split_address(holders["address"].combine_chunks())
    return person_table(with_names({
        "unique_id": holder_key(holders),
        "id_number": current,
        "legacy_id": legacy,
        "birth_year": holders["birth_year"],
        "commune": commune,
        "street": street,
    }, holders["name"]), holders.num_rows)
