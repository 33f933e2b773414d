"""Provinces as tasks: a three-province country reconciled with its person linkage split into one task per
province (the integrate DAG's `plan_person_links`, mapped `link_province`, `reconcile`), and the result equal
to the single-partition run on the same data.

A synthetic country (sandbox `CountryConfig`: people holding land and representing enterprises outside their
home province) goes through the real connectors, staging and a first reconciliation (it relinks everything,
so it plans no province). Then random change sequences arrive as the agency systems deliver them, and each
run is staged, validated, planned, linked province by province (each province's function called as its
mapped task calls it) and reconciled. After every run:

- the plan named more than one province, and reconcile used the links of every province task;
- `rebuild.check_reconcile` with the linkage in ONE partition (`LIENTHONG_LINKAGE_PARTITIONS=none`: the
  whole registry, every record at once) equals what the partitioned run left: link state, integrated tables
  with their entity IDs, registry members, open findings;
- the run's work folder is gone.

Then a run whose province task did not run: reconcile does not use the plan, links itself, and still equals
the single-partition run. And a full relink (another model activated) is planned by province too, linked in
parts under a small candidate limit, and equals the single-partition run.
"""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def country(tmp_path_factory):
    from province import reconciled_province, three_provinces

    config = three_provinces(citizens=2400, seed=7, representatives_outside=0.3)
    with reconciled_province(tmp_path_factory.mktemp("partreconcile"), citizens=0, seed=0, config=config) as prov:
        yield prov


def _partitions(left, inputs) -> list[str]:
    """Each left record's partition, computed on the records whole."""
    from lienthong.reconcile import partitions

    return partitions.partition_of(left, partitions.head_offices(inputs["enterprise"])).to_pylist()


def _equals_one_partition(settings) -> None:
    from lienthong.rebuild import check_reconcile

    check = check_reconcile(dataclasses.replace(settings, linkage_partitions="none"))
    assert check["equal"], {k: v for k, v in check.items() if k != "equal"}


def test_province_tasks_give_the_single_partition_result(country):
    from province import stage_landed
    from test_incremental_reconcile import change_sources

    from lienthong import pipeline
    from lienthong.reconcile import linkwork
    from lienthong.settings import load_settings

    s = load_settings()
    assert s.linkage_partitions == "province"
    assert country["first"]["link_state"]["mode"] == "full"
    _equals_one_partition(s)
    rng = random.Random(4)
    for step in range(1, 4):
        run_id = f"p{step}"
        done = change_sources(s.raw_dir, rng, step, run_id)
        stage_landed(run_id)
        plan = pipeline.plan_person_links(run_id)
        assert plan["mode"] == "change", (step, done, plan)
        assert len(plan["partitions"]) >= 2 and sum(plan["sizes"].values()) == plan["left_records"], plan
        linked = [pipeline.link_person_partition(run_id, p) for p in plan["partitions"]]
        assert all(r["linked"] for r in linked), linked
        assert sum(r["left_records"] for r in linked) == plan["left_records"]
        result = pipeline.reconcile(run_id)
        state = result["link_state"]
        assert state["mode"] == "change", (step, state)
        assert state["counts"]["province_tasks"] == plan["sizes"], (step, state["counts"])
        assert state["counts"]["relinked"] == plan["left_records"]
        assert not linkwork.work_dir(s.integrated_dir, run_id).exists()
        _equals_one_partition(s)
    # a province task that did not run: the plan is not used, reconcile links the change itself
    done = change_sources(s.raw_dir, rng, 4, "p4")
    stage_landed("p4")
    plan = pipeline.plan_person_links("p4")
    assert plan["mode"] == "change" and len(plan["partitions"]) >= 2, plan
    pipeline.link_person_partition("p4", plan["partitions"][0])
    with pytest.raises(ValueError, match="not in run p4's plan"):
        pipeline.link_person_partition("p4", "no-such-province")
    result = pipeline.reconcile("p4")
    assert "province_tasks" not in result["link_state"]["counts"], result["link_state"]["counts"]
    assert result["link_state"]["counts"]["relinked"] == plan["left_records"]
    _equals_one_partition(s)
    # nothing changed since: the plan says so and names no province
    stage_landed("p5")
    assert pipeline.plan_person_links("p5") == {"mode": "unchanged", "partitions": []}


