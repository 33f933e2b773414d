"""The change feed of published datasets, on a real warehouse (the session's embedded PostgreSQL), logged in as
each agency: over a seeded random sequence of publishes (people renamed, dying, moving province, gaining and
losing enterprises and parcels, removed, added), applying `agency_<name>.<dataset>_changes(N)` to the agency's
copy at version N gives exactly its view at version M, for every agency granted the dataset (masked and
pseudonymized columns stay as its view shows them, row filters hold in the feed too); a version the feed no
longer keeps, or one not published yet, is refused with an error saying so; the agencies cannot read the
feed's tables themselves; a kill before the publish commits leaves neither a version nor its changes."""

from __future__ import annotations

import functools
import json
import random
import shutil
from collections import Counter
from datetime import UTC
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from agency_fixtures import agency_connect, secrets_in_env
from feed_sequences import GENERATORS, parcel, rows_key
from psycopg2 import errors
from singlewindow_service import service_for

from lienthong import feed, pubtables, snapshots
from lienthong.access import apply_access, load_agencies
from lienthong.contracts import contract
from lienthong.db import ensure_database, warehouse_url
from lienthong.publish import publish
from lienthong.releases import verify

pytestmark = pytest.mark.integration

RETENTION = 4


def _granted(dataset: str) -> list[str]:
    return [name for name, a in load_agencies().items() if dataset in a.grants]


def _delta_rows(path: Path) -> list[tuple]:
    """(version, seq, change type, the row) of every change row of the Delta table."""
    from deltalake import DeltaTable

    rows = pa.table(DeltaTable(str(path)).to_pyarrow_table()).to_pylist()
    return sorted((r.pop("_commit_version"), r.pop("_seq"), r.pop("_change_type"), r.pop("_commit_timestamp"),
                   rows_key(r)) for r in rows)


def _select(conn, query: str, params=()) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _snapshot(conn, agency: str, dataset: str) -> tuple[int, Counter]:
    """The agency's view and the version it shows, read in one transaction."""
    schema = load_agencies()[agency].schema
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        ((current,),) = [tuple(r.values()) for r in _select(conn, f'SELECT current_version FROM {schema}."{feed.window_view(dataset)}"')]
        rows = Counter(rows_key(r) for r in _select(conn, f'SELECT * FROM {schema}."{dataset}"'))
    finally:
        conn.rollback()
        conn.autocommit = True
    return current, rows


def _apply(copy: Counter, changes: list[dict]) -> Counter:
    out = Counter(copy)
    for ch in changes:
        row = {k: v for k, v in ch.items() if k not in feed.META_COLUMNS}
        if ch["_change_type"] in ("delete", "update_preimage"):
            key = rows_key(row)
            assert out[key] > 0, f"the feed deletes a row the copy does not hold: {key[:200]}"
            out[key] -= 1
            if not out[key]:
                del out[key]
        else:
            out[rows_key(row)] += 1
    return out


def _changes(conn, agency: str, since: int, dataset: str) -> list[dict]:
    schema = load_agencies()[agency].schema
    return _select(conn, f'SELECT * FROM {schema}."{feed.agency_function(dataset)}"(%s)', (since,))


def _first_version(conn, agency: str, dataset: str) -> int:
    schema = load_agencies()[agency].schema
    ((first,),) = [tuple(r.values()) for r in _select(
        conn, f'SELECT first_version FROM {schema}."{feed.window_view(dataset)}"')]
    return first


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    url = ensure_database(warehouse_url(), "feed_" + tmp_path_factory.mktemp("feed").name[-12:].lower().replace("-", "_"))
    with secrets_in_env() as env:
        yield url, tmp_path_factory.mktemp("published"), env


def _publish(url: str, folder: Path, dataset: str, rows: list[dict], run_id: str):
    c = contract(dataset)
    table = pa.Table.from_pylist(rows, schema=c.arrow_schema())
    result = publish(c, {}, run_id=run_id, gate_passed=True, published_dir=folder, lineage={}, quality={},
                     retention=RETENTION, url=url, rows=table)
    apply_access(url)  # the publish DAG's next task
    return result


def _own_database(tmp_path: Path, prefix: str) -> str:
    """A database of the test's own (the module's warehouse is shared by the tests above)."""
    return ensure_database(warehouse_url(), prefix + tmp_path.name[-12:].lower().replace("-", "_"))


def _publish_parcels(url: str, folder: Path, rows: list[dict], run_id: str, *, retention: int = RETENTION,
                     compact_share: float = pubtables.COMPACT_SHARE):
    c = contract("parcel_register")
    return publish(c, {}, run_id=run_id, gate_passed=True, published_dir=folder, lineage={}, quality={},
                   retention=retention, url=url, rows=pa.Table.from_pylist(rows, schema=c.arrow_schema()),
                   compact_share=compact_share)


