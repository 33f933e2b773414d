"""Publication: versioned Parquet with a signed manifest, and PostgreSQL row versions behind a stable view.

A dataset is published only when its quality gate passed and its content changed (same content hash ->
no new version). Steps, each leaving the previous version served if it fails:

1. the rows: given, or projected from the staged rows (`derivedFrom: <dataset>.<column>`), or only those of
   the keys that may have changed since the last version (`Touched`: the cost then follows the change);
2. the row hashes (the content hash) and the change from the previous version's kept hashes
   (`lienthong.feed.change`: the new images, and the keys of the rows replaced or removed);
3. write an immutable folder `published/<dataset>/v<NNNNNN>/` (parts + `_manifest.json`, signed:
   `lienthong.releases`) via a temporary folder and a rename, on a thread while step 4 loads the database
   (in place before step 4 records the version);
4. in ONE transaction: append the changed keys to the feed (`lienthong.feed`), apply the change to the
   dataset's row versions (`lienthong.pubtables`: cost follows the change; a first version, or new columns,
   loads a new generation with COPY from Arrow, batch by batch, no Python loop per row), create the version's
   view `published.<dataset>__v<NNNNNN>`, point the stable view `published.<dataset>` at the current rows,
   record the publication — readers see the old version or the new one, never a partial load;
5. move the `CURRENT` pointer (atomic rename), write the version's change rows to the Delta feed table
   (`lienthong.feeddelta`) and apply the retention setting (versions, their rows, the feed).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2.errors
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lienthong import feed, feeddelta, pubtables, releases, runs, sessions, snapshots
from lienthong.contracts import Contract
from lienthong.db import connect
from lienthong.duck import session

log = logging.getLogger(__name__)

PUBLISHED_SCHEMA = "published"
HASHES_DIR = "_rowhash"  # beside a dataset's version folders: the row hashes of each version
COPY_BATCH_ROWS = 25_000  # rows rendered per chunk: small enough that rendering and loading overlap from the start


class QualityGateFailed(RuntimeError):
    """Publication refused: a critical quality rule failed beyond its tolerance."""


@dataclass(frozen=True)
class Touched:
    """What a caller that knows its change gives instead of every row, so that publishing costs the change:
    `keys`, the keys (the contract's primary key columns) whose rows may differ from version `since`, a
    superset of the change (a key whose row is the same is found unchanged); `rows`, the rows now of those of
    them that exist (contract shape; a key in `keys` without a row is removed). Every other row is version
    `since`'s row, unchanged."""

    rows: pa.Table
    keys: pa.Table
    since: int


@dataclass
class _Next:
    """The version to publish as publish() works on it: the row hashes of every row, the change from the
    last version (None: the feed starts again), and every row, produced only when needed (a snapshot folder,
    a new generation): from the rows given, or from the last version and the touched rows."""

    hashes: pa.Table
    row_count: int
    schema: pa.Schema
    produce: Callable[[], pa.Table]
    changes: feed.Change | None = None
    changes_found: bool = False  # `changes` is already the change from the last version (a Touched input)
    _rows: pa.Table | None = None

    def all_rows(self) -> pa.Table:
        if self._rows is None:
            self._rows = self.produce()
        return self._rows


@dataclass
class PublishResult:
    dataset: str
    run_id: str
    status: str  # published | unchanged
    version: int
    rows: int
    content_hash: str
    table: str
    parquet_path: str
    seconds: float
    changes: dict[str, int] | None = None  # change rows by type in the feed; None: the feed starts here
    compacted: str | None = None  # the generation the row versions were compacted into after this version

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_name(version: int) -> str:
    return f"v{version:06d}"


def table_name(dataset: str, version: int) -> str:
    return f"{dataset}__{version_name(version)}"


def project(published: Contract, staged_paths: dict[str, str]) -> pa.Table:
    """Rows of the published dataset from the staged ones, by each field's `derivedFrom`."""
    # `<dataset>.<column>` fields of a staged dataset given are projected; fields built elsewhere (from the
    # integrated zone, `derivedFrom: reconcile`) are null here.
    projected = [f for f in published.fields if "." in str(f.custom.get("derivedFrom", ""))
                 and str(f.custom["derivedFrom"]).split(".", 1)[0] in staged_paths]
    sources = {f.custom["derivedFrom"].split(".", 1)[0] for f in projected}
    if len(sources) != 1:
        raise ValueError(f"{published.name}: projection from several datasets is not supported yet: {sorted(sources)}")
    (source,) = sources
    select = ", ".join(f'"{f.custom["derivedFrom"].split(".", 1)[1]}" AS "{f.name}"' for f in projected)
    order = ", ".join(f'"{k}"' for k in published.primary_key)
    from lienthong import zones

    with session(purpose="publish-project") as con:
        zones.register(con, "staged", staged_paths[source])
        table = con.execute(f"SELECT {select} FROM staged ORDER BY {order}").fetch_arrow_table()
    schema = published.arrow_schema()
    columns = [table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def content_hash(table: pa.Table, contract: Contract) -> str:
    """A fingerprint of the rows (order-independent) and the contract version, to detect unchanged content
    (`lienthong.feed.digest` of the rows' hashes; ~8x faster than an md5 per row sorted and concatenated)."""
    return feed.digest(feed.row_hashes(table, []), contract)


def last_publication(dataset: str, url: str | None = None) -> dict[str, Any] | None:
    with connect(url) as conn:
        last = runs.last_publication(conn, dataset)
    if last is None:
        return None
    return {"version": last.version, "content_hash": last.content_hash, "row_count": last.row_count,
            "table_name": last.table_name, "parquet_path": last.parquet_path, "run_id": last.run_id,
            "published_at": last.published_at}


def _write_parquet_version(parts: dict[str, tuple[pa.Table, str]], folder: Path, manifest: dict[str, Any],
                           key: releases.SigningKey) -> Path:
    """The version folder: its Parquet files ({file name: (rows, role)}, `lienthong.snapshots`) and the
    manifest naming them, signed with `key`."""
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest["files"] = []
    for file_name, (rows, role) in parts.items():
        part = tmp / file_name
        pq.write_table(rows, part, compression="zstd")
        manifest["files"].append({"path": part.name, "role": role, "rows": rows.num_rows,
                                  "sha256": releases.sha256_file(part), "bytes": part.stat().st_size})
    signed = releases.sign(manifest, key)
    (tmp / releases.MANIFEST).write_text(json.dumps(signed, indent=2, ensure_ascii=False), encoding="utf-8")
    if folder.exists():  # an unreferenced leftover of a failed attempt at this version
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _set_current(dataset_dir: Path, version: int) -> None:
    tmp = dataset_dir / f"CURRENT.tmp-{os.getpid()}"
    tmp.write_text(version_name(version) + "\n")
    os.replace(tmp, dataset_dir / "CURRENT")


def current_version(published_dir: Path, dataset: str) -> str | None:
    p = Path(published_dir) / dataset / "CURRENT"
    return p.read_text().strip() if p.exists() else None


def _nested_as_json(batch: pa.RecordBatch, con: Any = None) -> pa.Table:
    """Nested columns (list / struct) as JSON text for a jsonb column; the rest unchanged. Vectorised in
    DuckDB (`to_json`), since Arrow's CSV writer cannot write nested types. `con`: a DuckDB session to reuse
    for every batch of a stream (a session's first query costs more than the conversion of a 25,000-row
    batch: 0.062 s a batch in a session of its own, 0.022 s in one kept open, measured)."""
    table = pa.Table.from_batches([batch])
    nested = [f.name for f in batch.schema if pa.types.is_nested(f.type)]
    if not nested:
        return table
    if con is None:
        with session(purpose="publish-json") as own:
            return _nested_as_json(batch, own)
    con.register("_batch", table)
    try:
        replace = ", ".join(f'CAST(to_json("{n}") AS VARCHAR) AS "{n}"' for n in nested)
        return con.execute(f"SELECT * REPLACE ({replace}) FROM _batch").fetch_arrow_table()
    finally:
        con.unregister("_batch")


class _CsvStream(io.RawIOBase):
    """A file-like CSV source for one COPY: a background thread renders the Arrow batches to CSV (Arrow's
    writer and DuckDB's `to_json` release the GIL) while psycopg2 sends the previous chunk (libpq calls
    release it too), so preparing and loading overlap. At most `depth` rendered batches wait in memory.
    Hand-written: psycopg2's copy_expert takes a file object, and no library offers this bridge."""

    def __init__(self, table: pa.Table, depth: int = 2) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self._chunk = b""
        self._offset = 0
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(table,), daemon=True)
        self._thread.start()

    def _produce(self, table: pa.Table) -> None:
        try:
            opts = pacsv.WriteOptions(include_header=False)
            with session(purpose="publish-json") as con:
                for batch in table.to_batches(max_chunksize=COPY_BATCH_ROWS):
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(_nested_as_json(batch, con), sink, opts)
                    self._queue.put(sink.getvalue().to_pybytes())
            self._queue.put(None)
        except BaseException as exc:  # handed to the reading side, which raises it inside the COPY
            self._queue.put(exc)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._chunk):
            if self._done:
                return b""
            item = self._queue.get()
            if item is None:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                raise item
            self._chunk, self._offset = item, 0
        end = len(self._chunk) if size is None or size < 0 else min(len(self._chunk), self._offset + size)
        out = self._chunk[self._offset:end]
        self._offset = end
        return out


