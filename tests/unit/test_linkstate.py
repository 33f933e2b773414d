"""The pieces of the link state that decide what a change relinks: candidate keys qualified for a join, the
left records a changed citizen touches, and how relinked links differ from the state's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import linkstate
from lienthong.reconcile.people import CANDIDATE_KEYS, PERSON_SCHEMA, person_table


def _person(uid: str, **cols) -> dict:
    return {"unique_id": uid, **cols}


def _people(rows: list[dict]) -> pa.Table:
    return person_table({c: [r.get(c) for r in rows] for c in PERSON_SCHEMA.names}, len(rows))


def test_a_candidate_key_is_qualified_column_by_column():
    assert linkstate._qualified("substr(id_number, 1, 6)", "l") == "substr(l.id_number, 1, 6)"
    assert linkstate._qualified("name_fold", "c") == "c.name_fold"
    # every key of the model names person columns only
    for key in CANDIDATE_KEYS:
        for expression in key:
            assert "l." in linkstate._qualified(expression, "l"), expression


def test_a_changed_citizen_touches_the_left_records_sharing_any_candidate_key():
    left = _people([
        _person("a", name_fold="nguyen van an", birth_year=1980),  # same name and birth year
        _person("b", id_number="031080000123"),  # the citizen's ID
        _person("c", name_fold="tran thi binh", birth_year=1980, commune="tan dan"),  # nothing in common
        _person("d", birth_date=dt.date(1980, 5, 14), given_name="an"),  # the same birth date and given name
        _person("e", id_number="031080999999", given_name="an", family_name="nguyen"),  # same ID prefix and names
        _person("f", birth_date=dt.date(1980, 5, 14)),  # the same birth date alone: no key
        _person("g", id_number="031080999999", given_name="an"),  # the same ID prefix and given name alone
    ])
    left = left.add_column(0, linkstate.KEY, left["unique_id"])
    changed = _people([_person("031080000123", id_number="031080000123", name_fold="nguyen van an",
                               birth_year=1980, birth_date=dt.date(1980, 5, 14), given_name="an",
                               family_name="nguyen", commune="an hai")])
    with session(purpose="test") as con:
        con.register("person_left", left)
        assert linkstate.dirty_by_registry(con, changed) == {"a", "b", "d", "e"}
        assert linkstate.dirty_by_registry(con, changed.slice(0, 0)) == set()


def test_links_changed_counts_what_a_consumer_sees_move(tmp_path: Path):
    def links(rows: list[tuple]) -> pa.Table:
        keys, rights, methods, bands = zip(*rows, strict=True) if rows else ((), (), (), ())
        n = len(keys)
        return pa.table({
            linkstate.KEY: list(keys), "dataset": ["land_holder"] * n, "left_id": list(keys),
            "right_id": list(rights), "method": list(methods), "score": [1.0] * n, "band": list(bands),
            "runner_up_id": [None] * n, "runner_up_score": [None] * n, "model_id": ["m"] * n,
        }, schema=linkstate.LINK_STATE_SCHEMA)

    before = links([("k1", "c1", "exact_id", "accept"), ("k2", "c2", "probabilistic", "review"),
                    ("k3", "c3", "exact_id", "accept"), ("k4", None, "probabilistic", "reject")])
    path = tmp_path / "person_link"
    zones.create(path, before, run_id="t")
    relinked = links([("k1", "c1", "exact_id", "accept"),  # same
                      ("k2", "c2", "probabilistic", "accept"),  # band moved
                      ("k4", "c9", "probabilistic", "accept"),  # now linked
                      ("k5", "c5", "exact_id", "accept")])  # a new record
    out = linkstate.links_changed(zones.ref(path, 0), relinked, {"k3"}, None)
    assert out == {"new": 1, "changed": 2, "same": 1, "removed": 1}


def test_one_dataset_s_left_rows_are_a_slice_when_sorted_and_a_copy_otherwise():
    import pyarrow as pa

    from lienthong.reconcile.linkstate import _rows_of

    sorted_left = pa.table({"dataset": ["land_holder"] * 3 + ["legal_representative"] * 2, "v": [1, 2, 3, 4, 5]})
    reps = _rows_of(sorted_left, "legal_representative")
    assert reps["v"].to_pylist() == [4, 5]
    # a slice shares the table's buffers (nothing copied)
    assert reps["v"].chunk(0).buffers()[1].address == sorted_left["v"].chunk(0).buffers()[1].address
    mixed = pa.table({"dataset": ["land_holder", "legal_representative", "land_holder"], "v": [1, 2, 3]})
    assert _rows_of(mixed, "land_holder")["v"].to_pylist() == [1, 3]
    assert _rows_of(mixed, "other").num_rows == 0
