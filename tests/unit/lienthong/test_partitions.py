"""The pieces of partitioned person linkage: which partition a left record is in, which registry rows a
partition can link to (a superset of every pair the exact passes and Splink's blocking make, and nothing
that shares no candidate key), the model check and the merged counts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lienthong import zones
from lienthong.duck import session
from lienthong.reconcile import linkstate, partitions
from lienthong.reconcile.people import (
    PERSON_COLUMNS,
    PERSON_SCHEMA,
    TF_SCHEMA,
    LinkModel,
    _exact_links,
    _settings,
    person_table,
)


def _people(rows: list[dict]) -> pa.Table:
    return person_table({c: [r.get(c) for r in rows] for c in PERSON_SCHEMA.names}, len(rows))


def _registry(tmp_path: Path, people: pa.Table) -> str:
    """`people` as a Delta version in the link state's registry shape."""
    path = tmp_path / "person_registry"
    zones.create(path, people.add_column(0, linkstate.KEY, people["unique_id"]).cast(linkstate.REGISTRY_SCHEMA),
                 run_id="t")
    return zones.ref(path, 0)


def _left(rows: list[tuple[str, str]]) -> pa.Table:
    """Left rows (dataset, unique_id) in the link state's left shape, the person columns null."""
    people = _people([{"unique_id": uid} for _, uid in rows])
    return people.add_column(0, "dataset", pa.array([d for d, _ in rows], pa.string()))


def test_the_link_state_and_the_partitions_key_their_rows_alike():
    assert partitions.KEY == linkstate.KEY


def test_a_holder_is_in_its_registry_s_province_and_a_representative_in_its_head_office_s():
    left = _left([("land_holder", "31:1001"), ("land_holder", "79:17"), ("legal_representative", "0312345678#0"),
                  ("legal_representative", "0200000001-001#2"), ("legal_representative", "0100000009#0"),
                  ("land_holder", ":5"), ("land_holder", "5")])
    offices = pa.table({"enterprise_code": ["0312345678", "0200000001-001"], "province": ["79", "31"]},
                       schema=partitions.HEAD_OFFICE_SCHEMA)
    assert partitions.partition_of(left, offices).to_pylist() == ["31", "79", "79", "31", "unknown", "unknown",
                                                                  "unknown"]
    # without the enterprises' head offices, representatives have no province
    assert partitions.partition_of(left).to_pylist() == ["31", "79", "unknown", "unknown", "unknown", "unknown",
                                                         "unknown"]
    parts = partitions.partitions(left, offices)
    assert list(parts) == ["31", "79", "unknown"]
    assert parts["31"]["unique_id"].to_pylist() == ["31:1001", "0200000001-001#2"]


def test_a_head_office_is_in_the_2025_province_of_its_commune_else_in_the_province_sent(tmp_path: Path):
    from lienthong import adminunits

    commune_79 = next(code for code, c in adminunits.new_communes().items() if c.province_code == "79")
    enterprises = pa.table({
        "enterprise_code": ["0300000001", "0200000002", "0100000003", "0100000004"],
        "head_office_commune_code_2025": [commune_79, None, "99999", None],
        "head_office_province_code": ["01", "31", "30", None],  # the first one moved: its 2025 commune wins
        "name": ["a", "b", "c", "d"],
    })
    zones.create(tmp_path / "enterprise", enterprises, run_id="t")
    offices = partitions.head_offices(zones.ref(tmp_path / "enterprise", 0))
    assert offices.schema == partitions.HEAD_OFFICE_SCHEMA
    assert offices.to_pylist() == [{"enterprise_code": "0300000001", "province": "79"},
                                   {"enterprise_code": "0200000002", "province": "31"},
                                   {"enterprise_code": "0100000003", "province": "30"}]


