"""Parts as tasks for staging and validation: every dataset of a three-province country staged as the integrate
DAG does it (`plan_stage_<dataset>`, one `stage_part_<dataset>` per part, then `stage_<dataset>` committing the
parts), and the tables equal to staging the same landings whole; then validated as the DAG does it
(`plan_validate_<dataset>`, one `validate_part_<dataset>` per part, `validate_<dataset>` combining), with the
verdict equal to validating the same version whole.

A synthetic country (sandbox `CountryConfig`, land registries in three provinces) is landed by the real
connectors. The first staging rebuilds the tables in parts: the land datasets by province (a large
province's part in hash buckets), the national sources in hash shares of the record identity. Then random
change sequences arrive as the agency systems deliver them, and each run stages the change in parts (land by
province; a national source in shares when its change is above the chunk). Every time, the same landings are
also staged whole (`staging.stage_json_source`) into copies of the tables as they were before: the staged
and quarantine rows are equal (in a rebuild, but for `_staged_version`, which names each part's commit), and
so are the counts. A plan that no longer holds (a part missing) is not committed: the stage task stages
whole, with the same result. Each validation in parts gives the outcomes, gate, failing and flagged rows of
`quality.validate` run whole on the same version (rows failing a rule are in the synthetic data: the test
asserts some were found by the parts); a validation plan with a part missing is validated whole.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

pytestmark = pytest.mark.integration

LAND = ("parcel", "land_holder", "certificate")
ALL = (*LAND, "citizen", "enterprise", "legal_representative")


@pytest.fixture(scope="module")
def country(tmp_path_factory):
    from province import ingested_province, three_provinces

    config = three_provinces(citizens=1500, seed=9, representatives_outside=0.2)
    with ingested_province(tmp_path_factory.mktemp("stageprov"), citizens=0, seed=0, config=config) as prov:
        yield prov


def _rows(reference: str, drop: tuple[str, ...] = ()) -> list[dict]:
    from lienthong import zones

    table = zones.read_table(reference)
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return sorted(table.to_pylist(), key=lambda r: (str(r["_merge_key"]), str(r.get("_record_hash"))))


def _whole(dataset: str, files, tmp_path, tag: str, *, full: bool):
    """The same landings staged whole into copies of the dataset's tables as they are now."""
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.staging import stage_json_source, table_paths

    s = load_settings()
    scratch = tmp_path / f"{dataset}-{tag}"
    for src, dst in zip(table_paths(dataset, s.staged_dir, s.quarantine_dir),
                        table_paths(dataset, scratch / "staged", scratch / "quarantine"), strict=True):
        if src.exists():
            shutil.copytree(src, dst)
    return stage_json_source(contract(dataset), files, run_id=f"whole-{tag}", staged_dir=scratch / "staged",
                             quarantine_dir=scratch / "quarantine", full=full, raw_dir=s.raw_dir)


def _by_parts(dataset: str, run_id: str) -> tuple[dict, dict]:
    from lienthong import pipeline

    plan = pipeline.plan_stage(dataset, run_id)
    parts = {p: pipeline.stage_part(dataset, run_id, p) for p in plan["partitions"]}
    return plan, parts


def _check_equal(dataset: str, mine: dict, whole, *, rebuild: bool) -> None:
    drop = ("_staged_version", "run_id") if rebuild else ("run_id",)
    for k in ("rows_in", "rows_staged", "rows_quarantined", "rows_unchanged", "raw_rows", "deleted"):
        assert mine[k] == getattr(whole, k), (dataset, k, mine[k], getattr(whole, k))
    assert mine["quarantine_by_rule"] == whole.quarantine_by_rule, dataset
    assert _rows(mine["staged_path"], drop) == _rows(whole.staged_path, drop), dataset
    assert _rows(mine["quarantine_path"], drop) == _rows(whole.quarantine_path, drop), dataset
    if not rebuild:
        assert mine["content_hash"] == whole.content_hash, dataset


