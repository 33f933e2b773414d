"""Link accuracy against a ground truth: precision, recall and F1 per link type.

Owns how an integrated link is judged against known true entities. The truth is an input file, not the
simulator: `<truth dir>/links.parquet`, one row per source record, with columns `dataset` (`citizen`,
`enterprise`, `representative`, `land_holder`), `record_key` (the source record's key: the citizen ID, the
enterprise code, `<enterprise code>#<position>` for a representative (position from 0, in the registry's
order), `<province>:<holder id>` for a land holder), `person_id` (int64, the true person; set for citizens,
representatives and person holders) and `enterprise_id` (int64, the true enterprise; set for enterprises
and organisation holders). The sandbox writes such a file beside its data (docs/sandbox.md, "Ground truth
columns"); a clerical review sample of real records can be written in the same format.

A link is a true positive when the record it links to is a record of the same true entity; recall counts
only what could be linked: source records whose true person (or enterprise) has a record in the staged
registry it is linked against (a citizen quarantined for an unusable birth date cannot be found, and is
reported separately, not hidden).

Link types: representative -> citizen, land holder (person) -> citizen, land holder (organisation) ->
enterprise. Only accepted links count as positive; `review` is reported beside them. Given the staged land
holders, `holder_citizen_idless` reports the same measures for the person holders whose staged record has no
document number (the ones linked on name, birth year and place only; `lienthong.reconcile.idless`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _truth_maps(truth_dir: Path) -> dict[str, dict[str, int]]:
    links = pq.read_table(Path(truth_dir) / "links.parquet",
                          columns=["dataset", "record_key", "person_id", "enterprise_id"]).to_pylist()
    out: dict[str, dict[str, int]] = {}
    for r in links:
        ds = r["dataset"]
        if ds in ("citizen", "representative") or (ds == "land_holder" and r["person_id"] is not None):
            key = "land_holder_person" if ds == "land_holder" else ds
            out.setdefault(key, {})[r["record_key"]] = r["person_id"]
        if ds == "enterprise" or (ds == "land_holder" and r["enterprise_id"] is not None):
            key = "land_holder_organisation" if ds == "land_holder" else ds
            out.setdefault(key, {})[r["record_key"]] = r["enterprise_id"]
    return out


def _truth_extras(truth_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[int]]]:
    """What a country's truth adds (docs/sandbox.md, "A synthetic country"): per link type, the record keys
    whose record is in another province than its true entity's (`cross_province`), and the citizen IDs
    registered for two people (`shared_id`) with both persons. Empty for a province's truth."""
    path = Path(truth_dir) / "links.parquet"
    names = set(pq.read_schema(path).names)
    cross: dict[str, set[str]] = {}
    shared: dict[str, set[int]] = {}
    if not {"cross_province", "shared_id"} & names:
        return cross, shared
    cols = ["dataset", "record_key", "person_id", "enterprise_id", *sorted({"cross_province", "shared_id"} & names)]
    for r in pq.read_table(path, columns=cols).to_pylist():
        ds = r["dataset"]
        kind = ("land_holder_person" if r["person_id"] is not None else "land_holder_organisation") \
            if ds == "land_holder" else ds
        if r.get("cross_province"):
            cross.setdefault(kind, set()).add(r["record_key"])
        if ds == "citizen" and r.get("shared_id"):
            shared.setdefault(r["record_key"], set()).add(r["person_id"])
    return cross, shared


def _score(pairs: list[tuple[Any, Any, str]], linkable: int) -> dict[str, Any]:
    """pairs: (true entity, predicted entity or None, band) per source record."""
    accepted = [(t, p) for t, p, b in pairs if b == "accept" and p is not None]
    tp = sum(1 for t, p in accepted if t == p)
    review = sum(1 for _, _, b in pairs if b == "review")
    precision = tp / len(accepted) if accepted else 1.0
    recall = tp / linkable if linkable else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"records": len(pairs), "linkable": linkable, "accepted": len(accepted), "true_positives": tp,
            "false_positives": len(accepted) - tp, "review": review,
            "precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def idless_holder_keys(staged_holders: pa.Table) -> set[str]:
    """`<province>:<holder id>` of the person holders whose staged record has no document number (null or
    blank)."""
    person = pc.fill_null(pc.equal(staged_holders["holder_type"], "CA_NHAN"), False)
    no_doc = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(staged_holders["document_number"]), ""), True)
    rows = staged_holders.filter(pc.and_(person, no_doc)).select(["province_code", "holder_id"]).to_pylist()
    return {f"{r['province_code']}:{r['holder_id']}" for r in rows}


