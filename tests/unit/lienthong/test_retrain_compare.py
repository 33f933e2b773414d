"""The before/after comparison of a retraining on small hand-made link tables and model parameters."""

from __future__ import annotations

import json
import math

import pyarrow as pa

from lienthong.reconcile.retrain import compare_links, compare_parameters


def _links(rows: list[tuple[str, str, str | None, str, str]]) -> pa.Table:
    """(dataset, left id, right id, method, band) -> a link-state table (the columns compared)."""
    return pa.table({
        "_key": [f"{d}|{k}" for d, k, *_ in rows],
        "dataset": [r[0] for r in rows],
        "right_id": pa.array([r[2] for r in rows], pa.string()),
        "method": [r[3] for r in rows],
        "band": [r[4] for r in rows],
    })


REP, HOLD = "legal_representative", "land_holder"

BEFORE = _links([
    (REP, "e1#0", "c1", "exact_id", "accept"),  # unchanged
    (REP, "e2#0", "c2", "probabilistic", "accept"),  # moved to c9
    (REP, "e3#0", "c3", "probabilistic", "accept"),  # lost (to review)
    (REP, "e4#0", "c4", "probabilistic", "review"),  # gained (review -> accept)
    (REP, "e5#0", None, "probabilistic", "reject"),  # stays rejected
    (HOLD, "31:1", "c1", "exact_id", "accept"),
    (HOLD, "31:2", "c5", "probabilistic", "review"),  # left review, rejected
])
AFTER = _links([
    (REP, "e1#0", "c1", "exact_id", "accept"),
    (REP, "e2#0", "c9", "probabilistic", "accept"),
    (REP, "e3#0", "c3", "probabilistic", "review"),
    (REP, "e4#0", "c4", "probabilistic", "accept"),
    (REP, "e5#0", None, "probabilistic", "reject"),
    (HOLD, "31:1", "c1", "exact_id", "accept"),
    (HOLD, "31:2", "c5", "probabilistic", "reject"),
    (HOLD, "31:3", "c6", "probabilistic", "accept"),  # a record only the after side has: gained
])


def test_accepted_links_gained_lost_and_moved_are_counted_per_link_type():
    cmp = compare_links(BEFORE, AFTER)
    rep, hold = cmp["representative_citizen"], cmp["holder_citizen"]
    assert rep["accepted"] == {"before": 3, "after": 3, "gained": 1, "lost": 1, "moved": 1}
    assert rep["review"] == {"before": 1, "after": 1, "entered": 1, "left": 1}
    assert rep["records"] == {"before": 5, "after": 5}
    assert hold["accepted"] == {"before": 1, "after": 2, "gained": 1, "lost": 0, "moved": 0}
    assert hold["review"] == {"before": 1, "after": 0, "entered": 0, "left": 1}
    assert hold["records"] == {"before": 2, "after": 3}


def test_links_are_counted_per_method_and_band_with_every_combination_listed():
    rep = compare_links(BEFORE, AFTER)["representative_citizen"]["links"]
    assert len(rep) == 9
    assert rep["exact_id_accept"] == {"before": 1, "after": 1, "change": 0}
    assert rep["probabilistic_accept"] == {"before": 2, "after": 2, "change": 0}
    assert rep["probabilistic_review"] == {"before": 1, "after": 1, "change": 0}
    assert rep["probabilistic_reject"] == {"before": 1, "after": 1, "change": 0}
    assert rep["legacy_id_accept"] == {"before": 0, "after": 0, "change": 0}


def test_a_link_type_with_no_record_on_either_side_is_left_out():
    only_reps = BEFORE.filter(pa.compute.equal(BEFORE["dataset"], REP))
    assert set(compare_links(only_reps, only_reps)) == {"representative_citizen"}


def _model(levels: dict[str, list[tuple[str, float | None, float | None]]], prior: float) -> dict:
    return {"probability_two_random_records_match": prior, "comparisons": [
        {"output_column_name": name, "comparison_levels": [
            {"label_for_charts": "null", "is_null_level": True},
            *({"label_for_charts": label, "m_probability": m, "u_probability": u} for label, m, u in rows)]}
        for name, rows in levels.items()]}


def test_the_parameters_that_moved_most_come_first_with_m_u_and_weight():
    before = _model({"name": [("exact", 0.9, 0.001), ("different", 0.1, 0.999)],
                     "id": [("exact", 0.98, 0.0004), ("one digit off", None, 0.0001)]}, 1e-4)
    after = _model({"name": [("exact", 0.9, 0.004), ("different", 0.1, 0.999)],
                    "id": [("exact", 0.98, 0.0004), ("one digit off", 0.02, 0.0001)]}, 2e-4)
    cmp = compare_parameters(before, after, top=3)
    assert cmp["prior"] == {"before": 1e-4, "after": 2e-4}
    assert cmp["levels"] == 4 and cmp["levels_moved"] == 2
    first, second = cmp["moved_most"]
    # estimated on one side only: the largest change
    assert (first["comparison"], first["level"], first["m_before"], first["m_after"]) == ("id", "one digit off", None, 0.02)
    assert first["weight_change"] is None
    # u of the exact name x4: the weight falls by two bits
    assert (second["comparison"], second["level"]) == ("name", "exact")
    assert second["u_before"] == 0.001 and second["u_after"] == 0.004
    assert second["weight_change"] == -2.0
    assert math.isclose(second["weight_before"], math.log2(900), rel_tol=1e-3)


def test_parameters_that_did_not_move_are_not_listed():
    model = _model({"name": [("exact", 0.9, 0.001), ("different", 0.1, 0.999)]}, 1e-4)
    cmp = compare_parameters(model, json.loads(json.dumps(model)) | {"linker_uid": "other"})
    assert cmp["levels"] == 2 and cmp["levels_moved"] == 0 and cmp["moved_most"] == []


def test_parameters_compare_against_no_model_before():
    after = _model({"name": [("exact", 0.9, 0.001)]}, 1e-4)
    cmp = compare_parameters(None, after)
    assert cmp["prior"] == {"before": None, "after": 1e-4}
    assert cmp["moved_most"][0]["m_before"] is None and cmp["moved_most"][0]["m_after"] == 0.9


def test_two_trainings_differing_only_in_the_linker_uid_and_the_last_bits_are_the_same_model():
    from lienthong.reconcile.people import TF_SCHEMA, LinkModel
    from lienthong.reconcile.retrain import same_model

    tf = pa.table({"name_fold": ["an", "binh"], "tf_name_fold": [0.25, 0.75]}, schema=TF_SCHEMA)
    a = LinkModel(_model({"name": [("exact", 0.006410256408882411, 0.001)]}, 1e-4) | {"linker_uid": "ilzhfh3q"}, tf)
    b = LinkModel(_model({"name": [("exact", 0.00641025640888241, 0.001)]}, 1e-4) | {"linker_uid": "qicygill"},
                  tf.take([1, 0]))
    assert a.model_id != b.model_id
    assert same_model(a, b)
    c = LinkModel(_model({"name": [("exact", 0.0065, 0.001)]}, 1e-4), tf)
    assert not same_model(a, c)
    d = LinkModel(a.splink, pa.table({"name_fold": ["an", "binh"], "tf_name_fold": [0.5, 0.5]}, schema=TF_SCHEMA))
    assert not same_model(a, d)
