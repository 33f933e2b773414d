"""Person linkage province by province gives the links of linking everything at once.

A three-province country (sandbox `CountryConfig`, raised cross-province rates, as test_country_links) goes
through the real connectors, staging and one reconciliation with `LIENTHONG_LINKAGE_PARTITIONS=none`. Then
the link state is built again from the same staged versions, with the models that reconciliation persisted,
once everything at once and once province by province (`lienthong.reconcile.partitions`): the links are
the same row for row, every partition's candidate registry is smaller than the registry, and the land
holders registered outside their home province are linked to their citizen as they are at once. A model
trained in the partitioned path is the one the whole data gives; a change run with partitions equals a
relink of everything; and a relinking reconciliation with partitions writes the same integrated tables.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

PROVINCES = ("31", "79", "01")
SCORE_TOLERANCE = 1e-9
EXACT_COLUMNS = ("_key", "dataset", "left_id", "right_id", "method", "band", "runner_up_id", "model_id")
SCORES = ("score", "runner_up_score")


@pytest.fixture(scope="module")
def country(tmp_path_factory):
    from province import reconciled_province

    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, models
    from lienthong.reconcile.people import LinkBands
    from sandbox.generator import CountryConfig

    config = CountryConfig(provinces=PROVINCES, citizens=2400, seed=7,
                           rates={"land_other_province": 0.3, "representative_other_province": 0.3,
                                  "moved_province": 0.2})
    root = tmp_path_factory.mktemp("partitions")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIENTHONG_LINKAGE_PARTITIONS", "none")
        with reconciled_province(root, citizens=0, seed=0, config=config) as prov:
            s = prov["settings"]
            assert s.linkage_partitions == "none"
            with connect(warehouse_url(s)) as conn:
                persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
            assert all(persisted.values()), persisted
            staged = {name: prov["stages"][name]["staged_path"] for name in (*linkstate.PERSON_INPUTS, "enterprise")}
            inputs = {name: staged[name] for name in linkstate.PERSON_INPUTS}
            bands = LinkBands(accept=s.match_accept, review=s.match_review)
            trained = {t: p[1] for t, p in persisted.items() if p is not None}
            by_province = dataclasses.replace(s, linkage_partitions="province")
            whole = linkstate.update(root / "whole", inputs, None, dict(trained), run_id="whole", settings=s,
                                     bands=bands)
            part = linkstate.update(root / "part", staged, None, dict(trained), run_id="part",
                                    settings=by_province, bands=bands)
            yield {**prov, "root": root, "staged": staged, "inputs": inputs, "models": trained, "bands": bands,
                   "none": s, "province": by_province, "whole": whole, "part": part}


def _rows(ref: str) -> list[dict[str, Any]]:
    from lienthong import zones

    return zones.read_table(ref).sort_by("_key").to_pylist()


def _differences(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> list[Any]:
    """Rows that differ in an exact column, or in a score by more than SCORE_TOLERANCE."""
    if len(got) != len(want):
        return [("rows", len(got), len(want))]
    out = []
    for g, w in zip(got, want, strict=True):
        exact = all(g[c] == w[c] for c in EXACT_COLUMNS)
        close = all((g[c] is None and w[c] is None) or (g[c] is not None and w[c] is not None
                                                          and abs(g[c] - w[c]) <= SCORE_TOLERANCE) for c in SCORES)
        if not (exact and close):
            out.append((g, w))
    return out


def test_partitioned_links_equal_linking_everything_at_once_with_the_same_model(country):
    from lienthong import zones
    from lienthong.reconcile import linkstate

    whole, part = country["whole"], country["part"]
    assert whole.mode == part.mode == "full" and not whole.trained and not part.trained
    got, want = _rows(part.refs[linkstate.LINKS]), _rows(whole.refs[linkstate.LINKS])
    assert len(want) > 1000
    diff = _differences(got, want)
    assert not diff, diff[:5]
    # the models scored both, and the counts add up to those of linking at once
    assert part.models == whole.models == {t: m.model_id for t, m in country["models"].items()}
    assert part.counts["links"] == whole.counts["links"]
    for name in (linkstate.REGISTRY, linkstate.LEFT):
        assert zones.read_table(part.refs[name]).sort_by("_key").equals(
            zones.read_table(whole.refs[name]).sort_by("_key")), name
    # and they equal the link state the reconciliation left
    held = country["first"]["link_state"]["refs"][linkstate.LINKS]
    assert not _differences(got, _rows(held))


def test_provinces_linked_in_parts_under_a_candidate_limit_give_the_same_links(country, tmp_path: Path, caplog):
    """A limit of a fifth of the largest province's candidates splits every province into parts (buckets of
    the folded name, as many as the limit goes into its records or its candidates); the link state they build is the one linking everything at once builds."""
    import logging

    from lienthong import zones
    from lienthong.reconcile import linkstate, partitions
    from lienthong.reconcile.people import PERSON_COLUMNS

    part = country["part"]
    left = zones.read_table(part.refs[linkstate.LEFT])
    offices = partitions.head_offices(country["staged"]["enterprise"])
    largest = max(partitions.candidates(rows.select(PERSON_COLUMNS), part.refs[linkstate.REGISTRY]).num_rows
                  for name, rows in partitions.partitions(left, offices).items() if name in PROVINCES)
    limited = dataclasses.replace(country["province"], link_candidate_rows=largest // 5)
    with caplog.at_level(logging.INFO, logger="lienthong.reconcile.partitions"):
        done = linkstate.update(tmp_path / "parts", country["staged"], None, dict(country["models"]), run_id="parts",
                                settings=limited, bands=country["bands"])
    # every province went in parts, none of them reaching as many registry rows as its province
    split = [r.args for r in caplog.records if r.msg.startswith("link partition %s, part %d of %d")]
    assert {a[0] for a in split} >= set(PROVINCES), split
    summaries = {r.args[0]: r.args for r in caplog.records if r.msg.startswith("link partition %s: ")}
    for name in PROVINCES:
        _, records, reached, _, _, parts, biggest, *_ = summaries[name]
        assert parts == -(-max(records, reached) // limited.link_candidate_rows) > 1, summaries[name]
        assert biggest < reached, summaries[name]
    got, want = _rows(done.refs[linkstate.LINKS]), _rows(country["whole"].refs[linkstate.LINKS])
    assert len(want) > 1000
    diff = _differences(got, want)
    assert not diff, diff[:5]
    assert done.counts["links"] == country["whole"].counts["links"]


def _reached(left: pa.Table, registry: pa.Table) -> set[str]:
    """The registry rows that the exact passes' ID joins pair with a record of `left`, or the model's blocking
    rules (Splink's deterministic link over the model's settings) with a record they do not link."""
    import logging

    from splink import DuckDBAPI, Linker

    from lienthong.duck import session
    from lienthong.reconcile.people import PERSON_COLUMNS, _exact_links, _settings

    with session(purpose="test") as con:
        con.register("left_in", left.select(PERSON_COLUMNS))
        con.register("right_in", registry.select(PERSON_COLUMNS))
        con.execute("CREATE TABLE l AS SELECT * FROM left_in")
        con.execute("CREATE TABLE r AS SELECT * FROM right_in")
        exact = {row[0] for row in con.execute(
            "SELECT r.unique_id FROM l JOIN r ON l.id_number = r.id_number "
            "UNION SELECT r.unique_id FROM l JOIN r ON l.legacy_id = r.legacy_id").fetchall()}
        _exact_links(con)
        con.execute("CREATE TABLE l_rest AS SELECT * FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_links)")
        db = DuckDBAPI(connection=con)
        linker = Linker([db.register("l_rest", dataset_display_name="left"),
                         db.register("r", dataset_display_name="right")],
                        _settings(), log_level=logging.WARNING)
        pairs = linker.inference.deterministic_link()
        blocked = {row[0] for row in con.execute(
            f"SELECT CASE WHEN source_dataset_l = 'left' THEN unique_id_r ELSE unique_id_l END "
            f"FROM {pairs.physical_name}").fetchall()}
    return exact | blocked


def test_every_partition_s_candidates_are_fewer_than_the_registry(country):
    from lienthong import zones
    from lienthong.reconcile import linkstate, partitions
    from lienthong.reconcile.people import PERSON_COLUMNS

    part, s = country["part"], country["province"]
    left = zones.read_table(part.refs[linkstate.LEFT]).sort_by("_key")
    offices = partitions.head_offices(country["staged"]["enterprise"])
    parts = partitions.partitions(left, offices)
    assert set(PROVINCES) <= set(parts), list(parts)
    for name in PROVINCES:  # both left datasets in every province (representatives by their head office)
        assert set(parts[name]["dataset"].to_pylist()) == set(linkstate.LEFT_DATASETS), name
    registry = zones.read_table(part.refs[linkstate.REGISTRY])
    total = registry.num_rows
    sizes = {}
    for name, rows in parts.items():
        found = partitions.candidates(rows.select(PERSON_COLUMNS), part.refs[linkstate.REGISTRY], s)
        # exactly the registry rows some pair of the exact passes or of the model's blocking reaches
        assert set(found["_key"].to_pylist()) == _reached(rows, registry), name
        sizes[name] = (rows.num_rows, found.num_rows)
    print({"registry": total, "partitions (left, candidates)": sizes})
    assert sum(n for n, _ in sizes.values()) == left.num_rows
    for name, (n, candidates) in sizes.items():
        assert 0 < candidates < total, (name, n, candidates, total)


def _truth(truth_dir: Path) -> tuple[dict[str, int], set[str], dict[str, int]]:
    """(person of each land holder record, the holder records outside their person's home province, person of
    each citizen record) from the country's truth."""
    t = pq.read_table(truth_dir / "links.parquet", columns=["dataset", "record_key", "person_id", "cross_province"])
    holders = t.filter(pc.and_(pc.equal(t["dataset"], "land_holder"), pc.is_valid(t["person_id"])))
    citizens = t.filter(pc.equal(t["dataset"], "citizen"))
    cross = holders.filter(pc.fill_null(holders["cross_province"], False))
    return (dict(zip(holders["record_key"].to_pylist(), holders["person_id"].to_pylist(), strict=True)),
            set(cross["record_key"].to_pylist()),
            dict(zip(citizens["record_key"].to_pylist(), citizens["person_id"].to_pylist(), strict=True)))


