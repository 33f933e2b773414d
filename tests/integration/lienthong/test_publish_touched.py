"""Publishing only what changed (`lienthong.publish.Touched`), on a real warehouse: over seeded random
sequences, a version published from the touched keys (a superset of the change) equals the same version
published from every row, in content hash, change feed, row versions, Parquet folders and signature; a version
whose kept row hashes are gone is read back and still right; touched input that cannot be trusted is refused
with the row named, before anything is written."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from agency_fixtures import secrets_in_env
from feed_sequences import GENERATORS, rows_key

from lienthong import snapshots
from lienthong.contracts import contract
from lienthong.db import ensure_database, warehouse_url
from lienthong.publish import Touched, publish
from lienthong.releases import verify

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory):
    base = tmp_path_factory.mktemp("touched").name[-10:].lower().replace("-", "_")
    urls = {how: ensure_database(warehouse_url(), f"touched_{how}_{base}") for how in ("every", "touched", "refused")}
    with secrets_in_env():
        yield urls, tmp_path_factory.mktemp("published")


def _key(dataset: str, row: dict) -> tuple:
    return tuple(row[k] for k in contract(dataset).primary_key)


def _touched(dataset: str, before: list[dict], after: list[dict], rng: random.Random, version: int) -> Touched:
    """The keys that changed, were removed or added, and as many again that did not (a caller's touched set
    is a superset of the change)."""
    old = {_key(dataset, r): rows_key(r) for r in before}
    new = {_key(dataset, r): r for r in after}
    changed = {k for k in old.keys() | new.keys() if old.get(k) != (rows_key(new[k]) if k in new else None)}
    same = sorted(old.keys() - changed)
    keys = changed | set(rng.sample(same, min(len(same), len(changed))))
    c = contract(dataset)
    key_rows = [dict(zip(c.primary_key, k, strict=True)) for k in sorted(keys)]
    key_schema = pa.schema([c.arrow_schema().field(k) for k in c.primary_key])
    return Touched(rows=pa.Table.from_pylist([new[k] for k in sorted(keys) if k in new], schema=c.arrow_schema()),
                   keys=pa.Table.from_pylist(key_rows, schema=key_schema), since=version)


def _publish(url: str, folder: Path, dataset: str, run_id: str, **given):
    return publish(contract(dataset), {}, run_id=run_id, gate_passed=True, published_dir=folder, lineage={},
                   quality={}, retention=4, url=url, **given)


def _view(url: str, dataset: str) -> Counter:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM published."{dataset}"')
        names = [d.name for d in cur.description]
        return Counter(rows_key(dict(zip(names, r, strict=True))) for r in cur.fetchall())


def _feed(url: str, dataset: str, version: int) -> list[tuple]:
    c = contract(dataset)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM published."{dataset}__changes" WHERE _commit_version = %s ORDER BY _seq',
                    (version,))
        names = [d.name for d in cur.description]
        return [(r["_seq"], r["_change_type"], rows_key({f.name: r[f.name] for f in c.fields}))
                for r in (dict(zip(names, row, strict=True)) for row in cur.fetchall())]


@pytest.mark.parametrize("dataset", list(GENERATORS))
def test_a_version_from_the_touched_keys_equals_one_from_every_row(warehouses, dataset):
    urls, folder = warehouses
    every_dir, touched_dir = folder / f"every-{dataset}", folder / f"touched-{dataset}"
    rng, pick = random.Random(61206), random.Random(7)
    initial, mutate = GENERATORS[dataset]
    rows = initial()
    schema = contract(dataset).arrow_schema()
    for url, where in ((urls["every"], every_dir), (urls["touched"], touched_dir)):
        _publish(url, where, dataset, f"{dataset}-1", rows=pa.Table.from_pylist(rows, schema=schema))
    forms = []
    for step in range(1, 10):
        before, rows = rows, mutate(rows, rng, step)
        if step == 4:  # the kept row hashes of the last version are gone: read back from its folders
            shutil.rmtree(touched_dir / dataset / "_rowhash")
        a = _publish(urls["every"], every_dir, dataset, f"{dataset}-{step + 1}",
                     rows=pa.Table.from_pylist(rows, schema=schema))
        b = _publish(urls["touched"], touched_dir, dataset, f"{dataset}-{step + 1}",
                     touched=_touched(dataset, before, rows, pick, step))
        assert b.status == "published" and b.version == a.version == step + 1
        assert (b.content_hash, b.rows, b.changes) == (a.content_hash, a.rows, a.changes)
        assert b.changes and b.changes["insert"] and b.changes["delete"] and b.changes["update_postimage"]
        assert _feed(urls["touched"], dataset, b.version) == _feed(urls["every"], dataset, a.version)
        want = Counter(rows_key(r) for r in rows)
        assert _view(urls["touched"], dataset) == want
        back = snapshots.read_version(touched_dir / dataset, b.version, contract(dataset).primary_key)
        assert Counter(rows_key(r) for r in back.to_pylist()) == want
        checked = verify(Path(b.parquet_path))
        assert checked.ok and checked.rows == len(rows), checked.problems
        forms.append(snapshots.form(snapshots.manifest(touched_dir / dataset, b.version)))
    assert {"delta", "snapshot"} <= set(forms), forms  # both folder forms were written from touched rows
    # the same touched rows again: nothing changed, no version
    again = _publish(urls["touched"], touched_dir, dataset, f"{dataset}-again",
                     touched=_touched(dataset, rows, rows, pick, b.version))
    assert again.status == "unchanged" and again.version == b.version


def test_touched_input_that_cannot_be_trusted_is_refused(warehouses):
    urls, folder = warehouses
    dataset = "citizen_profile"
    where = folder / "refused"
    initial, mutate = GENERATORS[dataset]
    rows = initial()
    c = contract(dataset)
    first = _publish(urls["refused"], where, dataset, "refuse-1", rows=pa.Table.from_pylist(rows, schema=c.arrow_schema()))
    nxt = mutate(rows, random.Random(3), 1)
    good = _touched(dataset, rows, nxt, random.Random(4), first.version)
    stray = good.keys.slice(1)  # a touched row whose key is not among the touched keys
    cases = {
        "is not among the touched keys": Touched(good.rows, stray, first.version),
        "appears twice": Touched(pa.concat_tables([good.rows, good.rows.slice(0, 1)]), good.keys, first.version),
        "relative to version 7": Touched(good.rows, good.keys, 7),
    }
    first_key = good.rows["citizen_id"][0].as_py()
    for message, touched in cases.items():
        with pytest.raises(ValueError, match=message) as raised:
            _publish(urls["refused"], where, dataset, "refuse-2", touched=touched)
        if message != "relative to version 7":
            assert first_key in str(raised.value) or good.keys["citizen_id"][0].as_py() in str(raised.value)
    with pytest.raises(ValueError, match="not both"):
        _publish(urls["refused"], where, dataset, "refuse-2", touched=good, rows=good.rows)
    # nothing was published by the refusals; the good input then is
    assert _view(urls["refused"], dataset) == Counter(rows_key(r) for r in rows)
    done = _publish(urls["refused"], where, dataset, "refuse-2", touched=good)
    assert done.version == first.version + 1 and _view(urls["refused"], dataset) == Counter(rows_key(r) for r in nxt)