@pytest.mark.parametrize("dataset", list(GENERATORS))
def test_applying_the_feed_gives_each_agency_its_next_view(warehouse, dataset):
    url, folder, _ = warehouse
    rng = random.Random(20261206)
    initial, mutate = GENERATORS[dataset]
    rows = initial()
    agencies = _granted(dataset)
    first = _publish(url, folder, dataset, rows, f"{dataset}-1")
    assert first.version == 1 and first.changes is None  # the feed starts here
    conns = {a: agency_connect(url, a) for a in agencies}
    try:
        copies = {a: _snapshot(conns[a], a, dataset) for a in agencies}
        assert all(v == 1 for v, _ in copies.values())
        kept = {1: Counter(rows_key(r) for r in rows)}
        forms: list[str] = []
        for step in range(1, 7):
            rows = mutate(rows, rng, step)
            if step == 3:  # a version whose row hashes were not kept: compared from its Parquet parts instead
                shutil.rmtree(folder / dataset / "_rowhash")
            result = _publish(url, folder, dataset, rows, f"{dataset}-{step + 1}")
            assert result.status == "published" and result.changes and sum(result.changes.values()) > 0
            assert result.changes["delete"] and result.changes["insert"] and result.changes["update_postimage"]
            assert result.changes["update_preimage"] == result.changes["update_postimage"]
            manifest = json.loads((Path(result.parquet_path) / "_manifest.json").read_text(encoding="utf-8"))
            assert manifest["changes"] == {"from_version": result.version - 1, "rows": result.changes}
            # the version was written from its change: the stable view and every kept version's view still
            # hold exactly the rows published (the Parquet snapshots), not just what the feed says
            kept[result.version] = Counter(rows_key(r) for r in rows)
            # the Parquet side: a delta on the version before while the chain is short, read back whole, signed
            forms.append(manifest["form"])
            back = snapshots.read_version(folder / dataset, result.version, contract(dataset).primary_key)
            assert Counter(rows_key(r) for r in back.to_pylist()) == kept[result.version]
            checked = verify(Path(result.parquet_path))
            assert checked.ok and checked.rows == len(rows), checked.problems
            with psycopg2.connect(url) as platform:
                assert Counter(rows_key(r) for r in _select(platform, f'SELECT * FROM published."{dataset}"')) \
                    == kept[result.version]
                for v in [v for v in kept if v > result.version - RETENTION]:
                    version_rows = _select(platform, f'SELECT * FROM published."{dataset}__v{v:06d}"')
                    assert Counter(rows_key(r) for r in version_rows) == kept[v], f"version {v}"
            for a in agencies:
                version, copy = copies[a]
                changes = _changes(conns[a], a, version, dataset)
                assert {c["_commit_version"] for c in changes} == {result.version}
                assert [c["_seq"] for c in changes] == sorted(c["_seq"] for c in changes)
                now_version, now_rows = _snapshot(conns[a], a, dataset)
                assert now_version == result.version
                assert _apply(copy, changes) == now_rows, f"agency {a}: the feed from v{version} does not give v{now_version}"
                copies[a] = (now_version, now_rows)
        assert {"delta", "snapshot"} <= set(forms), forms
        # every kept version still reads back from its folders: retention kept the chains they need
        oldest = result.version - RETENTION + 1
        for v in range(oldest, result.version + 1):
            back = snapshots.read_version(folder / dataset, v, contract(dataset).primary_key)
            assert Counter(rows_key(r) for r in back.to_pylist()) == kept[v], f"version {v}"
        # the feed is kept from the oldest version still kept to the current one; outside it, a clear refusal
        for a in agencies:
            assert _first_version(conns[a], a, dataset) == oldest
            with pytest.raises(errors.DataException, match=rf"kept from version {oldest} on; version 1 is older"):
                _changes(conns[a], a, 1, dataset)
            with pytest.raises(errors.DataException, match="newer than the current version"):
                _changes(conns[a], a, result.version + 1, dataset)
            assert _changes(conns[a], a, result.version, dataset) == []
    finally:
        for c in conns.values():
            c.close()
    # the same feed as a Delta table in the published zone: the kept versions' change rows, as the warehouse has
    # them; rebuilt by the next publish when it is lost (as after a kill between the commit and its write)
    delta = folder / dataset / "_changes"
    with psycopg2.connect(url) as platform:
        in_pg = sorted((r.pop("_commit_version"), r.pop("_seq"), r.pop("_change_type"), r.pop("_commit_timestamp"),
                        rows_key(r)) for r in _select(platform, f'SELECT * FROM published."{feed.changes_table(dataset)}"'))
    assert in_pg and _delta_rows(delta) == in_pg
    shutil.rmtree(delta)
    again = _publish(url, folder, dataset, rows, f"{dataset}-again")
    assert again.status == "unchanged" and _delta_rows(delta) == in_pg
    if dataset == "parcel_register":  # the land department reads province 31 only, in its feed too
        land = agency_connect(url, "land_department")
        try:
            seen = _changes(land, "land_department", oldest, dataset)
            assert seen and {c["province_code"] for c in seen} == {"31"}
        finally:
            land.close()


