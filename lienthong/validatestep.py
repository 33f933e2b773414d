"""Validation of one dataset as a recorded step, whole or in parts: what the integrate DAG's validate tasks do
(through `lienthong.pipeline`) and what `lienthong rebuild` repeats from raw.

`validate_dataset` runs the suite on the rows changed since the last validated version, gates the dataset's
state, records it and moves rows failing a critical rule to quarantine (`apply_verdict`). In parts
(`plan_validate_<dataset>`, mapped `validate_part_<dataset>`), a Celery worker validates one province (or
one hash share of a national source's large change) and memory follows the part, not the country.

The plan (after staging, in the run's work folder beside staging's parts) pins the staged version, the last
validated version and the dataset's row count the gate measures against, and lists each part's batches as
SQL conditions on the changed rows: a per-province source's provinces with changed rows (a province above
`LIENTHONG_STAGE_CHUNK_ROWS` changed rows in hash buckets of `_merge_key`, one GX batch each); a national
source's change above that size in hash shares. A part runs the suite's row-level rules on its batches
(`quality.check_part`) and writes what failed; the validate task runs the dataset-level rules (uniqueness)
on the rows sharing a value across the whole version and combines (`quality.validate(parts=...)`), then
gates, stores and quarantines as validating whole does. Why the result is the same: a row-level rule looks
at one row, the parts' conditions split the changed rows without overlap or gap (a province column that is
never null; a hash residue), and the dataset-level rules still see the whole version. A plan that no longer
holds (another staged version or baseline, a part missing or made for another plan) is not used: the task
plans again and runs the parts itself, one after another, when the change is above the chunk (memory
follows the part), else validates whole; either is never wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from lienthong import runs
from lienthong.db import connect, warehouse_url
from lienthong.paths import write_json
from lienthong.settings import Settings
from lienthong.stagestep import stage_work_dir

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


def work_dir(s: Settings, dataset: str, run_id: str) -> Path:
    """The run's work folder for validating `dataset` in parts."""
    return stage_work_dir(s, dataset, run_id) / "validate"


def baseline(dataset: str, run_id: str, stage_summary: dict[str, Any], s: Settings) -> dict[str, Any]:
    """What a validation of the stage's result measures against: the staged version, the last validated
    version before it (-1 after a rebuild: every row), and the dataset's rows (staged + quarantined)."""
    since = -1 if stage_summary.get("mode") == "rebuild" else last_validated_version(warehouse_url(s), dataset, run_id)
    return {"staged_path": stage_summary["staged_path"], "since": since,
            "rows_in": row_count(stage_summary["staged_path"]) + row_count(stage_summary["quarantine_path"])}


