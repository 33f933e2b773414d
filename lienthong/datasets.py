"""The dataset graph, declared once: which datasets each zone holds and what each is derived from.

The contracts are the source of truth (`zone` and `derivedFrom` in schemas/*.yaml); this module states the same
graph as constants because DAG files import it at parse time, where reading files is not allowed. A unit test
(tests/unit/lienthong/test_datasets.py) checks it against the contracts, so the two cannot drift apart.
Everything else (the Assets, the publish gate, the reconciliation's inputs, lineage) asks this module.
"""

from __future__ import annotations

# In the order the reconciliation reads them.
STAGED: tuple[str, ...] = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")
INTEGRATED: tuple[str, ...] = ("person_master", "enterprise_master", "parcel_master",
                               "enterprise_representative_link", "parcel_holder_link")
PUBLISHED: tuple[str, ...] = ("citizen_profile", "enterprise_profile", "parcel_register", "reconciliation_findings",
                              "quality_summary")
# The warehouse stores some published datasets are read from (lienthong_ops tables, not zone datasets).
STORES: tuple[str, ...] = ("finding", "finding_event", "quality_result", "quality_run")

# Each integrated and published dataset's contract `derivedFrom`, as written there.
DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "person_master": ("citizen", "legal_representative", "land_holder"),
    "enterprise_master": ("enterprise", "legal_representative", "land_holder"),
    "parcel_master": ("parcel", "certificate"),
    "enterprise_representative_link": ("legal_representative", "enterprise", "citizen"),
    "parcel_holder_link": ("certificate", "land_holder", "citizen", "enterprise"),
    "citizen_profile": ("citizen", "person_master", "enterprise_representative_link", "enterprise_master",
                        "parcel_holder_link", "parcel_master"),
    "enterprise_profile": ("enterprise_master", "enterprise_representative_link", "person_master",
                           "legal_representative", "parcel_holder_link", "parcel_master"),
    "parcel_register": ("parcel_master", "parcel_holder_link", "person_master", "enterprise_master", "land_holder"),
    "reconciliation_findings": ("finding", "finding_event"),
    "quality_summary": ("quality_result", "quality_run"),
}


def zone_of(dataset: str) -> str:
    """'staged', 'integrated' or 'published'; KeyError for a name that is none of them."""
    for zone, names in (("staged", STAGED), ("integrated", INTEGRATED), ("published", PUBLISHED)):
        if dataset in names:
            return zone
    raise KeyError(f"unknown dataset {dataset!r}")


def staged_inputs(dataset: str) -> tuple[str, ...]:
    """The staged datasets `dataset` is built from, directly or through integrated ones (in STAGED order):
    the quality gates its publication waits on."""
    seen: set[str] = set()
    todo = [dataset]
    while todo:
        for parent in DERIVED_FROM.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return tuple(name for name in STAGED if name in seen)


def from_integrated(dataset: str) -> bool:
    """Whether `dataset` is built from the reconciliation's outputs (else from the warehouse stores)."""
    return any(parent in INTEGRATED for parent in DERIVED_FROM.get(dataset, ()))
