"""Staging of one dataset as a recorded step: what the integrate DAG's stage tasks do (through
`lienthong.pipeline`) and what `lienthong rebuild` repeats from raw.

`stage_dataset` finds the landings the dataset has not staged (the ledger's `stage_landing`), merges them
(`lienthong.staging`) and records the run, whole or from the parts `plan_stage` / `stage_part` made.
Validation is `lienthong.validatestep`'s.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lienthong import runs
from lienthong.db import connect, warehouse_url
from lienthong.paths import write_json
from lienthong.settings import Settings

log = logging.getLogger(__name__)


class NothingToStage(LookupError):
    """A dataset's source has not landed anything yet (its ingestion DAG has not run)."""


def _to_stage(dataset: str, s: Settings, rebuild: bool) -> tuple[Any, list[Path], str | None]:
    """(contract, the raw files to stage, why the tables are rebuilt from every landing or None)."""
    from lienthong.contracts import contract
    from lienthong.staging import StagePlan, landing_of, staged_schema, table_paths

    c = contract(dataset)
    files = StagePlan.from_contract(c).raw_files(s.raw_dir)
    if not files:
        raise NothingToStage(f"{dataset}: no raw landing yet from {c.custom.get('sourceSystem')}")
    staged_table, _ = table_paths(dataset, s.staged_dir, s.quarantine_dir)
    why = "asked" if rebuild else _rebuild_needed(c, staged_table, staged_schema(c)[0])
    if why:
        return c, files, why
    with connect(warehouse_url(s)) as conn:
        done = runs.staged_landings(conn, dataset)
    return c, [f for f in files if landing_of(f, s.raw_dir) not in done], None


def stage_dataset(dataset: str, run_id: str, settings: Settings, *, rebuild: bool = False) -> dict[str, Any]:
    """Merge the raw landings a dataset has not staged yet into its staged and quarantine tables; record the
    run, its conservation check and the landings it merged. A run with no new landing writes and records
    nothing (`mode: none`). The tables are rebuilt from every landing when asked (`rebuild`), when they do not
    exist, or when they were written under another version of the contract.

    When the run planned the dataset in parts (`plan_stage`) and every part is there (`stage_part`), this
    commits the parts; otherwise it stages the dataset whole, here."""
    from lienthong import zones
    from lienthong.staging import landing_of, stage_json_source, table_paths

    s = settings
    url = warehouse_url(s)
    started_at = datetime.now(UTC)
    c, new, why = _to_stage(dataset, s, rebuild)
    if why:
        log.info("%s: staging rebuilds its tables from every landing (%s)", dataset, why)
    result = None if rebuild else _commit_parts(c, run_id, s, new, why)
    if result is None:
        result = stage_json_source(c, new, run_id=run_id, staged_dir=s.staged_dir, quarantine_dir=s.quarantine_dir,
                                   full=bool(why), raw_dir=s.raw_dir)
    landings = tuple(sorted({landing_of(f, s.raw_dir) for f in new}))
    if result.mode == "unchanged":
        # Nothing written: the staged version and its validation stand; only the position moves past these landings.
        with connect(url) as conn:
            runs.record_staged_landings(conn, dataset, landings, run_id)
    elif result.mode != "none":
        with connect(url) as conn:
            runs.record_stage_run(conn, runs.StageRun(
                run_id, dataset, result.raw_rows, result.duplicates_removed, result.rows_in, result.rows_staged,
                result.rows_quarantined, staged_path=result.staged_path, content_hash=result.content_hash,
                quarantine_path=result.quarantine_path, started_at=started_at, inputs=tuple(result.raw_runs),
                quarantine_by_rule=result.quarantine_by_rule, repairs=result.repairs, findings=result.findings,
                rows_unchanged=result.rows_unchanged, mode=result.mode,
                landings=landings))
        for table in table_paths(dataset, s.staged_dir, s.quarantine_dir):
            zones.maintain(table, retention_hours=s.zone_retention_hours, run_id=run_id)
    shutil.rmtree(stage_work_dir(s, dataset, run_id), ignore_errors=True)  # spent, or not used
    return result.as_dict()


