"""The person linkage of one reconciliation split across tasks: the plan the run's first task writes, and the
links each province's task adds (the integrate DAG's `plan_person_links` and mapped `link_province`).

Owns the run's work folder `<integrated>/_state/work/<run_id>/`:

- `plan.json`: what the plan was made for (`fingerprint`: the staged inputs, the bases, the models, the
  bands), the link state's table versions after the plan's commits (registry, left) and the links version
  it relinks from, the counts and seconds so far, the partitions, and whether it relinks everything
  (`full`: the first run, a model change or a base gone, `linkstate.prepare_full`; the models the province
  tasks link with are persisted before the plan is written);
- `left.parquet`: the left records to relink with their partition (`partitions.partition_of`), in `_key`
  order (a full relink's written a batch at a time from the committed left version; a province task reads
  its partition's rows part by part, `partitions.LeftFile`);
- `deletes.parquet`: the left records gone;
- `links-<partition>.parquet` with `counts-<partition>.json`: one partition's links, written by its task
  (each file written aside and renamed into place, the counts last: a partition is done when they exist).

Reconcile uses a plan only when it was made for the same fingerprint, the link state's tables are still at
the versions the plan left (nothing written to them since), and every partition's links are there; otherwise
it links itself (`linkstate.update`), with the same result: a province task runs the same linking on the same
records against the registry rows sharing a candidate key with them (`partitions`). The work folders of other
runs are removed when a run finishes (`drop_work`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lienthong import zones
from lienthong.paths import write_json
from lienthong.settings import Settings
from lienthong.staging import atomic_writer, write_atomic

log = logging.getLogger(__name__)

PARTITION = "_partition"
WORK = "work"


def work_dir(integrated_dir: Path, run_id: str) -> Path:
    from lienthong.reconcile.linkstate import state_dir

    return state_dir(integrated_dir) / WORK / run_id.replace("/", "_")


def _safe(partition: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in partition)


def _state_versions(integrated_dir: Path) -> dict[str, int | None]:
    from lienthong.reconcile import linkstate

    return {name: zones.version(linkstate.table_path(integrated_dir, name))
            for name in (linkstate.REGISTRY, linkstate.LEFT, linkstate.LINKS)}


def write_plan(settings: Settings, run_id: str, fingerprint: dict[str, Any], prepared: Any,
               inputs: dict[str, str]) -> dict[str, Any]:
    """Write run `run_id`'s plan from `linkstate.prepare`'s result; returns the summary the DAG maps over
    (`partitions`: one task each)."""
    from lienthong.reconcile import linkstate, partitions

    d = work_dir(settings.integrated_dir, run_id)
    shutil.rmtree(d, ignore_errors=True)  # an earlier attempt's plan: the state has moved since
    d.mkdir(parents=True)
    offices = partitions.head_offices(inputs["enterprise"]) if inputs.get("enterprise") else None
    # a full relink's records (every one of the committed left version) come a batch at a time, in `_key` order
    tables = ([prepared.left] if prepared.left is not None
              else linkstate.sorted_batches(prepared.refs[linkstate.LEFT], linkstate.LEFT_SCHEMA, settings))
    counted: dict[str, int] = {}
    with atomic_writer(d / "left.parquet", linkstate.LEFT_SCHEMA.append(pa.field(PARTITION, pa.string()))) as write:
        for left in tables:
            parts = partitions.partition_of(left, offices) if left.num_rows else pa.array([], pa.string())
            write(left.append_column(PARTITION, parts))
            for c in pc.value_counts(parts).to_pylist():
                counted[c["values"]] = counted.get(c["values"], 0) + c["counts"]
    write_atomic(pa.table({linkstate.KEY: pa.array(sorted(prepared.left_deletes), pa.string())}), d / "deletes.parquet")
    sizes = dict(sorted(counted.items()))
    records = sum(sizes.values())
    names = list(sizes)
    plan = {"run_id": run_id, "fingerprint": fingerprint, "refs": prepared.refs,
            "previous_links": prepared.previous_links, "versions": _state_versions(settings.integrated_dir),
            "counts": prepared.counts, "seconds": prepared.seconds, "model_ids": prepared.model_ids,
            "partitions": sizes, "full": prepared.full}
    write_json(d / "plan.json", plan)
    mode = "full" if prepared.full else "change"
    log.info("person links planned (%s) for %d left records in %d partitions: %s", mode, records, len(names),
             sizes)
    return {"mode": mode, "partitions": names, "left_records": records, "sizes": sizes}


def _plan(d: Path) -> dict[str, Any]:
    path = d / "plan.json"
    if not path.exists():
        raise FileNotFoundError(f"no plan of person links in {d}: the run's plan_person_links task has not run")
    plan: dict[str, Any] = json.loads(path.read_text())
    return plan


def link_partition(run_id: str, partition: str, settings: Settings) -> dict[str, Any]:
    """Link one partition of run `run_id`'s plan against the registry version the plan left; write its links."""
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, models, partitions
    from lienthong.reconcile.people import LinkBands

    t0 = time.monotonic()
    d = work_dir(settings.integrated_dir, run_id)
    plan = _plan(d)
    if partition not in plan["partitions"]:
        raise ValueError(f"partition {partition!r} is not in run {run_id}'s plan (partitions: "
                         f"{sorted(plan['partitions'])})")
    wanted = plan["fingerprint"]["models"]
    with connect(warehouse_url(settings)) as conn:
        active = {t: models.active(conn, t) for t in models.LINK_TYPES}
    found = {t: (a[1] if a else None) for t, a in active.items()}
    moved = {t: (m.model_id if m is not None else None) for t, m in found.items()} != wanted
    if moved:
        # another model was activated since the plan: reconcile will not use the plan, and links itself
        log.warning("partition %s: the link models changed since the plan (%s); not linked here", partition, wanted)
        return {"partition": partition, "linked": False, "reason": "the link models changed since the plan"}
    bands = LinkBands(**plan["fingerprint"]["bands"])
    registry = plan["refs"][linkstate.REGISTRY]
    out = d / f"links-{_safe(partition)}.parquet"
    if settings.linkage_partitions == "province":
        # the province's records are read by DuckDB from the plan's file, one part at a time reaching Python
        # (`partitions.candidate_parts`), and each part's links are written as they come
        if any(found.get(t) is None for t in linkstate.LEFT_DATASETS.values()):
            # a link type with no model (its training on the whole data linked nothing): trained on this
            # partition's records as linking them at once would (`partitions.train_missing`)
            found = partitions.train_missing(_read_partition(d, partition), registry, settings, found,
                                             linkstate.LEFT_DATASETS)
        with atomic_writer(out, linkstate.LINK_STATE_SCHEMA) as write:
            done = partitions.link_partition(
                partition, partitions.LeftFile(d / "left.parquet", PARTITION, partition), registry, bands, settings,
                found, link=linkstate.link_rows, total=partitions.registry_rows(registry, settings), sink=write)
        records, counts = done.left, done.counts
    else:
        left = _read_partition(d, partition)
        links, _, counts = linkstate.link_against(left, registry, plan["fingerprint"]["inputs"], bands, settings,
                                                  found)
        write_atomic(links, out)
        records = left.num_rows
    write_json(d / f"counts-{_safe(partition)}.json", counts)
    seconds = time.monotonic() - t0
    log.info("partition %s: %d left records linked in %.1f s (%.0f records/s)", partition, records, seconds,
             records / max(seconds, 1e-9))
    return {"partition": partition, "linked": True, "left_records": records,
            "links": pq.read_metadata(out).num_rows, "seconds": round(seconds, 3)}