def link_accuracy(tables: dict[str, pa.Table], staged_citizens: pa.Table, staged_enterprises: pa.Table,
                  truth_dir: str | Path, staged_holders: pa.Table | None = None) -> dict[str, Any]:
    """Precision / recall / F1 of the three link types in the integrated tables; with `staged_holders` (the
    staged land_holder table) also `holder_citizen_idless`: `holder_citizen` restricted to the person
    holders with no document number (it does not enter `all_auto_accepted_precision`)."""
    truth = _truth_maps(Path(truth_dir))
    cross, shared = _truth_extras(Path(truth_dir))
    citizen_person = truth["citizen"]

    def person_of(citizen_id: str | None, true_person: int) -> int | None:
        """The person a link to `citizen_id` reaches: with an ID registered for two people, the true one
        when it is one of them (the staged registry keys records by ID, so a link cannot say which)."""
        if not citizen_id:
            return None
        both = shared.get(citizen_id)
        return true_person if both and true_person in both else citizen_person.get(citizen_id)

    in_registry = {citizen_person[k] for k in staged_citizens["citizen_id"].to_pylist() if k in citizen_person}
    ent_truth = truth["enterprise"]
    in_business = {ent_truth[k] for k in staged_enterprises["enterprise_code"].to_pylist() if k in ent_truth}

    reps = tables["enterprise_representative_link"].select(["enterprise_code", "position", "citizen_id", "band"])
    rep_pairs, rep_keys = [], []
    for r in reps.to_pylist():
        t = truth["representative"].get(f"{r['enterprise_code']}#{r['position']}")
        if t is None:
            continue
        rep_pairs.append((t, person_of(r["citizen_id"], t), r["band"]))
        rep_keys.append(f"{r['enterprise_code']}#{r['position']}")

    holders = tables["parcel_holder_link"]
    holders = holders.select(["province_code", "holder_id", "holder_type", "person_key", "enterprise_code", "band"])
    seen: set[str] = set()
    person_pairs, org_pairs = [], []
    person_keys: list[str] = []
    org_keys: list[str] = []
    idless_keys = idless_holder_keys(staged_holders) if staged_holders is not None else set()
    idless_pairs = []
    for r in holders.to_pylist():
        key = f"{r['province_code']}:{r['holder_id']}"
        if key in seen:
            continue
        seen.add(key)
        if r["holder_type"] == "CA_NHAN":
            t = truth.get("land_holder_person", {}).get(key)
            if t is not None:
                pair = (t, person_of(r["person_key"], t), r["band"])
                person_pairs.append(pair)
                person_keys.append(key)
                if key in idless_keys:
                    idless_pairs.append(pair)
        else:
            t = truth.get("land_holder_organisation", {}).get(key)
            if t is not None:
                org_pairs.append((t, ent_truth.get(r["enterprise_code"]) if r["enterprise_code"] else None, r["band"]))
                org_keys.append(key)

    result: dict[str, Any] = {
        "representative_citizen": _score(rep_pairs, sum(1 for t, _, _ in rep_pairs if t in in_registry)),
        "holder_citizen": _score(person_pairs, sum(1 for t, _, _ in person_pairs if t in in_registry)),
        "holder_enterprise": _score(org_pairs, sum(1 for t, _, _ in org_pairs if t in in_business)),
    }
    all_accepted = sum(v["accepted"] for v in result.values())
    all_tp = sum(v["true_positives"] for v in result.values())
    result["all_auto_accepted_precision"] = round(all_tp / all_accepted, 6) if all_accepted else 1.0
    result["registry_citizens_missing_from_staged"] = int(
        pc.sum(pc.invert(pc.is_in(pa.array(list(set(citizen_person.values())), pa.int64()),
                                  pa.array(list(in_registry), pa.int64())))).as_py() or 0)
    if staged_holders is not None:
        result["holder_citizen_idless"] = _score(idless_pairs, sum(1 for t, _, _ in idless_pairs if t in in_registry))
    if cross:  # a country: each link type again for the records outside their entity's province, and inside
        for name, pairs, keys, kind, found in (
                ("representative_citizen", rep_pairs, rep_keys, "representative", in_registry),
                ("holder_citizen", person_pairs, person_keys, "land_holder_person", in_registry),
                ("holder_enterprise", org_pairs, org_keys, "land_holder_organisation", in_business)):
            outside = cross.get(kind, set())
            for part, keep in (("cross_province", True), ("in_province", False)):
                chosen = [p for p, k in zip(pairs, keys, strict=True) if (k in outside) == keep]
                result[f"{name}_{part}"] = _score(chosen, sum(1 for t, _, _ in chosen if t in found))
        result["citizen_ids_registered_twice"] = len(shared)
    return result