# --- one task per part: a province, or a share of the identities ------------------------------------------
# A dataset's change (or rebuild) can be staged as one task per part (the integrate DAG's
# `plan_stage_<dataset>`, mapped `stage_part_<dataset>`, then `stage_<dataset>` commits). A source landed by
# province (`partitionedBy: province`: the land registries) is split by province, a large province's rebuild
# further in hash buckets; a national source (population, business) whose new landings hold more than
# `LIENTHONG_STAGE_CHUNK_ROWS` raw rows is split in hash shares of the record identity (a smaller one is
# staged whole by the stage task). Why the parts equal staging whole: a record's identity decides its part (a
# per-province source's identity holds its province: raw `_entity` is `<province>/<entity>`; a share is a hash
# of the identity), and every step of `staging._stage_part` works per identity (the latest version, the
# comparison with the tables, the rows deleted); the records held back for a duplicated value, rechecked with
# any change, are each rechecked by the part their identity falls in, and the plan names every province with
# new landings or such records. The parts compare with the table versions the plan pinned and are committed
# together: a change in one MERGE per table, as staging whole does; a rebuild one part after another (the
# first replaces the tables, the others append; "rebuild-partial" until the last, as a rebuild in hash
# buckets). A plan that no longer holds (the tables moved, other landings to stage, a part missing or made
# for another plan) is not used: the stage task stages whole, which is never wrong.

PLAN_FILE = "plan.json"
ALL_PARTS = "*"  # the plan's key for the files every part reads (the shares of a national source)


def stage_work_dir(s: Settings, dataset: str, run_id: str) -> Path:
    """The run's work folder for staging `dataset` in parts."""
    from lienthong.staging import run_work_dir

    return run_work_dir(s.staged_dir, dataset, run_id)


def plan_stage(dataset: str, run_id: str, settings: Settings) -> dict[str, Any]:
    """Plan staging `dataset` in parts: the parts (provinces with new landings or records held back for a
    duplicated value; or shares of the identities of a national source's large change), their raw files,
    and the table versions the parts compare with, written to the run's work folder. No part (and no plan)
    when the stage task stages it whole: a national source's change that fits one part, nothing new."""
    from lienthong import zones
    from lienthong.staging import StagePlan, _parts, held_back_provinces, split_landings, table_paths

    s = settings
    c, new, why = _to_stage(dataset, s, False)
    sp = StagePlan.from_contract(c)
    work = stage_work_dir(s, dataset, run_id)
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt's plan and parts
    if not new:
        return {"dataset": dataset, "partitions": [], "reason": "no new landing"}
    staged_table, quarantine_table = table_paths(dataset, s.staged_dir, s.quarantine_dir)
    versions = [zones.version(t) if zones.is_table(t) else None for t in (staged_table, quarantine_table)]
    files: dict[str, list[str]] = {}
    if sp.per_province:
        for f in new:
            files.setdefault(str(sp.province_of(f, s.raw_dir)), []).append(str(f))
        if why is None and versions[1] is not None:
            for province in held_back_provinces(sp, zones.ref(quarantine_table, versions[1]), s.raw_dir):
                files.setdefault(province, [])
        # a change is staged in one piece per province; a rebuild in hash buckets of at most the chunk's rows
        buckets = {p: _parts(f, s.stage_chunk_rows) if why else 1 for p, f in files.items()}
    else:
        shares = _parts([str(f) for f in new], s.stage_chunk_rows)
        if shares <= 1:
            return {"dataset": dataset, "partitions": [], "reason": "a national source's change that fits one part"}
        parts = [f"share{i:03d}" for i in range(shares)]
        files = {ALL_PARTS: [str(f) for f in new]}  # the landings the shares stage
        buckets = dict.fromkeys(parts, 1)
        # read once here and written again by share, so that each share reads its own rows only
        split = dict(zip(parts, split_landings(sp, files[ALL_PARTS], shares, work / "landings"), strict=True))
    plan = {"dataset": dataset, "run_id": run_id, "mode": "rebuild" if why else "change", "reason": why,
            "split": "province" if sp.per_province else "share", "contract_version": c.version,
            "partitions": sorted(buckets), "files": files, "buckets": buckets,
            "staged_version": versions[0], "quarantine_version": versions[1]}
    if not sp.per_province:
        plan["share_files"] = split
    write_json(work / PLAN_FILE, plan)
    log.info("%s: staged in parts by %s (%s): %s", dataset, plan["split"], plan["mode"],
             {p: len(f) for p, f in sorted(files.items())})
    return {"dataset": dataset, "mode": plan["mode"], "split": plan["split"], "partitions": plan["partitions"],
            "files": {p: len(f) for p, f in files.items()}, "buckets": buckets}