def test_holders_outside_their_home_province_are_linked_across_partitions(country):
    from lienthong import adminunits, zones
    from lienthong.reconcile import linkstate

    holder_person, cross, citizen_person = _truth(Path(country["truth"]))
    citizens = zones.read_table(country["staged"]["citizen"], columns=["citizen_id", "residence_commune_code_2025"])
    province_of = {code: c.province_code for code, c in adminunits.new_communes().items()}
    home = {cid: province_of.get(code or "") for cid, code in zip(
        citizens["citizen_id"].to_pylist(), citizens["residence_commune_code_2025"].to_pylist(), strict=True)}
    in_registry = {citizen_person[c] for c in home if c in citizen_person}

    def judged(ref: str) -> dict[str, tuple[bool, bool, str | None]]:
        """cross-province holder key -> (accepted, right person, the linked citizen's home province)."""
        out = {}
        for r in _rows(ref):
            if r["dataset"] != "land_holder" or r["left_id"] not in cross:
                continue
            person = holder_person[r["left_id"]]
            if person not in in_registry:
                continue
            right = citizen_person.get(r["right_id"]) if r["right_id"] else None
            out[r["left_id"]] = (r["band"] == "accept", right == person, home.get(r["right_id"] or ""))
        return out

    part = judged(country["part"].refs[linkstate.LINKS])
    assert part == judged(country["whole"].refs[linkstate.LINKS])
    accepted = [v for v in part.values() if v[0]]
    assert len(part) >= 40, len(part)
    assert all(right for _, right, _ in accepted), [k for k, v in part.items() if v[0] and not v[1]]
    assert len(accepted) >= 0.95 * len(part), (len(accepted), len(part))
    # the holder's partition is the province of its land registry; the citizen it is linked to lives elsewhere
    elsewhere = [k for k, (_, right, province) in part.items() if right and province and province != k.split(":")[0]]
    assert len(elsewhere) >= 0.9 * len(accepted), (len(elsewhere), len(accepted))