def test_masked_columns_stay_masked_and_the_tables_stay_closed(warehouse):
    url, _, _ = warehouse
    dataset = "citizen_profile"
    with psycopg2.connect(url) as conn:
        raw_ids = {r["citizen_id"] for r in _select(conn, f'SELECT citizen_id FROM published."{feed.changes_table(dataset)}"')}
    assert raw_ids, "runs after test_applying_the_feed_gives_each_agency_its_next_view"
    agencies = load_agencies()
    for a in _granted(dataset):
        grant = agencies[a].grants[dataset]
        conn = agency_connect(url, a)
        try:
            changes = _changes(conn, a, _first_version(conn, a, dataset), dataset)
            assert changes
            visible = set(changes[0]) - set(feed.META_COLUMNS)
            assert visible == set(grant.readable)  # hidden columns are absent from the feed as from the view
            if grant.columns["citizen_id"] != "visible":
                assert not {c["citizen_id"] for c in changes} & raw_ids
            for table in (feed.changes_table(dataset), feed.feed_table(dataset)):
                with pytest.raises(errors.InsufficientPrivilege):
                    _select(conn, f'SELECT 1 FROM published."{table}" LIMIT 1')
        finally:
            conn.close()


def _row_id(row: dict) -> tuple:
    """What identifies a change row whatever the transport made of its values (JSON turns times into text)."""
    return (row["_commit_version"], row["_seq"], row["_change_type"], row.get("citizen_id"), row.get("full_name"),
            row.get("status"))


