"""Shared building blocks: seeded random streams, fixed reference time, and vectorised formatting.

Owns: `streams` (one independent numpy Generator per named part of the generator, so adding draws to one
part never shifts another part's output), time arithmetic relative to `as_of` (never the wall clock), and
the fast string formatting of dates, times, zero-padded numbers and decimals as Arrow arrays.
"""

from __future__ import annotations

import datetime as dt
import time
import zlib
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400
LOCAL_OFFSET = 7 * 3600  # Asia/Ho_Chi_Minh, no daylight saving
YEAR_DAYS = 365.2425
EPOCH = dt.date(1970, 1, 1)


def stream(seed: int, name: str) -> np.random.Generator:
    """The random stream of one named part. crc32 keeps the name -> stream mapping stable across runs
    and Python versions (str hash() is salted per process)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def parse_as_of(as_of: str) -> int:
    """RFC 3339 -> epoch seconds (UTC)."""
    t = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"as_of needs an offset: {as_of!r}")
    return int(t.timestamp())


def to_day(d: dt.date) -> int:
    return (d - EPOCH).days


def day_to_date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


_DAY_SPAN = (to_day(dt.date(1900, 1, 1)), to_day(dt.date(2100, 12, 31)))
_day_tables: dict[str, tuple[int, pa.Array]] = {}


def _day_table(lo: int, hi: int, fmt: str) -> tuple[int, pa.Array]:
    """(first day, formatted days) covering lo..hi: one table per format, made once for 1900-2100 (a
    country formats dates per province: rebuilding the table per call was most of its run time)."""
    if fmt in _day_tables:
        first, table = _day_tables[fmt]
        if first <= lo and hi < first + len(table):
            return first, table
        span = (min(lo, first), max(hi, first + len(table) - 1))
    else:
        span = (min(lo, _DAY_SPAN[0]), max(hi, _DAY_SPAN[1]))
    table = pa.array([(EPOCH + dt.timedelta(days=d)).strftime(fmt) for d in range(span[0], span[1] + 1)],
                     pa.string())
    _day_tables[fmt] = (span[0], table)
    return span[0], table


@cache
def _time_table() -> pa.Array:
    return pa.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY)], pa.string())


def fmt_days(days: np.ndarray, fmt: str = "%Y-%m-%d") -> pa.Array:
    """Days since 1970-01-01 -> strings; formats each distinct day once (a few ten thousand) and takes."""
    days = np.asarray(days, dtype=np.int64)
    if len(days) == 0:
        return pa.array([], pa.string())
    first, table = _day_table(int(days.min()), int(days.max()), fmt)
    return table.take(pa.array(days - first))


def fmt_local(epoch_s: np.ndarray, style: str) -> pa.Array:
    """Epoch seconds -> local (UTC+7) text. style 'rfc3339': 2026-11-20T08:15:02+07:00;
    'dkkd': 20/11/2026 14:03:11 (the business registry's local time without offset)."""
    local = np.asarray(epoch_s, dtype=np.int64) + LOCAL_OFFSET
    days, sod = np.divmod(local, DAY)
    times = _time_table().take(pa.array(sod))
    if style == "rfc3339":
        d = fmt_days(days, "%Y-%m-%d")
        return pc.binary_join_element_wise(d, pc.binary_join_element_wise(times, "+07:00", ""), "T")
    if style == "dkkd":
        return pc.binary_join_element_wise(fmt_days(days, "%d/%m/%Y"), times, " ")
    raise ValueError(style)


def zpad(values: np.ndarray, width: int) -> pa.Array:
    """Non-negative integers -> zero-padded decimal strings."""
    return pc.utf8_lpad(pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string()), width, padding="0")


def join(*parts: pa.Array | str, sep: str = "") -> pa.Array:
    """Element-wise string concatenation; str parts are broadcast."""
    return pc.binary_join_element_wise(*parts, sep)


def decimals(scaled: np.ndarray, precision: int, scale: int) -> pa.Array:
    """Integers already multiplied by 10**scale -> decimal128(precision, scale), built from the raw
    little-endian 128-bit buffer (exact; no float rounding)."""
    v = np.asarray(scaled, dtype=np.int64)
    raw = np.empty((len(v), 2), dtype=np.int64)
    raw[:, 0] = v
    raw[:, 1] = np.where(v < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(v), [None, pa.py_buffer(raw.tobytes())])


def timestamps_utc(epoch_s: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(epoch_s, dtype=np.int64), pa.timestamp("s", tz="UTC"))


def dates(days: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(days, dtype=np.int32), pa.date32())


def masked(arr: pa.Array, null_mask: np.ndarray) -> pa.Array:
    """arr with nulls where null_mask is True."""
    return pc.if_else(pa.array(null_mask), pa.nulls(len(arr), arr.type), arr)


def unique_draws(rng: np.random.Generator, high: int, n: int, taken: np.ndarray | None = None) -> np.ndarray:
    """n distinct integers in [0, high) that avoid `taken`, order random; redraws collisions only."""
    out = rng.integers(0, high, size=n, dtype=np.int64)
    forbidden = np.asarray(taken if taken is not None else [], dtype=np.int64)
    for _ in range(100):
        # Keep the first occurrence of each value; redraw later repeats and anything already taken.
        _, first = np.unique(out, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        dup |= np.isin(out, forbidden)
        k = int(dup.sum())
        if k == 0:
            return out
        out[dup] = rng.integers(0, high, size=k, dtype=np.int64)
    raise RuntimeError("could not draw unique values: space too small")


def run_summary(counts: dict[str, int], started: float) -> dict:
    """What `generate` returns for a province or a country: rows per file, source rows (the truth not
    counted), seconds since `started` (a `time.perf_counter()`) and rows per second."""
    seconds = time.perf_counter() - started
    source_rows = sum(v for k, v in counts.items() if not k.startswith("truth/"))
    return {
        "counts": dict(sorted(counts.items())),
        "source_rows": source_rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(source_rows / seconds, 1) if seconds > 0 else None,
    }
