"""The publish task hands only the rows that changed (`lienthong.profilechange`), and the versions it publishes
equal publishing every row.

A real province (sandbox, real connectors) is staged, validated, reconciled and published. Then random change
sequences arrive the way the agency systems deliver them (the same changes as the incremental reconciliation's
property test: renames, births, deaths, ID corrections, enterprises dissolving, land holders and certificates
moving, parcels deleted), and each run is staged, reconciled and published by the pipeline's own steps. After
every run, for each dataset built from the integrated zone:

- the publish task built the touched rows only, fewer than all, from the last version's kept digests;
- the version it published holds exactly the rows a build of every row gives (content hash over every row,
  row count, and the rows read back from the warehouse's stable view);
- the feed's change counts equal the difference between the two versions' rows.

Then the kept digests are made unusable in each way they can be (gone, describing another version, made by
another query), and the publish task falls back to every row, with the same result.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration

DATASETS = ("citizen_profile", "enterprise_profile", "parcel_register")


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    from province import reconciled_province

    with reconciled_province(tmp_path_factory.mktemp("pubchange"), citizens=1500, seed=11) as prov:
        yield prov


def _paths(dataset: str) -> dict[str, str]:
    """The zone tables the publish task builds `dataset` from."""
    from lienthong.datasets import staged_inputs
    from lienthong.db import warehouse_url
    from lienthong.runs.latest import latest_integration, latest_reconciliation
    from lienthong.settings import load_settings

    url = warehouse_url(load_settings())
    paths = {name: out["path"] for name, out in latest_reconciliation(url)["outputs"].items()}
    paths.update({name: latest_integration(name, url)["staged_path"] for name in staged_inputs(dataset)
                  if name in ("citizen", "legal_representative", "land_holder")})
    return paths


def _every_row(dataset: str) -> pa.Table:
    """The rows a build of every row gives now (the same inputs the publish task reads)."""
    from lienthong import profiles
    from lienthong.contracts import contract

    return profiles.FROM_INTEGRATED[dataset](contract(dataset), _paths(dataset))


def _published_rows(dataset: str) -> list[tuple]:
    """The stable view's rows, as text, in key order."""
    from lienthong.contracts import contract
    from lienthong.db import connect, warehouse_url
    from lienthong.settings import load_settings

    c = contract(dataset)
    cols = ", ".join(f'"{f.name}"::text' for f in c.fields)
    order = ", ".join(f'"{k}"' for k in c.primary_key)
    with connect(warehouse_url(load_settings())) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT {cols} FROM published."{dataset}" ORDER BY {order}')
        return cur.fetchall()


def _keys(table: pa.Table, keys: list[str]) -> set[tuple]:
    return set(zip(*(table[k].to_pylist() for k in keys), strict=True))


def _check_equals_every_row(dataset: str, result: dict, before: pa.Table | None) -> pa.Table:
    from lienthong.contracts import contract
    from lienthong.publish import content_hash

    c = contract(dataset)
    full = _every_row(dataset)
    assert result["content_hash"] == content_hash(full, c), (dataset, result)
    assert result["rows"] == full.num_rows
    assert len(_published_rows(dataset)) == full.num_rows
    if before is not None and result["status"] == "published" and result["changes"] is not None:
        keys = c.primary_key
        now_rows = {tuple(r[k] for k in keys): r for r in full.to_pylist()}
        old_rows = {tuple(r[k] for k in keys): r for r in before.to_pylist()}
        inserted = len(now_rows.keys() - old_rows.keys())
        deleted = len(old_rows.keys() - now_rows.keys())
        updated = sum(1 for k in now_rows.keys() & old_rows.keys() if now_rows[k] != old_rows[k])
        assert result["changes"].get("insert", 0) == inserted, (dataset, result["changes"], inserted)
        assert result["changes"].get("delete", 0) == deleted, (dataset, result["changes"], deleted)
        assert result["changes"].get("update_postimage", 0) == updated, (dataset, result["changes"], updated)
    return full