def test_the_feed_over_the_lookup_service_pages_masks_and_records(warehouse, tmp_path):
    url, _, env = warehouse
    dataset = "citizen_profile"
    agencies = _granted(dataset)
    with psycopg2.connect(url) as conn:
        raw_ids = {r["citizen_id"] for r in _select(conn, f'SELECT citizen_id FROM published."{feed.changes_table(dataset)}"')}
    with service_for(url, env, agencies, tmp_path) as server:
        with psycopg2.connect(url) as conn:  # the service made the access log at its start
            log_start = _select(conn, "SELECT coalesce(max(id), 0) AS m FROM lienthong_ops.access_log")[0]["m"]
        for a in agencies:
            conn = agency_connect(url, a)
            try:
                first = _first_version(conn, a, dataset)
                expected = _changes(conn, a, first, dataset)
            finally:
                conn.close()
            got, after, pages = [], None, 0
            while True:
                r = server.get(f"/v1/datasets/{dataset}/changes?since={first}&limit=37"
                               + (f"&after={after}" if after else ""), a)
                assert r.status_code == 200, r.text
                body = r.json()
                assert (body["first_version"], body["since"]) == (first, first) and body["count"] == len(body["items"])
                got += body["items"]
                pages += 1
                after = body["next"]
                if after is None:
                    break
            assert pages == -(-len(expected) // 37) and [_row_id(x) for x in got] == [_row_id(x) for x in expected]
            assert set(got[0]) == set(expected[0])  # the same columns: hidden ones absent over HTTP too
            current = body["current_version"]
            gone = server.get(f"/v1/datasets/{dataset}/changes?since=1", a)
            assert gone.status_code == 410 and f"kept from version {first} on" in gone.json()["detail"]
            ahead = server.get(f"/v1/datasets/{dataset}/changes?since={current + 1}", a)
            assert ahead.status_code == 400 and "newer than the current version" in ahead.json()["detail"]
            assert server.get(f"/v1/datasets/{dataset}/changes?since={first}&after=x.1", a).status_code == 400
            assert server.get(f"/v1/datasets/{dataset}/changes?since={first}", a, purpose=None).status_code == 400
        not_granted = next(a for a in agencies if "parcel_register" not in load_agencies()[a].grants)
        assert server.get("/v1/datasets/parcel_register/changes?since=1", not_granted).status_code == 403
    with psycopg2.connect(url) as conn:
        logged = _select(conn, """SELECT agency, lookup_key, rows_returned, status_code, subjects
                                  FROM lienthong_ops.access_log WHERE id > %s AND dataset = %s""", (log_start, dataset))
    answered = [r for r in logged if r["status_code"] == 200]
    assert {r["agency"] for r in answered} == set(agencies)
    assert all(r["lookup_key"].startswith("changes since ") for r in logged)
    # every page names the persons it held, by their real ID (pseudonymized or not in the answer)
    assert all(r["subjects"] and set(r["subjects"]) <= raw_ids for r in answered if r["rows_returned"])
    assert {r["status_code"] for r in logged} >= {200, 400, 410}


def _copy_rows(store: Path, dataset: str) -> Counter:
    import duckdb

    db = duckdb.connect(str(store), read_only=True)
    try:
        cur = db.execute(f'SELECT * FROM "{dataset}"')
        names = [d[0] for d in cur.description]
        return Counter(_plain_key(dict(zip(names, r, strict=True))) for r in cur.fetchall())
    finally:
        db.close()


def _plain_key(row: dict) -> str:
    """A row as text whatever its transport: nested lists as JSON text, times in UTC ISO form."""
    out = {}
    for k, v in row.items():
        if isinstance(v, list | dict):
            v = json.dumps(v, ensure_ascii=False, sort_keys=True)
        elif hasattr(v, "astimezone") and getattr(v, "tzinfo", None) is not None:
            v = v.astimezone(UTC).isoformat()
        out[k] = v
    return json.dumps(out, sort_keys=True, default=str, ensure_ascii=False)


@pytest.mark.parametrize(("dataset", "agency", "key"), [
    ("citizen_profile", "tax_department", ["citizen_id"]),
    ("parcel_register", "land_department", ["province_code", "commune_code_original", "map_sheet", "parcel_number",
                                            "parcel_id"]),
])
def test_an_agency_copy_kept_from_the_feed_equals_its_view(warehouse, tmp_path, dataset, agency, key):
    """`lienthong.feedcopy.follow`, what the example consumer DAG runs: after every publish (changes, removals,
    additions, rows leaving the agency's row filter) the copy equals the agency's view of the new version; a
    copy older than the feed keeps is read again from the view."""
    from lienthong.feedcopy import follow

    url, folder, _ = warehouse
    store = tmp_path / f"{agency}.duckdb"
    rng = random.Random(7)
    initial, mutate = GENERATORS[dataset]
    c = contract(dataset)
    rows = [r for r in (pa.Table.from_pylist(initial(), schema=c.arrow_schema())).to_pylist()]
    _publish(url, folder, dataset, rows, f"copy-{dataset}-0")  # and the agencies' roles and views
    conn = agency_connect(url, agency)
    schema = load_agencies()[agency].schema
    try:
        first = follow(conn, schema, dataset, store, key)
        assert first.restarted == "first pull"
        for step in range(1, 5):
            rows = mutate(rows, rng, 10 + step)
            result = _publish(url, folder, dataset, rows, f"copy-{dataset}-{step}")
            pulled = follow(conn, schema, dataset, store, key)
            assert (pulled.version_before, pulled.version, pulled.versions_applied, pulled.restarted) == (
                result.version - 1, result.version, 1, None)
            assert pulled.rows_added and pulled.rows_removed
            view = Counter(_plain_key(r) for r in _select(conn, f'SELECT * FROM {schema}."{dataset}"'))
            assert _copy_rows(store, dataset) == view, f"step {step}: the copy is not the agency's view"
        # several versions behind the feed's retention: read again from the view, and equal to it
        for step in range(5, 5 + RETENTION + 1):
            rows = mutate(rows, rng, 10 + step)
            _publish(url, folder, dataset, rows, f"copy-{dataset}-{step}")
        again = follow(conn, schema, dataset, store, key)
        assert again.restarted and "kept from version" in again.restarted
        view = Counter(_plain_key(r) for r in _select(conn, f'SELECT * FROM {schema}."{dataset}"'))
        assert _copy_rows(store, dataset) == view
        assert follow(conn, schema, dataset, store, key).versions_applied == 0  # nothing new: nothing applied
    finally:
        conn.close()


def test_current_rows_that_are_not_the_previous_version_fail_the_publish(warehouse, tmp_path):
    """The change is applied to the rows the warehouse holds as current; when they are not the previous
    version (here a row of a key put in by hand, which the next version inserts), the publish fails, names
    why, and the previous version stays the one recorded and served."""
    url, _, _ = warehouse
    folder = tmp_path / "published"
    dataset = "parcel_register"
    rows = [parcel(i, "31") for i in range(1, 41)]
    first = _publish(url, folder, dataset, rows, "guard-1")
    extra = parcel(99, "31")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s ORDER BY relname DESC LIMIT 1",
                    (f"^{dataset}__r[0-9]{{6}}$",))
        (generation,) = cur.fetchone()
        cols = [f.name for f in contract(dataset).fields]
        cur.execute(f'INSERT INTO published."{generation}" ({", ".join(cols)}, _from_version) '
                    f'VALUES ({", ".join(["%s"] * len(cols))}, 0)',
                    [json.dumps(extra[c]) if c == "holders" else extra[c] for c in cols])
    with pytest.raises(RuntimeError, match="not the previous version"):
        _publish(url, folder, dataset, [*rows, extra], "guard-2")
    with psycopg2.connect(url) as conn:
        recorded = _select(conn, "SELECT max(version) AS v FROM lienthong_ops.publication WHERE dataset = %s",
                           (dataset,))[0]["v"]
    assert recorded == first.version
    assert not (folder / dataset / f"v{first.version + 1:06d}").exists()