def _sorted(by_rule: dict) -> dict:
    return {k: sorted(json.dumps(v, sort_keys=True, default=str) for v in vs) for k, vs in by_rule.items()}


def _baseline_kw(dataset: str, run_id: str, staged: dict) -> dict:
    """`quality.validate`'s arguments for validating the stage's result as the validate task does."""
    from lienthong.settings import load_settings
    from lienthong.staging import quarantine_by_rule
    from lienthong.validatestep import baseline

    base = baseline(dataset, run_id, staged, load_settings())
    return {"run_id": run_id, "since_version": base["since"], "rows_in": base["rows_in"], "store": False,
            "quarantine_by_rule": quarantine_by_rule(staged["quarantine_path"])}


def _validated_in_parts(dataset: str, run_id: str, staged: dict, found: dict) -> dict:
    """Validate the stage's result as the DAG does (plan, parts, the combining validate task), after checking
    that the parts combine to what validating the same version whole gives; the verdict."""
    from lienthong import pipeline, quality
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.validatestep import baseline, planned_parts, work_dir

    s, c = load_settings(), contract(dataset)
    plan = pipeline.plan_validate(dataset, run_id, staged)
    parts = {p: pipeline.validate_part(dataset, run_id, p) for p in plan["partitions"]}
    base = baseline(dataset, run_id, staged, s)
    kw = _baseline_kw(dataset, run_id, staged)
    whole = quality.validate(c, staged["staged_path"], **kw)
    checks = planned_parts(dataset, run_id, base, c.version, s)
    assert (checks is None) == (not plan["partitions"]), (dataset, plan)
    if checks is not None:
        combined = quality.validate(c, staged["staged_path"], parts=checks, **kw)
        assert combined.parts == len(parts) and combined.rows_changed == whole.rows_changed, (dataset, plan)
        assert combined.outcomes == whole.outcomes and combined.gate_passed == whole.gate_passed, dataset
        for attr in ("failed_merge_keys", "failed_keys", "flagged"):
            assert _sorted(getattr(combined, attr)) == _sorted(getattr(whole, attr)), (dataset, attr)
        assert {k: len(v) for k, v in combined.failed_rows.items()} == {k: len(v) for k, v in whole.failed_rows.items()}
        for p in parts.values():
            for rule, n in p["failing"].items():
                found[(dataset, rule)] = found.get((dataset, rule), 0) + n
    verdict = pipeline.validate(dataset, run_id, staged)
    assert verdict["parts"] == len(plan["partitions"]), (dataset, verdict["parts"], plan)
    assert verdict["gate_passed"] == whole.gate_passed and verdict["rows_changed"] == whole.rows_changed, dataset
    assert not work_dir(s, dataset, run_id).exists()  # spent
    return verdict


