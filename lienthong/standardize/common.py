"""What every standardization function shares: the result types and the distinct-value machinery.

Owns: `Standardized` (cleaned values + whether each was changed + a machine-readable issue per row),
`distinct` / `map_distinct` (run Python logic once per DISTINCT value and map the answers back with
`take`), `distinct_rows` (the same over several key columns) and `issues_from_flags` (turn boolean
findings into issue strings without a Python loop over rows).

Issue strings: null when there is nothing to report; one reason code ("invalid_check_digit"), or several
joined by ISSUE_SEP in the order the steps ran ("nfc_normalized;capitals_title_cased"). Staging counts
them with `pc.split_pattern(issue, ISSUE_SEP)` + `list_flatten` + `value_counts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ISSUE_SEP = ";"

ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class Standardized:
    """`values`: the cleaned column (same length as the input). `repaired`: bool per row, True where the
    value was changed (None for functions that only ever flag). `issue`: string per row, null = clean."""

    values: pa.Array
    repaired: pa.Array | None
    issue: pa.Array

    def issue_counts(self) -> dict[str, int]:
        """{reason code: rows}, each code of a multi-code issue counted once per row."""
        parts = pc.list_flatten(pc.split_pattern(self.issue.drop_null(), ISSUE_SEP))
        return {r["values"]: r["counts"] for r in pc.value_counts(parts).to_pylist()}


def as_array(arr: ArrayLike | Sequence[Any], type_: pa.DataType | None = None) -> pa.Array:
    """One contiguous, non-dictionary Arrow array (chunked arrays combined, dictionaries decoded)."""
    out: pa.Array
    if isinstance(arr, pa.ChunkedArray):
        out = arr.combine_chunks()
    elif isinstance(arr, pa.Array):
        out = arr
    else:
        out = pa.array(arr, type=type_)
    if pa.types.is_dictionary(out.type):
        out = out.dictionary_decode()
    if type_ is not None and out.type != type_:
        out = out.cast(type_)
    return out


def distinct(arr: ArrayLike | Sequence[Any]) -> tuple[pa.Array, pa.Array]:
    """(distinct non-null values, int32 index of each row into them; null where the row is null).
    One hash pass over the rows (dictionary encoding)."""
    encoded = pc.dictionary_encode(as_array(arr))
    return encoded.dictionary, encoded.indices


def map_distinct(arr: ArrayLike | Sequence[Any], fn: Callable[[Any], tuple],
                 types: Sequence[pa.DataType], null_result: tuple | None = None) -> list[pa.Array]:
    """Call `fn(value)` once per distinct non-null value; it returns one item per output column (`types`).
    Each output column is mapped back to the rows with `take`. Null rows get `null_result` (all null
    when None)."""
    dictionary, indices = distinct(arr)
    results = [fn(v) for v in dictionary.to_pylist()]
    return expand(results, indices, types, null_result)


def expand(results: list[tuple], indices: pa.Array, types: Sequence[pa.DataType],
           null_result: tuple | None = None) -> list[pa.Array]:
    """Per-distinct answers -> per-row columns: results[k] is the answer for distinct value k."""
    columns = list(zip(*results, strict=True)) if results else [() for _ in types]
    out = []
    for j, type_ in enumerate(types):
        col = pa.array(list(columns[j]), type=type_)
        if null_result is not None and indices.null_count:
            # The answer for null rows is appended as one more "distinct value".
            col = pa.concat_arrays([col, pa.array([null_result[j]], type=type_)])
            out.append(pc.take(col, indices.fill_null(len(col) - 1)))
        else:
            out.append(pc.take(col, indices))
    return out


def distinct_rows(*columns: ArrayLike | None) -> tuple[list[tuple], pa.Array]:
    """Distinct combinations of several key columns (None = an absent column, all null).

    Returns (combinations as Python tuples, int32 index of each row into them). Each column is
    dictionary-encoded and the codes are packed, column by column, into one int64 key made distinct by
    hashing: the Python work is per combination, never per row."""
    present = [as_array(c) for c in columns if c is not None]
    if not present:
        raise ValueError("distinct_rows needs at least one column")
    n = len(present[0])
    if any(len(c) != n for c in present):
        raise ValueError(f"key columns differ in length: {[len(c) for c in present]}")
    key = np.zeros(n, dtype=np.int64)
    # Per column: (its distinct values + None for the null code, each row's code); None for an absent column.
    coded: list[tuple[list[Any], np.ndarray] | None] = []
    for col in columns:
        if col is None:
            coded.append(None)
            continue
        dictionary, indices = distinct(col)
        size = len(dictionary) + 1  # the last code stands for null
        idx = indices.fill_null(size - 1).to_numpy().astype(np.int64)
        # Re-number the combined key after each column so it stays below the row count (no overflow).
        key = pc.dictionary_encode(pa.array(key * size + idx)).indices.to_numpy().astype(np.int64)
        coded.append((dictionary.to_pylist() + [None], idx))
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    combos = [
        tuple(None if dc is None else dc[0][dc[1][i]] for dc in coded)
        for i in first.tolist()
    ]
    return combos, pa.array(inverse.astype(np.int32))


def issues_from_flags(flags: Sequence[tuple[str, np.ndarray]], n: int) -> pa.Array:
    """Boolean findings -> one issue string per row (codes in the given order, joined by ISSUE_SEP).
    The flags are packed into a bit mask per row; only the few distinct masks become strings."""
    if len(flags) > 62:
        raise ValueError("at most 62 flags")
    mask = np.zeros(n, dtype=np.int64)
    for bit, (_, flag) in enumerate(flags):
        mask |= np.asarray(flag, dtype=bool).astype(np.int64) << bit
    uniq, inverse = np.unique(mask, return_inverse=True)
    names = [
        ISSUE_SEP.join(code for bit, (code, _) in enumerate(flags) if m >> bit & 1) or None
        for m in uniq.tolist()
    ]
    return pc.take(pa.array(names, pa.string()), pa.array(inverse.astype(np.int32)))


def join_issues(*issues: pa.Array) -> pa.Array:
    """Row-wise concatenation of several issue columns, skipping nulls; null where all are null."""
    if not issues:
        raise ValueError("join_issues needs at least one column")
    combos, indices = distinct_rows(*issues)
    joined = [ISSUE_SEP.join(p for p in combo if p) or None for combo in combos]
    return pc.take(pa.array(joined, pa.string()), indices)


def to_bool_numpy(arr: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null -> False."""
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