def test_a_pull_that_fails_half_way_leaves_the_copy_at_its_version(warehouse, tmp_path, monkeypatch):
    """One DuckDB transaction per pull: a pull stopped after applying one of two versions keeps neither, and
    the next pull applies both."""
    from lienthong import feedcopy

    url, folder, _ = warehouse
    dataset, agency, key = "citizen_profile", "tax_department", ["citizen_id"]
    store = tmp_path / "copy.duckdb"
    rng = random.Random(11)
    initial, mutate = GENERATORS[dataset]
    rows = initial()
    _publish(url, folder, dataset, rows, "halfway-0")  # and the agencies' roles and views
    conn = agency_connect(url, agency)
    schema = load_agencies()[agency].schema
    try:
        start = feedcopy.follow(conn, schema, dataset, store, key)
        for step in (1, 2):
            rows = mutate(rows, rng, 20 + step)
            _publish(url, folder, dataset, rows, f"halfway-{step}")
        applied: list[int] = []
        real_apply = feedcopy._apply

        def apply_then_fail(db, ds, k, names, pending):
            if applied:
                raise OSError("disk full")
            applied.append(1)
            return real_apply(db, ds, k, names, pending)

        monkeypatch.setattr(feedcopy, "_apply", apply_then_fail)
        with pytest.raises(OSError, match="disk full"):
            feedcopy.follow(conn, schema, dataset, store, key)
        assert applied == [1]  # one version was applied before the failure
        monkeypatch.setattr(feedcopy, "_apply", real_apply)
        import duckdb

        db = duckdb.connect(str(store), read_only=True)
        try:
            assert db.execute("SELECT version FROM _feed_state").fetchone()[0] == start.version
        finally:
            db.close()
        pulled = feedcopy.follow(conn, schema, dataset, store, key)
        assert (pulled.version_before, pulled.version, pulled.versions_applied) == (
            start.version, start.version + 2, 2)
        view = Counter(_plain_key(r) for r in _select(conn, f'SELECT * FROM {schema}."{dataset}"'))
        assert _copy_rows(store, dataset) == view
    finally:
        conn.close()


def test_a_feed_read_in_a_database_session_is_in_the_persons_usage_history(warehouse):
    """An agency session that reads `<dataset>_changes(N)` records versions N.. as read (`how = 'feed'`), so a
    person removed after N, whose row only the feed's delete carried to the agency, finds that session in
    their usage history."""
    import psycopg2

    from lienthong.contracts import load_contracts
    from lienthong.sessions import bulk_reads_of

    url, folder, env = warehouse
    dataset, agency = "citizen_profile", "tax_department"
    rows = GENERATORS[dataset][0]()
    base = _publish(url, folder, dataset, rows, "usage-0")
    gone = rows[5]
    _publish(url, folder, dataset, [r for r in rows if r is not gone], "usage-1")
    role = load_agencies()[agency].role
    session = psycopg2.connect(url, user=role, password=env["LIENTHONG_AGENCY_PASSWORD_" + agency.upper()],
                               options="-c lienthong.purpose=tax_registration -c lienthong.case_id=FEED-01")
    session.autocommit = True
    try:
        changes = _changes(session, agency, base.version, dataset)
        assert [c["_change_type"] for c in changes if c["citizen_id"] == gone["citizen_id"]] == ["delete"]
    finally:
        session.close()
    with psycopg2.connect(url) as conn:
        recorded = _select(conn, """SELECT v.version, v.how FROM lienthong_ops.session_version v
                                    JOIN lienthong_ops.agency_session s ON s.id = v.session_id
                                    WHERE s.case_id = 'FEED-01' AND v.dataset = %s
                                    ORDER BY v.version""", (dataset,))
        # the current version at login, the one the feed started from when it was read
        assert [(r["version"], r["how"]) for r in recorded] == [(base.version, "feed"), (base.version + 1, "login")]
        reads = bulk_reads_of(conn, gone["citizen_id"], load_agencies(), load_contracts())
    mine = [(r.agency, r.dataset, r.version, r.purpose, r.case_id) for r in reads if r.case_id == "FEED-01"]
    assert (agency, dataset, base.version, "tax_registration", "FEED-01") in mine
    assert all(v == base.version for _, _, v, _, _ in mine)  # the version after has no row of the person