def test_a_model_trained_in_the_partitioned_path_is_the_one_the_whole_data_gives(country, tmp_path: Path):
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.retrain import same_model

    fresh = linkstate.update(tmp_path / "train", country["staged"], None, {}, run_id="train",
                             settings=country["province"], bands=country["bands"])
    assert fresh.mode == "full" and set(fresh.trained) == set(linkstate.LEFT_DATASETS.values())
    for link_type, model in fresh.trained.items():
        assert same_model(model, country["models"][link_type]), link_type
    outcome = ("_key", "right_id", "method", "band")
    got = [{c: r[c] for c in outcome} for r in _rows(fresh.refs[linkstate.LINKS])]
    want = [{c: r[c] for c in outcome} for r in _rows(country["whole"].refs[linkstate.LINKS])]
    assert got == want


def _copy(ref: str, to: Path) -> str:
    from lienthong import zones

    zones.create(to, zones.read_table(ref), run_id="copy", partition_by=zones.open_table(ref).metadata().partition_columns or None)
    return zones.ref(to, zones.version(to) or 0)


def _upsert(ref: str, rows: list[dict[str, Any]], run_id: str) -> str:
    """A new version of a staged table with `rows` upserted as staging writes them (a new record hash, the
    commit's `_staged_version`)."""
    from lienthong import zones

    path, _ = zones.split_ref(ref)
    version = (zones.version(path) or 0) + 1
    rows = [{**r, "_record_hash": f"{random.Random(r['_merge_key']).getrandbits(128):032x}", "_staged_version": version}
            for r in rows]
    table = pa.Table.from_pylist(rows, schema=zones.schema(ref)).append_column(
        zones.OP, pa.array(["upsert"] * len(rows), pa.string()))
    commit = zones.merge(path, table, key="_merge_key", run_id=run_id,
                         partition_by=zones.open_table(ref).metadata().partition_columns or None)
    return zones.ref(path, commit.version if commit.version is not None else zones.version(path) or 0)