def test_parts_staged_apart_equal_staging_whole(country, tmp_path, monkeypatch):
    from test_incremental_reconcile import change_sources

    from lienthong import pipeline, quality
    from lienthong.contracts import contract
    from lienthong.settings import load_settings
    from lienthong.stagestep import _to_stage, stage_work_dir

    s = load_settings()
    found: dict = {}  # (dataset, rule) -> rows the validation parts found failing it
    # the first staging: a rebuild (no table yet), one province after another, a large province's part in hash
    # buckets; a national source in hash shares of its identities (a small chunk here; staging whole uses the
    # same chunk)
    monkeypatch.setenv("LIENTHONG_STAGE_CHUNK_ROWS", "300")
    for d in ALL:
        files = _to_stage(d, s, False)[1]
        plan, parts = _by_parts(d, "r1")
        if d in LAND:
            assert plan["mode"] == "rebuild" and plan["partitions"] == ["01", "31", "79"], plan
            assert max(plan["buckets"].values()) > 1 and min(plan["buckets"].values()) >= 1, plan
            assert all(len(parts[p]["buckets"]) == plan["buckets"][p] for p in parts), parts
        elif d == "citizen":  # 1,500 records
            assert plan["split"] == "share" and len(plan["partitions"]) >= 3, plan
            # the plan read the landings once and wrote each share its own rows
            written = json.loads((stage_work_dir(s, d, "r1") / "plan.json").read_text())
            assert sorted(written["share_files"]) == plan["partitions"] and all(written["share_files"].values())
        assert sum(p["rows_in"] for p in parts.values()) > 0 or not plan["partitions"], plan
        mine = pipeline.stage(d, "r1")
        assert mine["mode"] == "rebuild", mine
        assert mine["parts"] == sum(plan["buckets"].values()) if plan["partitions"] else mine["parts"] == 0, mine
        _check_equal(d, mine, _whole(d, files, tmp_path, "r1", full=True), rebuild=True)
        assert not stage_work_dir(s, d, "r1").exists()
        verdict = _validated_in_parts(d, "r1", mine, found)
        if d in LAND:  # every row is new: each province in hash buckets of the chunk
            assert verdict["parts"] == 3, verdict

    # the changes: a land dataset's by province, a national one's in shares when above the (smaller) chunk
    monkeypatch.setenv("LIENTHONG_STAGE_CHUNK_ROWS", "3")
    rng = random.Random(6)
    changed_provinces, shared = set(), set()
    for step in range(1, 4):
        run_id = f"c{step}"
        done = change_sources(s.raw_dir, rng, step, run_id)
        for d in ALL:
            files = _to_stage(d, s, False)[1]
            whole = _whole(d, files, tmp_path, run_id, full=False)
            plan, parts = _by_parts(d, run_id)
            if not files:
                assert plan["partitions"] == [], plan
                continue
            if d in LAND:
                assert plan["mode"] == "change" and plan["split"] == "province", plan
                changed_provinces |= set(plan["partitions"])
            elif plan["partitions"]:
                assert plan["mode"] == "change" and plan["split"] == "share", plan
                shared.add(d)
            mine = pipeline.stage(d, run_id)
            assert mine["mode"] == whole.mode, (step, d, done, mine["mode"], whole.mode)
            assert mine["parts"] == len(plan["partitions"]), (step, d, mine, plan)  # the parts were committed
            if mine["mode"] != "unchanged":
                _check_equal(d, mine, whole, rebuild=False)
                _validated_in_parts(d, run_id, mine, found)
    assert len(changed_provinces) >= 2, changed_provinces
    assert "citizen" in shared, shared
    assert sum(found.values()) > 0, found  # the comparisons saw failing rows
    monkeypatch.delenv("LIENTHONG_STAGE_CHUNK_ROWS")

    # a plan that no longer holds: one part missing -> the stage task stages whole, with the same result
    done = change_sources(s.raw_dir, rng, 4, "c4")
    d = "land_holder"
    files = _to_stage(d, s, False)[1]
    assert files, done
    whole = _whole(d, files, tmp_path, "c4", full=False)
    plan, _ = _by_parts(d, "c4")
    (stage_work_dir(s, d, "c4") / f"{plan['partitions'][0]}.json").unlink()
    mine = pipeline.stage(d, "c4")
    assert mine["parts"] == 0, mine  # staged whole
    if mine["mode"] != "unchanged":
        _check_equal(d, mine, whole, rebuild=False)
        # a validation plan that no longer holds: one part missing -> validated in parts in the validate task
        # itself, one after another, when the change is above the chunk (else whole), with the same verdict
        at_once = quality.validate(contract(d), mine["staged_path"], **_baseline_kw(d, "c4", mine))
        plan = pipeline.plan_validate(d, "c4", mine)
        assert plan["partitions"], plan
        for p in plan["partitions"][1:]:
            pipeline.validate_part(d, "c4", p)
        monkeypatch.setenv("LIENTHONG_STAGE_CHUNK_ROWS", "3")
        verdict = pipeline.validate(d, "c4", mine)
        assert verdict["parts"] == len(plan["partitions"]) and verdict["gate_passed"] == at_once.gate_passed, verdict
        assert verdict["rules"] == quality.verdict(at_once, contract(d))["rules"]
    assert not stage_work_dir(s, d, "c4").exists()