@pytest.mark.usefixtures("warehouse")  # the agencies' secrets in the environment
def test_versions_from_the_change_leave_the_base_alone_until_a_compaction(tmp_path):
    """A version from the change writes no row of its generation's base table: every base row still carries
    the transaction that loaded it and was never updated or deleted; the closings and the new row versions go
    to the generation's change tables. Once these outgrow the compaction share, the row versions still read
    move into a new generation after the version is served: the stable view, every kept version's view and an
    agency's feed give the same rows across it, the rows no kept version shows are left behind, and the old
    generation is gone."""
    url = _own_database(tmp_path, "rowversions_")
    folder, dataset, retention = tmp_path / "published", "parcel_register", 3
    rng = random.Random(17)
    initial, mutate = GENERATORS[dataset]
    kept: dict[int, Counter] = {}

    def publish_next(rows: list[dict], share: float):
        result = _publish_parcels(url, folder, rows, f"rowversions-{len(kept) + 1}", retention=retention,
                                  compact_share=share)
        apply_access(url)
        assert result.status == "published"
        kept[result.version] = Counter(rows_key(r) for r in rows)
        return result

    def base_written(conn, generation: str) -> tuple[int, int]:
        """(base rows updated or deleted since loaded, transactions that wrote base rows)."""
        ((touched, writers),) = [tuple(r.values()) for r in _select(
            conn, f"""SELECT count(*) FILTER (WHERE xmax::text <> '0') AS touched, count(DISTINCT xmin::text) AS writers
                      FROM published."{generation}" """)]
        return touched, writers

    def views_hold_their_versions(conn, current: int) -> None:
        assert Counter(rows_key(r) for r in _select(conn, f'SELECT * FROM published."{dataset}"')) == kept[current]
        for v in range(current - retention + 1, current + 1):
            shown = _select(conn, f'SELECT * FROM published."{dataset}__v{v:06d}"')
            assert Counter(rows_key(r) for r in shown) == kept[v], f"version {v}"

    rows = initial()
    first = publish_next(rows, share=100.0)
    generation = f"{dataset}__r{first.version:06d}"
    agency = "land_department"  # a row filter (province 31) and masked columns
    conn = agency_connect(url, agency)
    platform = psycopg2.connect(url)
    platform.autocommit = True
    try:
        for _ in range(2):
            rows = mutate(rows, rng, len(kept))
            result = publish_next(rows, share=100.0)
            assert result.changes and result.compacted is None
        assert base_written(platform, generation) == (0, 1)
        changed = {t: _select(platform, f'SELECT count(*) AS n FROM published."{generation}{t}"')[0]["n"]
                   for t in ("_d", "_x")}
        assert changed["_d"] > 0 and changed["_x"] > 0, changed
        views_hold_their_versions(platform, result.version)
        copy_version, copy = _snapshot(conn, agency, dataset)
        assert copy_version == result.version

        rows = mutate(rows, rng, len(kept))
        compacting = publish_next(rows, share=0.0)  # due at any size of the change tables
        assert compacting.compacted == f"{dataset}__r{compacting.version:06d}"
        for gone in (generation, f"{generation}_d", f"{generation}_x", f"{generation}_rows"):
            assert _select(platform, "SELECT to_regclass(%s) AS r", (f'published."{gone}"',))[0]["r"] is None, gone
        new = compacting.compacted
        oldest = compacting.version - retention + 1
        assert _select(platform, f'SELECT count(*) AS n FROM published."{new}" WHERE _to_version <= %s',
                       (oldest,))[0]["n"] == 0  # closed before the oldest kept version: left behind
        assert base_written(platform, new) == (0, 1)
        views_hold_their_versions(platform, compacting.version)

        rows = mutate(rows, rng, len(kept))
        after = publish_next(rows, share=100.0)  # the next change goes to the new generation's change tables
        assert after.changes and after.compacted is None and base_written(platform, new) == (0, 1)
        views_hold_their_versions(platform, after.version)
        # the agency's copy follows the feed across the compaction to its view of the newest version
        changes = _changes(conn, agency, copy_version, dataset)
        assert {ch["_commit_version"] for ch in changes} == {compacting.version, after.version}
        now_version, now_rows = _snapshot(conn, agency, dataset)
        assert now_version == after.version and _apply(copy, changes) == now_rows
    finally:
        conn.close()
        platform.close()