def test_a_change_run_by_province_equals_relinking_everything(country, tmp_path: Path):
    from lienthong import zones
    from lienthong.reconcile import linkstate

    s, models, bands = country["province"], country["models"], country["bands"]
    v0 = {n: _copy(ref, tmp_path / "staged" / n) for n, ref in country["staged"].items()}
    first = linkstate.update(tmp_path / "inc", v0, None, dict(models), run_id="c0", settings=s, bands=bands)
    rng = random.Random(11)
    cit = zones.read_table(v0["citizen"]).sort_by("_merge_key").to_pylist()
    holders = zones.read_table(v0["land_holder"]).sort_by("_merge_key").to_pylist()
    # citizens renamed and given a twin (a new ID, the same person values); holders renamed
    renamed = [r | {"full_name": r["full_name"].split()[0] + " Thị Hoa"} for r in rng.sample(cit, 10)]
    twins = []
    for r in rng.sample(cit, 5):
        new_id = f"0{rng.randrange(10**10, 10**11)}"
        twins.append(r | {"citizen_id": new_id, "legacy_id": None, "_merge_key": new_id, "_identity": new_id})
    v1 = dict(v0)
    v1["citizen"] = _upsert(v0["citizen"], renamed + twins, "c1")
    v1["land_holder"] = _upsert(v0["land_holder"],
                                [r | {"name": (r["name"] or "") + " Văn"} for r in rng.sample(holders, 10)], "c1")
    inc = linkstate.update(tmp_path / "inc", v1, {n: [v0[n]] for n in linkstate.PERSON_INPUTS}, dict(models),
                           run_id="c1", settings=s, bands=bands, state_models=first.models)
    full = linkstate.update(tmp_path / "full", v1, None, dict(models), run_id="f1", settings=country["none"],
                            bands=bands)
    assert inc.mode == "change" and 0 < inc.counts["relinked"] < first.counts["left"] / 5, inc.counts
    diff = _differences(_rows(inc.refs[linkstate.LINKS]), _rows(full.refs[linkstate.LINKS]))
    assert not diff, diff[:5]


def test_a_relinking_reconciliation_by_province_writes_the_same_integrated_tables(country):
    from lienthong.reconcile import linkstate
    from lienthong.reconcile.run import reconcile

    first = country["first"]
    again = reconcile("r2-partitioned", country["province"], relink=True)
    assert again["link_state"]["mode"] == "full" and again["link_state"]["models"] == first["link_state"]["models"]
    assert not _differences(_rows(again["link_state"]["refs"][linkstate.LINKS]),
                            _rows(first["link_state"]["refs"][linkstate.LINKS]))
    assert set(again["outputs"]) == set(first["outputs"])
    for name in ("enterprise_representative_link", "parcel_holder_link"):
        assert name in first["outputs"], name
    differ = {name: (o["content_hash"], first["outputs"][name]["content_hash"])
              for name, o in again["outputs"].items() if o["content_hash"] != first["outputs"][name]["content_hash"]}
    assert not differ, differ
