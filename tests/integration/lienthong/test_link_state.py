"""Linking only the change equals relinking everything with the same models.

A real province (sandbox, real connectors, real staging) is the start; then random change sequences are
applied to the staged Delta tables as staging would apply them (upserts with a new record hash and the
commit's `_staged_version`, deletes):
new citizens, ID corrections, name corrections, duplicate citizen records appearing and disappearing,
representatives' IDs mistyped and corrected, representatives and holders added, changed and removed, holders
turning into organisations or deleted. After every step the link state brought forward by
`linkstate.update` from the previous step's versions equals a full relink of the same staged versions with
the same persisted models, and the change relinked far fewer records than the whole.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong import zones

pytestmark = pytest.mark.integration

CITIZENS = 2500
SEED = 5
LEFT = ("legal_representative", "land_holder")


@pytest.fixture(scope="module")
def staged_province(tmp_path_factory):
    from province import ingested_province

    from lienthong import pipeline
    from lienthong.reconcile.linkstate import PERSON_INPUTS
    from lienthong.settings import load_settings

    with ingested_province(tmp_path_factory.mktemp("linkstate"), citizens=CITIZENS, seed=SEED) as prov:
        refs = {name: pipeline.stage(name, "r1")["staged_path"] for name in PERSON_INPUTS}
        yield {"root": prov["root"], "refs": refs, "settings": load_settings()}


# --- changes applied as staging applies them ----------------------------------------------------------------


def _rehash(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**row, "_record_hash": f"{rng.getrandbits(128):032x}"}


def _apply(ref: str, upserts: list[dict[str, Any]], deletes: list[str], run_id: str) -> str:
    path, _ = zones.split_ref(ref)
    table = zones.open_table(ref)
    schema = zones.schema(ref)
    parts = table.metadata().partition_columns or None
    # as staging writes them: every row a commit writes carries that commit's version in `_staged_version`
    next_version = (zones.version(path) or 0) + 1
    upserts = [{**row, "_staged_version": next_version} for row in upserts]
    rows = pa.Table.from_pylist(upserts, schema=schema).append_column(
        zones.OP, pa.array(["upsert"] * len(upserts), pa.string()))
    if deletes:
        current = zones.read_table(ref).filter(pc.is_in(zones.read_table(ref)["_merge_key"], pa.array(deletes)))
        gone = current.select(["_merge_key", *(parts or [])]).append_column(
            zones.OP, pa.array(["delete"] * current.num_rows, pa.string()))
        rows = pa.concat_tables([rows, gone], promote_options="default")
    commit = zones.merge(path, rows, key="_merge_key", run_id=run_id, partition_by=parts)
    return zones.ref(path, commit.version if commit.version is not None else zones.version(path) or 0)


def _new_id(rng: random.Random) -> str:
    return f"0{rng.randrange(10**10, 10**11)}"


def change_step(refs: dict[str, str], rng: random.Random, run_id: str) -> tuple[dict[str, str], list[str]]:
    """A random mix of source changes; returns the new refs and what was done."""
    cit = zones.read_table(refs["citizen"]).sort_by("_merge_key").to_pylist()
    reps = zones.read_table(refs["legal_representative"]).sort_by("_merge_key").to_pylist()
    holders = zones.read_table(refs["land_holder"]).sort_by("_merge_key").to_pylist()
    done: list[str] = []
    cu: list[dict] = []
    cd: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["new", "id_correction", "name_correction", "duplicate", "remove", "death"])
        row = rng.choice(cit)
        if kind == "new":
            new = _rehash(row, rng) | {"citizen_id": _new_id(rng), "full_name": row["full_name"] + " Minh",
                                        "legacy_id": None}
            new["_merge_key"] = new["_identity"] = new["citizen_id"]
            cu.append(new)
        elif kind == "id_correction":
            new = _rehash(row, rng) | {"citizen_id": _new_id(rng)}
            new["_merge_key"] = new["_identity"] = new["citizen_id"]
            cu.append(new)
            cd.append(row["_merge_key"])
        elif kind == "name_correction":
            cu.append(_rehash(row, rng) | {"full_name": row["full_name"].split()[0] + " Thị Hoa"})
        elif kind == "duplicate":
            new = _rehash(row, rng) | {"citizen_id": _new_id(rng)}
            new["_merge_key"] = new["_identity"] = new["citizen_id"]
            cu.append(new)
        elif kind == "remove":
            cd.append(row["_merge_key"])
        else:
            cu.append(_rehash(row, rng) | {"status": "DA_MAT"})
        done.append(f"citizen {kind}")
    ru: list[dict] = []
    rd: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["typo_id", "rename", "remove", "new_for_citizen"])
        row = rng.choice(reps)
        if kind == "typo_id" and row["document_number"]:
            d = row["document_number"]
            ru.append(_rehash(row, rng) | {"document_number": d[:-1] + str((int(d[-1]) + 1) % 10)})
        elif kind == "rename":
            ru.append(_rehash(row, rng) | {"full_name": row["full_name"].upper()})
        elif kind == "remove":
            rd.append(row["_merge_key"])
        else:
            c = rng.choice(cit)
            pos = 90 + rng.randrange(9)
            ru.append(_rehash(row, rng) | {"position": pos, "full_name": c["full_name"], "document_number": c["citizen_id"],
                                           "document_type": "CCCD", "_merge_key": f"{row['_identity']}#{pos}"})
        done.append(f"representative {kind}")
    hu: list[dict] = []
    hd: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["rename", "deleted", "organisation", "new_for_citizen", "drop_id"])
        row = rng.choice(holders)
        if kind == "rename":
            hu.append(_rehash(row, rng) | {"name": (row["name"] or "") + " Văn"})
        elif kind == "deleted":
            hu.append(_rehash(row, rng) | {"deleted": True})
        elif kind == "organisation":
            hu.append(_rehash(row, rng) | {"holder_type": "TO_CHUC"})
        elif kind == "drop_id":
            hu.append(_rehash(row, rng) | {"document_number": None, "document_type": None})
        else:
            c = rng.choice(cit)
            hid = 10**9 + rng.randrange(10**6)
            key = f"{row['province_code']}:{hid}:{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}"
            hu.append(_rehash(row, rng) | {"holder_id": hid, "name": c["full_name"], "document_number": c["citizen_id"],
                                           "holder_type": "CA_NHAN", "deleted": False, "_merge_key": key,
                                           "_identity": key})
        done.append(f"holder {kind}")
    out = dict(refs)
    out["citizen"] = _apply(refs["citizen"], cu, cd, run_id)
    out["legal_representative"] = _apply(refs["legal_representative"], ru, rd, run_id)
    out["land_holder"] = _apply(refs["land_holder"], hu, hd, run_id)
    return out, done


def _reset(refs: dict[str, str], run_id: str) -> dict[str, str]:
    """New versions of the staged tables holding the rows of `refs` again (a test starts from the province)."""
    out = {}
    for name, ref in refs.items():
        path, _ = zones.split_ref(ref)
        zones.create(path, zones.read_table(ref), run_id=run_id,
                     partition_by=zones.open_table(ref).metadata().partition_columns or None)
        out[name] = zones.ref(path, zones.version(path) or 0)
    return out


def _links(ref: str) -> list[dict]:
    return zones.read_table(ref).sort_by("_key").to_pylist()


def _changes_linked_alike(staged_province, tmp_path: Path, seed: int) -> int:
    """Random change steps from seed `seed`, each linked as a change and relinked in full: the two equal after
    every step. Returns how many records the pre-scoring kept."""
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.people import LinkBands

    s = staged_province["settings"]
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    refs = _reset(staged_province["refs"], f"reset-{seed}")
    first = linkstate.update(tmp_path / f"inc{seed}", refs, None, {}, run_id="s0", settings=s, bands=bands)
    assert first.mode == "full" and set(first.trained) == {"representative_citizen", "holder_citizen"}
    models = dict(first.trained)
    state_models = first.models
    total = first.counts["left"]
    rng = random.Random(seed)
    bases = refs
    kept_by_prescoring = 0
    for step in range(1, 5):
        refs, done = change_step(refs, rng, f"s{seed}-{step}")
        inc = linkstate.update(tmp_path / f"inc{seed}", refs, {n: [bases[n]] for n in linkstate.PERSON_INPUTS}, models,
                               run_id=f"s{step}", settings=s, bands=bands, state_models=state_models)
        full = linkstate.update(tmp_path / f"full{seed}-{step}", refs, None, models, run_id=f"f{step}", settings=s,
                                bands=bands)
        assert inc.mode == "change" and full.mode == "full", (inc.mode, full.mode)
        assert not full.trained  # the persisted models scored both
        got, want = _links(inc.refs[linkstate.LINKS]), _links(full.refs[linkstate.LINKS])
        diff = [(g, w) for g, w in zip(got, want, strict=False) if g != w][:5]
        assert len(got) == len(want) and not diff, (step, done, len(got), len(want), diff)
        for name in (linkstate.REGISTRY, linkstate.LEFT):
            a = zones.read_table(inc.refs[name]).sort_by("_key")
            b = zones.read_table(full.refs[name]).sort_by("_key")
            assert a.equals(b), (step, name, done)
        assert 0 < inc.counts["relinked"] < total / 5, (step, done, inc.counts)
        kept_by_prescoring += inc.counts["kept_after_prescoring"]
        bases, state_models = refs, inc.models
    return kept_by_prescoring


def test_linking_the_change_equals_relinking_everything(staged_province, tmp_path: Path):
    kept_by_prescoring = sum(_changes_linked_alike(staged_province, tmp_path, seed) for seed in (1, 2))
    # the pre-scoring of records that share only a blocking key with changed citizens did skip some (and the
    # links still equalled a full relink after every step)
    assert kept_by_prescoring > 0


def test_a_killed_run_is_covered_by_the_next(staged_province, tmp_path: Path):
    """State written by a run that did not finish (a change later undone) is compared against too."""
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.people import LinkBands

    s = staged_province["settings"]
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    v0 = _reset(staged_province["refs"], "reset-kill")
    first = linkstate.update(tmp_path / "inc", v0, None, {}, run_id="k0", settings=s, bands=bands)
    models = dict(first.trained)
    rng = random.Random(7)
    v1, _ = change_step(v0, rng, "k1")
    # a run to v1 wrote its state, then died before its success was recorded
    linkstate.update(tmp_path / "inc", v1, {n: [v0[n]] for n in linkstate.PERSON_INPUTS}, models, run_id="k1",
                     settings=s, bands=bands, state_models=first.models)
    # the sources went back to v0's content (new versions of the tables holding v0's rows)
    v2 = _reset(v0, "k2")
    bases = {n: [v0[n], v1[n]] for n in linkstate.PERSON_INPUTS}
    inc = linkstate.update(tmp_path / "inc", v2, bases, models, run_id="k2", settings=s, bands=bands,
                           state_models=first.models)
    full = linkstate.update(tmp_path / "full", v2, None, models, run_id="f2", settings=s, bands=bands)
    assert _links(inc.refs[linkstate.LINKS]) == _links(full.refs[linkstate.LINKS])
    # with only the last successful base, the undone change would have been missed
    assert inc.counts["relinked"] > 0


def test_a_change_that_moves_no_person_shape_relinks_nothing(staged_province, tmp_path: Path):
    """Rows restaged with a new record hash but the same values a link reads (an update time, a death) are
    changes of the staged tables, not of any link: nothing is relinked and the links still equal a relink."""
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.people import LinkBands

    s = staged_province["settings"]
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    v0 = _reset(staged_province["refs"], "reset-touch")
    first = linkstate.update(tmp_path / "inc", v0, None, {}, run_id="t0", settings=s, bands=bands)
    models = dict(first.trained)
    rng = random.Random(5)
    cit = zones.read_table(v0["citizen"]).sort_by("_merge_key").to_pylist()
    holders = zones.read_table(v0["land_holder"]).sort_by("_merge_key").to_pylist()
    v1 = dict(v0)
    v1["citizen"] = _apply(v0["citizen"], [_rehash(r, rng) | {"status": "DA_MAT"} for r in cit[::40]], [], "t1")
    v1["land_holder"] = _apply(v0["land_holder"], [_rehash(r, rng) for r in holders[::40]], [], "t1")
    inc = linkstate.update(tmp_path / "inc", v1, {n: [v0[n]] for n in linkstate.PERSON_INPUTS}, models,
                           run_id="t1", settings=s, bands=bands, state_models=first.models)
    assert inc.mode == "change" and inc.counts["changed"]["citizen"] >= len(cit[::40]), inc.counts
    assert inc.counts["relinked"] == 0 and inc.counts["registry_keys_moved"] == 0, inc.counts
    full = linkstate.update(tmp_path / "full", v1, None, models, run_id="f1", settings=s, bands=bands)
    assert _links(inc.refs[linkstate.LINKS]) == _links(full.refs[linkstate.LINKS])


def test_a_new_citizen_that_outranks_a_runner_up_relinks_the_records_it_could_take(staged_province, tmp_path: Path):
    """Records linked by the model that share only blocking keys with a changed citizen are pre-scored: one is
    relinked when a new citizen scores at least as high as its runner-up. Here each chosen record's best
    citizen gets a twin (same person values, a new ID): the twin ties with the best, so the link's band (the
    margin over the runner-up) must move, and the incremental links must still equal a full relink."""
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.people import LinkBands

    s = staged_province["settings"]
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    refs = _reset(staged_province["refs"], "reset-twin")
    first = linkstate.update(tmp_path / "inc", refs, None, {}, run_id="t0", settings=s, bands=bands)
    models = dict(first.trained)
    links = [r for r in _links(first.refs[linkstate.LINKS])
             if r["method"] == "probabilistic" and r["band"] == "accept" and r["right_id"]]
    assert links, "the province has records linked by the model"
    rng = random.Random(3)
    chosen = rng.sample(links, min(3, len(links)))
    cit = {r["citizen_id"]: r for r in zones.read_table(refs["citizen"]).to_pylist()}
    twins = []
    for link in chosen:
        twin = _rehash(cit[link["right_id"]], rng) | {"citizen_id": _new_id(rng), "legacy_id": None}
        twin["_merge_key"] = twin["_identity"] = twin["citizen_id"]
        twins.append(twin)
    changed = dict(refs)
    changed["citizen"] = _apply(refs["citizen"], twins, [], "twin")
    inc = linkstate.update(tmp_path / "inc", changed, {n: [refs[n]] for n in linkstate.PERSON_INPUTS}, models,
                           run_id="t1", settings=s, bands=bands, state_models=first.models)
    full = linkstate.update(tmp_path / "full", changed, None, models, run_id="tf", settings=s, bands=bands)
    got, want = _links(inc.refs[linkstate.LINKS]), _links(full.refs[linkstate.LINKS])
    assert got == want
    after = {r["_key"]: r for r in got}
    moved = [k["_key"] for k in chosen if after[k["_key"]]["band"] != "accept"
             or after[k["_key"]]["runner_up_id"] != k["runner_up_id"]]
    assert moved, "a twin of the best candidate moves the link (band or runner-up)"
    assert inc.counts["relinked"] < first.counts["left"] / 5, inc.counts
