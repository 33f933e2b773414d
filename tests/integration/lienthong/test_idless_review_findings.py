"""ID-less land holders left to review list their candidates in the finding `match_needs_review`, end to end:
a real province (generated with many person holders giving no document number, served by the sandbox, landed
by the real connectors, staged) reconciled by `reconcile.run.reconcile_tables`. A land-holder review finding
of method `unique_name` carries `candidates`: the sorted candidate citizen IDs `idless.link_idless` finds for
that holder, which are namesakes of the holder in the staged citizen table; every other review finding keeps
its evidence without `candidates`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow.compute as pc
import pytest

pytestmark = pytest.mark.integration

CITIZENS = 2000
SEED = 11
MISSING_ID = 0.4  # many ID-less person holders, so that some share a name and birth year with two citizens
DATASETS = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from province import ingested_province, staged_tables

    from lienthong.reconcile import dedupe, idless
    from lienthong.reconcile.people import LINK_SCHEMA, LinkBands
    from lienthong.reconcile.run import reconcile_tables
    from lienthong.settings import load_settings

    with ingested_province(tmp_path_factory.mktemp("idless-review"), citizens=CITIZENS, seed=SEED,
                           run_id="idless-review", noise={"missing_id": MISSING_ID}):
        settings = load_settings()
        staged = staged_tables(DATASETS, "idless-review")
        _, found, _ = reconcile_tables(staged, settings)

        # Every ID-less holder's candidates as `link_idless` finds them, from the inputs run.py gives it. With
        # model links that agree with nothing, no holder is accepted, so the review list holds every holder with
        # a candidate; a holder's candidates do not depend on the model (only whether it is accepted does).
        cit, holders = staged["citizen"], staged["land_holder"]
        alive = pc.invert(pc.fill_null(holders["deleted"], False))
        person_holders = holders.filter(pc.and_(alive, pc.equal(holders["holder_type"], "CA_NHAN")))
        left = idless.idless_inputs(person_holders, staged["certificate"], staged["parcel"], settings=settings)
        _, every_review = idless.link_idless(
            left, idless.registry_with_places(cit), LinkBands(accept=settings.match_accept, review=settings.match_review),
            model_links=LINK_SCHEMA.empty_table(), duplicates=dedupe.citizen_duplicates(cit), settings=settings)
        yield {"staged": staged, "found": found, "left": left,
               "candidates": dict(zip(every_review["left_id"].to_pylist(), every_review["candidates"].to_pylist(),
                                      strict=True))}


def _reviews(reconciled: dict[str, Any]) -> list[Any]:
    return [f for f in reconciled["found"] if f.type == "match_needs_review"]


def _holders(reconciled: dict[str, Any]) -> dict[str, dict[str, Any]]:
    holders = reconciled["staged"]["land_holder"]
    return {f"{r['province_code']}:{r['holder_id']}": r
            for r in holders.select(["province_code", "holder_id", "holder_type", "document_number", "name",
                                     "birth_year", "deleted"]).to_pylist()}


def test_an_id_less_holder_left_to_review_lists_its_namesakes_as_candidates(reconciled):
    cit = reconciled["staged"]["citizen"]
    citizen_ids = set(cit["citizen_id"].to_pylist())
    holders = _holders(reconciled)
    left = {r["unique_id"]: r for r in reconciled["left"].to_pylist()}
    # the folded names of the staged citizens, as the ID-less pass folds them
    from lienthong.reconcile import idless

    registry = idless.registry_with_places(cit)
    name_fold_of = dict(zip(cit["citizen_id"].to_pylist(), registry["name_fold"].to_pylist(), strict=True))
    birth_year_of = dict(zip(cit["citizen_id"].to_pylist(), registry["birth_year"].to_pylist(), strict=True))

    listed = [f for f in _reviews(reconciled) if "candidates" in f.evidence]
    assert listed, "no match_needs_review finding lists candidates"
    several = [f for f in listed if len(f.evidence["candidates"]) >= 2]
    assert several, [f.evidence for f in listed]
    for f in listed:
        key = f.subject["record_key"]
        cands = f.evidence["candidates"]
        assert f.subject["dataset"] == "land_holder", f
        assert f.evidence["method"] == "unique_name", f
        assert cands == sorted(cands) and len(set(cands)) == len(cands), f
        assert set(cands) <= citizen_ids, f
        # the subject is an ID-less person holder
        holder = holders[key]
        assert holder["holder_type"] == "CA_NHAN" and not holder["deleted"], holder
        assert holder["document_number"] is None or not holder["document_number"].strip(), holder
        # exactly the candidates `link_idless` finds for it
        assert cands == reconciled["candidates"][key], (key, cands, reconciled["candidates"][key])
        # which are namesakes of the holder: same folded name, and same birth year when it gives one
        assert {name_fold_of[c] for c in cands} == {left[key]["name_fold"]}, (key, cands)
        if left[key]["birth_year"] is not None:
            assert {birth_year_of[c] for c in cands} == {left[key]["birth_year"]}, (key, cands)
        # the candidate the finding names is one of them, scored 1 / (number of candidates)
        assert f.evidence["candidate"] in cands, f
        assert f.evidence["score"] == round(1 / len(cands), 4), f


def test_review_findings_other_than_id_less_holders_left_to_review_carry_no_candidates(reconciled):
    left_ids = set(reconciled["left"]["unique_id"].to_pylist())
    reviews = _reviews(reconciled)
    others = [f for f in reviews if f.subject["dataset"] != "land_holder" or f.subject["record_key"] not in left_ids
              or f.evidence["method"] != "unique_name"]
    # there are such findings (legal representatives, holders with a document number, organisations)
    assert others, reviews
    assert {f.subject["dataset"] for f in others} & {"legal_representative", "land_holder"}, others
    for f in others:
        assert "candidates" not in f.evidence, f
        assert set(f.evidence) == {"candidate", "score", "runner_up", "runner_up_score", "method"}, f
    # and every ID-less holder the pass left to review does list them
    for f in reviews:
        if f.subject["dataset"] == "land_holder" and f.evidence["method"] == "unique_name":
            assert f.subject["record_key"] in left_ids, f
            assert "candidates" in f.evidence, f