@pytest.mark.usefixtures("warehouse")  # the agencies' secrets in the environment
def test_a_generation_of_the_one_table_layout_is_followed_by_a_new_one(tmp_path):
    """A warehouse published before the base and change tables (one generation table updated in place, every
    view over it) gets a new generation at its next version; the older version stays readable until
    retention, and the version after is written from its change again."""
    url = _own_database(tmp_path, "onetable_")
    folder, dataset = tmp_path / "published", "parcel_register"
    c = contract(dataset)
    rng = random.Random(5)
    initial, mutate = GENERATORS[dataset]
    publish_rows = functools.partial(_publish_parcels, url, folder)

    first_rows = initial()
    first = publish_rows(first_rows, "onetable-1")
    old = f"{dataset}__r{first.version:06d}"
    cols = ", ".join(f'"{f.name}"' for f in c.fields)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # the earlier layout: every view over the one table
        cur.execute(f'CREATE OR REPLACE VIEW published."{dataset}__v{first.version:06d}" AS SELECT {cols} '
                    f'FROM published."{old}" WHERE _from_version <= {first.version} AND '
                    f'(_to_version IS NULL OR _to_version > {first.version})')
        cur.execute(f'CREATE OR REPLACE VIEW published."{dataset}" AS SELECT {cols} FROM published."{old}" '
                    "WHERE _to_version IS NULL")
        feed.create_changes_view(cur, c, "published", old)
        cur.execute(f'DROP VIEW published."{old}_rows"')
        cur.execute(f'DROP TABLE published."{old}_d", published."{old}_x"')
    rows = mutate(first_rows, rng, 1)
    second = publish_rows(rows, "onetable-2")
    assert second.changes is None  # a new generation, and the feed starts again there
    third_rows = mutate(rows, rng, 2)
    third = publish_rows(third_rows, "onetable-3")
    assert third.changes and sum(third.changes.values()) > 0
    with psycopg2.connect(url) as conn:
        for version, expected in ((first.version, first_rows), (second.version, rows), (third.version, third_rows)):
            shown = _select(conn, f'SELECT * FROM published."{dataset}__v{version:06d}"')
            assert Counter(rows_key(r) for r in shown) == Counter(rows_key(r) for r in expected), f"v{version}"
        assert _select(conn, "SELECT to_regclass(%s) AS r", (f'published."{dataset}__r{second.version:06d}_d"',))[0]["r"]


@pytest.mark.usefixtures("warehouse")  # the agencies' secrets in the environment
def test_a_compaction_that_fails_leaves_the_version_served_and_is_tried_again(tmp_path, monkeypatch):
    """A compaction runs after its version is served, in a transaction of its own: when it fails (here the old
    generation cannot be dropped) the version stays published and read from the old generation, nothing of
    the new one is left, and the next publish compacts."""
    url = _own_database(tmp_path, "compactfail_")
    folder, dataset = tmp_path / "published", "parcel_register"
    rng = random.Random(9)
    initial, mutate = GENERATORS[dataset]
    publish_rows = functools.partial(_publish_parcels, url, folder, compact_share=0.0)

    rows = initial()
    first = publish_rows(rows, "compactfail-1")
    real_drop = pubtables._drop_generation

    def drop_fails(cur, schema, name, cascade):
        if name == f"{dataset}__r{first.version:06d}":
            raise RuntimeError("disk full")
        return real_drop(cur, schema, name, cascade)

    monkeypatch.setattr(pubtables, "_drop_generation", drop_fails)
    rows = mutate(rows, rng, 1)
    second = publish_rows(rows, "compactfail-2")
    assert second.status == "published" and second.changes and second.compacted is None
    with psycopg2.connect(url) as conn:
        assert Counter(rows_key(r) for r in _select(conn, f'SELECT * FROM published."{dataset}"')) == \
            Counter(rows_key(r) for r in rows)
        assert _select(conn, "SELECT to_regclass(%s) AS r", (f'published."{dataset}__r{second.version:06d}"',))[0]["r"] is None
    monkeypatch.setattr(pubtables, "_drop_generation", real_drop)
    second_rows, rows = rows, mutate(rows, rng, 2)
    third = publish_rows(rows, "compactfail-3")
    assert third.compacted == f"{dataset}__r{third.version:06d}"
    with psycopg2.connect(url) as conn:  # the versions kept read from the compacted generation
        for version, expected in ((second.version, second_rows), (third.version, rows)):
            shown = _select(conn, f'SELECT * FROM published."{dataset}__v{version:06d}"')
            assert Counter(rows_key(r) for r in shown) == Counter(rows_key(r) for r in expected)
        assert _select(conn, "SELECT to_regclass(%s) AS r", (f'published."{dataset}__r{first.version:06d}"',))[0]["r"] is None


