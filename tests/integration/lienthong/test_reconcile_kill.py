"""A reconciliation killed at any point is settled by the next run, retried under its own id or not.

The run is SIGKILLed in a child process right after it committed the link state, the ID-less holder state, the registry's entity
table, the registry's member table, or an integrated output. Then the next reconciliation runs (the same
run id, as an Airflow retry, or a new one, as the next day's run); afterwards the incremental state equals a
rebuild (`rebuild.check_reconcile`), and every record whose entity ID moved is named by an event of the run
that finished: nothing half-written by the killed run survives.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from children import run_child
from test_incremental_reconcile import CITIZENS, SEED, change_sources

pytestmark = pytest.mark.integration

CHILD = "import sys\nfrom lienthong import pipeline\nprint('ready', flush=True)\npipeline.reconcile(sys.argv[1])\n"


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    from province import reconciled_province

    with reconciled_province(tmp_path_factory.mktemp("reconcilekill"), citizens=CITIZENS, seed=SEED) as prov:
        yield prov


def _commits(table: Path) -> int:
    return len(list((table / "_delta_log").glob("*.json")))


def _kill_when(until: Callable[[], bool], run_id: str, log_path: Path, timeout: float = 300.0) -> bool:
    """Run the reconciliation in a child; SIGKILL it as soon as `until()` holds. True if it was killed."""
    return run_child(CHILD, [run_id], log_path, until=until, timeout=timeout).killed


def test_a_killed_reconciliation_is_settled_by_the_next_run(reconciled, tmp_path: Path):
    from lienthong import entities, pipeline, zones
    from lienthong.rebuild import check_reconcile
    from lienthong.reconcile import idlessstate
    from lienthong.reconcile.linkstate import LINKS, table_path
    from lienthong.reconcile.run import integrated_table
    from lienthong.reconcile.sources import INPUT_DATASETS

    s = reconciled["settings"]
    registry = entities.registry_dir(s)
    points = {
        "link state": table_path(s.integrated_dir, LINKS),
        "ID-less holder state": idlessstate.table_path(s.integrated_dir),
        "registry entities": registry / "entity",
        "registry members": registry / "entity_member",
        "integrated output": integrated_table(s.integrated_dir, "person_master"),
    }
    rng = random.Random(11)
    killed = []
    for step, (point, table) in enumerate(points.items(), start=1):
        run_id = f"k{step}"
        change_sources(s.raw_dir, rng, step, run_id)
        for name in INPUT_DATASETS:
            summary = pipeline.stage(name, run_id)
            if summary.get("mode") not in ("none", "unchanged"):
                pipeline.validate(name, run_id, summary)
        members, _ = entities.load(registry)
        before = {(r["kind"], r["dataset"], r["record_key"]): r["entity_id"] for r in members.to_pylist()}
        n0 = _commits(table)
        if _kill_when(lambda t=table, n=n0: _commits(t) > n, run_id, tmp_path / "children.log"):
            killed.append(point)
        # the next run: an Airflow retry of the same run id, or (every other point) the next day's run
        finishing = run_id if step % 2 else f"{run_id}-next"
        result = pipeline.reconcile(finishing)
        assert not result.get("unchanged"), (point, result)
        check = check_reconcile(s)
        assert check["equal"], (point, {k: v for k, v in check.items() if k != "equal"})
        members, _ = entities.load(registry)
        after = {(r["kind"], r["dataset"], r["record_key"]): r["entity_id"] for r in members.to_pylist()}
        events = zones.read_table(registry / "entity_event").to_pylist()
        assert not [e for e in events if e["run_id"] == run_id and finishing != run_id], (
            point, "events of the killed run survived")
        named = {e["entity_id"] for e in events if e["run_id"] == finishing} | {
            e["other_entity_id"] for e in events if e["run_id"] == finishing and e["other_entity_id"]}
        moved = [r for r in before.keys() & after.keys() if before[r] != after[r]]
        assert not [r for r in moved if before[r] not in named and after[r] not in named], (point, moved[:5])
    assert len(killed) >= 3, f"the kill landed at only {killed}"