def _blocked_pairs(left: pa.Table, registry: pa.Table) -> set[tuple[str, str]]:
    """(left id, registry id) of every pair the link makes a candidate: the exact passes' ID joins, and the
    pairs Splink's blocking rules generate (its deterministic link over the model's own settings) for the
    left records the exact passes do not link (`link_people` scores only those)."""
    from splink import DuckDBAPI, Linker

    with session(purpose="test") as con:
        con.register("left_in", left.select(PERSON_COLUMNS))
        con.register("right_in", registry.select(PERSON_COLUMNS))
        con.execute("CREATE TABLE l AS SELECT * FROM left_in")
        con.execute("CREATE TABLE r AS SELECT * FROM right_in")
        exact = {(a, b) for a, b in con.execute(
            "SELECT l.unique_id, r.unique_id FROM l JOIN r ON l.id_number = r.id_number "
            "UNION SELECT l.unique_id, r.unique_id FROM l JOIN r ON l.legacy_id = r.legacy_id").fetchall()}
        _exact_links(con)
        con.execute("CREATE TABLE l_rest AS SELECT * FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_links)")
        db = DuckDBAPI(connection=con)
        linker = Linker([db.register("l_rest", dataset_display_name="left"),
                         db.register("r", dataset_display_name="right")],
                        _settings(), log_level=logging.WARNING)
        pairs = linker.inference.deterministic_link()
        rows = con.execute(f"SELECT source_dataset_l, unique_id_l, unique_id_r FROM {pairs.physical_name}").fetchall()
    blocked = {(a, b) if src == "left" else (b, a) for src, a, b in rows}
    return exact | blocked