@pytest.mark.usefixtures("warehouse")  # the agencies' secrets in the environment
def test_a_compaction_gives_way_to_a_reader_holding_the_dataset(tmp_path, monkeypatch, caplog):
    """A reader in a long transaction on a kept version's view holds a lock the compaction needs (it repoints
    that view): the compaction gives up after its lock timeout instead of queueing every later reader behind
    it, the version it followed is served, the reader still reads its rows, and the next publish compacts."""
    monkeypatch.setattr(pubtables, "MAINTENANCE_LOCK_TIMEOUT", "300ms")
    url = _own_database(tmp_path, "compactlock_")
    folder, dataset = tmp_path / "published", "parcel_register"
    rng = random.Random(13)
    initial, mutate = GENERATORS[dataset]
    publish_rows = functools.partial(_publish_parcels, url, folder, compact_share=0.0)

    first_rows = initial()
    first = publish_rows(first_rows, "compactlock-1")
    old_view = f'published."{dataset}__v{first.version:06d}"'
    reader = psycopg2.connect(url)
    try:
        with reader.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        held = Counter(rows_key(r) for r in _select(reader, f"SELECT * FROM {old_view}"))
        assert held == Counter(rows_key(r) for r in first_rows)
        rows = mutate(first_rows, rng, 1)
        with caplog.at_level("ERROR", logger="lienthong.publish"):
            second = publish_rows(rows, "compactlock-2")  # the version itself takes no lock the reader holds
        assert second.status == "published" and second.changes and second.compacted is None
        assert any("compacting" in r.getMessage() and r.exc_info and "lock timeout" in str(r.exc_info[1])
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert Counter(rows_key(r) for r in _select(reader, f"SELECT * FROM {old_view}")) == held
    finally:
        reader.rollback()
        reader.close()
    with psycopg2.connect(url) as conn:
        assert Counter(rows_key(r) for r in _select(conn, f'SELECT * FROM published."{dataset}"')) == \
            Counter(rows_key(r) for r in rows)
    rows = mutate(rows, rng, 2)
    third = publish_rows(rows, "compactlock-3")
    assert third.compacted == f"{dataset}__r{third.version:06d}"


@pytest.mark.usefixtures("warehouse")  # the agencies' secrets in the environment
def test_a_version_from_the_change_is_published_while_a_reader_holds_the_stable_view(tmp_path):
    """A version written from its change takes no lock that conflicts with reading the stable view (the view
    already reads its generation and is not replaced): it commits while an agency-style reader keeps a
    transaction open on the view, which still sees its snapshot; the next statement after sees the new rows."""
    import threading

    url = _own_database(tmp_path, "openreader_")
    folder, dataset = tmp_path / "published", "parcel_register"
    rng = random.Random(21)
    initial, mutate = GENERATORS[dataset]
    publish_rows = functools.partial(_publish_parcels, url, folder, compact_share=100.0)

    first_rows = initial()
    publish_rows(first_rows, "openreader-1")
    rows = mutate(first_rows, rng, 1)
    reader = psycopg2.connect(url)
    done: list = []
    try:
        with reader.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        held = Counter(rows_key(r) for r in _select(reader, f'SELECT * FROM published."{dataset}"'))
        worker = threading.Thread(target=lambda: done.append(publish_rows(rows, "openreader-2")), daemon=True)
        worker.start()
        worker.join(timeout=60)
        finished = not worker.is_alive()
        assert Counter(rows_key(r) for r in _select(reader, f'SELECT * FROM published."{dataset}"')) == held
    finally:
        reader.rollback()  # lets a publish stuck behind the reader end, whatever the outcome
        reader.close()
    assert finished, "the publish waited for the reader of the stable view"
    assert done and done[0].status == "published" and done[0].changes
    with psycopg2.connect(url) as conn:
        assert Counter(rows_key(r) for r in _select(conn, f'SELECT * FROM published."{dataset}"')) == \
            Counter(rows_key(r) for r in rows)
