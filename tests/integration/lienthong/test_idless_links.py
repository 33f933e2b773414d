"""The ID-less holder pass on a real province: generated with many person holders giving no document number,
served by the sandbox, landed by the real connectors, staged; then linked by the model alone and by the model
followed by `idless.link_idless` (gated by the model) and `idless.combine`. Judged against the sandbox ground
truth: the accepted `unique_name` links are precise, and more ID-less holders are linked than by the model
alone, with no loss of precision."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytestmark = pytest.mark.integration

CITIZENS = 4000
SEED = 11
MISSING_ID = 0.4  # a share of person holders with no ID, so that the group is large at this size
DATASETS = ("citizen", "land_holder", "parcel", "certificate")


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from province import ingested_province, staged_tables

    from lienthong.linkscore import _truth_maps, idless_holder_keys
    from lienthong.reconcile import dedupe, idless, people, sources
    from lienthong.settings import load_settings

    with ingested_province(tmp_path_factory.mktemp("idless"), citizens=CITIZENS, seed=SEED, run_id="idless",
                           noise={"missing_id": MISSING_ID}) as prov:
        settings = load_settings()
        staged = staged_tables(DATASETS, "idless")
        data = prov["sandbox"]
        cit, holders = staged["citizen"], staged["land_holder"]
        holders = holders.filter(pc.invert(pc.fill_null(holders["deleted"], False)))
        person_holders = holders.filter(pc.equal(holders["holder_type"], "CA_NHAN"))
        bands = people.LinkBands(accept=settings.match_accept, review=settings.match_review)
        registry = sources.citizens_as_people(cit)
        model = people.link_people(sources.holders_as_people(person_holders), registry, bands, settings=settings)
        left = idless.idless_inputs(person_holders, staged["certificate"], staged["parcel"], settings=settings)
        ours, review = idless.link_idless(left, idless.registry_with_places(cit, registry), bands,
                                          model_links=model.links, duplicates=dedupe.citizen_duplicates(cit),
                                          settings=settings)
        combined = idless.combine(ours, model.links, settings=settings)
        truth = _truth_maps(data / "truth")
        yield {"model": model.links, "ours": ours, "review": review, "combined": combined, "left": left,
               "idless_keys": idless_holder_keys(person_holders), "truth": truth,
               "in_registry": {truth["citizen"][k] for k in cit["citizen_id"].to_pylist() if k in truth["citizen"]}}


def _score(linked, links: pa.Table, keys: set[str] | None = None) -> dict:
    from lienthong.linkscore import _score as score

    citizen_person, holder_person = linked["truth"]["citizen"], linked["truth"]["land_holder_person"]
    pairs = []
    for left, right, band in zip(links["left_id"].to_pylist(), links["right_id"].to_pylist(),
                                 links["band"].to_pylist(), strict=True):
        t = holder_person.get(left)
        if t is not None and (keys is None or left in keys):
            pairs.append((t, citizen_person.get(right) if right else None, band))
    return score(pairs, sum(1 for t, _, _ in pairs if t in linked["in_registry"]))


def test_the_province_has_many_id_less_person_holders_and_the_pass_takes_exactly_them(linked):
    keys = linked["idless_keys"]
    assert len(keys) > 500
    assert set(linked["left"]["unique_id"].to_pylist()) == keys
    assert set(linked["ours"]["left_id"].to_pylist()) <= keys


def test_accepted_unique_name_links_are_precise(linked):
    ours = linked["ours"]
    accepted = ours.filter(pc.equal(ours["band"], "accept"))
    got = _score(linked, accepted)
    assert got["accepted"] > 200, got
    assert got["precision"] >= 0.99, got


def test_more_id_less_holders_are_linked_than_by_the_model_alone_and_no_less_precisely(linked):
    keys = linked["idless_keys"]
    alone, with_pass = _score(linked, linked["model"], keys), _score(linked, linked["combined"], keys)
    assert alone["linkable"] == with_pass["linkable"] > 500
    assert with_pass["recall"] > alone["recall"], (alone, with_pass)
    assert with_pass["true_positives"] > alone["true_positives"], (alone, with_pass)
    assert with_pass["precision"] >= min(alone["precision"], 0.99), (alone, with_pass)
    # the holders with an ID keep the model's links
    others = set(linked["model"]["left_id"].to_pylist()) - keys
    model_rows = {r["left_id"]: r for r in linked["model"].to_pylist() if r["left_id"] in others}
    combined_rows = {r["left_id"]: r for r in linked["combined"].to_pylist() if r["left_id"] in others}
    assert combined_rows == model_rows


def test_every_review_row_lists_its_candidates(linked):
    ours, review = linked["ours"], linked["review"]
    in_review = ours.filter(pc.equal(ours["band"], "review"))
    assert sorted(review["left_id"].to_pylist()) == sorted(in_review["left_id"].to_pylist())
    for r in review.to_pylist():
        assert r["candidates"] == sorted(r["candidates"]) and r["candidates"]