def _read_partition(d: Path, partition: str) -> pa.Table:
    """Every left record of `partition` in the plan of folder `d`, at once."""
    from lienthong.reconcile import linkstate

    table = pq.read_table(d / "left.parquet", filters=[(PARTITION, "=", partition)])
    return table.drop_columns([PARTITION]).cast(linkstate.LEFT_SCHEMA)


@dataclass
class Planned:
    """A run's plan as reconcile finds it (`planned`): usable or not, and why."""

    folder: Path
    fingerprint: dict[str, Any]
    plan: dict[str, Any] | None
    reason: str | None  # why the plan cannot be used (None: it can)

    def prepared(self) -> Any:
        """The plan as `linkstate.Prepared` (only when `reason` is None)."""
        from lienthong.reconcile import linkstate

        assert self.plan is not None and self.reason is None
        deletes = set(pq.read_table(self.folder / "deletes.parquet")[linkstate.KEY].to_pylist())
        # the records themselves are not read: the province tasks have linked them
        return linkstate.Prepared(refs=self.plan["refs"], previous_links=self.plan["previous_links"], left=None,
                                  left_deletes=deletes, counts=self.plan["counts"], seconds=self.plan["seconds"],
                                  model_ids=self.plan["model_ids"], t0=time.monotonic(),
                                  full=bool(self.plan.get("full")))

    def links(self) -> tuple[pa.Table, dict[str, Any]]:
        """Every partition's links (sorted by key) and their counts summed."""
        from lienthong.reconcile import linkstate, partitions

        assert self.plan is not None and self.reason is None
        parts = [pq.read_table(self.folder / f"links-{_safe(p)}.parquet").cast(linkstate.LINK_STATE_SCHEMA)
                 for p in sorted(self.plan["partitions"])]
        counts = [json.loads((self.folder / f"counts-{_safe(p)}.json").read_text()) for p in sorted(self.plan["partitions"])]
        links = pa.concat_tables(parts).sort_by(linkstate.KEY) if parts else linkstate.LINK_STATE_SCHEMA.empty_table()
        total = partitions.registry_rows(self.plan["refs"][linkstate.REGISTRY])
        return links, partitions.merge_counts(counts, total)


def planned(settings: Settings, run_id: str, fingerprint: dict[str, Any]) -> Planned | None:
    """Run `run_id`'s plan, if its plan_person_links task wrote one, with whether reconcile may use it."""
    d = work_dir(settings.integrated_dir, run_id)
    if not (d / "plan.json").exists():
        return None
    plan = _plan(d)
    reason = None
    if json.loads(json.dumps(fingerprint, sort_keys=True, default=str)) != plan["fingerprint"]:
        reason = "it was made for other inputs, bases or models"
    elif _state_versions(settings.integrated_dir) != plan["versions"]:
        reason = "the link state was written after it"
    else:
        missing = [p for p in sorted(plan["partitions"]) if not (d / f"counts-{_safe(p)}.json").exists()]
        if missing:
            reason = f"partitions not linked: {', '.join(missing)}"
    if reason:
        log.warning("reconcile: not using the person links planned for run %s: %s; linking here", run_id, reason)
    return Planned(d, fingerprint, plan, reason)


def drop_work(integrated_dir: Path) -> list[str]:
    """Remove every run's work folder (a finished run's plan is spent, and a plan is only for its own run)."""
    from lienthong.reconcile.linkstate import state_dir

    root = state_dir(integrated_dir) / WORK
    removed = sorted(d.name for d in root.iterdir()) if root.exists() else []
    shutil.rmtree(root, ignore_errors=True)
    return removed