def _random_people(rng: random.Random, prefix: str, n: int) -> pa.Table:
    """People drawn from small domains, so that keys collide often; nulls, and short IDs whose middle part is
    empty (a key of '' equals another '')."""
    names = ["nguyen van an", "tran thi binh", "le van an", None]
    ids = ["031080000123", "031080999999", "079085000123", "001190123456", "12345", "1234567", None]

    def pick(values: list) -> object:
        return rng.choice(values)

    rows = []
    for i in range(n):
        name = pick(names)
        tokens = name.split() if name else []
        rows.append({
            "unique_id": f"{prefix}{i}", "id_number": pick(ids), "legacy_id": pick(["031234567", "079111222", None, None]),
            "name_fold": name, "name_sorted": " ".join(sorted(tokens)) if tokens else None,
            "family_name": tokens[0] if tokens else None, "given_name": tokens[-1] if tokens else None,
            "birth_date": pick([dt.date(1980, 5, 14), dt.date(1985, 1, 2), None, None]),
            "birth_year": pick([1980, 1985, None]), "commune": pick(["tan dan", "an hai", None]),
            "street": pick(["thon 1", "thon 2", None, None]),
        })
    return _people(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidates_are_exactly_the_registry_rows_some_pair_of_the_link_would_reach(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    left = _random_people(rng, "l", 25)
    registry = _random_people(rng, "c", 60)
    # a registry row sharing no key with anyone: never a candidate
    registry = pa.concat_tables([registry, _people([{
        "unique_id": "alone", "id_number": "096099888777", "name_fold": "ho thi zen", "name_sorted": "ho thi zen",
        "family_name": "ho", "given_name": "zen", "birth_year": 1901, "birth_date": dt.date(1901, 1, 1),
        "commune": "nowhere", "street": "far"}])])
    ref = _registry(tmp_path, registry)
    pairs = _blocked_pairs(left, registry)
    reached = {right for _, right in pairs}
    got = partitions.candidates(left, ref)
    assert got.schema.names == [linkstate.KEY, *PERSON_COLUMNS]
    assert set(got[linkstate.KEY].to_pylist()) == reached
    assert "alone" not in reached and 0 < len(reached) < registry.num_rows
    # partition by partition: each partition's candidates hold every pair of its records
    for half in (left.slice(0, 12), left.slice(12)):
        mine = set(half["unique_id"].to_pylist())
        need = {right for lid, right in pairs if lid in mine}
        have = set(partitions.candidates(half, ref)[linkstate.KEY].to_pylist())
        assert need == have


LEFT_ONE = {"unique_id": "l", "id_number": "031080000123", "legacy_id": "031234567", "name_fold": "nguyen van an",
            "name_sorted": "an nguyen van", "family_name": "nguyen", "given_name": "an",
            "birth_date": dt.date(1980, 5, 14), "birth_year": 1980, "commune": "tan dan", "street": "thon 1"}
OTHER = {"id_number": "096199777888", "legacy_id": "079111222", "name_fold": "tran thi binh",
         "name_sorted": "binh thi tran", "family_name": "tran", "given_name": "binh",
         "birth_date": dt.date(1991, 2, 3), "birth_year": 1991, "commune": "an hai", "street": "thon 9"}


def _sharing(key: tuple[str, ...]) -> dict:
    """A registry record that shares with LEFT_ONE the candidate key `key` and nothing else."""
    row = {"unique_id": "c", **OTHER}
    for expression in key:
        if expression == "substr(id_number, 1, 6)":
            row["id_number"] = LEFT_ONE["id_number"][:6] + OTHER["id_number"][6:]
        elif expression == "substr(id_number, 7, 6)":
            row["id_number"] = OTHER["id_number"][:6] + LEFT_ONE["id_number"][6:]
        else:
            row[expression] = LEFT_ONE[expression]
    return row


@pytest.mark.parametrize("key", partitions.BLOCKING_KEYS, ids=lambda k: "+".join(k))
def test_the_pairs_of_each_blocking_rule_are_candidates(tmp_path: Path, key: tuple[str, ...]):
    left = _people([LEFT_ONE])
    registry = _people([_sharing(key), {"unique_id": "none", **OTHER}])
    ref = _registry(tmp_path, registry)
    assert _blocked_pairs(left, registry) == {("l", "c")}  # the rule pairs them, and no other rule does
    assert partitions.candidates(left, ref)[linkstate.KEY].to_pylist() == ["c"]
    # without that key the pair is lost: every key is needed
    others = tuple(k for k in partitions.CANDIDATE_KEYS if k != key)
    assert partitions.candidates(left, ref, keys=others).num_rows == 0


def test_a_record_the_exact_passes_link_reaches_only_the_rows_sharing_its_ids(tmp_path: Path):
    same = {**LEFT_ONE, "unique_id": "c1", "legacy_id": None, "commune": "an hai"}
    by_date = {"unique_id": "c2", **OTHER, "birth_date": LEFT_ONE["birth_date"], "given_name": LEFT_ONE["given_name"]}
    registry = _people([same, by_date])
    ref = _registry(tmp_path, registry)
    left = _people([LEFT_ONE])
    assert partitions.exact_linked(left, ref) == 1
    assert partitions.candidates(left, ref)[linkstate.KEY].to_pylist() == ["c1"]
    # an ID whose holder's name and birth year both disagree is no exact link: the blocking keys apply again
    other = _people([{**same, "name_fold": "tran thi binh", "name_sorted": "binh thi tran", "birth_year": 1991,
                      "birth_date": None}, by_date])
    ref = _registry(tmp_path / "other", other)
    assert partitions.exact_linked(left, ref) == 0
    assert partitions.candidates(left, ref)[linkstate.KEY].to_pylist() == ["c1", "c2"]
    assert _blocked_pairs(left, other) == {("l", "c1"), ("l", "c2")}
    assert _blocked_pairs(left, registry) == {("l", "c1")}


def test_a_null_key_shares_nothing_and_a_short_id_s_empty_middle_shares_with_other_short_ids(tmp_path: Path):
    left = _people([{"unique_id": "l1", "id_number": "12345"}, {"unique_id": "l2"}])
    registry = _people([{"unique_id": "c1", "id_number": "99"}, {"unique_id": "c2"},
                        {"unique_id": "c3", "id_number": "031080000123"}])
    ref = _registry(tmp_path, registry)
    pairs = _blocked_pairs(left, registry)
    assert pairs == {("l1", "c1")}  # substr('12345', 7, 6) = substr('99', 7, 6) = '' in Splink's blocking too
    assert partitions.candidates(left, ref)[linkstate.KEY].to_pylist() == ["c1"]
    none = partitions.candidates(left.slice(0, 0), ref)
    assert none.num_rows == 0 and none.schema == linkstate.REGISTRY_SCHEMA


def test_no_blocking_key_is_one_field_a_large_share_of_the_country_shares():
    # one field alone is a key only when it is (part of) an ID: a birth date alone pairs a record with about
    # 1/36,500 of the country, 2,700 citizens at 100M
    for key in partitions.BLOCKING_KEYS:
        assert len(key) >= 2 or key[0] in ("substr(id_number, 7, 6)", "legacy_id"), key


def test_a_model_blocking_on_a_rule_that_is_no_candidate_key_is_refused():
    rules = [{"blocking_rule": partitions._blocking_sql(k), "sql_dialect": "duckdb"}
             for k in partitions.BLOCKING_KEYS]
    ok = LinkModel(splink={"blocking_rules_to_generate_predictions": rules}, tf=TF_SCHEMA.empty_table())
    partitions.check_model_keys(ok)
    other = dataclasses.replace(ok, splink={"blocking_rules_to_generate_predictions": [
        *rules, {"blocking_rule": 'l."street" = r."street"', "sql_dialect": "duckdb"}]})
    with pytest.raises(ValueError, match=r'blocks on \[\'l."street" = r."street"\'\].*LINKAGE_PARTITIONS=none'):
        partitions.check_model_keys(other)


def test_partition_counts_add_up_and_right_is_the_whole_registry():
    a = {"holder_citizen": {"left": 3, "right": 10, "exact_id_accept": 2, "probabilistic_reject": 1}}
    b = {"holder_citizen": {"left": 2, "right": 7, "exact_id_accept": 1, "probabilistic_reject": 1},
         "representative_citizen": {"left": 1, "right": 4, "exact_id_accept": 1}}
    assert partitions.merge_counts([a, b], 100) == {
        "holder_citizen": {"left": 5, "right": 100, "exact_id_accept": 3, "probabilistic_reject": 2},
        "representative_citizen": {"left": 1, "right": 100, "exact_id_accept": 1}}


def test_the_partitioning_setting_is_read_and_checked(monkeypatch):
    from lienthong.settings import load_settings

    monkeypatch.delenv("LIENTHONG_LINKAGE_PARTITIONS", raising=False)
    assert load_settings().linkage_partitions == "province"
    monkeypatch.setenv("LIENTHONG_LINKAGE_PARTITIONS", " None ")
    assert load_settings().linkage_partitions == "none"
    monkeypatch.setenv("LIENTHONG_LINKAGE_PARTITIONS", "commune")
    with pytest.raises(ValueError, match=r"LIENTHONG_LINKAGE_PARTITIONS='commune': one of province, none"):
        load_settings()


def test_each_partition_is_linked_once_against_its_own_candidates_and_the_results_merged(tmp_path: Path):
    from lienthong.reconcile.people import LinkBands
    from lienthong.settings import load_settings

    registry = _people([{"unique_id": "c1", "id_number": "031080000001"}, {"unique_id": "c2", "id_number": "079080000002"},
                        {"unique_id": "c3", "id_number": "001080000003"}])
    ref = _registry(tmp_path, registry)
    left = _people([{"unique_id": "79:2", "id_number": "079080000002"}, {"unique_id": "31:1", "id_number": "031080000001"},
                    {"unique_id": "31:9", "id_number": "001080000003"}, {"unique_id": "31:5"}])
    left = left.add_column(0, "dataset", pa.array(["land_holder"] * 4, pa.string()))
    left = left.add_column(0, linkstate.KEY, pa.array([f"land_holder|{u}" for u in left["unique_id"].to_pylist()]))
    calls = []

    def link(rows, cands, bands, settings, models):
        """Records what it was given; links each record to the candidates it was given."""
        calls.append((rows["unique_id"].to_pylist(), cands[linkstate.KEY].to_pylist()))
        links = pa.table({linkstate.KEY: rows[linkstate.KEY], "candidates": [cands.num_rows] * rows.num_rows})
        return links, {}, {"holder_citizen": {"left": rows.num_rows, "right": cands.num_rows, "exact_id_accept": 1}}

    links, used, counts = partitions.link_partitioned(left, ref, LinkBands(), load_settings(), {}, link=link,
                                                      link_types={})
    # one call per province, in name order, each with its own records and only the rows they share a key with
    assert calls == [(["31:1", "31:9", "31:5"], ["c1", "c3"]), (["79:2"], ["c2"])]
    assert links[linkstate.KEY].to_pylist() == sorted(left[linkstate.KEY].to_pylist())
    assert links["candidates"].to_pylist() == [2, 2, 2, 1]
    assert used == {} and counts == {"holder_citizen": {"left": 4, "right": 3, "exact_id_accept": 2}}


def _keys(table: pa.Table) -> list[str]:
    return table[linkstate.KEY].to_pylist()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_partition_over_the_candidate_limit_comes_in_parts_each_with_exactly_its_own_candidates(tmp_path: Path,
                                                                                                    seed: int):
    from lienthong.settings import load_settings

    rng = random.Random(seed)
    left = _random_people(rng, "l", 40).append_column("extra", pa.array(range(40), pa.int64()))
    registry = _random_people(rng, "c", 80)
    ref = _registry(tmp_path, registry)
    settings = dataclasses.replace(load_settings(), data_dir=tmp_path / "data")
    whole = partitions.candidates(left.select(PERSON_COLUMNS), ref)
    # under the limit: one part, the partition's candidates
    [one] = list(partitions.candidate_parts(left, ref, settings, max_rows=whole.num_rows))
    assert (one.index, one.of, one.reached) == (0, 1, whole.num_rows)
    assert one.left.equals(left) and one.candidates.equals(whole)
    # over it: ceil(max(candidates, records) / limit) parts
    limit = max(whole.num_rows, left.num_rows) // 3
    parts = list(partitions.candidate_parts(left, ref, settings, max_rows=limit))
    of = -(-max(whole.num_rows, left.num_rows) // limit)
    assert len(parts) > 1 and all(p.of == of and p.reached == whole.num_rows for p in parts)
    # every record in exactly one part, with all its columns, in its order within the part
    got = sorted(x for p in parts for x in p.left["extra"].to_pylist())
    assert got == list(range(40))
    for p in parts:
        assert p.left.schema == left.schema
        assert p.left["extra"].to_pylist() == sorted(p.left["extra"].to_pylist())
        # each part's candidates are exactly those of its records, in `_key` order, in the candidates' shape
        mine = partitions.candidates(p.left.select(PERSON_COLUMNS), ref)
        assert p.candidates.schema == whole.schema
        assert _keys(p.candidates) == _keys(mine) == sorted(_keys(mine))
        assert p.candidates.equals(mine)
    # namesakes stay together; the parts reach every candidate of the partition and nothing else
    by_name: dict[str, set[int]] = {}
    for p in parts:
        for n in p.left["name_fold"].to_pylist():
            if n:
                by_name.setdefault(n, set()).add(p.index)
    assert all(len(v) == 1 for v in by_name.values()), by_name
    assert set().union(*(set(_keys(p.candidates)) for p in parts)) == set(_keys(whole))
    # the spill folder of the parts is gone once the iteration ends
    assert not list((tmp_path / "data").rglob("link-parts-*"))


@pytest.mark.parametrize("limit_share", [None, 3])
def test_a_partition_read_from_a_file_among_others_comes_in_the_same_parts_as_given_whole(tmp_path: Path,
                                                                                         limit_share: int | None):
    from lienthong.settings import load_settings

    rng = random.Random(5)
    left = _random_people(rng, "l", 60).append_column("extra", pa.array(range(60), pa.int64()))
    ref = _registry(tmp_path, _random_people(rng, "c", 90))
    settings = dataclasses.replace(load_settings(), data_dir=tmp_path / "data")
    whole = partitions.candidates(left.select(PERSON_COLUMNS), ref)
    limit = (max(whole.num_rows, 40) // limit_share) if limit_share else whole.num_rows + 60
    # the file holds three partitions' rows interleaved; partition "b" is the 2nd, 5th, ... row
    marks = pa.array(["a", "b", "c"][i % 3] for i in range(60))
    path = tmp_path / "left.parquet"
    pq.write_table(left.append_column("_partition", marks), path, row_group_size=7)
    mine = left.filter(pc.equal(marks, "b"))
    given = list(partitions.candidate_parts(mine, ref, settings, max_rows=limit))
    read = list(partitions.candidate_parts(partitions.LeftFile(path, "_partition", "b"), ref, settings,
                                           max_rows=limit))
    assert (len(given) > 1) == bool(limit_share)
    assert [(p.index, p.of, p.reached) for p in read] == [(p.index, p.of, p.reached) for p in given]
    for r, g in zip(read, given, strict=True):
        assert r.left.schema == left.schema and r.left.equals(g.left)
        assert r.candidates.equals(g.candidates)
    # the records of the file are those of the partition, each once, in the file's order within a part
    got = [x for p in read for x in p.left["extra"].to_pylist()]
    assert sorted(got) == mine["extra"].to_pylist() and all(x % 3 == 1 for x in got)
    # a file holding one partition only is read whole
    pq.write_table(mine, tmp_path / "b.parquet")
    alone = list(partitions.candidate_parts(partitions.LeftFile(tmp_path / "b.parquet"), ref, settings,
                                            max_rows=limit))
    assert [p.left for p in alone] == [p.left for p in given]
    assert not list((tmp_path / "data").rglob("link-parts-*"))


def test_the_candidate_limit_is_read_and_checked(monkeypatch):
    from lienthong.settings import load_settings

    monkeypatch.delenv("LIENTHONG_LINK_CANDIDATE_ROWS", raising=False)
    assert load_settings().link_candidate_rows == 1_000_000
    monkeypatch.setenv("LIENTHONG_LINK_CANDIDATE_ROWS", "250000")
    assert load_settings().link_candidate_rows == 250_000
    monkeypatch.setenv("LIENTHONG_LINK_CANDIDATE_ROWS", "0")
    with pytest.raises(ValueError, match=r"LIENTHONG_LINK_CANDIDATE_ROWS=0: at least 1"):
        load_settings()


def test_a_partition_in_parts_is_linked_part_by_part_and_its_counts_merged(tmp_path: Path):
    from lienthong.reconcile.people import LinkBands
    from lienthong.settings import load_settings

    names = ["nguyen van an", "tran thi binh", "le van cuong", "pham thi dung"]
    registry = _people([{"unique_id": f"c{i}", "id_number": f"0310800000{i:02d}", "name_fold": names[i % 4],
                         "birth_year": 1980} for i in range(12)])
    ref = _registry(tmp_path, registry)
    left = _people([{"unique_id": f"31:{i}", "name_fold": names[i % 4], "birth_year": 1980} for i in range(8)])
    left = left.add_column(0, "dataset", pa.array(["land_holder"] * 8, pa.string()))
    left = left.add_column(0, linkstate.KEY, pa.array([f"land_holder|{u}" for u in left["unique_id"].to_pylist()]))
    calls = []

    def link(rows, cands, bands, settings, models):
        calls.append((sorted(rows["unique_id"].to_pylist()), _keys(cands)))
        links = pa.table({linkstate.KEY: rows[linkstate.KEY], "candidates": [cands.num_rows] * rows.num_rows})
        return links, {}, {"holder_citizen": {"left": rows.num_rows, "right": cands.num_rows}}

    settings = dataclasses.replace(load_settings(), data_dir=tmp_path / "data", link_candidate_rows=4)
    links, _, counts = partitions.link_partitioned(left, ref, LinkBands(), settings, {}, link=link, link_types={})
    # 12 candidates, limit 4: three parts of the one partition, each linked once against its own candidates
    assert 1 < len(calls) <= 3
    for rows, cands in calls:
        want = {f"c{i}" for i in range(12) if names[i % 4] in {names[int(u.split(":")[1]) % 4] for u in rows}}
        assert set(cands) == want
    assert sorted(u for rows, _ in calls for u in rows) == sorted(left["unique_id"].to_pylist())
    assert links[linkstate.KEY].to_pylist() == sorted(left[linkstate.KEY].to_pylist())
    assert counts == {"holder_citizen": {"left": 8, "right": 12}}
