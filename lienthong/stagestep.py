"""Staging and validation of one dataset as recorded steps: what the integrate DAG's stage and validate tasks
do (through `lienthong.pipeline`) and what `lienthong rebuild` repeats from raw.

`stage_dataset` finds the landings the dataset has not staged (the ledger's `stage_landing`), merges them
(`lienthong.staging`) and records the run; `validate_dataset` runs the suite on the rows changed since the
last validated version, gates the dataset's state and moves rows failing a critical rule to quarantine.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from lienthong import runs
from lienthong.db import connect, warehouse_url
from lienthong.settings import Settings

log = logging.getLogger(__name__)


class NothingToStage(LookupError):
    """A dataset's source has not landed anything yet (its ingestion DAG has not run)."""


def stage_dataset(dataset: str, run_id: str, settings: Settings, *, rebuild: bool = False) -> dict[str, Any]:
    """Merge the raw landings a dataset has not staged yet into its staged and quarantine tables; record the
    run, its conservation check and the landings it merged. A run with no new landing writes and records
    nothing (`mode: none`). The tables are rebuilt from every landing when asked (`rebuild`), when they do not
    exist, or when they were written under another version of the contract."""
    from lienthong import zones
    from lienthong.contracts import contract
    from lienthong.staging import StagePlan, landing_of, stage_json_source, staged_schema, table_paths

    s = settings
    url = warehouse_url(s)
    c = contract(dataset)
    started_at = datetime.now(UTC)
    files = StagePlan.from_contract(c).raw_files(s.raw_dir)
    if not files:
        raise NothingToStage(f"{dataset}: no raw landing yet from {c.custom.get('sourceSystem')}")
    staged_table, _ = table_paths(dataset, s.staged_dir, s.quarantine_dir)
    why = "asked" if rebuild else _rebuild_needed(c, staged_table, staged_schema(c)[0])
    if why:
        log.info("%s: staging rebuilds its tables from every landing (%s)", dataset, why)
        new = files
    else:
        with connect(url) as conn:
            done = runs.staged_landings(conn, dataset)
        new = [f for f in files if landing_of(f, s.raw_dir) not in done]
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
    return result.as_dict()


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
    since = -1 if stage_summary.get("mode") == "rebuild" else _last_validated_version(url, dataset, run_id)
    by_rule = quarantine_by_rule(stage_summary["quarantine_path"])
    state_rows = _count(staged_ref) + _count(stage_summary["quarantine_path"])
    result = run_validation(
        c,
        staged_ref,
        run_id=run_id,
        since_version=since,
        rows_in=state_rows,
        quarantine_by_rule=by_rule,
        reports_dir=s.reports_dir,
        warehouse_url=url,
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


def _count(reference: str) -> int:
    from lienthong import zones

    return int(zones.dataset(reference).count_rows())


def _last_validated_version(url: str, dataset: str, run_id: str) -> int:
    """The staged version the dataset's last validation (before run `run_id`) left: rows written after it are
    the change to validate (-1 when none was validated)."""
    from lienthong import zones

    with connect(url) as conn:
        ref = runs.last_validated_staged_path(conn, dataset, before_run_id=run_id)
    version = zones.split_ref(ref)[1] if ref else None
    return -1 if version is None else version
