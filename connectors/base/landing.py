"""Raw landing: what the source sent, exactly, as Parquet, plus ingest metadata.

Layout: `raw/<source>/<entity>/ingest_date=YYYY-MM-DD/run=<run id>/part-NNNNN.parquet`. Each record keeps
its original payload (JSON text of the item as received, so unknown new fields are landed too) and the
columns `_source`, `_entity`, `_run_id`, `_ingested_at`, `_record_hash`, `_key`, `_updated_at`, `_page`,
`_issues` (why a record is flagged for quarantine, if it is).
Parts are written into a temporary folder and moved into place on `commit()`; a rerun of the same run
replaces that run's folder, never adds to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lienthong.paths import safe_run_id

log = logging.getLogger(__name__)

RAW_SCHEMA = pa.schema(
    [
        pa.field("_source", pa.string(), nullable=False),
        pa.field("_entity", pa.string(), nullable=False),
        pa.field("_run_id", pa.string(), nullable=False),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("_record_hash", pa.string(), nullable=False),
        pa.field("_key", pa.string()),
        pa.field("_updated_at", pa.string()),
        pa.field("_page", pa.int64(), nullable=False),
        pa.field("_issues", pa.list_(pa.string())),
        pa.field("payload", pa.string(), nullable=False),
    ]
)


# How raw parts are written. Min/max statistics only on the small columns that are filtered on, dictionary
# encoding only on those whose values repeat: on the payload and hash columns (every value differs, long
# strings) they cost about a third of the writing time and are of no use, and a dictionary on the keys or
# update times (nearly all distinct) is built and dropped for every page (a quarter of the land
# connector's writing time, measured). zstd level 1: the same size as the default level here, faster.
_SMALL_COLUMNS = ["_source", "_entity", "_run_id", "_ingested_at", "_key", "_updated_at", "_page", "_issues"]
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": [c for c in _SMALL_COLUMNS if c not in ("_key", "_updated_at")],
    "write_statistics": _SMALL_COLUMNS,
}


def canonical_json_bytes(item: Any) -> bytes:
    """Compact JSON with sorted keys, as UTF-8 bytes: one rendering per record, so equal records hash equal.
    orjson (a well-kept library) does it several times faster than json.dumps, which matters per record."""
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def canonical_json(item: Any) -> str:
    """`canonical_json_bytes` as text."""
    return canonical_json_bytes(item).decode()


def record_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def record_hashes(payloads: pa.Array) -> list[str]:
    """`record_hash` of every payload of an Arrow string array, hashed straight from Arrow's UTF-8 buffer
    (no Python string per payload). Nulls are refused: a landed record always has a payload."""
    if payloads.null_count:
        raise ValueError(f"{payloads.null_count} payloads are null")
    fmt: Literal["q", "i"]  # the offsets' width: int64 for large_string, int32 for string
    if pa.types.is_large_string(payloads.type):
        fmt = "q"
    elif pa.types.is_string(payloads.type):
        fmt = "i"
    else:
        raise TypeError(f"payloads must be strings, got {payloads.type}")
    _validity, offsets_buf, data_buf = payloads.buffers()
    start = payloads.offset
    offsets = memoryview(offsets_buf).cast(fmt)[start:start + len(payloads) + 1].tolist()
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    sha256 = hashlib.sha256
    return [sha256(data[a:b]).hexdigest() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _dig(item: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


class RawLanding:
    """Writes one run's raw records for one (source, entity) and publishes them atomically."""

    def __init__(
        self, raw_dir: Path, source: str, entity: str, run_id: str, ingest_date: str | None = None, flush_rows: int = 50_000
    ):
        self.source, self.entity, self.run_id = source, entity, run_id
        self.ingested_at = datetime.now(UTC)
        self._constants: dict[str, pa.Array] = {}
        date = ingest_date or self.ingested_at.strftime("%Y-%m-%d")
        self.final_dir = Path(raw_dir) / source / entity / f"ingest_date={date}" / f"run={safe_run_id(run_id)}"
        self.tmp_dir = self.final_dir.with_name(self.final_dir.name + f".tmp-{os.getpid()}")
        _remove_abandoned(self.final_dir.parent)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self.parts = 0
        self.rows = 0
        self.pages = 0
        # Pages are buffered and written as one part per `flush_rows` rows: fewer, larger files (better
        # compression, faster reads) at a bounded memory cost. Nothing is visible before commit() anyway.
        self.flush_rows = flush_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None
        self._started = time.monotonic()

    def write_page(
        self,
        items: list[Any],
        *,
        key_field: str,
        updated_field: str,
        payloads: list[str] | None = None,
        issues: list[list[str]] | None = None,
    ) -> int:
        """Land one page of source items (dicts). `payloads` may carry the exact text per item when the
        source is not JSON (e.g. a canonical JSON rendering of an XML element); `issues` the reasons per
        item that it cannot be used as is (flagged for quarantine, still landed)."""
        texts: list[str] | pa.Array
        if payloads is not None:
            texts = payloads
        else:
            # handed to Arrow as orjson's bytes and hashed from Arrow's buffer (write_columns): no Python
            # string decoded and encoded again per record (about 2 µs of a business record, measured)
            texts = pa.array([canonical_json_bytes(it) for it in items], pa.binary()).cast(pa.string())
        keys = [_dig(it, key_field) for it in items]
        return self.write_columns(
            keys=[None if k is None else str(k) for k in keys],
            updated=[_as_text(_dig(it, updated_field)) for it in items],
            payloads=texts,
            issues=issues,
        )

    def write_columns(
        self,
        *,
        keys: Sequence[str | int | None] | pa.Array,
        updated: Sequence[str | None] | pa.Array,
        payloads: Sequence[str] | pa.Array,
        issues: list[list[str]] | None = None,
        hashes: Sequence[str] | None = None,
    ) -> int:
        """Land one page given column-wise (key, cursor text, exact payload text per record) as Python
        sequences or Arrow arrays: for sources that already hold the payload as text (e.g. a database
        rendering rows as JSON). Integer keys are landed as their decimal text, like every other key.
        `hashes` are the payloads' `record_hash`es when the caller already took them."""
        self.pages += 1
        n = len(payloads)
        if not n:
            return 0
        key_array = keys if isinstance(keys, pa.Array) else pa.array(keys)
        if not pa.types.is_string(key_array.type):
            key_array = key_array.cast(pa.string())
        if hashes is None:
            hashes = record_hashes(payloads) if isinstance(payloads, pa.Array) else [record_hash(t) for t in payloads]
        # The columns that are the same on every row are repeated by Arrow, not built from Python lists.
        batch = pa.RecordBatch.from_arrays(
            [
                self._constant("_source", n),
                self._constant("_entity", n),
                self._constant("_run_id", n),
                self._constant("_ingested_at", n),
                pa.array(hashes, pa.string()),
                key_array,
                _strings(updated),
                pa.repeat(pa.scalar(self.pages, pa.int64()), n),
                pa.array(issues, pa.list_(pa.string())) if issues is not None else _no_issues(n),
                _strings(payloads),
            ],
            schema=RAW_SCHEMA,
        )
        self._pending.append(batch)
        self._pending_rows += n
        self.rows += n
        if self._pending_rows >= self.flush_rows:
            self._flush()
        if self.pages % 20 == 0:
            rate = self.rows / max(1e-9, time.monotonic() - self._started)
            log.info("%s/%s: %d pages, %d rows landed (%.0f rows/s)", self.source, self.entity, self.pages, self.rows, rate)
        return n

    def _constant(self, column: str, n: int) -> pa.Array:
        """`n` copies of a column that is the same on every row: one array per landing, sliced per page."""
        have = self._constants.get(column)
        if have is None or len(have) < n:
            value = {"_source": self.source, "_entity": self.entity, "_run_id": self.run_id,
                     "_ingested_at": self.ingested_at}[column]
            have = self._constants[column] = pa.repeat(pa.scalar(value, RAW_SCHEMA.field(column).type), max(n, 1024))
        return have.slice(0, n)

    def _flush(self) -> None:
        """Hand the buffered pages to the writer thread as one part. Parquet encoding and compression run
        there, outside the GIL for the most part, while the next pages are fetched and prepared; at most
        one part waits for the writer (bounded memory), and a writer's error surfaces here or at commit."""
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=RAW_SCHEMA)
        path = self.tmp_dir / f"part-{self.parts:05d}.parquet"
        self.parts += 1
        self._pending, self._pending_rows = [], 0
        self._wait_for_writer()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-writer")
        self._writing = self._writer.submit(pq.write_table, table, path, **_PARQUET_OPTIONS)

    def _wait_for_writer(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def _close_writer(self) -> None:
        try:
            self._wait_for_writer()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def commit(self) -> Path:
        """Write what is buffered, then move the run's parts into place, replacing a previous attempt."""
        self._flush()
        self._close_writer()
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        os.replace(self.tmp_dir, self.final_dir)
        log.info("%s/%s: landed %d rows in %d parts at %s", self.source, self.entity, self.rows, self.parts, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        try:
            self._close_writer()
        except Exception:  # noqa: BLE001 - the run is failing already; its own error is the one to see
            pass
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(folder: Path) -> None:
    """Remove temporary landings whose writer process is gone (a run killed mid-walk): never referenced,
    never read, only disk."""
    if not folder.exists():
        return
    for tmp in folder.glob("run=*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed the partial landing of an interrupted run: %s", tmp)


def _strings(values: Sequence[str | None] | pa.Array) -> pa.Array:
    return values if isinstance(values, pa.Array) and pa.types.is_string(values.type) else pa.array(values, pa.string())


def _no_issues(n: int) -> pa.Array:
    """n empty lists: offsets only, no Python list per row."""
    return pa.ListArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), n + 1), pa.array([], pa.string()))


def _as_text(v: Any) -> str | None:
    return None if v is None else str(v)