def _files_of(plan: dict[str, Any], part: str) -> list[str]:
    """The raw files part `part` of a plan stages (a province's own; for a share, all of them, of which it reads
    its own rows from the plan's `share_files`)."""
    return plan["files"].get(part, plan["files"].get(ALL_PARTS, []))


def _part_version(plan: dict[str, Any], part: str, bucket: int) -> int:
    """The staged table version a part is written by: the change's one commit, or in a rebuild the part's own
    commit (one per part and hash bucket, in the plan's order)."""
    held = plan["staged_version"]
    base = 0 if held is None else held + 1
    if plan["mode"] != "rebuild":
        return base
    before = plan["partitions"][:plan["partitions"].index(part)]
    return base + sum(plan["buckets"][p] for p in before) + bucket


def _part_files(work: Path, part: str, bucket: int) -> tuple[Path, Path]:
    return work / f"{part}.{bucket}.staged.parquet", work / f"{part}.{bucket}.quarantine.parquet"


def stage_part(dataset: str, run_id: str, part: str, settings: Settings) -> dict[str, Any]:
    """Stage one part of the run's plan (`plan_stage`): the rows it writes to each table and its counts, into
    the work folder, for `stage_dataset` to commit. Reads only; commits nothing. A province's rebuild above
    `LIENTHONG_STAGE_CHUNK_ROWS` raw rows runs in hash buckets of the identity (as staging whole does), each in
    a session of its own, so memory follows the bucket, not the province."""
    from lienthong.contracts import contract
    from lienthong.duck import session
    from lienthong.staging import (
        StagePlan,
        _stage_part,
        split_landings,
        staged_schema,
        table_paths,
        write_atomic,
    )

    s = settings
    work = stage_work_dir(s, dataset, run_id)
    plan = json.loads((work / PLAN_FILE).read_text())
    if part not in plan["partitions"]:
        raise ValueError(f"{dataset}: part {part} is not in the run's plan ({plan['partitions']})")
    c = contract(dataset)
    staged_table, quarantine_table = table_paths(dataset, s.staged_dir, s.quarantine_dir)
    full = plan["mode"] == "rebuild"
    at = None if full else (plan["staged_version"], plan["quarantine_version"])
    buckets = int(plan["buckets"][part])
    by_province = plan["split"] == "province"
    t0 = time.monotonic()
    counts: list[dict[str, Any]] = []
    sp = StagePlan.from_contract(c)
    # each bucket of a province (a share: its part of the plan's split) reads its own rows, split in one pass
    split_dir = work / f"{part}.landings"
    reads = (split_landings(sp, _files_of(plan, part), buckets, split_dir) if by_province and buckets > 1
             else [plan.get("share_files", {}).get(part)] * buckets)
    for i in range(buckets):
        if by_province:
            bucket = (i, buckets) if buckets > 1 else None
        else:  # a share of the identities
            bucket = (plan["partitions"].index(part), len(plan["partitions"]))
        with session(s, purpose="staging") as con:
            out = _stage_part(con, sp, _files_of(plan, part), run_id=run_id, full=full,
                              raw_dir=s.raw_dir, staged_table=staged_table, quarantine_table=quarantine_table,
                              staged_fields=staged_schema(c)[1], next_version=_part_version(plan, part, i),
                              bucket=bucket, at=at, province=part if by_province else None, read=reads[i])
        staged_file, quarantine_file = _part_files(work, part, i)
        write_atomic(out.pop("staged_rows"), staged_file)
        write_atomic(out.pop("quarantine_rows"), quarantine_file)
        counts.append(out)
    shutil.rmtree(split_dir, ignore_errors=True)
    done = {"part": part, "plan": plan["run_id"], "buckets": counts, "seconds": round(time.monotonic() - t0, 3),
            **{k: sum(b[k] for b in counts) for k in ("raw_rows", "rows_in", "rows_staged", "rows_quarantined")}}
    write_json(work / f"{part}.json", done)
    log.info("%s, part %s: %d rows in, %d staged, %d quarantined (%d bucket(s), %.1f s)", dataset, part,
             done["rows_in"], done["rows_staged"], done["rows_quarantined"], buckets, done["seconds"])
    return done