def test_a_full_relink_after_a_model_change_is_planned_and_linked_by_province(country, caplog, monkeypatch):
    """Another model activated: every left record is relinked, by the province tasks (in parts under a
    small candidate limit), and the result is the single-partition rebuild's; a kill before reconcile leaves
    a state the next run relinks whole again. The plan builds the registry and the left records in batches
    (of 300 staged rows here), and they are those built whole."""
    import json

    import pyarrow.parquet as pq
    from province import stage_landed

    from lienthong import pipeline, zones
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, linkwork, models
    from lienthong.reconcile.linkwork import link_partition
    from lienthong.reconcile.people import LinkModel
    from lienthong.settings import load_settings

    s = load_settings()
    monkeypatch.setattr(linkstate, "WHOLE_BATCH_ROWS", 300)
    with connect(warehouse_url(s)) as conn:
        record, model = models.active(conn, "holder_citizen")
        # the same parameters but a slightly different prior: another model (its id is its content's hash)
        splink = {**model.splink, "probability_two_random_records_match":
                  model.splink["probability_two_random_records_match"] * 1.01}
        other = LinkModel(splink=splink, tf=model.tf)
        assert other.model_id != record.model_id
        models.save(conn, s.integrated_dir, "holder_citizen", other, run_id="activate")
        conn.commit()
    stage_landed("f1")
    plan = pipeline.plan_person_links("f1")
    left = zones.read_table(linkstate.table_path(s.integrated_dir, linkstate.LEFT))
    assert plan["mode"] == "full" and "models differ" in plan["reason"], plan
    assert len(plan["partitions"]) >= 3 and plan["left_records"] == left.num_rows, plan
    # a task killed before reconcile: the next plan is full again and replaces this one
    pipeline.link_person_partition("f1", plan["partitions"][0])
    again = pipeline.plan_person_links("f2")
    assert again["mode"] == "full" and again["left_records"] == left.num_rows, again
    # built in batches, committed and planned in `_key` order: what building them whole gives, row for row
    work = linkwork.work_dir(s.integrated_dir, "f2")
    inputs = json.loads((work / "plan.json").read_text())["fingerprint"]["inputs"]
    registry = linkstate.whole_registry(inputs)
    assert registry.num_rows > 3 * linkstate.WHOLE_BATCH_ROWS
    stored = zones.read_table(linkstate.table_path(s.integrated_dir, linkstate.REGISTRY))
    assert stored.num_rows == registry.num_rows and stored.sort_by(linkstate.KEY).equals(registry)
    whole = linkstate.whole_left(inputs)
    stored = zones.read_table(linkstate.table_path(s.integrated_dir, linkstate.LEFT))
    assert stored.num_rows == whole.num_rows and stored.sort_by(linkstate.KEY).equals(whole)
    planned = pq.read_table(work / "left.parquet")
    assert planned.drop_columns([linkwork.PARTITION]).equals(whole)
    assert planned[linkwork.PARTITION].to_pylist() == _partitions(whole, inputs)
    limited = dataclasses.replace(s, link_candidate_rows=150)
    with caplog.at_level(logging.INFO, logger="lienthong.reconcile.partitions"):
        linked = [link_partition("f2", p, limited) for p in again["partitions"]]
    assert all(r["linked"] for r in linked), linked
    in_parts = {r.args[0] for r in caplog.records if r.msg.startswith("link partition %s, part %d of %d")}
    assert len(in_parts) >= 2, in_parts
    result = pipeline.reconcile("f2")
    state = result["link_state"]
    assert state["mode"] == "full", state
    assert state["counts"]["province_tasks"] == again["sizes"], state["counts"]
    assert state["counts"]["relinked"] == left.num_rows
    assert state["models"]["holder_citizen"] == other.model_id
    assert not linkwork.work_dir(s.integrated_dir, "f2").exists()
    _equals_one_partition(s)
    # and the next run has nothing to relink
    stage_landed("f3")
    assert pipeline.plan_person_links("f3") == {"mode": "unchanged", "partitions": []}


def test_a_first_run_trains_in_the_plan_and_links_by_province(tmp_path_factory):
    """The first reconciliation of a country as the DAG runs it: the plan trains each link type's model on
    the whole data (the model linking everything at once trains, up to the float noise of training) and
    persists it, the province tasks link
    every left record, and reconcile's result equals the single-partition rebuild."""
    from province import ingested_province, stage_landed, three_provinces

    from lienthong import pipeline
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, models
    from lienthong.reconcile.people import LinkBands
    from lienthong.reconcile.retrain import same_model
    from lienthong.reconcile.sources import INPUT_DATASETS
    from lienthong.runs.latest import latest_integration
    from lienthong.settings import load_settings

    config = three_provinces(citizens=1200, seed=11, representatives_outside=0.3)
    root = tmp_path_factory.mktemp("firstplan")
    with ingested_province(root, citizens=0, seed=0, config=config):
        s = load_settings()
        stage_landed("r1")
        plan = pipeline.plan_person_links("r1")
        assert plan["mode"] == "full" and plan["reason"] == "no earlier reconciliation", plan
        assert plan["trained"] == sorted(linkstate.LEFT_DATASETS.values()), plan
        assert len(plan["partitions"]) >= 3, plan
        with connect(warehouse_url(s)) as conn:
            persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
        assert all(p is not None and p[0].trained_run_id == "r1" for p in persisted.values()), persisted
        # the models linking everything at once would train on the same data
        staged = {n: latest_integration(n, warehouse_url(s))["staged_path"] for n in INPUT_DATASETS}
        whole = linkstate.update(root / "whole", linkstate.link_inputs(staged), None, {}, run_id="whole",
                                 settings=dataclasses.replace(s, linkage_partitions="none"),
                                 bands=LinkBands(accept=s.match_accept, review=s.match_review))
        # (the same parameters up to the float noise of training: `retrain.same_model`)
        assert set(whole.trained) == set(persisted)
        assert all(same_model(whole.trained[t], p[1]) for t, p in persisted.items() if p is not None)
        linked = [pipeline.link_person_partition("r1", p) for p in plan["partitions"]]
        assert all(r["linked"] for r in linked), linked
        result = pipeline.reconcile("r1")
        state = result["link_state"]
        assert state["mode"] == "full" and state["counts"]["province_tasks"] == plan["sizes"], state
        assert state["counts"]["trained"] == plan["trained"]
        assert state["models"] == {t: p[1].model_id for t, p in persisted.items() if p is not None}
        _equals_one_partition(s)
