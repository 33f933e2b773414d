"""The publish task hands only the rows that changed (`lienthong.profilechange`), and the versions it publishes
equal publishing every row.

A real province (sandbox, real connectors) is staged, validated, reconciled and published. Then random change
sequences arrive the way the agency systems deliver them (the same changes as the incremental reconciliation's
property test: renames, births, deaths, ID corrections, enterprises dissolving, land holders and certificates
moving, parcels deleted), and each run is staged, reconciled and published by the pipeline's own steps. After
every run, for each dataset built from the integrated zone:

- the publish task built the touched rows only, fewer than all, from the last version's kept digests, for
  the scope the changed rows of its inputs reach: an integrated table's from the keys its reconciliation
  recorded, or (those records removed) from digests of both versions;
- the version it published holds exactly the rows a build of every row gives (content hash over every row,
  row count, and the rows read back from the warehouse's stable view);
- the feed's change counts equal the difference between the two versions' rows.

Then the kept digests are made unusable in each way they can be (gone, describing another version, made by
another query), and the publish task falls back to every row, with the same result.
"""

from __future__ import annotations

import json
import random
import re
import shutil

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
    from lienthong.reconcile import outputchange
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
    staged_inputs = {"citizen", "legal_representative", "land_holder"}
    for step in range(1, 5):
        run_id = f"c{step}"
        done = change_sources(s.raw_dir, rng, step, run_id)
        stage_landed(run_id)
        reconciled_run = pipeline.reconcile(run_id)
        if step >= 3:  # the reconciliation's records of its changed keys gone: the scope compares the versions
            for name in reconciled_run["outputs"]:
                shutil.rmtree(outputchange.records_dir(s.integrated_dir / name), ignore_errors=True)
        for d in DATASETS:
            result = pipeline.publish(d, f"p{step}")
            built = result["built"]
            assert built["form"] == "touched", (step, d, built)
            assert built["touched_keys"] < built["rows_now"] / 2, (step, d, done, built)
            # the query ran for the change's scope only (the kept digests name the table versions they read)
            assert "reason" not in built["scope"], (step, d, built)
            assert built["built_rows"] < built["rows_now"] / 2, (step, d, built)
            integrated_changed = set(built["scope"]["changed_rows"]) - staged_inputs
            if step < 3:  # each integrated table's changed rows from the keys its reconciliation recorded
                assert integrated_changed, (step, d, built)
                assert set(built["scope"]["from_reconciliation"]) == integrated_changed, (step, d, built)
                assert not built["scope"]["then_from_cache"], (step, d, built)
            else:  # compared by digests, those of the version then kept by the last build from step 4 on
                assert not built["scope"]["from_reconciliation"], (step, d, built)
                if step == 4:
                    assert set(built["scope"]["then_from_cache"]) & integrated_changed, (step, d, built)
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


def _altered(rows: pa.Table, rng: random.Random) -> pa.Table:
    """`rows` with one in twenty rows changed in every text column (join keys included) and one in fifty
    removed: a change to a table, as a reconciliation or staging could make it."""
    import pyarrow.compute as pc

    picked = pa.array([rng.random() < 0.05 for _ in range(rows.num_rows)])
    kept = pa.array([rng.random() >= 0.02 for _ in range(rows.num_rows)])
    for i, field in enumerate(rows.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            changed = pc.binary_join_element_wise(rows.column(i), pa.scalar(" đổi", field.type), "")
            rows = rows.set_column(i, field, pc.if_else(picked, changed, rows.column(i)))
    return rows.filter(kept)


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_change_to_any_input_table_is_in_the_scope(reconciled, tmp_path, dataset):
    """For each table the query reads, a new version with rows changed (text columns, join keys included) or
    removed: the build from the change runs for its scope only, and the last version's rows with the touched
    rows applied equal a build of every row from the new version. (Leaving a table out of `profiles.AFFECTS`
    fails this for that table.)"""
    from lienthong import profilechange, profiles, zones
    from lienthong.contracts import contract
    from lienthong.publish import content_hash

    c = contract(dataset)
    keys = c.primary_key
    rng = random.Random(dataset)
    paths = _paths(dataset)
    sql = profiles.SQL_FROM_INTEGRATED[dataset](c, (0, 1), False)
    read = [t for t in sorted(paths) if re.search(rf"\b(FROM|JOIN)\s+{t}\b", sql)]  # what the query reads
    assert len(read) >= 5, read
    for table in read:
        copy = tmp_path / table
        rows = zones.read_table(paths[table])
        before = {**paths, table: zones.ref(copy, zones.create(copy, rows, run_id="t0").version or 0)}
        ds_dir = tmp_path / f"{table}-published"
        first = profilechange.build(dataset, c, before, ds_dir, None)
        assert first.rows is not None
        digest = content_hash(first.rows, c)
        profilechange.keep(first, ds_dir, 1, digest)
        after = {**paths, table: zones.ref(copy, zones.create(copy, _altered(rows, rng), run_id="t1").version or 0)}
        built = profilechange.build(dataset, c, after, ds_dir,
                                    {"version": 1, "content_hash": digest, "row_count": first.rows.num_rows})
        assert built.touched is not None and built.scope is not None and "reason" not in built.scope, (table, built.scope)
        full = profiles.FROM_INTEGRATED[dataset](c, after)
        touched = _keys(built.touched.keys, keys)
        carried = [r for r in first.rows.to_pylist() if tuple(r[k] for k in keys) not in touched]
        applied = sorted(carried + built.touched.rows.to_pylist(), key=lambda r: tuple(str(r[k]) for k in keys))
        want = sorted(full.to_pylist(), key=lambda r: tuple(str(r[k]) for k in keys))
        assert len(applied) == len(want), table
        assert applied == want, table
        assert built.scope["changed_rows"].get(table, 0) > 0, table
        assert built.built_rows is not None and built.built_rows < built.digests.num_rows, (table, built.summary())