def _commit_parts(c: Any, run_id: str, s: Settings, new: list[Path], why: str | None) -> Any:
    """Commit the run's parts (`stage_part`) when its plan still holds; returns the
    `staging.StageResult`, or None when there is no usable plan (the caller stages whole)."""
    from lienthong import zones
    from lienthong.staging import commit_parts, table_paths

    work = stage_work_dir(s, c.name, run_id)
    if not (work / PLAN_FILE).is_file():
        return None
    plan = json.loads((work / PLAN_FILE).read_text())
    staged_table, quarantine_table = table_paths(c.name, s.staged_dir, s.quarantine_dir)
    now = (zones.version(staged_table) if zones.is_table(staged_table) else None,
           zones.version(quarantine_table) if zones.is_table(quarantine_table) else None)
    planned_files = sorted({f for files in plan["files"].values() for f in files})
    stale = [what for what, bad in (
        ("the tables moved since the plan", now != (plan["staged_version"], plan["quarantine_version"])),
        ("other landings to stage", planned_files != sorted(map(str, new))),
        ("another mode", plan["mode"] != ("rebuild" if why else "change")),
        ("another contract version", plan["contract_version"] != c.version)) if bad]
    missing = [p for p in plan["partitions"] if not (work / f"{p}.json").is_file()
               or json.loads((work / f"{p}.json").read_text()).get("plan") != run_id]
    if stale or missing:
        log.warning("%s: not committing the parts (%s); staging whole", c.name,
                    "; ".join(stale + ([f"no part for {', '.join(missing)}"] if missing else [])))
        return None

    def parts() -> Iterator[dict[str, Any]]:  # read one at a time: a rebuild commits each before the next
        for p in plan["partitions"]:
            for i, out in enumerate(json.loads((work / f"{p}.json").read_text())["buckets"]):
                staged_file, quarantine_file = _part_files(work, p, i)
                yield {**out, "staged_rows": pq.read_table(staged_file), "quarantine_rows": pq.read_table(quarantine_file)}

    return commit_parts(c, parts(), sum(plan["buckets"].values()), run_id=run_id, staged_dir=s.staged_dir,
                        quarantine_dir=s.quarantine_dir, full=plan["mode"] == "rebuild")


def _rebuild_needed(c: Any, staged_table: Any, schema: Any) -> str | None:
    """Why a dataset's tables must be rebuilt from every landing rather than merged into, or None."""
    from lienthong import zones

    if not zones.is_table(staged_table):
        return "no staged table yet"
    held = zones.schema(staged_table)
    if [(f.name, f.type) for f in held] != [(f.name, f.type) for f in schema]:
        return f"the table's columns differ from contract {c.name} {c.version}'s"
    if zones.last_mode(staged_table) == "rebuild-partial":
        return "a rebuild of the table was interrupted"
    written = zones.contract_version(staged_table)
    if written is not None and written != c.version:
        return f"written under contract version {written}, now {c.version}"
    return None