def test_a_build_in_buckets_equals_one_bucket(reconciled, monkeypatch):
    """The builders' queries run bucket by bucket of their driving table (bounded memory at 2M): the rows,
    their order and their nested lists are those of one bucket."""
    from lienthong import profiles
    from lienthong.duck import session

    for d in DATASETS:
        monkeypatch.setattr(profiles, "ROWS_PER_PART", 10**9)
        whole = _every_row(d)
        monkeypatch.setattr(profiles, "ROWS_PER_PART", 40)
        with session(purpose="test") as con:
            profiles.register(con, {profiles.DRIVING[d]: _paths(d)[profiles.DRIVING[d]]})
            assert profiles.parts(con, d) >= 3, d
        assert _every_row(d).equals(whole), d


def test_the_publish_task_publishes_the_change_and_equals_every_row(reconciled, monkeypatch):
    from province import stage_landed
    from test_incremental_reconcile import change_sources

    from lienthong import pipeline, profilechange, profiles
    from lienthong.contracts import contract
    from lienthong.settings import load_settings

    s = load_settings()
    monkeypatch.setattr(profiles, "ROWS_PER_PART", 300)  # several buckets (`profiles.stream`) per build
    first = {d: pipeline.publish(d, "p0") for d in DATASETS}
    rows = {}
    for d, result in first.items():
        assert result["status"] == "published" and result["built"]["form"] == "every_row", result
        assert result["built"]["reason"] == "no version published yet"
        assert profilechange.digests_path(s.published_dir / d, result["version"]).exists()
        rows[d] = _check_equals_every_row(d, result, None)
    # nothing changed: the digests say so, and nothing is published
    again = {d: pipeline.publish(d, "p0-again") for d in DATASETS}
    for result in again.values():
        assert result["status"] == "unchanged", result
        assert result["built"]["form"] == "touched" and result["built"]["touched_keys"] == 0, result
    rng = random.Random(5)
    touched_seen = dict.fromkeys(DATASETS, 0)
    for step in range(1, 4):
        run_id = f"c{step}"
        done = change_sources(s.raw_dir, rng, step, run_id)
        stage_landed(run_id)
        pipeline.reconcile(run_id)
        for d in DATASETS:
            result = pipeline.publish(d, f"p{step}")
            built = result["built"]
            assert built["form"] == "touched", (step, d, built)
            assert built["touched_keys"] < built["rows_now"] / 2, (step, d, done, built)
            # the query ran for the change's scope only (the kept digests name the table versions they read)
            assert "reason" not in built["scope"], (step, d, built)
            assert built["built_rows"] < built["rows_now"] / 2, (step, d, built)
            touched_seen[d] += built["touched_keys"]
            rows[d] = _check_equals_every_row(d, result, rows[d])
            c = contract(d)
            if result["status"] == "published":
                assert result["changes"] is not None and sum(result["changes"].values()) > 0, (step, d, result)
            assert len(_keys(rows[d], c.primary_key)) == rows[d].num_rows
    assert all(n > 0 for n in touched_seen.values()), touched_seen


