"""The entity registry's Delta tables (lienthong.entities storage): runs committed and reloaded, an ID followed
through a merge, a rerun that replaces its events, and a run killed between its commits repaired by its rerun."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lienthong import entities as en
from lienthong import zones
from lienthong.settings import Settings

Row = tuple[str, str, str, str, list[str] | None]

RUN1: list[Row] = [("person", "a", "pop", "001", ["legacy:1"]), ("person", "a", "biz", "r1", None),
                   ("person", "b", "pop", "002", None), ("person", "c", "pop", "003", ["legacy:3"]),
                   ("enterprise", "e", "biz", "0101", ["tax:0101"])]
# a and b are one person after all; 003's personal ID is corrected to 004 (its legacy ID stays)
RUN2: list[Row] = [("person", "k", "pop", "001", ["legacy:1"]), ("person", "k", "biz", "r1", None),
                   ("person", "k", "pop", "002", None), ("person", "m", "pop", "004", ["legacy:3"]),
                   ("enterprise", "e", "biz", "0101", ["tax:0101"])]
# 002 is split off again; a new enterprise registers; 0101 is dissolved
RUN3: list[Row] = [("person", "k", "pop", "001", ["legacy:1"]), ("person", "k", "biz", "r1", None),
                   ("person", "s", "pop", "002", None), ("person", "m", "pop", "004", ["legacy:3"]),
                   ("enterprise", "f", "biz", "0202", None)]


def clusters(rows: list[Row]) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    return pa.table([pa.array(list(c), f.type) for c, f in zip(cols, en.CLUSTER_SCHEMA, strict=True)],
                    schema=en.CLUSTER_SCHEMA)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=None, land_provinces=(), duckdb_memory="512MB",
                    duckdb_threads=1)


def entity_of(members: pa.Table, dataset: str, record_key: str) -> str:
    [row] = [m for m in members.to_pylist() if (m["dataset"], m["record_key"]) == (dataset, record_key)]
    return str(row["entity_id"])


def stored_events(directory: Path) -> list[dict]:
    table = zones.read_table(directory / en.EVENT_TABLE).select(en.EVENT_SCHEMA.names).cast(en.EVENT_SCHEMA)
    return sorted(table.to_pylist(), key=lambda e: (e["run_id"], e["seq"]))


def test_an_empty_registry_loads_as_empty_tables(tmp_path):
    members, entities = en.load(tmp_path / "_registry")
    assert members.schema == en.MEMBER_SCHEMA and members.num_rows == 0
    assert entities.schema == en.ENTITY_SCHEMA and entities.num_rows == 0


def test_three_runs_reload_as_assigned_and_an_old_id_leads_through_its_merge(settings):
    directory = en.registry_dir(settings)
    results, refs = [], []
    for run_id, rows in (("r1", RUN1), ("r2", RUN2), ("r3", RUN3)):
        result, ref = en.update(directory, clusters(rows), run_id, settings=settings)
        members, entities = en.load(directory)
        assert members.equals(result.members) and entities.equals(result.entities)
        assert set(ref) == {en.MEMBER_TABLE, en.ENTITY_TABLE, en.EVENT_TABLE}
        assert all(zones.is_table(r) for r in ref.values())
        results.append(result)
        refs.append(ref)
    # the refs a commit returned pin that run's tables
    members, entities = en.load(directory, refs[0])
    assert members.equals(results[0].members) and entities.equals(results[0].entities)

    one, two, three = results
    a, b, c = (entity_of(one.members, "pop", k) for k in ("001", "002", "003"))
    enterprise = entity_of(one.members, "biz", "0101")
    assert entity_of(two.members, "pop", "002") == a  # b merged into a (a had more records)
    assert entity_of(two.members, "pop", "004") == c  # the ID correction kept the person
    split = entity_of(three.members, "pop", "002")
    assert split not in (a, b)

    assert en.resolve(directory, b, settings=settings) == a
    assert en.resolve(directory, a, settings=settings) == a
    assert en.resolve(directory, enterprise, settings=settings) == enterprise  # retired: the chain ends there
    with pytest.raises(KeyError):
        en.resolve(directory, "P-unknown", settings=settings)

    got = [(e["run_id"], e["event"], e["entity_id"], e["other_entity_id"], e["chain"])
           for e in en.history(directory, b, settings=settings)]
    created = sorted([("r1", "created", b, None, b), ("r1", "created", a, None, a)], key=lambda e: e[2])
    assert got == [*created, ("r2", "merged", b, a, b), ("r3", "split", split, a, a)]
    [continued] = [e for e in en.history(directory, c, settings=settings) if e["event"] == "continued"]
    assert continued["evidence"]["continuity_key"] == "legacy:3"
    assert continued["evidence"]["old_records"] == ["pop:003"]
    assert [e["event"] for e in en.history(directory, enterprise, settings=settings)] == ["created", "retired"]
    assert stored_events(directory) == sorted(
        [e for r in results for e in r.events.to_pylist()], key=lambda e: (e["run_id"], e["seq"]))


def test_only_the_difference_is_written(settings):
    directory = en.registry_dir(settings)
    en.update(directory, clusters(RUN1), "r1", settings=settings)
    before = {t: zones.version(directory / t) for t in (en.MEMBER_TABLE, en.ENTITY_TABLE, en.EVENT_TABLE)}
    result, _ = en.update(directory, clusters(RUN1), "r2", settings=settings)  # nothing changed
    assert result.events.num_rows == 0
    assert {t: zones.version(directory / t) for t in before} == before


def test_a_rerun_of_a_run_replaces_its_events_instead_of_doubling_them(settings):
    directory = en.registry_dir(settings)
    en.update(directory, clusters(RUN1), "r1", settings=settings)
    first, _ = en.update(directory, clusters(RUN2), "r2", settings=settings)
    again, _ = en.update(directory, clusters(RUN2), "r2", settings=settings)
    assert again.events.equals(first.events)
    assert [e for e in stored_events(directory) if e["run_id"] == "r2"] == first.events.to_pylist()
    members, entities = en.load(directory)
    assert members.equals(first.members) and entities.equals(first.entities)


def test_a_run_that_later_runs_followed_cannot_be_rerun(settings):
    directory = en.registry_dir(settings)
    en.update(directory, clusters(RUN1), "r1", settings=settings)
    en.update(directory, clusters(RUN2), "r2", settings=settings)
    with pytest.raises(ValueError, match="run 'r1' was committed to entity_event before run 'r2'"):
        en.update(directory, clusters(RUN1), "r1", settings=settings)
    # a run that changed only a member row (a continuity key) counts too
    changed = [(k, c, d, r, ["nbd:x"] if r == "002" else keys) for k, c, d, r, keys in RUN2]
    assert en.update(directory, clusters(changed), "r3", settings=settings)[0].events.num_rows == 0
    with pytest.raises(ValueError, match="run 'r2' was committed to entity_member before run 'r3'"):
        en.update(directory, clusters(RUN2), "r2", settings=settings)


@pytest.mark.parametrize("killed_before", [en.ENTITY_TABLE, en.MEMBER_TABLE])
def test_a_run_killed_between_its_commits_is_repaired_by_its_rerun(settings, tmp_path, monkeypatch,
                                                                    killed_before):
    clean = tmp_path / "clean"
    en.update(clean, clusters(RUN1), "r1", settings=settings)
    want, _ = en.update(clean, clusters(RUN2), "r2", settings=settings)

    directory = en.registry_dir(settings)
    en.update(directory, clusters(RUN1), "r1", settings=settings)
    real_merge = zones.merge

    def dies_at_the_table(path, rows, **kwargs):
        if Path(path).name == killed_before:
            raise KeyboardInterrupt("killed")
        return real_merge(path, rows, **kwargs)

    monkeypatch.setattr(zones, "merge", dies_at_the_table)
    with pytest.raises(KeyboardInterrupt):
        en.update(directory, clusters(RUN2), "r2", settings=settings)
    monkeypatch.setattr(zones, "merge", real_merge)

    # half written: the run's events are there, the members still point at the previous entities
    assert [e["run_id"] for e in stored_events(directory)].count("r2") == want.events.num_rows
    assert not en.load(directory)[0].equals(want.members)

    got, _ = en.update(directory, clusters(RUN2), "r2", settings=settings)
    assert got.events.equals(want.events)
    members, entities = en.load(directory)
    assert members.equals(want.members) and entities.equals(want.entities)
    assert stored_events(directory) == stored_events(clean)


def test_a_commit_refuses_another_runs_assignment(settings):
    directory = en.registry_dir(settings)
    result = en.assign(en.empty_members(), en.empty_entities(), clusters(RUN1), "r1", settings=settings)
    with pytest.raises(ValueError, match="belong to run"):
        en.commit(directory, result, "r2")


def test_a_run_that_fetches_no_whole_tables_commits_the_same_registry(settings, tmp_path):
    """`update(..., whole_tables=False)` (the reconciliation's): no full member or entity table in the result,
    the same changed rows and events, and the committed versions are the full tables a run fetching them gets."""
    lean_dir, whole_dir = tmp_path / "lean" / "_registry", tmp_path / "whole" / "_registry"
    for run_id, rows in (("r1", RUN1), ("r2", RUN2), ("r3", RUN3)):
        lean, lean_refs = en.update(lean_dir, clusters(rows), run_id, settings=settings, whole_tables=False)
        whole, _ = en.update(whole_dir, clusters(rows), run_id, settings=settings)
        assert lean.members is None and lean.entities is None
        assert whole.members is not None and whole.members.num_rows > 0
        for name in ("events", "changed_members", "changed_entities"):
            assert getattr(lean, name).equals(getattr(whole, name)), (run_id, name)
        members, entities = en.load(lean_dir, lean_refs)
        assert members.equals(whole.members) and entities.equals(whole.entities), run_id