def plan_validate(dataset: str, run_id: str, stage_summary: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Plan validating the stage's change in parts; returns the parts (none: the validate task validates
    whole: nothing staged, a national source's change that fits one part, a table without versions)."""
    from lienthong import zones
    from lienthong.contracts import contract
    from lienthong.duck import session
    from lienthong.staging import StagePlan, _lit, _partition_by, shares_for

    s = settings
    work = work_dir(s, dataset, run_id)
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt's plan and parts
    if stage_summary.get("mode") in ("none", "unchanged"):
        return {"dataset": dataset, "partitions": [], "reason": "nothing staged"}
    c = contract(dataset)
    base = baseline(dataset, run_id, stage_summary, s)
    if "_staged_version" not in zones.schema(base["staged_path"]).names:
        return {"dataset": dataset, "partitions": [], "reason": "the staged table has no row versions"}
    column = next(iter(_partition_by(StagePlan.from_contract(c), c) or []), None)
    changed = f"_staged_version > {int(base['since'])}"
    with session(s, purpose="quality") as con:
        zones.register(con, "t", base["staged_path"])
        if column is not None:
            counts = con.execute(f'SELECT "{column}", count(*) FROM t WHERE {changed} GROUP BY 1 ORDER BY 1').fetchall()
        else:
            counts = [(None, int((con.execute(f"SELECT count(*) FROM t WHERE {changed}").fetchone() or (0,))[0]))]
    where: dict[str, list[str]] = {}
    if column is not None:
        if any(p is None for p, _ in counts):
            return {"dataset": dataset, "partitions": [], "reason": f"changed rows without a {column}"}
        for province, n in counts:
            own = f'"{column}" = {_lit(str(province))}'
            b = shares_for(n, s.stage_chunk_rows)
            where[str(province)] = [own] if b == 1 else [f"{own} AND hash(_merge_key) % {b} = {i}" for i in range(b)]
    else:
        n = shares_for(counts[0][1], s.stage_chunk_rows)
        if n <= 1:
            return {"dataset": dataset, "partitions": [], "reason": "a national source's change that fits one part"}
        where = {f"share{i:03d}": [f"hash(_merge_key) % {n} = {i}"] for i in range(n)}
    plan = {"dataset": dataset, "run_id": run_id, "contract_version": c.version, **base,
            "split": "share" if column is None else "province", "partitions": sorted(where), "where": where,
            "rows": {str(p): n for p, n in counts}}
    write_json(work / PLAN_FILE, plan)
    log.info("%s: validated in parts by %s: %d part(s), changed rows %s", dataset, plan["split"], len(where), plan["rows"])
    return {"dataset": dataset, "split": plan["split"], "partitions": plan["partitions"], "rows": plan["rows"],
            "batches": {p: len(w) for p, w in where.items()}}


def validate_part(dataset: str, run_id: str, part: str, settings: Settings) -> dict[str, Any]:
    """Run the row-level rules on one part of the run's plan (`plan_validate`) and keep what failed in the
    work folder for the validate task. Reads only: gates, stores and quarantines nothing."""
    from lienthong.contracts import contract
    from lienthong.quality import check_part

    s = settings
    work = work_dir(s, dataset, run_id)
    plan = json.loads((work / PLAN_FILE).read_text())
    if part not in plan["partitions"]:
        raise ValueError(f"{dataset}: part {part} is not in the run's validation plan ({plan['partitions']})")
    checks = check_part(contract(dataset), plan["staged_path"], run_id=run_id, part=part, where=plan["where"][part],
                        since_version=plan["since"], rows_in=plan["rows_in"], reports_dir=s.reports_dir)
    write_json(work / f"{part}.json", {"plan": run_id, "staged_path": plan["staged_path"], **checks.as_dict()})
    return {"part": part, "rows_changed": checks.rows_changed, "gx_success": checks.gx_success,
            "failing": {rule: f.unexpected for rule, f in checks.found.items()}, "seconds": checks.seconds}


def planned_parts(dataset: str, run_id: str, base: dict[str, Any], contract_version: str, s: Settings) -> list[Any] | None:
    """The run's parts (`quality.PartChecks`, in the plan's order) when its plan holds for `base`
    (`baseline`); None when there is no plan or it does not hold (the caller validates whole)."""
    from lienthong.quality import PartChecks

    work = work_dir(s, dataset, run_id)
    if not (work / PLAN_FILE).is_file():
        return None
    plan = json.loads((work / PLAN_FILE).read_text())
    stale = [what for what, bad in (
        ("another staged version", plan["staged_path"] != base["staged_path"]),
        ("another last validated version", plan["since"] != base["since"]),
        ("another row count", plan["rows_in"] != base["rows_in"]),
        ("another contract version", plan["contract_version"] != contract_version)) if bad]
    done = {p: json.loads((work / f"{p}.json").read_text()) for p in plan["partitions"] if (work / f"{p}.json").is_file()}
    missing = [p for p in plan["partitions"] if p not in done or done[p].get("plan") != run_id
               or done[p].get("staged_path") != plan["staged_path"]]
    if stale or missing:
        log.warning("%s: not combining the validation parts (%s); validating here", dataset,
                    "; ".join(stale + ([f"no part for {', '.join(missing)}"] if missing else [])))
        return None
    return [PartChecks.from_dict({k: v for k, v in done[p].items() if k not in ("plan", "staged_path")})
            for p in plan["partitions"]]


def validate_dataset(dataset: str, run_id: str, stage_summary: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Run the dataset's Great Expectations suite on the rows the staging run changed (uniqueness on the whole
    table) and the quality gate on the dataset's state; move rows failing a critical rule to quarantine.

    The verdict (the task's XCom) holds plain types only: the gate, per-rule outcomes, the failing rows of
    critical rules as positions in the batch, and the Data Docs index path (see `quality.verdict`)."""
    from lienthong import zones
    from lienthong.contracts import contract
    from lienthong.quality import validate as run_validation
    from lienthong.quality import verdict
    from lienthong.staging import quarantine_by_rule

    s = settings
    url = warehouse_url(s)
    c = contract(dataset)
    staged_ref = stage_summary["staged_path"]
    base = baseline(dataset, run_id, stage_summary, s)
    by_rule = quarantine_by_rule(stage_summary["quarantine_path"])
    result = run_validation(
        c,
        staged_ref,
        run_id=run_id,
        since_version=base["since"],
        rows_in=base["rows_in"],
        quarantine_by_rule=by_rule,
        reports_dir=s.reports_dir,
        warehouse_url=url,
        # the row-level rules' failures from the run's parts (`validate_part_<dataset>`) when they cover the change
        parts=planned_parts(dataset, run_id, base, c.version, s) or _parts_here(dataset, run_id, stage_summary, base, c.version, s),
    )
    out = verdict(result, c)
    # the quarantine table is the one this stage wrote (its summary names it), not the settings' default
    quarantine_dir = Path(zones.split_ref(stage_summary["quarantine_path"])[0]).parent
    applied = apply_verdict(c, run_id, result, staged_ref, raw_dir=s.raw_dir, quarantine_dir=quarantine_dir)
    out["moved_to_quarantine"] = applied.by_rule
    if applied.staged_path != staged_ref:
        with connect(url) as conn:
            runs.record_quarantine_moved(conn, run_id, dataset, applied.rows, applied.by_rule,
                                         staged_path=applied.staged_path, quarantine_path=applied.quarantine_path)
        out["staged_path"] = applied.staged_path
    spent = work_dir(s, dataset, run_id)  # the parts' checks, used or not
    shutil.rmtree(spent, ignore_errors=True)
    with contextlib.suppress(OSError):  # the run's work folder, once staging's parts are gone too
        spent.parent.rmdir()
    return out


def apply_verdict(c: Any, run_id: str, result: Any, staged_ref: str, *, raw_dir: Path, quarantine_dir: Path) -> Any:
    """What a validation does to the tables: record on each changed row the warning rules it fails
    (`_failed_rules`, one commit), then move the rows failing a critical rule to quarantine
    (`staging.quarantine_failed_rows`). Returns the move (`staging.Moved`) with the versions left."""
    from lienthong import zones
    from lienthong.staging import quarantine_failed_rows, rules_by_key

    if result.flagged:
        rules_of = rules_by_key(result.flagged)
        rows = pa.table({"_merge_key": pa.array(sorted(rules_of), pa.string()),
                         "_failed_rules": pa.array([rules_of[k] for k in sorted(rules_of)], pa.list_(pa.string()))})
        path = zones.split_ref(staged_ref)[0]
        commit = zones.set_column(path, rows, key="_merge_key", column="_failed_rules", run_id=run_id,
                                  metadata={"lienthong.mode": "validation"})
        staged_ref = zones.ref(path, commit.version or 0)
    critical = {o.rule: o.expectation for o in result.outcomes if o.severity == "critical"}
    failing = {rule: keys for rule, keys in result.failed_merge_keys.items() if rule in critical and keys}
    # with nothing failing, it moves nothing and returns the versions as they are
    return quarantine_failed_rows(c, run_id, staged_ref, raw_dir, failing, critical, quarantine_dir=quarantine_dir)


def row_count(reference: str) -> int:
    from lienthong import zones

    return int(zones.dataset(reference).count_rows())


def last_validated_version(url: str, dataset: str, run_id: str) -> int:
    """The staged version the dataset's last validation (before run `run_id`) left: rows written after it are
    the change to validate (-1 when none was validated)."""
    from lienthong import zones

    with connect(url) as conn:
        ref = runs.last_validated_staged_path(conn, dataset, before_run_id=run_id)
    version = zones.split_ref(ref)[1] if ref else None
    return -1 if version is None else version


def _parts_here(dataset: str, run_id: str, stage_summary: dict[str, Any], base: dict[str, Any], contract_version: str,
                s: Settings) -> list[Any] | None:
    """Without a usable plan from the DAG's tasks (a plan that no longer holds, `lienthong rebuild`, a run
    outside Airflow), a change above `LIENTHONG_STAGE_CHUNK_ROWS` rows is still validated in parts, one after
    another in this process, so memory follows the part here too; a smaller one is validated whole (None)."""
    plan = plan_validate(dataset, run_id, stage_summary, s)
    if sum(plan.get("rows", {}).values()) <= s.stage_chunk_rows:
        return None
    log.info("%s: validating the change's %d part(s) here, one after another", dataset, len(plan["partitions"]))
    for part in plan["partitions"]:
        validate_part(dataset, run_id, part, s)
    return planned_parts(dataset, run_id, base, contract_version, s)