def _tamper(path, field: bytes, value: bytes | None) -> None:
    """Set one metadata field of a kept digests file (None: remove it)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = {**dict(table.schema.metadata), field: value}
    pq.write_table(table.replace_schema_metadata({k: v for k, v in meta.items() if v is not None}), path)


def test_unusable_digests_fall_back_to_every_row(reconciled):
    from test_incremental_reconcile import _land, _payloads

    from lienthong import pipeline, profilechange
    from lienthong.publish import last_publication
    from lienthong.settings import load_settings

    s = load_settings()
    d = "citizen_profile"
    pipeline.publish(d, "f0")  # whatever the other test left: a version with its digests
    last = last_publication(d)
    ds_dir = s.published_dir / d
    kept = profilechange.digests_path(ds_dir, last["version"])
    assert kept.exists()

    names = iter(["Hải", "Lan", "Mai", "Hoa", "Đào", "Cúc"])
    hours = iter(range(11, 17))

    def rename_one(tag: str) -> None:
        """One citizen renamed at the population registry, landed, staged and reconciled."""
        citizens = _payloads(s.raw_dir, "population_registry", "citizens")
        hour = next(hours)
        item = json.loads(json.dumps(citizens[sorted(citizens)[hour]]))
        item["hoVaTen"] = item["hoVaTen"] + " " + next(names)
        item["capNhatLuc"] = f"2026-12-09T{hour}:00:00+07:00"
        _land(s.raw_dir, "population_registry", "citizens", tag, [item], "soDinhDanh", "capNhatLuc")
        summary = pipeline.stage("citizen", tag)
        assert summary.get("mode") not in ("none", "unchanged"), summary
        pipeline.validate("citizen", tag, summary)
        pipeline.reconcile(tag)

    # gone (a kill between the version's record and the digests' write)
    kept.unlink()
    rename_one("Gone")
    result = pipeline.publish(d, "f1")
    assert result["built"]["form"] == "every_row" and "no row digests kept" in result["built"]["reason"], result
    _check_equals_every_row(d, result, None)
    # describing another content than the last version's
    _tamper(profilechange.digests_path(ds_dir, result["version"]), b"lienthong.content_hash", b"0" * 64)
    rename_one("Other")
    result = pipeline.publish(d, "f2")
    assert result["built"]["form"] == "every_row" and "do not describe" in result["built"]["reason"], result
    _check_equals_every_row(d, result, None)
    # made by another query (or contract, or DuckDB version)
    kept = profilechange.digests_path(ds_dir, result["version"])
    _tamper(kept, b"lienthong.stamp", b"an older query")
    rename_one("Query")
    result = pipeline.publish(d, "f3")
    assert result["built"]["form"] == "every_row" and "changed since" in result["built"]["reason"], result
    _check_equals_every_row(d, result, None)
    # and the digests kept now are usable again
    rename_one("Again")
    result = pipeline.publish(d, "f4")
    assert result["built"]["form"] == "touched" and result["built"]["touched_keys"] >= 1, result
    assert "reason" not in result["built"]["scope"], result  # built for the change's scope
    _check_equals_every_row(d, result, None)
    assert len(list(kept.parent.glob(f"*{profilechange.SUFFIX}"))) == 1

    # usable digests, but a table version they were built from cannot be read any more (vacuumed, or the table
    # made again): the query runs for every key, the digests still tell the touched rows
    import pyarrow.parquet as pq

    kept = profilechange.digests_path(ds_dir, result["version"])
    inputs = json.loads(pq.read_schema(kept).metadata[profilechange.INPUTS.encode()])
    assert set(inputs) == {"citizen", "person_master", "enterprise_representative_link", "enterprise_master",
                           "parcel_holder_link", "parcel_master"}, inputs
    inputs["person_master"]["table_id"] = "a table made again"
    _tamper(kept, profilechange.INPUTS.encode(), json.dumps(inputs).encode())
    rename_one("Vacuumed")
    result = pipeline.publish(d, "f5")
    built = result["built"]
    assert built["form"] == "touched" and "cannot be read any more" in built["scope"]["reason"], result
    assert built["built_rows"] == built["rows_now"] and built["touched_keys"] >= 1, built
    _check_equals_every_row(d, result, None)
    # digests that do not name their table versions (kept by an earlier release): the same
    _tamper(profilechange.digests_path(ds_dir, result["version"]), profilechange.INPUTS.encode(), None)
    rename_one("Unnamed")
    result = pipeline.publish(d, "f6")
    built = result["built"]
    assert built["form"] == "touched" and "do not name" in built["scope"]["reason"], result
    assert built["built_rows"] == built["rows_now"], built
    _check_equals_every_row(d, result, None)