def _copy_arrow(cur, table: pa.Table, full_table: str) -> None:
    """COPY an Arrow table into PostgreSQL as CSV in ONE COPY statement, batches rendered on a background
    thread while the previous one is sent (bounded memory, no per-row loop)."""
    cols = ", ".join(f'"{n}"' for n in table.column_names)
    cur.copy_expert(f"COPY {full_table} ({cols}) FROM STDIN WITH (FORMAT csv)", _CsvStream(table), size=1 << 20)


def cleanup_orphans(dataset: str, published_dir: Path, url: str | None = None) -> list[str]:
    """Remove what a killed publish left behind: temporary folders and unrecorded version tables."""
    removed: list[str] = []
    ds_dir = Path(published_dir) / dataset
    for tmp in ds_dir.glob("*.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        removed.append(str(tmp))
    with connect(url) as conn:
        recorded = runs.publications(conn, dataset)
        with conn.cursor() as cur:
            cur.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind IN ('r', 'v') AND c.relname LIKE %s""",
                (PUBLISHED_SCHEMA, dataset + "\\_\\_v%"),
            )
            tables = [r[0] for r in cur.fetchall()]
            known = {p.table_name for p in recorded}
            for t in tables:
                if t not in known:
                    _drop_relation(cur, t)
                    removed.append(f"{PUBLISHED_SCHEMA}.{t}")
    # A version folder is renamed into place before its transaction commits: a publish killed after that
    # leaves a complete folder no publication record names. Anything above the newest recorded version goes.
    newest = max((p.version for p in recorded), default=0)
    for folder in ds_dir.glob("v[0-9]*"):
        if folder.is_dir() and folder.name[1:].isdigit() and int(folder.name[1:]) > newest:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    for kept in [*(ds_dir / HASHES_DIR).glob("v[0-9]*.*"), *(ds_dir / HASHES_DIR).glob("*.tmp-*")]:
        number = kept.name.split(".", 1)[0][1:]
        if not number.isdigit() or int(number) > newest or ".tmp-" in kept.name:
            kept.unlink(missing_ok=True)
            removed.append(str(kept))
    if removed:
        log.info("cleaned up after an interrupted publish of %s: %s", dataset, removed)
    return removed


def publish(
    published: Contract,
    staged_paths: dict[str, str],
    *,
    run_id: str,
    gate_passed: bool,
    published_dir: Path,
    lineage: dict[str, Any],
    quality: dict[str, Any],
    retention: int = 5,
    url: str | None = None,
    rows: pa.Table | None = None,
    touched: Touched | None = None,
    provenance: dict[str, Any] | None = None,
    compact_share: float = pubtables.COMPACT_SHARE,
) -> PublishResult:
    """Publish `rows` (already in the contract's shape), or only what `touched` says may have changed since
    the last version (`Touched`: the cost follows the change), or else the projection of `staged_paths`.
    `provenance` (the link model versions, the masking policy) goes into the manifest as given. The manifest
    is signed with the configured release key (`lienthong.releases`): without one nothing is published.
    Once the version is served, its row versions are compacted when their change tables outgrow
    `compact_share` of the base (`lienthong.pubtables.compact`)."""
    t0 = time.monotonic()
    name = published.name
    if not gate_passed:
        raise QualityGateFailed(
            f"{name}: quality gate failed for run {run_id} ({', '.join(quality.get('failed_critical', [])) or 'critical rule'}); "
            "the previously published version stays in place"
        )
    if touched is not None and rows is not None:
        raise ValueError(f"{name}: give every row or the touched ones, not both")
    key = releases.signing_key()
    cleanup_orphans(name, published_dir, url)
    _sync_delta_feed(published, Path(published_dir) / name, run_id, url)  # what an interrupted publish left
    ds_dir = Path(published_dir) / name
    last = last_publication(name, url)
    if touched is not None:
        nxt = _next_from_touched(last, ds_dir, published, touched)
    else:
        table = rows if rows is not None else project(published, staged_paths)
        nxt = _Next(feed.row_hashes(table, published.primary_key), table.num_rows, table.schema, lambda: table)
    digest = feed.digest(nxt.hashes, published)
    if last and last["content_hash"] == digest:
        log.info("%s: content unchanged since version %s; nothing published", name, last["version"])
        return PublishResult(name, run_id, "unchanged", last["version"], last["row_count"], digest, last["table_name"],
                             last["parquet_path"], time.monotonic() - t0)
    version = (last["version"] if last else 0) + 1
    folder = ds_dir / version_name(version)
    published_at = datetime.now(UTC)
    changes = nxt.changes if nxt.changes_found else _change_from(last, ds_dir, published, nxt)
    if changes is not None and _generation_for_change(url, published) is None:
        changes = None  # the warehouse has no generation (or feed) of these columns: this version starts them
    manifest = {
        "dataset": name,
        "version": version,
        "contract_id": published.id,
        "contract_version": published.version,
        "row_count": nxt.row_count,
        "content_hash": digest,
        "published_at": published_at.isoformat(),
        "run_id": run_id,
        # the change feed's rows for this version (published.<dataset>__changes), by type; null: it starts here
        "changes": {"from_version": last["version"] if last and changes is not None else None,
                    "rows": feed.counts(changes)},
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in nxt.schema],
        "key": published.primary_key,
        "lineage": lineage,
        "quality": quality,
        **(provenance or {}),
    }
    releases.add_to_keyring(releases.keyring_dir(published_dir), key)
    tname = table_name(name, version)
    # The Parquet folder (and the row hashes) are written on a thread while the database loads the version:
    # both release the GIL for their work, and the folder is in place before the version is recorded.
    files = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"publish-{name}")
    parts = _parquet_parts(last, ds_dir, nxt, changes, manifest)
    written = files.submit(_write_files, parts, folder, manifest, key, hashes_path(ds_dir, version), nxt.hashes)
    try:
        with connect(url) as conn:
            with conn.cursor() as cur:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{PUBLISHED_SCHEMA}"')
                generation, closed = _publish_rows(cur, published, version, nxt, changes, published_at)
                pubtables.create_version_view(cur, published, PUBLISHED_SCHEMA, generation, version)
                view = f'"{PUBLISHED_SCHEMA}"."{name}"'
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (view,))
                (view_exists,) = cur.fetchone()
                if closed is None or not view_exists:
                    _switch_view(cur, view, pubtables.current_select(published, PUBLISHED_SCHEMA, generation))
                # else: a version from the change, in the generation the stable view already reads; replacing
                # the view would take a lock that waits for every open reader of it, and queue new readers
                # behind it (the comment's lock does not conflict with reads)
                cur.execute(f"COMMENT ON VIEW {view} IS %s", (f"{published.id} {version_name(version)} run {run_id}",))
                # agency sessions open now read the new version from the commit on: recorded with it
                sessions.record_switch(cur, name, version, tname)
                written.result()
                runs.record_publication(conn, runs.Publication(name, version, run_id, digest, nxt.row_count,
                                                               published.version, tname, str(folder)))
    except BaseException:
        files.shutdown(wait=True)  # the thread is done with the folder before it is removed
        shutil.rmtree(folder, ignore_errors=True)  # never referenced: the pointer and the view were not moved
        hashes_path(ds_dir, version).unlink(missing_ok=True)
        raise
    finally:
        files.shutdown(wait=True)
    _set_current(ds_dir, version)
    known = {} if changes is None or closed is None else {
        version: feeddelta.version_rows(published, version, published_at, closed, changes)}
    _sync_delta_feed(published, ds_dir, run_id, url, known)
    _apply_retention(name, ds_dir, version, retention, url, run_id)
    compacted = _compact(published, version, retention, compact_share, url)
    result = PublishResult(name, run_id, "published", version, nxt.row_count, digest, tname, str(folder),
                           time.monotonic() - t0, feed.counts(changes), compacted)
    log.info("%s: published %s (%d rows) in %.1fs", name, version_name(version), nxt.row_count, result.seconds)
    return result


def _next_from_touched(last: dict[str, Any] | None, ds_dir: Path, published: Contract, touched: Touched) -> _Next:
    """The next version from the touched rows and the last version's kept row hashes: the touched rows are
    hashed and compared with the last version's hashes of the touched keys (cost: the change), every other
    row keeps its hash. Without kept hashes, the last version is read back and this is a publish of every row."""
    name, keys = published.name, published.primary_key
    if not keys:
        raise ValueError(f"{name}: publishing the touched rows needs a primary key")
    if last is None or last["version"] != touched.since:
        raise ValueError(f"{name}: the touched keys are relative to version {touched.since}, the last published "
                         f"version is {last['version'] if last else 'none'}; publish every row instead")
    schema = published.arrow_schema()
    try:
        rows = touched.rows.select(schema.names).cast(schema)
    except (KeyError, ValueError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{name}: the touched rows are not in the contract's shape: {exc}") from exc
    candidates = touched.keys.select(keys)
    _check_touched(name, keys, rows, candidates)
    kept = _kept_hashes(ds_dir, last["version"]) if Path(last["parquet_path"]).parent == ds_dir else None
    new = feed.row_hashes(rows, keys)
    if kept is None or kept.schema != new.schema:
        log.warning("%s: no row hashes kept for version %s; reading it back to publish every row", name, last["version"])
        table = _rows_after(ds_dir, last["version"], published, rows, candidates)
        return _Next(feed.row_hashes(table, keys), table.num_rows, table.schema, lambda: table)
    touched_rows = _key_in(kept, candidates, keys)  # the kept file is memory-mapped: scanned in place
    previous = kept.filter(touched_rows)
    hashes = pa.concat_tables([kept.filter(pc.invert(touched_rows)), new])  # two chunks, not copied again
    return _Next(hashes, hashes.num_rows, schema,
                 lambda: _rows_after(ds_dir, last["version"], published, rows, candidates),
                 feed.change(previous.cast(new.schema), new, rows, published), changes_found=True)


def _key_in(table: pa.Table, keys_table: pa.Table, keys: list[str]) -> pa.Array:
    """Per row of `table`, whether its key is among `keys_table`'s: Arrow's hash lookup (at 2M rows and 30,000
    keys 0.04 s, against 0.25 s for DuckDB's semi-join and anti-join producing both sides). A key of several
    columns is compared as its columns' text joined by a separator no key value holds (unit separator)."""
    def one(t: pa.Table) -> pa.Array:
        if len(keys) == 1:
            return t[keys[0]].combine_chunks()
        return pc.binary_join_element_wise(*(pc.cast(t[k], pa.string()) for k in keys), "\x1f")
    probe = one(table)
    return pc.is_in(probe, value_set=one(keys_table).cast(probe.type))


def _check_touched(name: str, keys: list[str], rows: pa.Table, candidates: pa.Table) -> None:
    """Touched rows must have keys, one row per key, each among the touched keys: else the error names one."""
    on = ", ".join(f'"{k}"' for k in keys)
    with session(purpose="publish-touched") as con:
        con.register("r", rows.select(keys))
        con.register("k", candidates)
        no_key = " OR ".join(f'"{k}" IS NULL' for k in keys)
        checks = [("has no key", f"SELECT {on} FROM r WHERE {no_key}"),
                  ("appears twice", f"SELECT {on} FROM r GROUP BY ALL HAVING count(*) > 1"),
                  ("is not among the touched keys", f"SELECT {on} FROM r ANTI JOIN k USING ({on})")]
        for what, query in checks:
            found = con.execute(query + " LIMIT 1").fetchone()
            if found is not None:
                raise ValueError(f"{name}: touched row {dict(zip(keys, found, strict=True))} {what}")


def _rows_after(ds_dir: Path, version: int, published: Contract, rows: pa.Table, candidates: pa.Table) -> pa.Table:
    """Every row of the next version: `version`'s rows read back (`snapshots.read_version`), the touched keys'
    replaced by `rows`. Reads the whole version: only for a snapshot folder or a new generation."""
    keys = published.primary_key
    on = ", ".join(f'"{k}"' for k in keys)
    before = snapshots.read_version(ds_dir, version, keys)
    with session(purpose="publish-touched") as con:
        con.register("b", before)
        con.register("k", candidates)
        con.register("r", rows)
        table = con.execute(f"""SELECT * FROM (SELECT b.* FROM b ANTI JOIN k USING ({on})
                                UNION ALL BY NAME SELECT * FROM r) ORDER BY {on}""").fetch_arrow_table()
    schema = published.arrow_schema()
    return table.select(schema.names).cast(schema)


def _write_files(parts: dict[str, tuple[pa.Table, str]], folder: Path, manifest: dict[str, Any],
                 key: releases.SigningKey, hashes_file: Path, hashes: pa.Table) -> None:
    _write_parquet_version(parts, folder, manifest, key)
    _write_hashes(hashes_file, hashes)


def _parquet_parts(last: dict[str, Any] | None, ds_dir: Path, nxt: _Next, changes: feed.Change | None,
                   manifest: dict[str, Any]) -> dict[str, tuple[pa.Table, str]]:
    """What the version folder holds: a delta on the last version when its chain allows
    (`snapshots.next_form`), else the whole rows; the manifest gets the form and the chain."""
    previous = None
    if last is not None and Path(last["parquet_path"]).parent == ds_dir:
        with contextlib.suppress(OSError, ValueError):
            previous = snapshots.manifest(ds_dir, last["version"])
    counts = feed.counts(changes)
    kind, chain = snapshots.next_form(previous, sum(counts.values()) if counts else None, nxt.row_count)
    manifest["form"] = kind
    if kind == snapshots.DELTA and changes is not None:
        manifest["chain"] = chain
        return {snapshots.NEW_ROWS: (changes.post, "new_images"), snapshots.REMOVED_KEYS: (changes.gone, "removed_keys")}
    return {"part-00000.parquet": (nxt.all_rows(), "rows")}


def hashes_path(ds_dir: Path, version: int) -> Path:
    """Where the row hashes of a version are kept (`lienthong.feed.row_hashes`): what the next version's
    change is found against, without reading the version's rows again."""
    return ds_dir / HASHES_DIR / f"{version_name(version)}.arrow"


def _write_hashes(path: Path, hashes: pa.Table) -> None:
    """An Arrow IPC file, uncompressed: the next version maps it rather than decoding it (at 2M rows, 0.02 s
    to write and next to nothing to open, against 0.3 s and 0.6 s as zstd Parquet); ~32 bytes a row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, hashes.schema) as writer:
        writer.write_table(hashes)
    os.replace(tmp, path)


def _kept_hashes(ds_dir: Path, version: int) -> pa.Table | None:
    """The row hashes kept for `version` (None: not kept; a version published before they were kept as Arrow
    has them as Parquet)."""
    path = hashes_path(ds_dir, version)
    if path.exists():
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    legacy = path.with_suffix(".parquet")
    return pq.read_table(legacy) if legacy.exists() else None


def _change_from(last: dict[str, Any] | None, ds_dir: Path, published: Contract, nxt: _Next) -> feed.Change | None:
    """The change from the last version to every row of `nxt` (None: no last version, no key, or other columns: the
    feed starts again). The last version's row hashes are read where they are kept, else computed from its
    Parquet parts (a version published before they were kept)."""
    if last is None or not published.primary_key:
        return None
    kept = _kept_hashes(ds_dir, last["version"])
    if kept is not None:
        previous = kept
        if previous.schema != nxt.hashes.schema:
            return None
    else:
        found = feed.hashes_of_version(Path(last["parquet_path"]).parent, last["version"], published, nxt.schema)
        if found is None:
            return None
        previous = found
    return feed.change(previous, nxt.hashes, nxt.all_rows(), published)


def _generation_of(cur, published: Contract) -> str | None:
    """The current generation table when a version of `published` can be written from its change: one with
    the contract's columns, and a feed to append to."""
    current = pubtables.current_generation(cur, PUBLISHED_SCHEMA, published.name)
    if current is None or current[1] != [f.name for f in published.fields]:
        return None
    if not pubtables.has_change_tables(cur, PUBLISHED_SCHEMA, current[0]):
        return None  # a generation of the earlier layout, updated in place: this version starts a new one
    return current[0] if feed.is_kept(cur, published.name, PUBLISHED_SCHEMA) else None


def _generation_for_change(url: str | None, published: Contract) -> str | None:
    with connect(url) as conn, conn.cursor() as cur:
        return _generation_of(cur, published)


def _publish_rows(cur, published: Contract, version: int, nxt: _Next, changes: feed.Change | None,
                  published_at: datetime) -> tuple[str, bytes | None]:
    """In the publish transaction: the version's rows and its change feed. From the change when there is one
    (found against the current generation, `_generation_of`: cost, the change), else a new generation (cost:
    the rows). Returns the generation table the version lives in, and the row versions the change closed
    (CSV, `pubtables.apply_change`; None for a new generation)."""
    counts = feed.counts(changes)
    if changes is not None and counts is not None:
        current = _generation_of(cur, published)
        if current is None:
            raise RuntimeError(f"{published.name} v{version}: the generation the change was found for is gone")
        with pubtables.keyed_joins(cur, sum(counts.values()), nxt.row_count):
            feed.store(cur, published, PUBLISHED_SCHEMA, version, published_at, changes, _copy_arrow,
                       pubtables.rows_view(current))
            closed = pubtables.apply_change(cur, published, PUBLISHED_SCHEMA, current, version, counts,
                                            changes.post, _copy_arrow, published_at)
        return current, closed
    generation, loaded = pubtables.load_full(cur, published, PUBLISHED_SCHEMA, version, nxt.all_rows(), _copy_arrow)
    if loaded != nxt.row_count:
        raise RuntimeError(f"{published.name} v{version}: loaded {loaded} rows, expected {nxt.row_count}")
    feed.store(cur, published, PUBLISHED_SCHEMA, version, published_at, None, _copy_arrow,
               pubtables.rows_view(generation))  # starts here
    return generation, None


def _switch_view(cur, view: str, select: str) -> None:
    """Point the stable view at the current rows (`select`). CREATE OR REPLACE keeps the view's identity, so
    readers never hit a dropped relation; only when columns changed type or went away (a new contract
    version) is it recreated, dropping the agency views built on it (CASCADE): the publish DAG's access task
    rebuilds them from agencies.yaml right after."""
    cur.execute("SAVEPOINT switch_view")
    try:
        cur.execute(f"CREATE OR REPLACE VIEW {view} AS {select}")
    except Exception:
        cur.execute("ROLLBACK TO SAVEPOINT switch_view")
        log.warning("%s: columns changed incompatibly; recreating the view (agency views are rebuilt next)", view)
        cur.execute(f"DROP VIEW IF EXISTS {view} CASCADE")
        cur.execute(f"CREATE VIEW {view} AS {select}")
    cur.execute("RELEASE SAVEPOINT switch_view")


def _drop_relation(cur, name: str) -> None:
    """Drop `published.<name>`, a version view (or the version table of an older layout), if it is there."""
    cur.execute("""SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relname = %s""", (PUBLISHED_SCHEMA, name))
    row = cur.fetchone()
    if row is not None:
        kind = "VIEW" if row[0] == "v" else "TABLE"
        cur.execute(f'DROP {kind} "{PUBLISHED_SCHEMA}"."{name}"')


def _sync_delta_feed(published: Contract, ds_dir: Path, run_id: str, url: str | None,
                     known: dict[int, pa.Table] | None = None) -> None:
    """The Delta table of the change feed in the published zone, brought up to the warehouse's feed
    (`known`: the change rows of the version just published, not read back)."""
    with connect(url) as conn, conn.cursor() as cur:
        feeddelta.sync(cur, published, PUBLISHED_SCHEMA, ds_dir, run_id, known)


def _compact(published: Contract, version: int, retention: int, share: float, url: str | None) -> str | None:
    """Compact the dataset's row versions when due (`pubtables.compact`), in a transaction of its own after
    the version is served: a failure here leaves the version published and the old generation in place, is
    logged, and the next publish tries again."""
    oldest_kept = version - retention + 1 if retention >= 1 else None
    try:
        with connect(url) as conn, conn.cursor() as cur:
            return pubtables.compact(cur, published, PUBLISHED_SCHEMA, version, oldest_kept, share)
    except Exception:
        log.exception("%s: compacting the row versions after %s failed; the version is published and served, "
                      "the next publish tries again", published.name, version_name(version))
        return None


def _apply_retention(dataset: str, ds_dir: Path, current: int, keep: int, url: str | None, run_id: str) -> None:
    """Keep the newest `keep` versions (Parquet folders and PostgreSQL tables); never the current one. The
    database forgets the versions first, in one transaction that waits at most
    `pubtables.MAINTENANCE_LOCK_TIMEOUT` for a lock: a reader still holding an expired version's view makes
    retention wait for the next publish (logged) instead of queueing every later reader behind it. The files
    go after its commit (a kill in between leaves files the next retention removes)."""
    if keep < 1:
        return
    cutoff = current - keep
    try:
        with connect(url) as conn:
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = %s", (pubtables.MAINTENANCE_LOCK_TIMEOUT,))  # this connection only
            expired = runs.publications(conn, dataset, status="published", up_to_version=cutoff)
            for old in expired:
                with conn.cursor() as cur:
                    _drop_relation(cur, old.table_name)
                runs.expire_publication(conn, dataset, old.version)
            if not expired:
                return
            with conn.cursor() as cur:  # the rows and the feed start at the oldest version kept
                pubtables.expire(cur, dataset, PUBLISHED_SCHEMA, cutoff + 1)
                feed.expire(cur, dataset, PUBLISHED_SCHEMA, cutoff + 1)
    except psycopg2.errors.LockNotAvailable as exc:
        log.warning("%s: retention deferred to the next publish: a reader holds a version it would drop (%s)",
                    dataset, str(exc).strip())
        return
    for old in expired:
        hashes_path(ds_dir, old.version).unlink(missing_ok=True)
        hashes_path(ds_dir, old.version).with_suffix(".parquet").unlink(missing_ok=True)
    # the folders before the chain the oldest kept version reads go (its base snapshot and deltas stay)
    try:
        needed = snapshots.chain_of(snapshots.manifest(ds_dir, cutoff + 1))["base_version"]
    except (OSError, ValueError, KeyError):
        needed = cutoff + 1
    for folder in ds_dir.glob("v[0-9]*"):
        if folder.is_dir() and folder.name[1:].isdigit() and int(folder.name[1:]) < needed:
            shutil.rmtree(folder, ignore_errors=True)
    feeddelta.expire(ds_dir, cutoff + 1, run_id=run_id)
